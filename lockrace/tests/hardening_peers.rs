//! Hostile peers on the handshake socket and socket-path safety (issue "Hardening").
//!
//! - Against `lockrace server --socket P`: every kind of bad datagram (no fd, 3 fds, a pipe, a
//!   regular file, an unsealed memfd, a 1 GiB memfd, a 64 KiB message, binary garbage) is
//!   refused with its own message, within a bounded time, and the socket file is removed.
//! - In process, through the same functions the server uses: after each rejection the process
//!   holds exactly the descriptors it held before (every received descriptor was closed), and a
//!   pipe whose write end was sent sees EOF while the receiver is still alive.
//! - Socket paths: `run` puts its socket in a fresh 0700 directory; an explicit `--socket` that
//!   is a symlink or a regular file is refused and left as it was.
#[path = "support/workload.rs"]
mod workload_support;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockrace::workload::handshake::{self, Expect};
use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
use workload_support::*;

/// The in-process test counts this process's descriptors: nothing else may open any meanwhile,
/// so every test in this file (they all spawn processes, which opens pipes) holds this lock.
static SERIAL: Mutex<()> = Mutex::new(());

const ALL_SEALS: libc::c_int = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;

fn memfd(size: i64, seals: libc::c_int) -> OwnedFd {
    use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
    let fd = memfd_create(c"hostile", MemFdCreateFlag::MFD_ALLOW_SEALING).unwrap();
    nix::unistd::ftruncate(&fd, size).unwrap();
    if seals != 0 {
        assert_eq!(
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) },
            0
        );
    }
    fd
}

/// One hostile datagram: its payload and the descriptors it carries.
struct Case {
    name: &'static str,
    payload: Vec<u8>,
    fds: Vec<RawFd>,
    want: &'static str,
}

fn send(sock: &Path, payload: &[u8], fds: &[RawFd]) {
    let tx = UnixDatagram::unbound().unwrap();
    // A 64 KiB datagram needs a send buffer that large.
    let size: libc::c_int = 1 << 18;
    unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let cmsg = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg(
        tx.as_raw_fd(),
        &[std::io::IoSlice::new(payload)],
        &cmsg,
        MsgFlags::empty(),
        Some(&UnixAddr::new(sock).unwrap()),
    )
    .unwrap();
}

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The hostile datagrams, built from descriptors the caller keeps alive.
fn cases(keep: &mut Vec<OwnedFd>) -> Vec<Case> {
    let mut fd = |f: OwnedFd| {
        let raw = f.as_raw_fd();
        keep.push(f);
        raw
    };
    let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
    let file: OwnedFd = tempfile::tempfile().unwrap().into();
    let three = vec![
        fd(memfd(64, ALL_SEALS)),
        fd(memfd(64, ALL_SEALS)),
        fd(memfd(64, ALL_SEALS)),
    ];
    let pipe = fd(pipe_r);
    let _ = fd(pipe_w);
    let file = fd(file);
    let unsealed = fd(memfd(64, 0));
    let huge = fd(memfd(1 << 30, ALL_SEALS));
    let good = fd(memfd(64, ALL_SEALS));
    let hello = handshake::HELLO.to_vec();
    vec![
        Case {
            name: "no fd",
            payload: hello.clone(),
            fds: vec![],
            want: "carried no file descriptor",
        },
        Case {
            name: "3 fds",
            payload: hello.clone(),
            fds: three,
            want: "carried 3 file descriptors, expected exactly one",
        },
        Case {
            name: "a pipe",
            payload: hello.clone(),
            fds: vec![pipe],
            want: "is a pipe, not a memfd",
        },
        Case {
            name: "a regular file",
            payload: hello.clone(),
            fds: vec![file],
            want: "is a regular file, not a memfd",
        },
        Case {
            name: "an unsealed memfd",
            payload: hello.clone(),
            fds: vec![unsealed],
            want: "not sealed (missing F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL)",
        },
        Case {
            name: "a 1 GiB memfd",
            payload: hello.clone(),
            fds: vec![huge],
            want: "is 1073741824 bytes, expected 64",
        },
        Case {
            name: "a 64 KiB message",
            payload: vec![b'x'; 64 << 10],
            fds: vec![good],
            want: "is 65536 bytes long",
        },
        Case {
            name: "garbage bytes",
            payload: (0..=255u8).rev().take(48).collect(),
            fds: vec![good],
            want: "48-byte payload is binary data",
        },
    ]
}

