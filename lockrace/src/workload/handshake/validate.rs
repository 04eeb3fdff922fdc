//! What a received datagram must carry, and every way it can be refused ([`Rejection`], each
//! with its own message): a short text greeting, exactly the descriptors the `--sync` mode
//! expects ([`Expect`]), and a memfd that is 64 bytes, sealed, opened read-write.
//!
//! Invariant: validation takes the [`Received`] by value, so every descriptor it carried is
//! closed on every rejection (the `OwnedFd`s drop with it).
use super::*;

/// Why a datagram was refused. Each case has its own message.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The payload is longer than [`MAX_PAYLOAD`] bytes.
    Oversized {
        len: usize,
    },
    /// The payload is not a short text greeting (bytes outside printable ASCII).
    Garbage {
        len: usize,
    },
    NoFd,
    TooMany {
        count: usize,
        truncated: bool,
    },
    NotMemfd {
        what: String,
    },
    NotReadWrite,
    Unsealed {
        missing: Vec<&'static str>,
    },
    WriteSealed,
    WrongSize {
        size: u64,
    },
    Unreadable {
        why: String,
    },
    /// `--sync eventfd`: not exactly three descriptors.
    EventfdCount {
        count: usize,
        truncated: bool,
    },
    /// `--sync eventfd`: descriptor `index` (1-based) is not an eventfd.
    NotEventfd {
        index: usize,
        what: String,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Oversized { len } => write!(
                f,
                "the datagram is {len} bytes long, more than the {MAX_PAYLOAD}-byte greeting a \
                 client sends; closed what it carried"
            ),
            Rejection::Garbage { len } => write!(
                f,
                "the datagram's {len}-byte payload is binary data, not a client's greeting; \
                 closed what it carried"
            ),
            Rejection::NoFd => f.write_str(
                "the datagram carried no file descriptor (expected the client's memfd)",
            ),
            Rejection::TooMany { count, truncated } => write!(
                f,
                "the datagram carried {}{count} file descriptors, expected exactly one; closed them all",
                if *truncated { "more than " } else { "" }
            ),
            Rejection::NotMemfd { what } => {
                write!(f, "the received descriptor is a {what}, not a memfd; closed it")
            }
            Rejection::NotReadWrite => {
                f.write_str("the received memfd is not open read-write; closed it")
            }
            Rejection::Unsealed { missing } => write!(
                f,
                "the received memfd is not sealed (missing {}); closed it",
                missing.join(", ")
            ),
            Rejection::WriteSealed => f.write_str(
                "the received memfd is write-sealed (F_SEAL_WRITE or F_SEAL_FUTURE_WRITE); closed it",
            ),
            Rejection::WrongSize { size } => write!(
                f,
                "the received memfd is {size} bytes, expected {MEMFD_SIZE}; closed it"
            ),
            Rejection::Unreadable { why } => {
                write!(f, "cannot inspect the received descriptor: {why}; closed it")
            }
            Rejection::EventfdCount { count, truncated } => write!(
                f,
                "the datagram carried {}{count} file descriptor{}, expected the memfd and 2 \
                 eventfds (--sync eventfd); closed them all",
                if *truncated { "more than " } else { "" },
                if *count == 1 { "" } else { "s" }
            ),
            Rejection::NotEventfd { index, what } => write!(
                f,
                "descriptor {index} of the datagram is a {what}, not an eventfd (--sync \
                 eventfd); closed them all"
            ),
        }
    }
}

const EVENTFD_HINT: &str = "with --sync eventfd the client sends its memfd, the server's eventfd \
                            and its own eventfd, in that order, in one datagram; start both \
                            sides with the same --sync";

impl Rejection {
    pub fn into_error(self) -> anyhow::Error {
        let hint = match self {
            Rejection::EventfdCount { .. } | Rejection::NotEventfd { .. } => EVENTFD_HINT,
            _ => MEMFD_HINT,
        };
        hinted(self.to_string(), hint)
    }
}

