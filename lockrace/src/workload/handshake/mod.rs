//! The fd handshake: the client creates a sealed 64-byte memfd and sends it in one unix
//! datagram (SCM_RIGHTS) to the server's socket path; the server checks what it got. With
//! `--sync eventfd` the same datagram carries the memfd and two eventfds (the server's, then the
//! client's), and the server accepts exactly that ([`validate_for`]).
//!
//! Invariants:
//! - The server never unlinks anything that is not a socket: an existing path that is a
//!   regular file, symlink, directory, ... is refused; a stale socket (nobody bound) is
//!   replaced; a live one is refused. The socket it bound is unlinked again (only if the path
//!   still names that same socket) as soon as the datagram arrived.
//! - Every descriptor a datagram carried is owned (`OwnedFd`, received with `MSG_CMSG_CLOEXEC`)
//!   from the moment it is received, so every rejection closes all of them.
//! - Waiting is bounded (the stall timeout) and interruptible (SIGINT/SIGTERM).
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, bind, connect, sendmsg,
    socket,
};

use super::MEMFD_SIZE;
use crate::error::hinted;

mod validate;

pub use validate::{Expect, Rejection, check_payload, validate, validate_for};

/// The datagram's payload (the seed sends a short message with the fd; at most 20 bytes).
pub const HELLO: &[u8] = b"lockrace memfd";

/// Descriptors one datagram may carry before the kernel truncates (and we report "too many").
const MAX_FDS: usize = 16;

/// The longest payload accepted (the seed's is a short greeting; ours is [`HELLO`]).
pub const MAX_PAYLOAD: usize = 64;

/// The seals a valid memfd carries.
const REQUIRED_SEALS: [(libc::c_int, &str); 3] = [
    (libc::F_SEAL_GROW, "F_SEAL_GROW"),
    (libc::F_SEAL_SHRINK, "F_SEAL_SHRINK"),
    (libc::F_SEAL_SEAL, "F_SEAL_SEAL"),
];

const MEMFD_HINT: &str = "send the memfd `lockrace client` creates: 64 bytes, opened read-write, \
                          sealed with F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL, alone in one datagram";

/// What `st_mode` says a file is.
pub fn describe_mode(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symbolic link",
        libc::S_IFSOCK => "socket",
        libc::S_IFIFO => "pipe",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "special file",
    }
}

fn unix_addr(path: &Path) -> anyhow::Result<UnixAddr> {
    UnixAddr::new(path).map_err(|e| {
        hinted(
            format!("cannot use {} as a socket path: {e}", path.display()),
            "unix socket paths must be shorter than 108 bytes",
        )
    })
}

fn dgram_socket() -> anyhow::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("cannot create a unix datagram socket")
}

/// Make `path` free for `bind`: absent is fine, a stale socket is removed, anything else is
/// refused.
pub fn prepare_socket_path(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if meta.mode() & libc::S_IFMT != libc::S_IFSOCK {
        return Err(hinted(
            format!(
                "{} exists and is a {}, not a socket; refusing to replace it",
                path.display(),
                describe_mode(meta.mode())
            ),
            "pass a --socket path that does not exist yet (or a stale socket)",
        ));
    }
    // A socket file: is somebody still bound to it?
    let probe = dgram_socket()?;
    match connect(probe.as_raw_fd(), &unix_addr(path)?) {
        Ok(()) => Err(hinted(
            format!("another process is bound to {}", path.display()),
            "stop the other server or pass another --socket path",
        )),
        Err(Errno::ECONNREFUSED) => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display())),
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("cannot check the existing socket {}", path.display())),
    }
}

/// A socket path this process bound; unlinked on drop if it still names the same socket
/// file: same device, inode and change time (inode numbers are reused at once on ext4, change
/// times are nanoseconds there).
pub struct BoundPath {
    path: PathBuf,
    identity: Option<FileIdentity>,
}

type FileIdentity = (u64, u64, i64, i64);

