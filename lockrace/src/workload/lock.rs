//! The four lock flavours, as the seed would call them: one blocking exclusive lock over the
//! whole file, and its release.
//!
//! - `posix`: `fcntl(F_SETLKW)` / `F_UNLCK`, `F_WRLCK` from byte 0 to EOF-and-beyond
//!   (`l_whence=SEEK_SET, l_start=0, l_len=0`); owned by the process.
//! - `ofd`: the same request through `F_OFD_SETLKW` (`l_pid` must be 0); owned by the open file
//!   description.
//! - `flock`: `flock(LOCK_EX)` / `flock(LOCK_UN)`; owned by the open file description.
//! - `lockf`: `lockf(F_LOCK, 0)` / `lockf(F_ULOCK, 0)`, a POSIX lock from the CURRENT offset to
//!   EOF-and-beyond. It covers the whole file only while the cursor is 0, so the workload never
//!   moves the cursor of a descriptor it uses with lockf (see `channel::Channel::for_mode`).
//!
//! [`lock_shared`] is the shared (read) request of the same flavours, for `--scenario upgrade`;
//! lockf has none.
//!
//! Invariant: no retries and no timeouts here; a blocking call interrupted by a signal returns
//! `EINTR` (the handlers in `crate::signals` have no `SA_RESTART`) and the caller decides.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::LockKind;

/// `struct flock` for a whole-file request of `l_type`.
fn whole_file(l_type: libc::c_int) -> libc::flock {
    // SAFETY: `libc::flock` is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    fl.l_pid = 0;
    fl
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, l_type: libc::c_int) -> io::Result<()> {
    let fl = whole_file(l_type);
    // SAFETY: `fl` outlives the call; the kernel only reads it for SETLK-style commands.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &fl) })
}

/// Take the lock, blocking until granted. `EINTR` is returned as is.
pub fn lock(kind: LockKind, fd: BorrowedFd<'_>) -> io::Result<()> {
    match kind {
        LockKind::Posix => fcntl_lock(fd, libc::F_SETLKW, libc::F_WRLCK),
        LockKind::Ofd => fcntl_lock(fd, libc::F_OFD_SETLKW, libc::F_WRLCK),
        // SAFETY: plain syscalls on a borrowed, open descriptor.
        LockKind::Flock => check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) }),
        LockKind::Lockf => check(unsafe { libc::lockf(fd.as_raw_fd(), libc::F_LOCK, 0) }),
    }
}

/// Take the shared lock (`F_RDLCK` / `LOCK_SH`), blocking until granted. lockf has no shared
/// lock: `EINVAL`.
pub fn lock_shared(kind: LockKind, fd: BorrowedFd<'_>) -> io::Result<()> {
    match kind {
        LockKind::Posix => fcntl_lock(fd, libc::F_SETLKW, libc::F_RDLCK),
        LockKind::Ofd => fcntl_lock(fd, libc::F_OFD_SETLKW, libc::F_RDLCK),
        // SAFETY: a plain syscall on a borrowed, open descriptor.
        LockKind::Flock => check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_SH) }),
        LockKind::Lockf => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// Try the exclusive lock without waiting (`F_SETLK`, `F_OFD_SETLK`, `LOCK_EX | LOCK_NB`):
/// `Ok(false)` when another owner's lock conflicts (EAGAIN / EACCES / EWOULDBLOCK). lockf's
/// `F_TLOCK` is the same request as posix's.
pub fn try_lock(kind: LockKind, fd: BorrowedFd<'_>) -> io::Result<bool> {
    let r = match kind {
        LockKind::Posix => fcntl_lock(fd, libc::F_SETLK, libc::F_WRLCK),
        LockKind::Ofd => fcntl_lock(fd, libc::F_OFD_SETLK, libc::F_WRLCK),
        // SAFETY: plain syscalls on a borrowed, open descriptor.
        LockKind::Flock => {
            check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })
        }
        LockKind::Lockf => check(unsafe { libc::lockf(fd.as_raw_fd(), libc::F_TLOCK, 0) }),
    };
    match r {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Release the lock taken by [`lock`].
pub fn unlock(kind: LockKind, fd: BorrowedFd<'_>) -> io::Result<()> {
    match kind {
        LockKind::Posix => fcntl_lock(fd, libc::F_SETLKW, libc::F_UNLCK),
        LockKind::Ofd => fcntl_lock(fd, libc::F_OFD_SETLKW, libc::F_UNLCK),
        // SAFETY: plain syscalls on a borrowed, open descriptor.
        LockKind::Flock => check(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) }),
        LockKind::Lockf => check(unsafe { libc::lockf(fd.as_raw_fd(), libc::F_ULOCK, 0) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn whole_file_request_is_from_zero_to_infinity() {
        let fl = whole_file(libc::F_WRLCK);
        assert_eq!(fl.l_type, libc::F_WRLCK as libc::c_short);
        assert_eq!(fl.l_whence, libc::SEEK_SET as libc::c_short);
        assert_eq!((fl.l_start, fl.l_len, fl.l_pid), (0, 0, 0));
    }

    #[test]
    fn every_flavour_locks_and_unlocks_a_memfd() {
        let fd = nix::sys::memfd::memfd_create(
            c"lockrace-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        for kind in [
            LockKind::Posix,
            LockKind::Ofd,
            LockKind::Flock,
            LockKind::Lockf,
        ] {
            lock(kind, fd.as_fd()).unwrap();
            // Taking it again through the same owner succeeds at once (a conversion, no wait).
            lock(kind, fd.as_fd()).unwrap();
            unlock(kind, fd.as_fd()).unwrap();
            if kind == LockKind::Lockf {
                assert!(lock_shared(kind, fd.as_fd()).is_err());
            } else {
                // Shared, then upgraded through the same owner with nobody else around.
                lock_shared(kind, fd.as_fd()).unwrap();
                lock(kind, fd.as_fd()).unwrap();
                unlock(kind, fd.as_fd()).unwrap();
            }
            assert!(try_lock(kind, fd.as_fd()).unwrap());
            unlock(kind, fd.as_fd()).unwrap();
        }
    }

    #[test]
    fn try_lock_reports_a_conflict_as_false() {
        let fd = nix::sys::memfd::memfd_create(
            c"lockrace-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        // Two open file descriptions: OFD and flock locks of one conflict with the other's.
        let a = crate::workload::handshake::reopen(fd.as_fd()).unwrap();
        let b = crate::workload::handshake::reopen(fd.as_fd()).unwrap();
        for kind in [LockKind::Ofd, LockKind::Flock] {
            lock(kind, a.as_fd()).unwrap();
            assert!(!try_lock(kind, b.as_fd()).unwrap(), "{kind:?}");
            unlock(kind, a.as_fd()).unwrap();
            assert!(try_lock(kind, b.as_fd()).unwrap(), "{kind:?}");
            unlock(kind, b.as_fd()).unwrap();
        }
    }
}