/// What a datagram must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One memfd (`--sync fcntl` and `--sync futex`).
    Memfd,
    /// The memfd, the server's eventfd, the client's eventfd (`--sync eventfd`).
    MemfdAndEventfds,
}

impl Expect {
    pub fn for_sync(sync: crate::workload::SyncKind) -> Expect {
        match sync {
            crate::workload::SyncKind::Eventfd => Expect::MemfdAndEventfds,
            _ => Expect::Memfd,
        }
    }
}

/// Accept exactly what `expect` says: the memfd, and the eventfds that follow it (empty for
/// [`Expect::Memfd`]). On rejection every received descriptor has been closed.
pub fn validate_for(
    received: Received,
    expect: Expect,
) -> Result<(OwnedFd, Vec<OwnedFd>), Rejection> {
    check_payload(&received)?;
    match expect {
        Expect::Memfd => validate(received).map(|fd| (fd, Vec::new())),
        Expect::MemfdAndEventfds => {
            let Received { fds, truncated, .. } = received;
            if fds.len() != 3 || truncated {
                return Err(Rejection::EventfdCount {
                    count: fds.len(),
                    truncated,
                });
            }
            check_memfd(fds[0].as_fd())?;
            for (i, fd) in fds.iter().enumerate().skip(1) {
                if !crate::workload::eventfd::is_eventfd(fd.as_fd()) {
                    return Err(Rejection::NotEventfd {
                        index: i + 1,
                        what: crate::workload::eventfd::describe(fd.as_fd()),
                    });
                }
            }
            let mut fds = fds.into_iter();
            let memfd = fds.next().expect("three descriptors");
            Ok((memfd, fds.collect()))
        }
    }
}

/// Accept exactly one sealed 64-byte read-write memfd. On rejection every received descriptor
/// has been closed (they are dropped here).
pub fn validate(received: Received) -> Result<OwnedFd, Rejection> {
    check_payload(&received)?;
    let Received { fds, truncated, .. } = received;
    if fds.len() > 1 || truncated {
        return Err(Rejection::TooMany {
            count: fds.len(),
            truncated,
        });
    }
    let Some(fd) = fds.into_iter().next() else {
        return Err(Rejection::NoFd);
    };
    check_memfd(fd.as_fd())?;
    Ok(fd)
}

/// The payload is a greeting: at most [`MAX_PAYLOAD`] bytes of printable ASCII (the seed sends
/// `memfd`, `lockrace client` sends [`HELLO`]; empty is accepted too).
pub fn check_payload(received: &Received) -> Result<(), Rejection> {
    let len = received.payload_len.max(received.payload.len());
    if len > MAX_PAYLOAD {
        return Err(Rejection::Oversized { len });
    }
    if !received.payload.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(Rejection::Garbage { len });
    }
    Ok(())
}

fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), Rejection> {
    let unreadable = |e: Errno| Rejection::Unreadable {
        why: e.desc().to_lowercase(),
    };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(unreadable)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(Rejection::NotMemfd {
            what: describe_mode(st.st_mode).to_string(),
        });
    }
    // SAFETY: F_GET_SEALS takes no argument.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    // tmpfs files answer F_GET_SEALS too, so also check the name memfd_create gives.
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if seals < 0 || !link.starts_with("/memfd:") {
        return Err(Rejection::NotMemfd {
            what: "regular file".to_string(),
        });
    }
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE != libc::O_RDWR {
        return Err(Rejection::NotReadWrite);
    }
    let missing: Vec<&'static str> = REQUIRED_SEALS
        .iter()
        .filter(|(bit, _)| seals & bit == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(Rejection::Unsealed { missing });
    }
    if seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0 {
        return Err(Rejection::WriteSealed);
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size != MEMFD_SIZE {
        return Err(Rejection::WrongSize { size });
    }
    Ok(())
}
