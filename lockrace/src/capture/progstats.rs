//! What each attached program cost and missed: run count, run time and recursion misses read
//! from the kernel at the end of a capture (`BPF_OBJ_GET_INFO_BY_FD`), and turning the
//! kernel's run-time statistics on for the length of a capture ([`StatsGuard`]).
//!
//! Invariants:
//! - `recursion_misses` counts the times the kernel did not run a program because another
//!   BPF program was running on that CPU (classic tracepoint programs share one per-CPU
//!   guard): every miss is an event the capture never saw. The kernel counts misses always;
//!   it is `None` only on kernels before 5.12, which do not report them.
//! - run count and run time are counted by the kernel only while BPF statistics are on, so
//!   [`ProgramStats::runs`] and [`ProgramStats::ns_per_run`] are `None` unless the capture
//!   turned them on (a count of 0 would be a lie).
//! - statistics are turned on with `BPF_ENABLE_STATS`, whose file descriptor keeps them on
//!   only while it is open: they go off when the guard drops or the process dies, even by
//!   SIGKILL. Kernels before 5.8 lack it; then the `kernel.bpf_stats_enabled` sysctl is set and
//!   restored when the guard drops (not after a SIGKILL: the only case that can leave it on).
use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, OwnedFd},
};

/// One program's figures at the end of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// lockrace's name of the program (the ELF symbol, e.g. `fast_posix_lock`).
    pub name: String,
    /// Runs while BPF statistics were on; None when they were off.
    pub runs: Option<u64>,
    /// Nanoseconds spent in the program while statistics were on; None when they were off.
    pub run_time_ns: Option<u64>,
    /// Times the kernel skipped the program (lost events); None before Linux 5.12.
    pub recursion_misses: Option<u64>,
}

impl ProgramStats {
    /// Mean nanoseconds per run, when statistics were on and it ran.
    pub fn ns_per_run(&self) -> Option<f64> {
        match (self.runs, self.run_time_ns) {
            (Some(n), Some(t)) if n > 0 => Some(t as f64 / n as f64),
            _ => None,
        }
    }
}

/// The start of `struct bpf_prog_info` (include/uapi/linux/bpf.h) up to the fields read here;
/// the kernel copies at most as many bytes as it knows and says how many in `info_len`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgInfo {
    type_: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
    /// Since 5.1.
    run_time_ns: u64,
    run_cnt: u64,
    /// Since 5.12.
    recursion_misses: u64,
}
const _: () = assert!(core::mem::offset_of!(ProgInfo, run_time_ns) == 192);
const _: () = assert!(core::mem::offset_of!(ProgInfo, recursion_misses) == 208);
const _: () = assert!(core::mem::size_of::<ProgInfo>() == 216);

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The kernel's figures for one program: (run_cnt, run_time_ns, recursion_misses when the
/// kernel has the field).
pub fn read(fd: BorrowedFd<'_>) -> io::Result<(u64, u64, Option<u64>)> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: core::mem::size_of::<ProgInfo>() as u32,
        info: (&mut info as *mut ProgInfo) as u64,
    };
    // SAFETY: `attr` and `info` are valid for the sizes given; the kernel writes at most
    // `info_len` bytes of `info` and updates `info_len`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            core::mem::size_of::<InfoAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(from_info(&info, attr.info_len as usize))
}

/// The fields a kernel that copied `len` bytes knows.
fn from_info(info: &ProgInfo, len: usize) -> (u64, u64, Option<u64>) {
    let has = |off: usize| len >= off + 8;
    let run_time = if has(core::mem::offset_of!(ProgInfo, run_time_ns)) {
        info.run_time_ns
    } else {
        0
    };
    let runs = if has(core::mem::offset_of!(ProgInfo, run_cnt)) {
        info.run_cnt
    } else {
        0
    };
    let misses =
        has(core::mem::offset_of!(ProgInfo, recursion_misses)).then_some(info.recursion_misses);
    (runs, run_time, misses)
}

/// Build a program's figures from what the kernel said and whether statistics were on.
pub fn program_stats(name: &str, raw: (u64, u64, Option<u64>), stats_on: bool) -> ProgramStats {
    let (runs, time, misses) = raw;
    ProgramStats {
        name: name.to_string(),
        runs: stats_on.then_some(runs),
        run_time_ns: stats_on.then_some(time),
        recursion_misses: misses,
    }
}

