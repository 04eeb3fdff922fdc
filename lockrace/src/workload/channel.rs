//! Whose turn is it? The state the two roles hand to each other, read and changed only while a
//! role holds the lock.
//!
//! Two encodings (docs/WORKLOAD.md):
//! - [`Channel::Cursor`], the seed's: the SHARED FILE OFFSET of the one open file description
//!   both roles use (`--share same`). The server's turn is when the cursor is 0: it `write()`s
//!   the decimal turn number at offset 0, leaving the cursor after it. The client's turn is when
//!   the cursor is non-zero: it `pread()`s the bytes before the cursor from offset 0 and seeks
//!   back to 0. Only the server moves the cursor off 0 and only the client moves it back, and
//!   the client reads with `pread` (never moving the cursor between its check and its reset),
//!   so the handoff cannot lose a turn even when the lock does not exclude anything.
//! - [`Channel::Counter`], for `--share reopen` (private cursors) and for `lockf` (which locks
//!   from the cursor, so the cursor must stay at 0): bytes 0..8 of the memfd hold a
//!   little-endian u64 handoff counter `h`, read with `pread` and written with `pwrite`. Even
//!   `h` is the server's turn, odd `h` the client's; each side's turn stores `h + 1`. After the
//!   server's turn `i` (0-based) `h = 2i + 1`, after the client's `h = 2i + 2`.
//!
//! Bytes 32..40 belong to `shared::Inside`; neither encoding ever touches them (a decimal u64
//! is at most 20 bytes).
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{Whence, lseek};

use super::Role;
use super::{LockKind, Share};

/// How a role finds out whose turn it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The shared file offset (the seed's protocol).
    Cursor,
    /// A u64 handoff counter in bytes 0..8.
    Counter,
}

/// Longest decimal the cursor channel ever reads back (a u64 needs 20 bytes).
const MAX_DECIMAL: usize = 20;

impl Channel {
    /// The seed's cursor only works when both roles share one offset and the lock does not
    /// depend on it.
    pub fn for_mode(lock: LockKind, share: Share) -> Channel {
        match (lock, share) {
            (LockKind::Lockf, _) | (_, Share::Reopen) => Channel::Counter,
            _ => Channel::Cursor,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Channel::Cursor => "shared cursor",
            Channel::Counter => "counter in bytes 0..8",
        }
    }

    /// Try `role`'s turn number `turn` (0-based). Returns true when it was the role's turn and
    /// the role did its part, false for a whoops (nothing changed).
    pub fn try_turn(self, role: Role, fd: BorrowedFd<'_>, turn: u64) -> io::Result<bool> {
        self.try_turn_then(role, fd, turn, || {})
    }

    /// [`Channel::try_turn`], calling `mine` once it is known to be the role's turn and before
    /// the write that hands the turn over (so what `mine` stores is visible to the other role
    /// by the time it can see its turn, even when the lock does not exclude).
    pub fn try_turn_then(
        self,
        role: Role,
        fd: BorrowedFd<'_>,
        turn: u64,
        mine: impl FnOnce(),
    ) -> io::Result<bool> {
        match self {
            Channel::Cursor => {
                let pos = lseek(fd.as_raw_fd(), 0, Whence::SeekCur)?;
                if !cursor_says_my_turn(role, pos) {
                    return Ok(false);
                }
                mine();
                match role {
                    Role::Server => {
                        let text = turn.to_string();
                        let n = nix::unistd::write(fd, text.as_bytes())?;
                        if n != text.len() {
                            return Err(io::Error::other(format!(
                                "short write to the memfd ({n} of {} bytes)",
                                text.len()
                            )));
                        }
                    }
                    Role::Client => {
                        let mut buf = [0u8; MAX_DECIMAL];
                        let len = usize::try_from(pos).unwrap_or(MAX_DECIMAL).min(MAX_DECIMAL);
                        nix::sys::uio::pread(fd, &mut buf[..len], 0)?;
                        lseek(fd.as_raw_fd(), 0, Whence::SeekSet)?;
                    }
                }
                Ok(true)
            }
            Channel::Counter => {
                let mut buf = [0u8; 8];
                let n = nix::sys::uio::pread(fd, &mut buf, 0)?;
                if n != buf.len() {
                    return Err(io::Error::other("the memfd is shorter than 8 bytes"));
                }
                let h = u64::from_le_bytes(buf);
                if !counter_says_my_turn(role, h) {
                    return Ok(false);
                }
                mine();
                let next = h.wrapping_add(1).to_le_bytes();
                let n = nix::sys::uio::pwrite(fd, &next, 0)?;
                if n != next.len() {
                    return Err(io::Error::other("short write to the memfd counter"));
                }
                Ok(true)
            }
        }
    }
}