fn identity(m: &std::fs::Metadata) -> FileIdentity {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && m.mode() & libc::S_IFMT == libc::S_IFSOCK
            && Some(identity(&m)) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind the server's datagram socket at `path` (after [`prepare_socket_path`]).
pub fn bind_server(path: &Path) -> anyhow::Result<(OwnedFd, BoundPath)> {
    prepare_socket_path(path)?;
    let sock = dgram_socket()?;
    bind(sock.as_raw_fd(), &unix_addr(path)?)
        .with_context(|| format!("cannot bind a unix datagram socket to {}", path.display()))?;
    let identity = std::fs::symlink_metadata(path).ok().map(|m| identity(&m));
    Ok((
        sock,
        BoundPath {
            path: path.to_path_buf(),
            identity,
        },
    ))
}

/// What one datagram brought.
#[derive(Debug)]
pub struct Received {
    /// Its first [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
    /// Its whole length (larger than `payload` when it was cut: [`Rejection::Oversized`]).
    pub payload_len: usize,
    pub fds: Vec<OwnedFd>,
    /// The kernel dropped descriptors that did not fit our control buffer.
    pub truncated: bool,
}

impl Received {
    /// A datagram of `payload` carrying `fds` (what a well-behaved client sends).
    pub fn new(payload: &[u8], fds: Vec<OwnedFd>) -> Received {
        Received {
            payload: payload.to_vec(),
            payload_len: payload.len(),
            fds,
            truncated: false,
        }
    }
}

/// Wait (bounded by `timeout`, interruptible) for one datagram and take ownership of every
/// descriptor it carries.
pub fn receive(sock: BorrowedFd<'_>, path: &Path, timeout: Duration) -> anyhow::Result<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        if crate::signals::interrupted() {
            anyhow::bail!("interrupted while waiting for the client's datagram");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(hinted(
                format!(
                    "no datagram arrived on {} within {} s",
                    path.display(),
                    timeout.as_secs()
                ),
                format!(
                    "start `lockrace client --socket {}`, or raise --stall-timeout",
                    path.display()
                ),
            ));
        }
        let mut fds = [libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).context("cannot wait for the client's datagram");
        }
        if r == 0 {
            continue;
        }
        match recv_datagram(sock) {
            Ok(got) => return Ok(got),
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EAGAIN) =>
            {
                continue;
            }
            Err(e) => return Err(e).context("cannot receive the client's datagram"),
        }
    }
}

/// One non-blocking `recvmsg` with room for [`MAX_FDS`] descriptors and [`MAX_PAYLOAD`] bytes
/// (`MSG_TRUNC` makes it return the datagram's real length).
fn recv_datagram(sock: BorrowedFd<'_>) -> io::Result<Received> {
    let mut payload = [0u8; MAX_PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<libc::c_int>()) as u32) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; all-zero is valid and every pointer is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at live buffers of the sizes it states.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled, bounded by
    // msg_controllen; each SCM_RIGHTS entry holds cmsg_len - CMSG_LEN(0) bytes of c_ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let payload_len = usize::try_from(n).unwrap_or(0);
    let len = payload_len.min(payload.len());
    Ok(Received {
        payload: payload[..len].to_vec(),
        payload_len,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// The client's memfd: `memfd_create(MFD_ALLOW_SEALING)`, 64 bytes, sealed against growing,
/// shrinking and further sealing.
pub fn create_memfd() -> anyhow::Result<OwnedFd> {
    use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
    let fd = memfd_create(
        c"lockrace",
        MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC,
    )
    .context("memfd_create failed")?;
    nix::unistd::ftruncate(&fd, MEMFD_SIZE as libc::off_t)
        .context("cannot size the memfd to 64 bytes")?;
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an int.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error()).context("cannot seal the memfd");
    }
    Ok(fd)
}

