//! Loading and attaching the eBPF programs.
//!
//! Invariants: offsets and filters are written as read-only globals before load (so the
//! verifier sees constants); every attached program's link is owned by the returned
//! [`Loaded`] and is detached when it is dropped (aya detaches on drop), also on error paths;
//! errors name the program and what the user can do.
use std::{os::fd::AsRawFd, path::Path};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, trace_point::TracePointLinkId},
};
use lockrace_common::{
    FilterConfig, GLOBAL_FILTER, GLOBAL_LOCK_OFFSETS, GLOBAL_SCHED_OFFSETS, GLOBAL_WAKEUP_BYTES,
    InodeKey, MAP_DROPS, MAP_EVENTS, MAP_TRACED_INODES, MAP_TRACED_TGIDS,
};

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

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    links: Vec<(&'static str, TracePointLinkId)>,
    pub offsets: Offsets,
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

/// Raise RLIMIT_MEMLOCK for kernels that still account BPF memory against it (< 5.11).
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
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
        check_privileges()?;
        if OBJECT.is_empty() {
            anyhow::bail!(
                "this lockrace binary was built without its eBPF object (AYA_BUILD_SKIP was set); rebuild it with `cargo xtask run`"
            );
        }
        if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < 4096 {
            anyhow::bail!(
                "ring buffer size {ring_buffer_bytes} is not a power of two of at least 4 KiB"
            );
        }
        let root = tracefs_root()?;
        let offsets = tracefs::resolve(&root).map_err(|e| {
            hinted(
                e.to_string(),
                "lockrace needs the filelock, sched and syscalls tracepoints (Linux 5.0 or later)",
            )
        })?;
        raise_memlock();

        let filter_cfg = FilterConfig {
            by_tgid: u32::from(!filter.tgids.is_empty() || !filter.inodes.is_empty()),
            by_inode: u32::from(!filter.inodes.is_empty()),
        };
        // Wake the reader only when an eighth of the ring is used; it also polls every
        // `capture::POLL_INTERVAL`, so small bursts are read promptly without a wakeup each.
        let wakeup_bytes = u64::from(ring_buffer_bytes / 8);
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_LOCK_OFFSETS, &offsets.lock[..], true)
            .override_global(GLOBAL_SCHED_OFFSETS, &offsets.sched, true)
            .override_global(GLOBAL_FILTER, &filter_cfg, true)
            .override_global(GLOBAL_WAKEUP_BYTES, &wakeup_bytes, true)
            .map_max_entries(MAP_EVENTS, ring_buffer_bytes)
            .load(OBJECT)
            .map_err(|e| match e {
                aya::EbpfError::MapError(m) => anyhow::Error::new(m)
                    .context("cannot create the eBPF maps (try a smaller --ring-buffer-mb)"),
                other => anyhow::Error::new(other).context("cannot load the eBPF object"),
            })?;

        if !filter.tgids.is_empty() {
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
            offsets,
        };
        for (category, name) in PROGRAMS {
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
            loaded.links.push((name, link));
        }
        Ok(loaded)
    }

    /// Detach every program now (events stop), keeping the maps readable.
    pub fn detach(&mut self) {
        for (name, link) in self.links.drain(..) {
            if let Some(p) = self.ebpf.program_mut(name) {
                let tp: Result<&mut TracePoint, _> = p.try_into();
                if let Err(e) = tp.map(|tp| tp.detach(link)) {
                    log::warn!("detaching {name}: {e}");
                }
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
        let map = self
            .ebpf
            .map(MAP_DROPS)
            .context("eBPF object has no DROPS map")?;
        let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(drops.get(&0, 0)?.iter().sum())
    }
}
