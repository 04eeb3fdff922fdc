//! Bad input and faults for the workload: clap errors, socket paths that are not sockets,
//! hostile datagrams, a server with no client, peers that die or stop, and signals to `run`.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::workload_support::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn iterations_must_be_a_positive_number() {
    let _one = serial();
    for sub in ["run", "server", "client"] {
        for bad in ["0", "-1", "ten"] {
            let mut cmd = lockrace();
            cmd.arg(sub);
            if sub != "run" {
                cmd.args(["--socket", "/nonexistent/s"]);
            }
            // `--iterations=-1` reaches the value parser; `--iterations -1` is refused as an
            // unknown flag. Both are clap errors (exit status 2).
            let out = run_within(
                cmd.arg(format!("--iterations={bad}")),
                Duration::from_secs(10),
                "clap",
            );
            let err = text(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{sub} --iterations={bad}: {err}"
            );
            assert!(
                err.contains("invalid value") && err.contains("--iterations"),
                "{err}"
            );
        }
    }
}

fn server(sock: &Path, extra: &[&str]) -> Child {
    lockrace()
        .arg("server")
        .arg("--socket")
        .arg(sock)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn socket_paths_that_are_not_sockets_are_refused_and_left_alone() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let sub = dir.path().join("dir");
    std::fs::create_dir(&sub).unwrap();
    for (path, kind) in [
        (&file, "regular file"),
        (&link, "symbolic link"),
        (&dangling, "symbolic link"),
        (&sub, "directory"),
    ] {
        let (st, _, err) = output_within(server(path, &[]), Duration::from_secs(10), "server");
        assert!(!st.success());
        assert!(
            err.starts_with("lockrace: ") && err.contains(kind) && err.contains("not a socket"),
            "{kind}: {err}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(sub.is_dir());
}

#[test]
fn a_stale_socket_is_replaced() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    drop(UnixDatagram::bind(&sock).unwrap()); // leaves a socket file nobody is bound to
    let srv = server(&sock, &["--iterations", "20"]);
    let client = run_within(
        lockrace()
            .arg("client")
            .arg("--socket")
            .arg(&sock)
            .args(["--iterations", "20"]),
        Duration::from_secs(30),
        "client",
    );
    let (st, out, err) = output_within(srv, Duration::from_secs(30), "server");
    assert!(st.success(), "{err}");
    assert!(client.status.success(), "{}", text(&client.stderr));
    assert!(out.starts_with("server: 20 turns"), "{out}");
}

#[test]
fn a_server_without_a_client_times_out() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let t0 = Instant::now();
    let (st, _, err) = output_within(
        server(&sock, &["--stall-timeout", "1"]),
        Duration::from_secs(10),
        "server",
    );
    assert!(!st.success());
    assert!(
        err.contains("no datagram arrived") && err.contains("within 1 s"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket left behind"
    );
}

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

/// Send one datagram carrying `fds` to a fresh server and return its stderr (it must fail).
fn hostile(fds: &[RawFd]) -> String {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let srv = server(&sock, &["--stall-timeout", "5"]);
    wait_for_path(&sock, Duration::from_secs(10));
    let tx = UnixDatagram::unbound().unwrap();
    let cmsg = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg(
        tx.as_raw_fd(),
        &[std::io::IoSlice::new(b"evil")],
        &cmsg,
        MsgFlags::empty(),
        Some(&UnixAddr::new(&sock).unwrap()),
    )
    .unwrap();
    let (st, _, err) = output_within(srv, Duration::from_secs(10), "server");
    assert!(!st.success(), "the server accepted {fds:?}: {err}");
    assert!(err.starts_with("lockrace: "), "{err}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket left behind"
    );
    err
}

#[test]
fn hostile_datagrams_are_refused_with_distinct_messages() {
    let _one = serial();
    let all = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let file = tempfile::tempfile().unwrap();
    let (a, b) = (memfd(64, all), memfd(64, all));
    let unsealed = memfd(64, 0);
    let no_seal_seal = memfd(64, libc::F_SEAL_GROW | libc::F_SEAL_SHRINK);
    let no_grow = memfd(64, libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL);
    let too_big = memfd(128, all);
    let cases: Vec<(&str, Vec<RawFd>, &str)> = vec![
        ("no fd", vec![], "carried no file descriptor"),
        (
            "two fds",
            vec![a.as_raw_fd(), b.as_raw_fd()],
            "carried 2 file descriptors, expected exactly one",
        ),
        (
            "twenty fds (more than the server's control buffer holds)",
            vec![a.as_raw_fd(); 20],
            "carried more than 16 file descriptors, expected exactly one",
        ),
        ("pipe", vec![pipe_r.as_raw_fd()], "is a pipe, not a memfd"),
        (
            "regular file",
            vec![file.as_raw_fd()],
            "is a regular file, not a memfd",
        ),
        (
            "unsealed",
            vec![unsealed.as_raw_fd()],
            "not sealed (missing F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL)",
        ),
        (
            "no F_SEAL_SEAL",
            vec![no_seal_seal.as_raw_fd()],
            "not sealed (missing F_SEAL_SEAL)",
        ),
        (
            "no F_SEAL_GROW",
            vec![no_grow.as_raw_fd()],
            "not sealed (missing F_SEAL_GROW)",
        ),
        (
            "128 bytes",
            vec![too_big.as_raw_fd()],
            "is 128 bytes, expected 64",
        ),
    ];
    for (name, fds, want) in cases {
        let err = hostile(&fds);
        assert!(err.contains(want), "{name}: {err}");
    }
}

#[test]
fn the_server_closes_what_it_refuses() {
    let _one = serial();
    // The unit test handshake::a_rejected_descriptor_is_closed checks the closing itself (in
    // process, before any exit); here: the message says so and nothing keeps the pipe open.
    let (r, w) = nix::unistd::pipe().unwrap();
    let err = hostile(&[w.as_raw_fd()]);
    drop(w);
    assert!(err.contains("closed it"), "{err}");
    let mut buf = [0u8; 1];
    assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap(), 0);
}

