//! FUTEX_WAIT / FUTEX_WAKE on a 32-bit word of the shared memfd mapping.
//!
//! The two roles are different processes, so the futex is a SHARED one: no
//! `FUTEX_PRIVATE_FLAG` (a private futex is keyed by the address space and would never wake the
//! other process). The kernel keys a shared futex by the mapped page (inode + offset), so the
//! two mappings of the memfd at different addresses meet on one futex.
//!
//! Invariants: `wait` always has a timeout (relative, CLOCK_MONOTONIC) so no caller can hang;
//! every outcome the kernel can report is a variant of [`Wait`] (woken, value already changed,
//! timed out, interrupted); callers re-check the word after every return, since a wakeup is
//! only a hint (spurious wakeups are allowed).
use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Returned 0: a FUTEX_WAKE (or a spurious wakeup). Re-check the word.
    Woken,
    /// EAGAIN: the word was no longer `expected` when the kernel looked. Re-check the word.
    Changed,
    /// ETIMEDOUT.
    TimedOut,
    /// EINTR: a signal arrived.
    Interrupted,
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Sleep while `*word == expected`, at most `timeout`.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> io::Result<Wait> {
    let ts = timespec(timeout);
    // SAFETY: FUTEX_WAIT reads the u32 at `word` (valid and aligned for as long as the borrow
    // lives) and the timespec; the remaining arguments are unused.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return Ok(Wait::Woken);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Wait::Changed),
        Some(libc::ETIMEDOUT) => Ok(Wait::TimedOut),
        Some(libc::EINTR) => Ok(Wait::Interrupted),
        _ => Err(e),
    }
}

/// Wake at most `n` waiters of `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, n: i32) -> io::Result<usize> {
    // SAFETY: FUTEX_WAKE only uses the address as a key; the other arguments are unused.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn a_changed_word_returns_at_once_and_a_timeout_times_out() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 4, Duration::from_secs(5)).unwrap(), Wait::Changed);
        let t0 = Instant::now();
        assert_eq!(
            wait(&w, 5, Duration::from_millis(20)).unwrap(),
            Wait::TimedOut
        );
        assert!(t0.elapsed() >= Duration::from_millis(15));
        assert_eq!(wake(&w, 1).unwrap(), 0, "nobody waits");
    }

    #[test]
    fn a_wake_ends_a_wait_in_another_thread() {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let waiter = std::thread::spawn(move || {
            let t0 = Instant::now();
            while w2.load(Ordering::Acquire) == 0 {
                let r = wait(&w2, 0, Duration::from_secs(10)).unwrap();
                assert_ne!(r, Wait::TimedOut);
            }
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::Release);
        wake(&w, 1).unwrap();
        assert!(waiter.join().unwrap() < Duration::from_secs(5));
    }
}
