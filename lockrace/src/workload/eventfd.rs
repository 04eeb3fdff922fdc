//! eventfd(2) for the `--sync eventfd` handoff: creation, recognition of a received one, a
//! bounded wait, and the 8-byte read/write.
//!
//! Invariants: waits are bounded (`poll` with a timeout, so a dead peer cannot hang a role);
//! `EINTR` and `EAGAIN` are reported as "nothing yet", never as errors; a read consumes the
//! whole counter (no `EFD_SEMAPHORE`), a write adds 1.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;

/// A new blocking, close-on-exec eventfd with counter 0.
pub fn create() -> anyhow::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes an initial value and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("cannot create an eventfd");
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `/proc/self/fd/N` says a descriptor is: `eventfd`, `memfd`, `pipe`, `socket`, ...
pub fn describe(fd: BorrowedFd<'_>) -> String {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    describe_link(&link).unwrap_or_else(|| match nix::sys::stat::fstat(fd.as_raw_fd()) {
        Ok(st) => super::handshake::describe_mode(st.st_mode).to_string(),
        Err(_) => "descriptor that cannot be inspected".to_string(),
    })
}

/// The kind of descriptor a `/proc/self/fd` link names, when the link alone tells.
pub fn describe_link(link: &str) -> Option<String> {
    if let Some(anon) = link.strip_prefix("anon_inode:") {
        let name = anon.trim_start_matches('[').trim_end_matches(']');
        return Some(name.to_string());
    }
    if link.starts_with("/memfd:") {
        return Some("memfd".to_string());
    }
    if link.starts_with("pipe:") {
        return Some("pipe".to_string());
    }
    if link.starts_with("socket:") {
        return Some("socket".to_string());
    }
    None
}

pub fn is_eventfd(fd: BorrowedFd<'_>) -> bool {
    describe(fd) == "eventfd"
}

/// Wait at most `timeout` for `fd` to become readable. `Ok(false)`: timed out or interrupted.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut p = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(p.as_mut_ptr(), 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0 && p[0].revents & libc::POLLIN != 0)
}

/// Take the counter (blocking if it is 0 on a blocking eventfd). `Ok(None)`: EINTR/EAGAIN.
pub fn read(fd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    let mut buf = [0u8; 8];
    // SAFETY: an 8-byte buffer, as eventfd reads require.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR | libc::EAGAIN) => Ok(None),
            _ => Err(e),
        };
    }
    if n != 8 {
        return Err(io::Error::other(format!("short eventfd read ({n} bytes)")));
    }
    Ok(Some(u64::from_ne_bytes(buf)))
}

/// Add 1 to the counter (wakes a reader).
pub fn signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    loop {
        // SAFETY: an 8-byte buffer, as eventfd writes require.
        let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(if n < 0 {
            e
        } else {
            io::Error::other(format!("short eventfd write ({n} bytes)"))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn signal_then_read_and_a_bounded_wait() {
        let fd = create().unwrap();
        assert!(is_eventfd(fd.as_fd()));
        assert!(!wait_readable(fd.as_fd(), Duration::from_millis(10)).unwrap());
        signal(fd.as_fd()).unwrap();
        signal(fd.as_fd()).unwrap();
        assert!(wait_readable(fd.as_fd(), Duration::from_millis(10)).unwrap());
        assert_eq!(read(fd.as_fd()).unwrap(), Some(2));
        assert!(!wait_readable(fd.as_fd(), Duration::from_millis(10)).unwrap());
    }

    #[test]
    fn descriptors_are_named() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(describe(r.as_fd()), "pipe");
        assert!(!is_eventfd(r.as_fd()));
        let m = super::super::handshake::create_memfd().unwrap();
        assert_eq!(describe(m.as_fd()), "memfd");
        let f = tempfile::tempfile().unwrap();
        assert_eq!(describe(f.as_fd()), "regular file");
        assert_eq!(
            describe_link("anon_inode:[timerfd]").as_deref(),
            Some("timerfd")
        );
        assert_eq!(describe_link("/tmp/x"), None);
    }
}
