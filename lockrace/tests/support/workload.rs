//! Helpers shared by the workload integration tests: run the binary with a deadline, wait for
//! a socket to appear, check whether a process is gone.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One workload at a time, across every test of the binary: two runs side by side on a 2-core
/// machine make every role share a CPU, and a lock handoff between roles on one CPU costs a
/// scheduler slice. Every test that starts `run`, `server` or `client` holds it.
static ONE_WORKLOAD: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    ONE_WORKLOAD.lock().unwrap_or_else(|e| e.into_inner())
}

pub const BIN: &str = env!("CARGO_BIN_EXE_lockrace");

pub fn lockrace() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(Stdio::null());
    c
}

/// Wait for `child` at most `limit`; kill it and panic if it is still running then.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for a child with piped stdout/stderr and collect them.
pub fn output_within(
    mut child: Child,
    limit: Duration,
    what: &str,
) -> (ExitStatus, String, String) {
    // The outputs are small (a few lines), so they fit in the pipe buffers until we read them.
    let status = wait_within(&mut child, limit, what);
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).unwrap();
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err).unwrap();
    }
    (status, out, err)
}

/// Run `cmd` to completion within `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (status, stdout, stderr) = output_within(child, limit, what);
    Output {
        status,
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// Wait until `path` exists (the server bound its socket).
pub fn wait_for_path(path: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::fs::symlink_metadata(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True when no process has this pid any more.
pub fn gone(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
        == Err(nix::errno::Errno::ESRCH)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
