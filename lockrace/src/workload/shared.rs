//! Mutual exclusion, measured directly: an "inside" counter both roles share through a
//! `MAP_SHARED` mapping of the memfd, at bytes 32..40 (the turn channels use at most 0..20).
//!
//! After its lock call returns a role does `fetch_add(1)`; a previous value other than 0 means
//! the other side was inside its critical section too: an overlap, i.e. the lock did not
//! exclude. Before unlocking the role does `fetch_sub(1)`. Invariant: the mapping lives as long
//! as the `Inside` value; the counter is only touched through atomics.
//!
//! The same mapping carries the other shared words (the whole 64-byte layout):
//!
//! | bytes  | what                                                                   |
//! |--------|------------------------------------------------------------------------|
//! | 0..20  | turn channel (`channel`), or the eventfd turn counter (u64 at 0), or   |
//! |        | the upgrade scenario's words (u32 at 0, 4, 8)                          |
//! | 24..32 | the client's handoff stamp (CLOCK_MONOTONIC ns, u64)                   |
//! | 32..40 | the inside counter                                                     |
//! | 40..48 | the server's handoff stamp                                             |
//! | 48..56 | the two futex turn words (u32 each; `sync::futex_word_index`)          |
//! | 56..64 | the server's and the client's pid (u32 each; eventfd/futex/scenarios)  |
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::Context;
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use super::MEMFD_SIZE;

/// Byte offset of the counter in the memfd.
pub const INSIDE_OFFSET: usize = 32;
/// The eventfd turn counter (u64): even = the server's turn, odd = the client's.
pub const EVENTFD_TURN_OFFSET: usize = 0;
/// The upgrade scenario's words (u32 each): phase, upgraded round, client-exclusive round.
pub const SCENARIO_OFFSET: usize = 0;
/// Handoff stamps (u64): each role writes its own, just before it hands the turn over.
pub const CLIENT_STAMP_OFFSET: usize = 24;
pub const SERVER_STAMP_OFFSET: usize = 40;
/// The first of the two futex turn words (u32 each, at 48 and 52): the handoff numbers.
pub const FUTEX_OFFSET: usize = 48;
/// Each role's pid (u32), so the other can tell a dead peer from a slow one.
pub const SERVER_PID_OFFSET: usize = 56;
pub const CLIENT_PID_OFFSET: usize = 60;

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

    /// The u64 at `offset` (8-byte aligned, within the 64 bytes).
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= MEMFD_SIZE as usize);
        // SAFETY: the mapping is page-aligned and MEMFD_SIZE long (checked above), so the word
        // is aligned and in bounds; it stays mapped while `self` lives.
        unsafe { &*(self.base.as_ptr().cast::<u8>().add(offset) as *const AtomicU64) }
    }

    /// The u32 at `offset` (4-byte aligned, within the 64 bytes).
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= MEMFD_SIZE as usize);
        // SAFETY: as for `u64_at`.
        unsafe { &*(self.base.as_ptr().cast::<u8>().add(offset) as *const AtomicU32) }
    }

    /// `role`'s handoff stamp.
    pub fn stamp(&self, role: super::Role) -> &AtomicU64 {
        self.u64_at(match role {
            super::Role::Server => SERVER_STAMP_OFFSET,
            super::Role::Client => CLIENT_STAMP_OFFSET,
        })
    }

    /// `role`'s pid slot.
    pub fn pid(&self, role: super::Role) -> &AtomicU32 {
        self.u32_at(match role {
            super::Role::Server => SERVER_PID_OFFSET,
            super::Role::Client => CLIENT_PID_OFFSET,
        })
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

    #[test]
    fn shared_words_do_not_overlap_and_land_where_documented() {
        use crate::workload::Role;
        let fd = nix::sys::memfd::memfd_create(
            c"lockrace-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        let m = Inside::map(fd.as_fd()).unwrap();
        m.stamp(Role::Client).store(u64::MAX, Ordering::SeqCst);
        m.stamp(Role::Server).store(u64::MAX, Ordering::SeqCst);
        m.u32_at(FUTEX_OFFSET).store(u32::MAX, Ordering::SeqCst);
        m.u32_at(FUTEX_OFFSET + 4).store(u32::MAX, Ordering::SeqCst);
        m.pid(Role::Server).store(u32::MAX, Ordering::SeqCst);
        m.pid(Role::Client).store(u32::MAX, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        nix::sys::uio::pread(fd.as_fd(), &mut buf, 0).unwrap();
        let set: Vec<usize> = (0..64).filter(|&i| buf[i] == 0xff).collect();
        let want: Vec<usize> = (24..32).chain(40..64).collect();
        assert_eq!(set, want);
        // Neither the channels (0..20) nor the inside counter were touched.
        assert!(!m.enter());
        m.leave();
    }
}
