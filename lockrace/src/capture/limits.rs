//! Sizes and limits of a capture, checked before anything loads: the ring buffer and the task
//! maps (`--ring-buffer-mb`, `--max-tasks`), the filter's fit, and RLIMIT_MEMLOCK (raised
//! before the maps are created: kernels before 5.11 charge BPF memory to it).
//!
//! Invariants: every bad value is refused with one line naming the flag and a hint; a map the
//! kernel would not create names RLIMIT_MEMLOCK only when the limit may be the cause.
use lockrace_common::{MAP_EVENTS, MAP_IN_REQUEST, MAP_TRACED_TGIDS};

use super::loader::Filter;
use crate::error::hinted;

/// Sizes of the kernel-side buffers and maps (`--ring-buffer-mb`, `--max-tasks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The ring buffer, bytes: a power of two from [`RING_MIN`] to [`RING_MAX`].
    pub ring_buffer_bytes: u32,
    /// Processes the tgid filter can hold (`TRACED_TGIDS`); tasks inside a lock request at once
    /// get four times as many slots (`IN_REQUEST`). From [`TASKS_MIN`] to [`TASKS_MAX`].
    pub max_tasks: u32,
}

pub const RING_MIN: u32 = 4096;
pub const RING_MAX: u32 = 1 << 30;
pub const TASKS_MIN: u32 = 64;
pub const TASKS_MAX: u32 = 1 << 18;
/// `--max-tasks` default: the maps' compiled-in sizes (16,384 tgids, 65,536 tasks in requests).
pub const TASKS_DEFAULT: u32 = 16384;
/// `IN_REQUEST` slots per `TRACED_TGIDS` slot.
pub const IN_REQUEST_PER_TASK: u32 = 4;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ring_buffer_bytes: 16 << 20,
            max_tasks: TASKS_DEFAULT,
        }
    }
}

impl Limits {
    /// The limits of `--ring-buffer-mb MB --max-tasks N`, checked.
    pub fn from_flags(ring_buffer_mb: u32, max_tasks: u32) -> anyhow::Result<Limits> {
        let l = Limits {
            ring_buffer_bytes: ring_buffer_mb.saturating_mul(1 << 20),
            max_tasks,
        };
        l.check()?;
        Ok(l)
    }

    /// One clear line per bad value (`--ring-buffer-mb 3 is not a power of two ...`).
    pub fn check(&self) -> anyhow::Result<()> {
        let rb = self.ring_buffer_bytes;
        if !(RING_MIN..=RING_MAX).contains(&rb) || !rb.is_power_of_two() {
            let what = if rb.is_multiple_of(1 << 20) {
                format!("--ring-buffer-mb {}", rb >> 20)
            } else {
                format!("a ring buffer of {rb} bytes")
            };
            return Err(hinted(
                format!(
                    "{what} is not a power of two between {} KiB and {} MiB",
                    RING_MIN >> 10,
                    RING_MAX >> 20
                ),
                "e.g. --ring-buffer-mb 16 (or 64 for busy machines)",
            ));
        }
        if !(TASKS_MIN..=TASKS_MAX).contains(&self.max_tasks) {
            return Err(hinted(
                format!(
                    "--max-tasks {} is out of range ({TASKS_MIN} to {TASKS_MAX})",
                    self.max_tasks
                ),
                format!("the default, {TASKS_DEFAULT}, fits most machines"),
            ));
        }
        Ok(())
    }

    /// Check that a filter fits: every `--pid` needs a slot of the tgid map.
    pub fn check_filter(&self, filter: &Filter) -> anyhow::Result<()> {
        if filter.tgids.len() > self.max_tasks as usize {
            return Err(hinted(
                format!(
                    "{} processes to trace, but --max-tasks is {}",
                    filter.tgids.len(),
                    self.max_tasks
                ),
                format!("raise --max-tasks (up to {TASKS_MAX})"),
            ));
        }
        if filter.inodes.len() > INODES_MAX {
            return Err(hinted(
                format!(
                    "{} files to trace, at most {INODES_MAX} at once",
                    filter.inodes.len()
                ),
                "trace fewer --path files, or the processes with --pid",
            ));
        }
        Ok(())
    }

