//! Facts about the machine lockrace runs on, at the bottom of the house: the clock every
//! timestamp uses, the kernel's device numbering, the kernel release.
//!
//! Invariant: one clock. [`monotonic_ns`] is CLOCK_MONOTONIC, the clock of the kernel's
//! `bpf_ktime_get_ns()`, so the workload's stamps and the kernel's events join without
//! conversion.

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no syscall).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A userspace `st_dev` re-encoded the way the kernel stores `s_dev` (and the filelock
/// tracepoints print it): `(major << 20) | minor`.
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = libc::major(st_dev) as u64;
    let minor = libc::minor(st_dev) as u64;
    (major << 20) | minor
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_matches_mkdev() {
        // 8:1 (sda1) and 0:45 (an anonymous tmpfs/shmem device), encoded as userspace sees them.
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(0, 45)), 45);
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (259 << 20) | 300);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
