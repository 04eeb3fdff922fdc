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
    GLOBAL_WAKEUP_BYTES, IDS_PER_ENTRY, InodeKey, MAP_DROPS, MAP_EVENTS, MAP_TGID_TRACED,
    MAP_TRACED_INODES, MAP_TRACED_TGIDS, MAP_WAITING,
};

pub use super::limits::{
    IN_REQUEST_PER_TASK, INODES_MAX, Limits, Memlock, RING_MAX, RING_MIN, TASKS_DEFAULT, TASKS_MAX,
    TASKS_MIN, fmt_limit, map_create_error, raise_memlock,
};
use super::progstats::{self, ProgramStats};
use super::tracefs::{self, Offsets};
use crate::error::hinted;

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

/// Which programs a capture attaches (`--probes`; docs/BENCHMARKS.md measures them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Probes {
    /// All of [`PROGRAMS`]: every lock request from syscall entry to exit.
    #[default]
    #[value(
        help = "Every probe: each lock request from syscall entry to exit, every wakeup of a waiter"
    )]
    Full,
    /// [`lockrace_common::LEAN_PROBES`]: the lock decisions and the blocked waiters' wakeups
    /// and switches, one event per uncontended lock call instead of four (a smaller probe
    /// effect); no syscall enter/exit, fcntl_setlk, sched_wakeup or sched_migrate_task events.
    #[value(
        help = "Lock decisions and the wakeups and switches of blocked waiters; no syscall enter/exit"
    )]
    Lean,
    /// [`lockrace_common::FAST_PROBES`]: what `Lean` ships, plus the fcntl_setlk results that
    /// carry news (a wait ended by a signal, errors), through leaner programs (`tp_btf` for the
    /// scheduler, so no recursion misses there): cheaper per lock call than `Lean` (cargo
    /// xtask bench, "cost per lock call"). Falls back to `Lean` where the kernel has no BTF or
    /// refuses a program.
    #[value(help = "What lean ships plus fcntl results that carry news, through cheaper programs")]
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
}