    /// `max_entries` of each sized map, by name.
    pub fn map_sizes(&self) -> [(&'static str, u32); 3] {
        [
            (MAP_EVENTS, self.ring_buffer_bytes),
            (MAP_TRACED_TGIDS, self.max_tasks),
            (MAP_IN_REQUEST, self.max_tasks * IN_REQUEST_PER_TASK),
        ]
    }
}

/// `TRACED_INODES` entries (compiled into the eBPF object).
pub const INODES_MAX: usize = 1024;

/// What [`raise_memlock`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memlock {
    /// Already unlimited.
    Unlimited,
    /// Raised from `from` bytes to unlimited.
    Raised { from: u64 },
    /// Could not be raised past `to` bytes (the hard limit; no CAP_SYS_RESOURCE).
    Capped { from: u64, to: u64 },
}

/// A limit for messages: `64 KiB`, `unlimited`.
pub fn fmt_limit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else if v >= 1 << 20 && v.is_multiple_of(1 << 20) {
        format!("{} MiB", v >> 20)
    } else if v >= 1 << 10 && v.is_multiple_of(1 << 10) {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} bytes")
    }
}

/// The error for a map the kernel would not create. EPERM and ENOMEM are what kernels before
/// 5.11 answer when RLIMIT_MEMLOCK is too low, so then the message names the limit.
pub fn map_create_error(map: &str, errno: Option<i32>, memlock: Memlock) -> anyhow::Error {
    let limit = match memlock {
        Memlock::Capped { to, .. } if matches!(errno, Some(libc::EPERM | libc::ENOMEM)) => to,
        _ => {
            let why = errno
                .map(|e| {
                    std::io::Error::from_raw_os_error(e)
                        .to_string()
                        .to_lowercase()
                })
                .unwrap_or_else(|| "unknown error".into());
            return hinted(
                format!("cannot create the eBPF map {map}: {why}"),
                "try a smaller --ring-buffer-mb or --max-tasks",
            );
        }
    };
    hinted(
        format!(
            "cannot create the eBPF map {map}: RLIMIT_MEMLOCK is {} and could not be raised \
             (kernels before 5.11 charge BPF maps to it)",
            fmt_limit(limit)
        ),
        "raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity), run with \
         CAP_SYS_RESOURCE, or use a smaller --ring-buffer-mb and --max-tasks",
    )
}