/// Start a server and a client on a fresh socket for a long run.
fn pair(dir: &Path, extra: &[&str]) -> (Child, Child) {
    let sock = dir.join("s");
    let srv = server(&sock, extra);
    let cli = lockrace()
        .arg("client")
        .arg("--socket")
        .arg(&sock)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (srv, cli)
}

const LONG: [&str; 6] = [
    "--iterations",
    "100000000",
    "--lock",
    "posix",
    "--stall-timeout",
    "1",
];

#[test]
fn a_survivor_gives_up_when_its_peer_dies() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut cli) = pair(dir.path(), &LONG);
    std::thread::sleep(Duration::from_millis(400));
    cli.kill().unwrap();
    cli.wait().unwrap();
    let t0 = Instant::now();
    let (st, _, err) = output_within(srv, Duration::from_secs(10), "server");
    assert!(!st.success());
    assert!(err.contains("the client made no progress for 1 s"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn a_survivor_gives_up_when_its_peer_freezes() {
    let _one = serial();
    // A stopped peer may hold the lock: the survivor is then blocked in F_SETLKW, and only the
    // watchdog can end it.
    let dir = tempfile::tempdir().unwrap();
    let (mut srv, cli) = pair(dir.path(), &LONG);
    std::thread::sleep(Duration::from_millis(400));
    signal(srv.id(), Signal::SIGSTOP);
    let (st, _, err) = output_within(cli, Duration::from_secs(10), "client");
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(!st.success());
    assert!(err.contains("the server made no progress for 1 s"), "{err}");
}

#[test]
fn roles_exit_promptly_on_sigint_and_sigterm() {
    let _one = serial();
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        // Waiting for the datagram.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let srv = server(&sock, &[]);
        wait_for_path(&sock, Duration::from_secs(10));
        signal(srv.id(), sig);
        let (st, _, err) = output_within(srv, Duration::from_secs(3), "server");
        assert_eq!(st.code(), Some(code), "{err}");
        assert!(err.contains(sig.as_str()), "{err}");
        // In the turn loop (the client may be blocked in the lock call).
        let (srv, cli) = pair(dir.path(), &LONG);
        std::thread::sleep(Duration::from_millis(400));
        signal(cli.id(), sig);
        let (st, _, err) = output_within(cli, Duration::from_secs(3), "client");
        assert_eq!(st.code(), Some(code), "{err}");
        let (st, _, _) = output_within(srv, Duration::from_secs(10), "server");
        assert!(!st.success());
    }
}

/// The pids in `-v`'s "started the server (pid S) and the client (pid C) in DIR" line.
fn started_pids(line: &str) -> Option<(u32, u32)> {
    let after =
        |key: &str| -> Option<u32> { line.split(key).nth(1)?.split(')').next()?.parse().ok() };
    Some((after("the server (pid ")?, after("the client (pid ")?))
}

/// Start `run -v` and wait for the line naming the children; returns (run, server, client).
fn start_run(extra: &[&str]) -> (Child, u32, u32, BufReader<std::process::ChildStderr>) {
    let mut run = lockrace()
        .args(["-v", "run", "--no-trace"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(run.stderr.take().unwrap());
    let mut seen = String::new();
    // The line comes right after the start; a handful of lines (a warning) may precede it.
    for _ in 0..20 {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some((server, client)) = started_pids(&line) {
            return (run, server, client, err);
        }
        seen.push_str(&line);
    }
    let _ = run.kill();
    let _ = run.wait();
    panic!("run never named its children:\n{seen}");
}

fn rest(mut err: BufReader<std::process::ChildStderr>) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut err, &mut s).unwrap();
    s
}

#[test]
fn run_names_a_child_that_died_and_stops_the_other() {
    let _one = serial();
    for victim in ["client", "server"] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("run.json");
        let (mut run, server, client, err) = start_run(&[
            "--iterations",
            "100000000",
            "--lock",
            "posix",
            "--stall-timeout",
            "60",
            "--json",
            json.to_str().unwrap(),
        ]);
        std::thread::sleep(Duration::from_millis(300));
        let (dead, other) = if victim == "client" {
            (client, server)
        } else {
            (server, client)
        };
        signal(dead, Signal::SIGKILL);
        let t0 = Instant::now();
        let st = wait_within(&mut run, Duration::from_secs(10), "run");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(!st.success());
        let msg = rest(err);
        let want = format!("the {victim} (pid {dead}) was killed by SIGKILL");
        assert!(msg.contains(&want), "{msg}");
        assert!(gone(other) && gone(dead), "a child survived");
        // The report is still written, marked incomplete with the reason.
        let doc: lockrace::report::model::Document =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(!doc.complete);
        assert!(
            doc.incomplete_reasons[0].contains(&want),
            "{:?}",
            doc.incomplete_reasons
        );
    }
}

#[test]
fn sigterm_and_sigint_to_run_stop_everything_and_clean_up() {
    let _one = serial();
    for (sig, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let parent = tempfile::tempdir().unwrap();
        let (mut run, server, client, err) = start_run(&[
            "--iterations",
            "100000000",
            "--tmpdir-parent",
            parent.path().to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            1,
            "run made its temp dir"
        );
        std::thread::sleep(Duration::from_millis(300));
        signal(run.id(), sig);
        let st = wait_within(&mut run, Duration::from_secs(5), "run");
        assert_eq!(st.code(), Some(code));
        let msg = rest(err);
        assert!(
            msg.contains(&format!("interrupted by {}", sig.as_str())),
            "{msg}"
        );
        assert!(gone(server) && gone(client), "a child survived {sig}");
        assert_eq!(
            std::fs::read_dir(parent.path()).unwrap().count(),
            0,
            "temp dir left behind"
        );
    }
}
