//! Loading and attaching the eBPF programs.
//!
//! Three probe sets ([`Probes`]): the classic tracepoint programs all (`Full`) or the lean
//! subset (`Lean`), and the programs of `Fast` (`lockrace_common::FAST_PROBES`: filelock on
//! classic tracepoints, the scheduler through `tp_btf`), whose struct offsets come from the
//! kernel's BTF ([`super::btf`]). When this kernel has no
//! BTF, or refuses a fast program, the fast set falls back to the lean classic programs with a
//! one-line notice, so a capture never fails for it.
//!
//! Invariants: offsets and filters are written as read-only globals before load (so the
//! verifier sees constants); every attached program's link is owned by the returned
//! [`Loaded`] and is detached when it is dropped (aya detaches on drop), also on error paths;
//! errors name the program and what the user can do. Sizes come from [`Limits`], checked
//! before anything is created; RLIMIT_MEMLOCK is raised before the maps are created (kernels
//! before 5.11 charge BPF memory to it; later ones use memcg and ignore it), and a map that
//! cannot be created names the limit when it may be the cause.
use std::{os::fd::AsRawFd, path::Path};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, ProgramError, TracePoint, tp_btf::BtfTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use lockrace_common::{
    Attach, DROPS_MAP_FULL, DROPS_RING_FULL, FAST_PROBES, FastOffsets, FilterConfig,
    GLOBAL_FAST_OFFSETS, GLOBAL_FILTER, GLOBAL_LOCK_OFFSETS, GLOBAL_SCHED_OFFSETS,
    GLOBAL_WAKEUP_BYTES, IDS_PER_ENTRY, InodeKey, MAP_DROPS, MAP_EVENTS, MAP_IN_REQUEST,
    MAP_TGID_TRACED, MAP_TRACED_INODES, MAP_TRACED_TGIDS, MAP_WAITING,
};

use super::progstats::{self, ProgramStats};
use super::tracefs::{self, Offsets};
use crate::app::hinted;

/// The compiled eBPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lockrace"));

/// What to trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Trace these processes (and what they fork). Empty with `inodes` empty: every task.
    pub tgids: Vec<u32>,
    /// Trace only lock events on these (dev, ino); tasks that lock them are followed.
    pub inodes: Vec<(u32, u64)>,
}

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

/// (category, tracepoint, program name). Program names equal tracepoint names.
pub const PROGRAMS: [(&str, &str); 14] = [
    ("filelock", "posix_lock_inode"),
    ("filelock", "flock_lock_inode"),
    ("filelock", "fcntl_setlk"),
    ("filelock", "locks_remove_posix"),
    ("sched", "sched_waking"),
    ("sched", "sched_wakeup"),
    ("sched", "sched_switch"),
    ("sched", "sched_migrate_task"),
    ("sched", "sched_process_fork"),
    ("sched", "sched_process_exit"),
    ("syscalls", "sys_enter_fcntl"),
    ("syscalls", "sys_exit_fcntl"),
    ("syscalls", "sys_enter_flock"),
    ("syscalls", "sys_exit_flock"),
];

/// Which programs a capture attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Probes {
    /// All of [`PROGRAMS`]: every lock request from syscall entry to exit.
    #[default]
    Full,
    /// [`lockrace_common::LEAN_PROBES`]: the lock decisions and the blocked waiters' wakeups
    /// and switches, one event per uncontended lock call instead of four (a smaller probe
    /// effect); no syscall enter/exit, fcntl_setlk, sched_wakeup or sched_migrate_task events.
    Lean,
    /// [`lockrace_common::FAST_PROBES`]: what `Lean` ships, plus the fcntl_setlk results that
    /// carry news (a wait ended by a signal, errors), through leaner programs (`tp_btf` for the
    /// scheduler, so no recursion misses there): cheaper per lock call than `Lean` (cargo
    /// xtask bench, "cost per lock call"). Falls back to `Lean` where the kernel has no BTF or
    /// refuses a program.
    Fast,
}

/// The environment variable that overrides the probe set of every capture (`full`, `lean`,
/// `fast`): a measurement switch for benchmarks until the command line offers the fast set.
pub const PROBES_ENV: &str = "LOCKRACE_PROBES";