/// One stderr line per program, for `lockrace record`: its runs and ns per run when BPF
/// statistics were on, its recursion misses always (when the kernel counts them).
pub fn summary_lines(programs: &[ProgramStats]) -> Vec<String> {
    programs
        .iter()
        .filter(|p| p.runs.is_some() || p.recursion_misses.is_some_and(|m| m > 0))
        .map(|p| {
            let mut s = format!("lockrace: program {}:", p.name);
            if let Some(n) = p.runs {
                s.push_str(&format!(" {n} runs,"));
                match p.ns_per_run() {
                    Some(ns) => s.push_str(&format!(" {ns:.1} ns/run,")),
                    None => s.push_str(" - ns/run,"),
                }
            }
            match p.recursion_misses {
                Some(m) => s.push_str(&format!(" {m} recursion misses")),
                None => s.push_str(" recursion misses not reported by this kernel"),
            }
            s
        })
        .collect()
}

/// How BPF statistics were turned on.
#[derive(Debug)]
enum How {
    /// `BPF_ENABLE_STATS`: on while this descriptor is open.
    Fd(#[allow(dead_code)] OwnedFd),
    /// The sysctl was written; restore this value.
    Sysctl(String),
    /// They were on already (the sysctl said 1): nothing to undo.
    AlreadyOn,
}

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// BPF run-time statistics on for as long as it lives (see the module doc).
#[derive(Debug)]
pub struct StatsGuard {
    how: How,
}

impl StatsGuard {
    /// Turn statistics on: `BPF_ENABLE_STATS`, else the sysctl (restored on drop).
    pub fn enable() -> io::Result<StatsGuard> {
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Ok(StatsGuard { how: How::Fd(fd) }),
            Err(e) => {
                log::debug!("BPF_ENABLE_STATS: {e}; using {SYSCTL}");
                let old = std::fs::read_to_string(SYSCTL)?.trim().to_string();
                if old == "1" {
                    return Ok(StatsGuard {
                        how: How::AlreadyOn,
                    });
                }
                std::fs::write(SYSCTL, "1")?;
                Ok(StatsGuard {
                    how: How::Sysctl(old),
                })
            }
        }
    }

    /// "BPF_ENABLE_STATS" or the sysctl, for messages.
    pub fn method(&self) -> &'static str {
        match self.how {
            How::Fd(_) => "BPF_ENABLE_STATS",
            How::Sysctl(_) => "kernel.bpf_stats_enabled",
            How::AlreadyOn => "kernel.bpf_stats_enabled (already on)",
        }
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        if let How::Sysctl(old) = &self.how
            && let Err(e) = std::fs::write(SYSCTL, old)
        {
            log::warn!("cannot restore {SYSCTL} to {old}: {e}");
        }
    }
}

/// The sysctl's current value (`0` or `1`), for tests and messages.
pub fn sysctl_value() -> io::Result<String> {
    Ok(std::fs::read_to_string(SYSCTL)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_kernels_copy_fewer_fields_and_misses_degrade_to_none() {
        let info = ProgInfo {
            run_time_ns: 5000,
            run_cnt: 50,
            recursion_misses: 3,
            ..Default::default()
        };
        assert_eq!(from_info(&info, 216), (50, 5000, Some(3)));
        // 5.1 - 5.11: run_time_ns and run_cnt, no recursion_misses.
        assert_eq!(from_info(&info, 208), (50, 5000, None));
        // Before 5.1: none of them.
        assert_eq!(from_info(&info, 192), (0, 0, None));
    }

    #[test]
    fn summary_lines_show_costs_when_measured_and_misses_when_any() {
        let on = program_stats("fast_posix_lock", (2_000_000, 164_600_000, Some(0)), true);
        let missed = program_stats("sched_waking", (0, 0, Some(390)), false);
        let quiet = program_stats("sched_switch", (0, 0, Some(0)), false);
        assert_eq!(
            summary_lines(&[on, missed, quiet]),
            [
                "lockrace: program fast_posix_lock: 2000000 runs, 82.3 ns/run, 0 recursion misses",
                "lockrace: program sched_waking: 390 recursion misses",
            ]
        );
    }

    #[test]
    fn runs_and_time_are_none_unless_statistics_were_on() {
        let on = program_stats("fast_switch", (10, 1234, Some(0)), true);
        assert_eq!(on.runs, Some(10));
        assert_eq!(on.ns_per_run(), Some(123.4));
        let off = program_stats("fast_switch", (0, 0, Some(2)), false);
        assert_eq!(
            (off.runs, off.ns_per_run(), off.recursion_misses),
            (None, None, Some(2))
        );
        let never_ran = program_stats("x", (0, 0, None), true);
        assert_eq!(never_ran.ns_per_run(), None);
    }
}