/// Send `memfd` to the server at `path`, retrying while the server is not bound yet (absent
/// path or refused connection) until `timeout`.
pub fn send_memfd(path: &Path, memfd: BorrowedFd<'_>, timeout: Duration) -> anyhow::Result<()> {
    send_fds(path, &[memfd], timeout)
}

/// Send `fds` (the memfd first) in one datagram, as [`send_memfd`] does.
pub fn send_fds(path: &Path, fds: &[BorrowedFd<'_>], timeout: Duration) -> anyhow::Result<()> {
    let addr = unix_addr(path)?;
    let sock = dgram_socket()?;
    let deadline = Instant::now() + timeout;
    let fds: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    loop {
        if crate::signals::interrupted() {
            anyhow::bail!("interrupted while sending the memfd");
        }
        if let Ok(meta) = std::fs::metadata(path)
            && meta.mode() & libc::S_IFMT != libc::S_IFSOCK
        {
            return Err(hinted(
                format!(
                    "{} is a {}, not a socket",
                    path.display(),
                    describe_mode(meta.mode())
                ),
                "pass the path `lockrace server --socket` bound",
            ));
        }
        let iov = [io::IoSlice::new(HELLO)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        match sendmsg(
            sock.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_DONTWAIT,
            Some(&addr),
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT | Errno::ECONNREFUSED | Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("cannot send the memfd to {}", path.display()));
            }
        }
        if Instant::now() >= deadline {
            return Err(hinted(
                format!(
                    "no server accepted the memfd on {} within {} s",
                    path.display(),
                    timeout.as_secs()
                ),
                format!("start `lockrace server --socket {}` first", path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `/proc/self/fd/N` re-opened read-write: same memfd, a new open file description with its
/// own offset (and its own OFD/flock lock owner).
pub fn reopen(fd: BorrowedFd<'_>) -> anyhow::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())
        .context("bad /proc path")?;
    // SAFETY: a NUL-terminated path; the returned descriptor is owned right away.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error())
            .context("cannot re-open the memfd through /proc/self/fd");
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The memfd's (kernel-encoded dev, inode).
pub fn memfd_id(fd: BorrowedFd<'_>) -> anyhow::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).context("cannot fstat the memfd")?;
    Ok((crate::host::kernel_dev(st.st_dev), st.st_ino))
}

/// Printable payload for logs.
pub fn payload_text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn one(fd: OwnedFd) -> Received {
        Received::new(HELLO, vec![fd])
    }

    fn memfd(size: i64, seals: libc::c_int) -> OwnedFd {
        use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
        let fd = memfd_create(c"t", MemFdCreateFlag::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, size).unwrap();
        if seals != 0 {
            assert!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0);
        }
        fd
    }

    #[test]
    fn the_clients_memfd_is_accepted() {
        let fd = create_memfd().unwrap();
        let got = validate(one(fd)).unwrap();
        let (_dev, ino) = memfd_id(got.as_fd()).unwrap();
        assert!(ino > 0);
    }

    #[test]
    fn each_bad_datagram_has_its_own_message() {
        let all = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        let none = Received::new(&[], vec![]);
        assert_eq!(validate(none).unwrap_err(), Rejection::NoFd);
        let two = Received::new(&[], vec![memfd(64, all), memfd(64, all)]);
        assert_eq!(
            validate(two).unwrap_err(),
            Rejection::TooMany {
                count: 2,
                truncated: false
            }
        );
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(
            validate(one(r)).unwrap_err(),
            Rejection::NotMemfd {
                what: "pipe".into()
            }
        );
        let file = tempfile::tempfile().unwrap();
        assert!(matches!(
            validate(one(file.into())).unwrap_err(),
            Rejection::NotMemfd { .. }
        ));
        assert_eq!(
            validate(one(memfd(64, 0))).unwrap_err(),
            Rejection::Unsealed {
                missing: vec!["F_SEAL_GROW", "F_SEAL_SHRINK", "F_SEAL_SEAL"]
            }
        );
        assert_eq!(
            validate(one(memfd(64, libc::F_SEAL_GROW | libc::F_SEAL_SHRINK))).unwrap_err(),
            Rejection::Unsealed {
                missing: vec!["F_SEAL_SEAL"]
            }
        );
        assert_eq!(
            validate(one(memfd(64, all | libc::F_SEAL_WRITE))).unwrap_err(),
            Rejection::WriteSealed
        );
        assert_eq!(
            validate(one(memfd(128, all))).unwrap_err(),
            Rejection::WrongSize { size: 128 }
        );
        let messages: std::collections::HashSet<String> = [
            Rejection::NoFd,
            Rejection::TooMany {
                count: 2,
                truncated: false,
            },
            Rejection::NotMemfd {
                what: "pipe".into(),
            },
            Rejection::NotReadWrite,
            Rejection::Unsealed {
                missing: vec!["F_SEAL_SEAL"],
            },
            Rejection::WriteSealed,
            Rejection::WrongSize { size: 1 },
            Rejection::Oversized { len: 65536 },
            Rejection::Garbage { len: 8 },
        ]
        .iter()
        .map(|r| r.to_string())
        .collect();
        assert_eq!(messages.len(), 9);
    }

    #[test]
    fn payloads_must_be_short_text_greetings() {
        let all = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // The seed's greeting, ours, and none at all are fine.
        for ok in [&b"memfd"[..], HELLO, b""] {
            assert!(validate(Received::new(ok, vec![memfd(64, all)])).is_ok());
        }
        let mut long = Received::new(&[b'a'; MAX_PAYLOAD], vec![memfd(64, all)]);
        long.payload_len = 65536;
        assert_eq!(
            validate(long).unwrap_err(),
            Rejection::Oversized { len: 65536 }
        );
        let binary = Received::new(b"\x00\xff\x13evil", vec![memfd(64, all)]);
        assert_eq!(
            validate_for(binary, Expect::MemfdAndEventfds).unwrap_err(),
            Rejection::Garbage { len: 7 }
        );
    }

    #[test]
    fn a_rejected_descriptor_is_closed() {
        // Hand the write end of a pipe over; once validation refuses it, the read end sees EOF.
        let (r, w) = nix::unistd::pipe().unwrap();
        let extra = memfd(64, 0);
        let got = Received::new(&[], vec![w, extra]);
        assert!(validate(got).is_err());
        let mut reader = std::fs::File::from(r);
        let mut buf = Vec::new();
        assert_eq!(reader.read_to_end(&mut buf).unwrap(), 0);
    }

    #[test]
    fn socket_paths_that_are_not_sockets_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        for (p, kind) in [
            (&file, "regular file"),
            (&link, "symbolic link"),
            (&sub, "directory"),
        ] {
            let err = crate::error::render_error(&prepare_socket_path(p).unwrap_err());
            assert!(err.contains(kind) && err.contains("not a socket"), "{err}");
        }
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        assert!(std::fs::symlink_metadata(&link).is_ok());
        assert!(sub.is_dir());
    }

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (live, bound) = bind_server(&path).unwrap();
        let err = crate::error::render_error(&prepare_socket_path(&path).unwrap_err());
        assert!(err.contains("another process is bound"), "{err}");
        drop(live);
        // The socket file remains after close: stale, so it is replaced.
        let (_again, bound2) = bind_server(&path).unwrap();
        // The first guard no longer matches the file: dropping it leaves the new socket.
        drop(bound);
        assert!(std::fs::symlink_metadata(&path).is_ok());
        drop(bound2);
        assert!(std::fs::symlink_metadata(&path).is_err());
    }

    #[test]
    fn a_datagram_carries_the_memfd_across() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (sock, _bound) = bind_server(&path).unwrap();
        let fd = create_memfd().unwrap();
        send_memfd(&path, fd.as_fd(), Duration::from_secs(2)).unwrap();
        let got = receive(sock.as_fd(), &path, Duration::from_secs(2)).unwrap();
        assert_eq!(got.payload, HELLO);
        let theirs = validate(got).unwrap();
        assert_eq!(
            memfd_id(theirs.as_fd()).unwrap(),
            memfd_id(fd.as_fd()).unwrap()
        );
        let mine = reopen(theirs.as_fd()).unwrap();
        assert_eq!(
            memfd_id(mine.as_fd()).unwrap(),
            memfd_id(fd.as_fd()).unwrap()
        );
    }

    #[test]
    fn eventfd_mode_accepts_exactly_memfd_and_two_eventfds() {
        let all = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        let ev = || super::super::eventfd::create().unwrap();
        let got = |fds: Vec<OwnedFd>| Received::new(HELLO, fds);
        let (m, rest) = validate_for(
            got(vec![create_memfd().unwrap(), ev(), ev()]),
            Expect::MemfdAndEventfds,
        )
        .unwrap();
        assert_eq!(rest.len(), 2);
        assert!(memfd_id(m.as_fd()).is_ok());
        for (fds, want) in [
            (
                vec![create_memfd().unwrap()],
                "carried 1 file descriptor, expected",
            ),
            (
                vec![create_memfd().unwrap(), ev()],
                "carried 2 file descriptors",
            ),
            (
                vec![create_memfd().unwrap(), ev(), ev(), ev()],
                "carried 4 file descriptors",
            ),
            (vec![ev(), ev(), ev()], "not a memfd"),
            (vec![memfd(64, all), ev(), memfd(64, all)], "descriptor 3"),
        ] {
            let err = validate_for(got(fds), Expect::MemfdAndEventfds)
                .unwrap_err()
                .into_error();
            let msg = crate::error::render_error(&err);
            assert!(msg.contains(want), "{want}: {msg}");
        }
        let (r, _w) = nix::unistd::pipe().unwrap();
        let err =
            validate_for(got(vec![memfd(64, all), r, ev()]), Expect::MemfdAndEventfds).unwrap_err();
        assert_eq!(
            err,
            Rejection::NotEventfd {
                index: 2,
                what: "pipe".into()
            }
        );
        assert!(crate::error::render_error(&err.into_error()).contains("same --sync"));
        // The default mode still refuses the eventfd datagram.
        assert!(matches!(
            validate_for(got(vec![memfd(64, all), ev(), ev()]), Expect::Memfd).unwrap_err(),
            Rejection::TooMany { count: 3, .. }
        ));
    }

    #[test]
    fn a_datagram_carries_the_memfd_and_eventfds_across() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (sock, _bound) = bind_server(&path).unwrap();
        let fd = create_memfd().unwrap();
        let (a, b) = (
            super::super::eventfd::create().unwrap(),
            super::super::eventfd::create().unwrap(),
        );
        send_fds(
            &path,
            &[fd.as_fd(), a.as_fd(), b.as_fd()],
            Duration::from_secs(2),
        )
        .unwrap();
        let got = receive(sock.as_fd(), &path, Duration::from_secs(2)).unwrap();
        let (m, evs) = validate_for(got, Expect::MemfdAndEventfds).unwrap();
        assert_eq!(memfd_id(m.as_fd()).unwrap(), memfd_id(fd.as_fd()).unwrap());
        // The server's copy of `b` is the client's eventfd: a signal on one is seen on the other.
        super::super::eventfd::signal(evs[1].as_fd()).unwrap();
        assert_eq!(super::super::eventfd::read(b.as_fd()).unwrap(), Some(1));
    }

    #[test]
    fn file_types_are_named() {
        assert_eq!(describe_mode(libc::S_IFSOCK | 0o755), "socket");
        assert_eq!(describe_mode(libc::S_IFIFO), "pipe");
        assert_eq!(describe_mode(libc::S_IFREG | 0o644), "regular file");
        assert!(HELLO.len() <= 20);
        assert_eq!(payload_text(b"hi"), "hi");
    }
}