#[test]
fn hostile_datagrams_to_the_server_each_get_their_own_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut keep = Vec::new();
    let cases = cases(&mut keep);
    let mut messages = std::collections::HashSet::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let srv = lockrace()
            .arg("server")
            .arg("--socket")
            .arg(&sock)
            .args(["--stall-timeout", "20"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_path(&sock, Duration::from_secs(10));
        let t0 = Instant::now();
        send(&sock, &case.payload, &case.fds);
        // No hang: the stall timeout is 20 s, the rejection must come at once.
        let (st, _, err) = output_within(srv, Duration::from_secs(10), case.name);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{}: {:?}",
            case.name,
            t0.elapsed()
        );
        assert!(!st.success(), "{} was accepted: {err}", case.name);
        assert!(
            err.starts_with("lockrace: ") && err.contains(case.want),
            "{}: {err}",
            case.name
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{}: {err}", case.name);
        assert!(
            std::fs::symlink_metadata(&sock).is_err(),
            "{}: socket left behind",
            case.name
        );
        messages.insert(err.lines().next().unwrap_or_default().to_string());
    }
    assert_eq!(messages.len(), cases.len(), "{messages:#?}");
}

#[test]
fn rejected_descriptors_are_closed_before_the_receiver_moves_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let (rx, _bound) = handshake::bind_server(&sock).unwrap();
    let mut keep = Vec::new();
    let cases = cases(&mut keep);
    for expect in [Expect::Memfd, Expect::MemfdAndEventfds] {
        for case in &cases {
            let before = descriptors();
            send(&sock, &case.payload, &case.fds);
            let got = handshake::receive(rx.as_fd(), &sock, Duration::from_secs(5)).unwrap();
            assert_eq!(got.fds.len(), case.fds.len().min(16), "{}", case.name);
            assert!(
                handshake::validate_for(got, expect).is_err(),
                "{}",
                case.name
            );
            assert_eq!(
                descriptors(),
                before,
                "{} ({expect:?}): a received descriptor was kept open",
                case.name
            );
        }
    }
    // The write end of a pipe, sent and refused: its reader sees EOF while we are alive, so
    // the receiver's copy is closed (not merely released at exit).
    let (r, w) = nix::unistd::pipe().unwrap();
    send(&sock, handshake::HELLO, &[w.as_raw_fd()]);
    drop(w);
    let got = handshake::receive(rx.as_fd(), &sock, Duration::from_secs(5)).unwrap();
    assert!(handshake::validate(got).is_err());
    let mut buf = [0u8; 1];
    assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap(), 0);
}

/// `run` names its children's command lines with `-v`; the socket is in a 0700 temp dir.
#[test]
fn run_puts_its_socket_in_a_fresh_private_directory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let parent = tempfile::tempdir().unwrap();
    let mut run = lockrace()
        .args(["-v", "run", "--no-trace", "--iterations", "100000000"])
        .arg("--tmpdir-parent")
        .arg(parent.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    let mut server = None;
    for _ in 0..20 {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(pid) = line
            .split("the server (pid ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .and_then(|s| s.parse::<u32>().ok())
        {
            server = Some(pid);
            break;
        }
    }
    let server = server.unwrap_or_else(|| {
        let _ = run.kill();
        panic!("run never named its children: {line}")
    });
    let dirs: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let meta = std::fs::symlink_metadata(&dirs[0]).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700, "{dirs:?}");
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    let cmdline = std::fs::read(format!("/proc/{server}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args.iter().position(|a| a == "--socket").expect("--socket");
    assert_eq!(Path::new(&args[at + 1]).parent(), Some(dirs[0].as_path()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_within(&mut run, Duration::from_secs(10), "run");
    assert_eq!(st.code(), Some(143));
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
}

#[test]
fn an_explicit_socket_that_is_a_symlink_or_a_file_is_refused_and_kept() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    // A symlink to a live socket of someone else: refusing it must not unlink either.
    let victim = dir.path().join("victim.sock");
    let _victim = UnixDatagram::bind(&victim).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // The client refuses a path that is not a socket too (it follows symlinks: the server
    // never makes one, and sending to where it points harms nobody).
    for (path, kind, roles) in [
        (&file, "regular file", &["server", "client"][..]),
        (&link, "symbolic link", &["server"][..]),
    ] {
        for &role in roles {
            let out = run_within(
                lockrace()
                    .arg(role)
                    .arg("--socket")
                    .arg(path)
                    .args(["--stall-timeout", "2"]),
                Duration::from_secs(10),
                role,
            );
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{role} {kind}: {err}");
            assert!(err.contains(kind) && err.contains("not a socket"), "{err}");
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(&victim)
            .unwrap()
            .file_type()
            .is_socket()
    );
}