/// Raise RLIMIT_MEMLOCK for kernels that still account BPF memory against it (< 5.11): to
/// unlimited when we may (root, CAP_SYS_RESOURCE), else the soft limit to the hard one.
pub fn raise_memlock() -> Memlock {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid pointers.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) } != 0 {
        return Memlock::Unlimited;
    }
    if cur.rlim_cur == libc::RLIM_INFINITY {
        return Memlock::Unlimited;
    }
    let from = cur.rlim_cur;
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    let outcome = if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        Memlock::Raised { from }
    } else {
        let soft = libc::rlimit {
            rlim_cur: cur.rlim_max,
            rlim_max: cur.rlim_max,
        };
        let to = if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &soft) } == 0 {
            cur.rlim_max
        } else {
            from
        };
        if to == libc::RLIM_INFINITY {
            Memlock::Raised { from }
        } else {
            Memlock::Capped { from, to }
        }
    };
    match outcome {
        Memlock::Raised { from } => log::info!(
            "raised RLIMIT_MEMLOCK from {} to unlimited (kernels before 5.11 charge BPF maps to it)",
            fmt_limit(from)
        ),
        Memlock::Capped { from, to } if to == from => log::debug!(
            "RLIMIT_MEMLOCK is {} and cannot be raised (the hard limit)",
            fmt_limit(from)
        ),
        Memlock::Capped { from, to } => log::info!(
            "RLIMIT_MEMLOCK raised from {} to {} only (the hard limit)",
            fmt_limit(from),
            fmt_limit(to)
        ),
        Memlock::Unlimited => {}
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_with_one_clear_line() {
        assert!(Limits::default().check().is_ok());
        assert_eq!(
            Limits::from_flags(64, 1024).unwrap().ring_buffer_bytes,
            64 << 20
        );
        let msg = |r: anyhow::Result<Limits>| crate::error::render_error(&r.unwrap_err());
        let e = msg(Limits::from_flags(3, TASKS_DEFAULT));
        assert!(
            e.starts_with("--ring-buffer-mb 3 is not a power of two"),
            "{e}"
        );
        assert!(e.contains("hint: e.g. --ring-buffer-mb 16"), "{e}");
        assert!(msg(Limits::from_flags(2048, TASKS_DEFAULT)).contains("--ring-buffer-mb 2048"));
        let e = msg(Limits::from_flags(16, 10));
        assert!(
            e.starts_with("--max-tasks 10 is out of range (64 to 262144)"),
            "{e}"
        );
        assert!(Limits::from_flags(16, TASKS_MAX + 1).is_err());
        assert!(Limits::from_flags(16, TASKS_MIN).is_ok());
        let small = Limits {
            ring_buffer_bytes: 100,
            max_tasks: TASKS_DEFAULT,
        };
        assert!(crate::error::render_error(&small.check().unwrap_err()).contains("100 bytes"));
        for e in [
            msg(Limits::from_flags(3, 1)),
            msg(Limits::from_flags(16, 0)),
        ] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn map_sizes_follow_the_limits_and_filters_must_fit() {
        let l = Limits::from_flags(1, 100).unwrap();
        assert_eq!(
            l.map_sizes(),
            [
                (MAP_EVENTS, 1 << 20),
                (MAP_TRACED_TGIDS, 100),
                (MAP_IN_REQUEST, 400)
            ]
        );
        // The defaults are the sizes compiled into the object.
        let d = Limits::default().map_sizes();
        assert_eq!((d[1].1, d[2].1), (16384, 65536));
        let many = Filter {
            tgids: (1..=101).collect(),
            inodes: vec![],
        };
        let e = crate::error::render_error(&l.check_filter(&many).unwrap_err());
        assert!(
            e.contains("101 processes to trace, but --max-tasks is 100"),
            "{e}"
        );
        let files = Filter {
            tgids: vec![],
            inodes: (0..=INODES_MAX as u64).map(|i| (1, i)).collect(),
        };
        assert!(l.check_filter(&files).is_err());
        assert!(l.check_filter(&Filter::default()).is_ok());
    }

    #[test]
    fn map_errors_name_memlock_only_when_it_may_be_the_cause() {
        let capped = Memlock::Capped {
            from: 64 << 10,
            to: 64 << 10,
        };
        let e = crate::error::render_error(&map_create_error("EVENTS", Some(libc::EPERM), capped));
        assert!(
            e.starts_with("cannot create the eBPF map EVENTS: RLIMIT_MEMLOCK is 64 KiB"),
            "{e}"
        );
        assert!(e.contains("ulimit -l unlimited"), "{e}");
        let e = crate::error::render_error(&map_create_error("EVENTS", Some(libc::EINVAL), capped));
        assert!(
            !e.contains("RLIMIT_MEMLOCK") && e.contains("invalid argument"),
            "{e}"
        );
        let e = crate::error::render_error(&map_create_error(
            "IN_REQUEST",
            Some(libc::ENOMEM),
            Memlock::Unlimited,
        ));
        assert!(
            !e.contains("RLIMIT_MEMLOCK") && e.contains("--max-tasks"),
            "{e}"
        );
        assert_eq!(fmt_limit(libc::RLIM_INFINITY), "unlimited");
        assert_eq!(fmt_limit(8 << 20), "8 MiB");
        assert_eq!(fmt_limit(1000), "1000 bytes");
    }

    /// In the calling process: lower the soft limit to 64 KiB (hard limit `hard`, or kept),
    /// raise it, and check the outcome matches what getrlimit shows afterwards.
    fn lower_then_raise(hard: Option<u64>) -> bool {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe {
            libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur);
            let low = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: hard.unwrap_or(cur.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &low) != 0 {
                return false;
            }
            let outcome = raise_memlock();
            libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur);
            // As far as allowed: the soft limit is the hard one (unlimited with
            // CAP_SYS_RESOURCE), and the outcome says which.
            cur.rlim_cur == cur.rlim_max
                && match outcome {
                    Memlock::Raised { from } => {
                        from == 64 << 10 && cur.rlim_cur == libc::RLIM_INFINITY
                    }
                    Memlock::Capped { from, to } => from == 64 << 10 && to == cur.rlim_cur,
                    Memlock::Unlimited => false,
                }
        }
    }

    #[test]
    fn memlock_is_raised_as_far_as_allowed_in_a_child_with_a_low_limit() {
        // In a forked child (the limit is per process, and may not come back up).
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes syscalls (no allocation, no locks) before _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code =
                u8::from(lower_then_raise(None)) | u8::from(lower_then_raise(Some(64 << 10))) << 1;
            unsafe {
                libc::write(fds[1], (&code as *const u8).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut code = 255u8;
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], (&mut code as *mut u8).cast(), 1);
            libc::close(fds[0]);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(
            code, 3,
            "raise_memlock in the child (bit 0: soft only, bit 1: hard too)"
        );
    }
}