impl Probes {
    /// Whether the classic program `program` (one of [`PROGRAMS`]) is attached.
    pub fn attaches(self, program: &str) -> bool {
        match self {
            Probes::Full => true,
            Probes::Lean => lockrace_common::LEAN_PROBES.contains(&program),
            Probes::Fast => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Probes::Full => "full",
            Probes::Lean => "lean",
            Probes::Fast => "fast",
        }
    }

    pub fn from_name(name: &str) -> Option<Probes> {
        [Probes::Full, Probes::Lean, Probes::Fast]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// `probes`, unless [`PROBES_ENV`] names another set (a bad value is an error).
    pub fn or_env(self) -> anyhow::Result<Probes> {
        match std::env::var(PROBES_ENV) {
            Ok(v) if !v.is_empty() => Probes::from_name(&v).ok_or_else(|| {
                hinted(
                    format!("{PROBES_ENV}={v} is not a probe set"),
                    "use full, lean or fast (or unset it)",
                )
            }),
            _ => Ok(self),
        }
    }
}

/// An attached program's link.
enum Link {
    Classic(TracePointLinkId),
    Btf(BtfTracePointLinkId),
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    links: Vec<(&'static str, Link)>,
    /// Every program attached in this capture, in attach order (kept after `detach`, for the
    /// program statistics).
    attached: Vec<&'static str>,
    pub offsets: Offsets,
    /// The probe set really attached (`Lean` when `Fast` fell back).
    pub probes: Probes,
    /// Why `Fast` fell back to `Lean`, when it did.
    pub fallback: Option<String>,
}

/// What the fast set needs from the kernel: its BTF (aya's, for loading `tp_btf` programs)
/// and the offsets read from it, and the size of the per-pid byte maps.
struct FastSetup {
    aya_btf: aya::Btf,
    offsets: FastOffsets,
    id_entries: u32,
}

/// Read this kernel's BTF and resolve the fast programs' offsets; the reason when it cannot.
fn fast_setup() -> Result<FastSetup, String> {
    let btf = match super::btf::Btf::from_sys()? {
        Some(b) => b,
        None => return Err("this kernel has no BTF (/sys/kernel/btf/vmlinux)".into()),
    };
    let offsets = super::btf::fast_offsets(&btf).map_err(|e| e.to_string())?;
    let aya_btf = aya::Btf::from_sys_fs().map_err(|e| format!("BTF: {e}"))?;
    Ok(FastSetup {
        aya_btf,
        offsets,
        id_entries: id_map_entries(pid_max()),
    })
}

/// `/proc/sys/kernel/pid_max` (the largest pid is one less); 4,194,304 (the kernel's limit on
/// 64-bit) when it cannot be read.
pub fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

/// The kernel's upper bound for pid_max on 64-bit (include/linux/threads.h `PID_MAX_LIMIT`).
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// Entries of a byte map holding every pid below `pid_max` ([`IDS_PER_ENTRY`] per entry).
pub fn id_map_entries(pid_max: u32) -> u32 {
    pid_max.clamp(1, PID_MAX_LIMIT).div_ceil(IDS_PER_ENTRY)
}

/// Set the byte of each of `ids` in a byte map (before any program is attached).
fn fill_byte_map(ebpf: &mut Ebpf, name: &str, ids: &[u32]) -> anyhow::Result<()> {
    let mut map: Array<_, u64> = Array::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("eBPF object has no {name} map"))?,
    )?;
    for &id in ids {
        let entry = id / IDS_PER_ENTRY;
        let mut bytes = map
            .get(&entry, 0)
            .map_err(|_| {
                hinted(
                    format!("pid {id} is above this kernel's pid_max"),
                    "pass the pid of a running process",
                )
            })?
            .to_le_bytes();
        bytes[(id % IDS_PER_ENTRY) as usize] = 1;
        map.set(entry, u64::from_le_bytes(bytes), 0)
            .with_context(|| format!("cannot add pid {id} to the filter"))?;
    }
    Ok(())
}

/// Check privileges up front so the user gets one clear line instead of a verifier EPERM.
fn check_privileges() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(hinted(
        "tracing needs root (CAP_BPF and CAP_PERFMON)",
        "run it with sudo, or pass --no-trace to run the workload untraced",
    ))
}