/// Cursor channel: the server writes when the cursor is 0, the client reads when it is not.
pub fn cursor_says_my_turn(role: Role, pos: i64) -> bool {
    match role {
        Role::Server => pos == 0,
        Role::Client => pos != 0,
    }
}

/// Counter channel: even counts are the server's turn, odd ones the client's.
pub fn counter_says_my_turn(role: Role, h: u64) -> bool {
    match role {
        Role::Server => h.is_multiple_of(2),
        Role::Client => h % 2 == 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn memfd() -> OwnedFd {
        let fd = nix::sys::memfd::memfd_create(
            c"lockrace-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        fd
    }

    #[test]
    fn channel_choice() {
        assert_eq!(
            Channel::for_mode(LockKind::Ofd, Share::Same),
            Channel::Cursor
        );
        assert_eq!(
            Channel::for_mode(LockKind::Posix, Share::Same),
            Channel::Cursor
        );
        assert_eq!(
            Channel::for_mode(LockKind::Flock, Share::Same),
            Channel::Cursor
        );
        assert_eq!(
            Channel::for_mode(LockKind::Lockf, Share::Same),
            Channel::Counter
        );
        for l in [
            LockKind::Posix,
            LockKind::Ofd,
            LockKind::Flock,
            LockKind::Lockf,
        ] {
            assert_eq!(Channel::for_mode(l, Share::Reopen), Channel::Counter);
        }
    }

    #[test]
    fn turn_rules() {
        assert!(cursor_says_my_turn(Role::Server, 0));
        assert!(!cursor_says_my_turn(Role::Client, 0));
        assert!(cursor_says_my_turn(Role::Client, 3));
        assert!(!cursor_says_my_turn(Role::Server, 3));
        assert!(counter_says_my_turn(Role::Server, 0));
        assert!(counter_says_my_turn(Role::Client, 1));
        assert!(!counter_says_my_turn(Role::Client, 2));
    }

    #[test]
    fn cursor_channel_alternates_on_one_description() {
        let fd = memfd();
        let ch = Channel::Cursor;
        assert!(!ch.try_turn(Role::Client, fd.as_fd(), 0).unwrap());
        assert!(ch.try_turn(Role::Server, fd.as_fd(), 0).unwrap());
        assert!(!ch.try_turn(Role::Server, fd.as_fd(), 1).unwrap());
        assert!(ch.try_turn(Role::Client, fd.as_fd(), 0).unwrap());
        assert!(ch.try_turn(Role::Server, fd.as_fd(), 12345).unwrap());
        // The server wrote the decimal turn number at 0 and left the cursor after it.
        assert_eq!(lseek(fd.as_raw_fd(), 0, Whence::SeekCur).unwrap(), 5);
        let mut buf = [0u8; 5];
        nix::sys::uio::pread(fd.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf, b"12345");
    }

    #[test]
    fn counter_channel_alternates_and_keeps_the_cursor_at_zero() {
        let fd = memfd();
        let ch = Channel::Counter;
        for i in 0..3u64 {
            assert!(!ch.try_turn(Role::Client, fd.as_fd(), i).unwrap());
            assert!(ch.try_turn(Role::Server, fd.as_fd(), i).unwrap());
            assert!(!ch.try_turn(Role::Server, fd.as_fd(), i + 1).unwrap());
            assert!(ch.try_turn(Role::Client, fd.as_fd(), i).unwrap());
        }
        let mut buf = [0u8; 8];
        nix::sys::uio::pread(fd.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 6);
        assert_eq!(lseek(fd.as_raw_fd(), 0, Whence::SeekCur).unwrap(), 0);
    }
}
