//! Root integration tests of the kernel capture: real programs on the real kernel, real events.
//!
//! These FAIL (never skip) when eBPF cannot load: CI runs them as root through
//! `cargo xtask test`, and a tool whose probes do not load is broken.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use lockrace::{
    capture::{Capture, Filter},
    events::{Event, Kind},
    jsonl::Collector,
};
use lockrace_common::k;

/// A python3 helper that takes a POSIX write lock on PATH with fcntl(F_SETLKW) (via
/// fcntl.lockf), prints "locked", then waits for a line on stdin (holder) or not (waiter), and
/// unlocks.
const LOCKER: &str = r#"
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
print("requesting", flush=True)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("locked", flush=True)
if sys.argv[2] == "hold":
    sys.stdin.readline()
fcntl.lockf(fd, fcntl.LOCK_UN)
print("unlocked", flush=True)
"#;

/// A locker process and one reader over its stdout, kept for its whole life (a fresh
/// `BufReader` per line could swallow the next line into a buffer that is then dropped).
struct Locker {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

fn spawn_locker(path: &str, mode: &str) -> Locker {
    let mut child = Command::new("python3")
        .args(["-c", LOCKER, path, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let out = BufReader::new(child.stdout.take().unwrap());
    Locker { child, out }
}

fn read_line(l: &mut Locker) -> String {
    let mut line = String::new();
    l.out.read_line(&mut line).unwrap();
    line.trim().to_string()
}

fn start_capture() -> Capture<Collector> {
    let me = std::process::id();
    Capture::start(
        &Filter {
            tgids: vec![me],
            inodes: vec![],
        },
        16 << 20,
        Collector::new(true, None).unwrap(),
    )
    .unwrap_or_else(|e| panic!("eBPF capture must load on this kernel (run as root): {e:#}"))
}

#[test]
fn ground_truth_block_order_wake_order_and_blocker_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lockfile");
    let path = path.to_str().unwrap();
    let cap = start_capture();

    let mut holder = spawn_locker(path, "hold");
    assert_eq!(read_line(&mut holder), "requesting");
    assert_eq!(read_line(&mut holder), "locked");
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let mut w = spawn_locker(path, "wait");
        assert_eq!(read_line(&mut w), "requesting");
        sleep(Duration::from_millis(50));
        waiters.push(w);
    }
    // All three are blocked now; release.
    holder
        .child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    assert!(holder.child.wait().unwrap().success());
    for w in &mut waiters {
        assert!(w.child.wait().unwrap().success());
    }
    let (sink, stats) = cap.stop().unwrap();
    let events = sink.events.unwrap();
    assert_eq!(stats.dropped, 0, "no drops expected");
    assert_eq!(stats.decode_errors, 0);

    let hpid = holder.child.id();
    let wpids: Vec<u32> = waiters.iter().map(|w| w.child.id()).collect();
    let lock_events: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == Kind::PosixLockInode)
        .collect();

    // Block order == request order.
    let first_block = |pid: u32| {
        lock_events
            .iter()
            .find(|e| e.tgid == pid && e.lock().unwrap().ret == k::FILE_LOCK_DEFERRED)
            .copied()
            .unwrap_or_else(|| panic!("waiter {pid} never blocked"))
    };
    let blocks: Vec<&Event> = wpids.iter().map(|&p| first_block(p)).collect();
    assert!(
        blocks.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns),
        "block order differs from request order"
    );
    for b in &blocks {
        assert_ne!(b.lock().unwrap().flags & k::FL_SLEEP, 0);
        assert_eq!(b.lock().unwrap().lock_type, k::F_WRLCK);
    }

    // The kernel's tree of waiters: w2 nested under w1's request, w3 under w2's.
    let (b1, b2, b3) = (
        blocks[0].lock().unwrap(),
        blocks[1].lock().unwrap(),
        blocks[2].lock().unwrap(),
    );
    assert_ne!(b1.blocker, 0);
    assert_eq!(
        b2.blocker, b1.fl,
        "second waiter should block under the first waiter's request"
    );
    assert_eq!(
        b3.blocker, b2.fl,
        "third waiter should block under the second waiter's request"
    );

    // The holder's unlock: its wakeups come before its posix_lock_inode(F_UNLCK) event.
    let unlock = lock_events
        .iter()
        .find(|e| e.tgid == hpid && e.lock().unwrap().lock_type == k::F_UNLCK)
        .expect("holder's unlock recorded");
    let enter = events
        .iter()
        .rev()
        .find(|e| e.tgid == hpid && e.kind == Kind::SysEnterFcntl && e.ts_ns <= unlock.ts_ns)
        .expect("holder's unlock syscall entry recorded");
    let first_wake = events
        .iter()
        .find(|e| {
            e.kind == Kind::SchedWaking
                && e.tid == unlock.tid
                && e.ts_ns >= enter.ts_ns
                && e.ts_ns <= unlock.ts_ns
        })
        .expect("the unlock woke somebody");
    assert_eq!(
        first_wake.sched().unwrap().target_tid,
        wpids[0],
        "the first wakeup must target the first waiter"
    );

    // Every waiter was eventually granted (ret 0 with F_WRLCK) and its syscall bracketed.
    for &p in &wpids {
        assert!(lock_events.iter().any(|e| e.tgid == p
            && e.lock().unwrap().ret == 0
            && e.lock().unwrap().lock_type == k::F_WRLCK));
        assert!(
            events
                .iter()
                .any(|e| e.tgid == p && e.kind == Kind::SysExitFcntl)
        );
        assert!(
            events
                .iter()
                .any(|e| e.tgid == p && e.kind == Kind::FcntlSetlk)
        );
    }
}