/// Find tracefs, mounting it when we can.
pub fn tracefs_root() -> anyhow::Result<std::path::PathBuf> {
    if let Some(root) = tracefs::find_root() {
        return Ok(root);
    }
    let target = Path::new("/sys/kernel/tracing");
    let mounted = nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    match mounted {
        Ok(()) if target.join("events").is_dir() => Ok(target.to_path_buf()),
        _ => Err(hinted(
            "tracefs is not mounted and could not be mounted",
            "mount it with `mount -t tracefs tracefs /sys/kernel/tracing`",
        )),
    }
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

/// Turn aya's program errors into one line; verifier errors keep the tail of the log.
fn program_error(name: &str, what: &str, err: ProgramError) -> anyhow::Error {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if io_error.raw_os_error() == Some(libc::EPERM) {
                return hinted(
                    format!("the kernel refused to load program {name} (EPERM)"),
                    "run as root; a lockdown or seccomp policy may also forbid BPF",
                );
            }
            anyhow::anyhow!(
                "the verifier rejected program {name}: {io_error}; log tail: {}",
                tail.join(" | ")
            )
        }
        other => anyhow::Error::new(other).context(format!("cannot {what} program {name}")),
    }
}

impl Loaded {
    /// Load the object with this kernel's offsets and the filter, then attach every program.
    pub fn load(filter: &Filter, ring_buffer_bytes: u32) -> anyhow::Result<Loaded> {
        Loaded::load_with(
            filter,
            &Limits {
                ring_buffer_bytes,
                ..Limits::default()
            },
        )
    }

    /// [`Loaded::load`] with every size given.
    pub fn load_with(filter: &Filter, limits: &Limits) -> anyhow::Result<Loaded> {
        Loaded::load_probes(filter, limits, Probes::Full)
    }

    /// [`Loaded::load_with`], attaching the programs of `probes` only.
    pub fn load_probes(filter: &Filter, limits: &Limits, probes: Probes) -> anyhow::Result<Loaded> {
        limits.check()?;
        limits.check_filter(filter)?;
        check_privileges()?;
        if OBJECT.is_empty() {
            anyhow::bail!(
                "this lockrace binary was built without its eBPF object (AYA_BUILD_SKIP was set); rebuild it with `cargo xtask run`"
            );
        }
        let root = tracefs_root()?;
        let offsets = tracefs::resolve(&root).map_err(|e| {
            hinted(
                e.to_string(),
                "lockrace needs the filelock, sched and syscalls tracepoints (Linux 5.0 or later)",
            )
        })?;
        let memlock = raise_memlock();
        if probes != Probes::Fast {
            return Loaded::load_set(filter, limits, probes, offsets, memlock, None);
        }
        let why = match fast_setup() {
            Ok(fast) => {
                match Loaded::load_set(
                    filter,
                    limits,
                    probes,
                    offsets.clone(),
                    memlock,
                    Some(&fast),
                ) {
                    Ok(l) => return Ok(l),
                    // Limits and privileges were checked: what fails here is a program or map
                    // this kernel does not take.
                    Err(e) => format!("{e:#}"),
                }
            }
            Err(why) => why,
        };
        eprintln!(
            "lockrace: the fast probes cannot run here ({why}); using the classic tracepoints of --probes lean"
        );
        let mut l = Loaded::load_set(filter, limits, Probes::Lean, offsets, memlock, None)?;
        l.fallback = Some(why);
        Ok(l)
    }

