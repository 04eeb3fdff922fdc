//! Mutual exclusion, measured directly: an "inside" counter both roles share through a
//! `MAP_SHARED` mapping of the memfd, at bytes 32..40 (the turn channels use at most 0..20).
//!
//! After its lock call returns a role does `fetch_add(1)`; a previous value other than 0 means
//! the other side was inside its critical section too: an overlap, i.e. the lock did not
//! exclude. Before unlocking the role does `fetch_sub(1)`. Invariant: the mapping lives as long
//! as the `Inside` value; the counter is only touched through atomics.
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use super::MEMFD_SIZE;

/// Byte offset of the counter in the memfd.
pub const INSIDE_OFFSET: usize = 32;

/// The mapped counter.
pub struct Inside {
    base: NonNull<libc::c_void>,
    len: NonZeroUsize,
}

impl Inside {
    /// Map the memfd (which must be at least [`MEMFD_SIZE`] bytes) shared and writable.
    pub fn map(fd: BorrowedFd<'_>) -> anyhow::Result<Inside> {
        let len = NonZeroUsize::new(MEMFD_SIZE as usize).expect("MEMFD_SIZE is not zero");
        // SAFETY: a fresh mapping chosen by the kernel; nothing else aliases it in Rust.
        let base = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .context("cannot map the memfd shared")?;
        Ok(Inside { base, len })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned and at least MEMFD_SIZE (64) bytes long, so
        // offset 32 is 8-byte aligned and in bounds; it stays mapped while `self` lives.
        unsafe { &*(self.base.as_ptr().cast::<u8>().add(INSIDE_OFFSET) as *const AtomicU64) }
    }

    /// Entering the critical section: true when the other side was already inside.
    pub fn enter(&self) -> bool {
        self.counter().fetch_add(1, Ordering::SeqCst) != 0
    }

    /// Leaving the critical section.
    pub fn leave(&self) {
        self.counter().fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference into it outlives `self`.
        let _ = unsafe { munmap(self.base, self.len.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn two_mappings_see_one_counter() {
        let fd = nix::sys::memfd::memfd_create(
            c"lockrace-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        let a = Inside::map(fd.as_fd()).unwrap();
        let b = Inside::map(fd.as_fd()).unwrap();
        assert!(!a.enter());
        assert!(b.enter(), "b entered while a was inside");
        a.leave();
        b.leave();
        assert!(!b.enter());
        b.leave();
        // The bytes the turn channels use are untouched.
        let mut buf = [0u8; 32];
        nix::sys::uio::pread(fd.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(buf, [0u8; 32]);
    }
}