    /// Load the object and attach one probe set (`fast`: its BTF, for `Probes::Fast`).
    fn load_set(
        filter: &Filter,
        limits: &Limits,
        probes: Probes,
        offsets: Offsets,
        memlock: Memlock,
        fast: Option<&FastSetup>,
    ) -> anyhow::Result<Loaded> {
        let ring_buffer_bytes = limits.ring_buffer_bytes;
        let filter_cfg = FilterConfig {
            by_tgid: u32::from(!filter.tgids.is_empty() || !filter.inodes.is_empty()),
            by_inode: u32::from(!filter.inodes.is_empty()),
            lean: u32::from(probes == Probes::Lean),
            _pad: 0,
        };
        // Wake the reader only when an eighth of the ring is used; it also polls every
        // `capture::POLL_INTERVAL`, so small bursts are read promptly without a wakeup each.
        let wakeup_bytes = u64::from(ring_buffer_bytes / 8);
        let fast_offsets = fast.map(|f| f.offsets).unwrap_or_default();
        let id_entries = fast.map_or(1, |f| f.id_entries);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_LOCK_OFFSETS, &offsets.lock[..], true)
            .override_global(GLOBAL_SCHED_OFFSETS, &offsets.sched, true)
            .override_global(GLOBAL_FAST_OFFSETS, &fast_offsets, true)
            .override_global(GLOBAL_FILTER, &filter_cfg, true)
            .override_global(GLOBAL_WAKEUP_BYTES, &wakeup_bytes, true);
        for (map, size) in limits.map_sizes() {
            loader.map_max_entries(map, size);
        }
        // The byte maps of the fast set: one byte per possible pid (1 entry when unused).
        loader.map_max_entries(MAP_TGID_TRACED, id_entries);
        loader.map_max_entries(MAP_WAITING, id_entries);
        let mut ebpf = loader.load(OBJECT).map_err(|e| match e {
            aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) => {
                map_create_error(&name, io_error.raw_os_error(), memlock)
            }
            aya::EbpfError::MapError(m) => anyhow::Error::new(m)
                .context("cannot create the eBPF maps (try a smaller --ring-buffer-mb)"),
            other => anyhow::Error::new(other).context("cannot load the eBPF object"),
        })?;

        if !filter.tgids.is_empty() {
            if fast.is_some() {
                fill_byte_map(&mut ebpf, MAP_TGID_TRACED, &filter.tgids)?;
            } else {
                let mut tgids: HashMap<_, u32, u8> = HashMap::try_from(
                    ebpf.map_mut(MAP_TRACED_TGIDS)
                        .context("eBPF object has no TRACED_TGIDS map")?,
                )?;
                for &t in &filter.tgids {
                    tgids
                        .insert(t, 1, 0)
                        .with_context(|| format!("cannot add pid {t} to the filter"))?;
                }
            }
        }
        if !filter.inodes.is_empty() {
            let mut inodes: HashMap<_, InodeKey, u8> = HashMap::try_from(
                ebpf.map_mut(MAP_TRACED_INODES)
                    .context("eBPF object has no TRACED_INODES map")?,
            )?;
            for &(dev, ino) in &filter.inodes {
                inodes.insert(InodeKey { ino, dev, _pad: 0 }, 1, 0)?;
            }
        }

        let mut loaded = Loaded {
            ebpf,
            links: Vec::new(),
            attached: Vec::new(),
            offsets,
            probes,
            fallback: None,
        };
        if let Some(f) = fast {
            for p in FAST_PROBES {
                let name = p.program;
                let link = match p.attach {
                    Attach::Tracepoint(category) => {
                        let prog: &mut TracePoint = loaded
                            .ebpf
                            .program_mut(name)
                            .with_context(|| format!("eBPF object has no program {name}"))?
                            .try_into()
                            .with_context(|| format!("program {name} is not a tracepoint"))?;
                        prog.load().map_err(|e| program_error(name, "load", e))?;
                        Link::Classic(
                            prog.attach(category, p.tracepoint)
                                .map_err(|e| program_error(name, "attach", e))?,
                        )
                    }
                    Attach::BtfTracepoint => {
                        let prog: &mut BtfTracePoint = loaded
                            .ebpf
                            .program_mut(name)
                            .with_context(|| format!("eBPF object has no program {name}"))?
                            .try_into()
                            .with_context(|| format!("program {name} is not a BTF tracepoint"))?;
                        prog.load(p.tracepoint, &f.aya_btf)
                            .map_err(|e| program_error(name, "load", e))?;
                        Link::Btf(
                            prog.attach()
                                .map_err(|e| program_error(name, "attach", e))?,
                        )
                    }
                };
                loaded.links.push((name, link));
                loaded.attached.push(name);
            }
            return Ok(loaded);
        }
        for (category, name) in PROGRAMS {
            if !probes.attaches(name) {
                continue;
            }
            let prog: &mut TracePoint = loaded
                .ebpf
                .program_mut(name)
                .with_context(|| format!("eBPF object has no program {name}"))?
                .try_into()
                .with_context(|| format!("program {name} is not a tracepoint"))?;
            prog.load().map_err(|e| program_error(name, "load", e))?;
            let link = prog
                .attach(category, name)
                .map_err(|e| program_error(name, "attach", e))?;
            loaded.links.push((name, Link::Classic(link)));
            loaded.attached.push(name);
        }
        Ok(loaded)
    }

    /// The programs attached (their lockrace names).
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Each attached program's run count, run time and recursion misses as the kernel has
    /// them now (`stats_on`: BPF statistics were on for the capture, so runs and time count).
    pub fn program_stats(&self, stats_on: bool) -> Vec<ProgramStats> {
        self.attached
            .iter()
            .filter_map(|&name| {
                let prog = self.ebpf.program(name)?;
                let raw = match prog.fd() {
                    Ok(fd) => progstats::read(std::os::fd::AsFd::as_fd(fd)),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                match raw {
                    Ok(raw) => Some(progstats::program_stats(name, raw, stats_on)),
                    Err(e) => {
                        log::warn!("cannot read the statistics of program {name}: {e}");
                        None
                    }
                }
            })
            .collect()
    }

    /// Detach every program now (events stop), keeping the maps readable.
    pub fn detach(&mut self) {
        for (name, link) in self.links.drain(..) {
            let Some(p) = self.ebpf.program_mut(name) else {
                continue;
            };
            let done = match link {
                Link::Classic(link) => {
                    let tp: Result<&mut TracePoint, _> = p.try_into();
                    tp.map(|tp| tp.detach(link))
                }
                Link::Btf(link) => {
                    let tp: Result<&mut BtfTracePoint, _> = p.try_into();
                    tp.map(|tp| tp.detach(link))
                }
            };
            if let Err(e) = done {
                log::warn!("detaching {name}: {e}");
            }
        }
    }

    /// Take the ring buffer out (the reader owns it).
    pub fn take_ring(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(MAP_EVENTS)
            .context("eBPF object has no EVENTS map")?;
        let ring = RingBuf::try_from(map)?;
        log::debug!("ring buffer fd {}", ring.as_raw_fd());
        Ok(ring)
    }

    /// Records the kernel could not write, summed over CPUs.
    pub fn drops(&self) -> anyhow::Result<u64> {
        self.loss(DROPS_RING_FULL)
    }

    /// Tasks not followed because a filter map was full, summed over CPUs.
    pub fn map_full(&self) -> anyhow::Result<u64> {
        self.loss(DROPS_MAP_FULL)
    }

    fn loss(&self, slot: u32) -> anyhow::Result<u64> {
        let map = self
            .ebpf
            .map(MAP_DROPS)
            .context("eBPF object has no DROPS map")?;
        let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(drops.get(&slot, 0)?.iter().sum())
    }
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
        let msg = |r: anyhow::Result<Limits>| crate::app::render_error(&r.unwrap_err());
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
        assert!(crate::app::render_error(&small.check().unwrap_err()).contains("100 bytes"));
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
        let e = crate::app::render_error(&l.check_filter(&many).unwrap_err());
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
    fn probe_sets_have_names_and_the_byte_maps_cover_pid_max() {
        for p in [Probes::Full, Probes::Lean, Probes::Fast] {
            assert_eq!(Probes::from_name(p.name()), Some(p));
        }
        assert_eq!(Probes::from_name("quick"), None);
        // The fast set attaches none of the classic programs.
        assert!(PROGRAMS.iter().all(|(_, n)| !Probes::Fast.attaches(n)));
        // 8 pids per entry: pids 0..pid_max-1 all have a byte.
        assert_eq!(id_map_entries(32768), 4096);
        assert_eq!(id_map_entries(32769), 4097);
        assert_eq!(id_map_entries(0), 1);
        assert_eq!(id_map_entries(u32::MAX), PID_MAX_LIMIT / 8);
        assert!(pid_max() >= 301, "pid_max is at least 301 on Linux");
    }

    #[test]
    fn map_errors_name_memlock_only_when_it_may_be_the_cause() {
        let capped = Memlock::Capped {
            from: 64 << 10,
            to: 64 << 10,
        };
        let e = crate::app::render_error(&map_create_error("EVENTS", Some(libc::EPERM), capped));
        assert!(
            e.starts_with("cannot create the eBPF map EVENTS: RLIMIT_MEMLOCK is 64 KiB"),
            "{e}"
        );
        assert!(e.contains("ulimit -l unlimited"), "{e}");
        let e = crate::app::render_error(&map_create_error("EVENTS", Some(libc::EINVAL), capped));
        assert!(
            !e.contains("RLIMIT_MEMLOCK") && e.contains("invalid argument"),
            "{e}"
        );
        let e = crate::app::render_error(&map_create_error(
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
