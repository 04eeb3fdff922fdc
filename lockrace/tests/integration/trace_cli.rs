//! `lockrace trace` input errors: each is refused before anything is attached (no root, no
//! eBPF needed), with one line naming what is wrong.
use std::process::{Command, Output};

fn trace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .arg("trace")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_pid_that_does_not_exist_is_an_error() {
    let o = trace(&["--pid", "999999999"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("lockrace: no process with pid 999999999"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("Tracing"), "nothing may be attached");
}

#[test]
fn a_pid_that_already_exited_is_an_error() {
    // A child that has exited but is not reaped yet: a zombie, nothing left to trace.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .contains(") Z")
    {
        assert!(std::time::Instant::now() < deadline, "child never exited");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let o = trace(&["--pid", &pid]);
    child.wait().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("process {pid} has already exited")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_path_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.db");
    let o = trace(&["--path", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("cannot trace") && e.contains("no-such.db"),
        "{e}"
    );
    assert!(e.contains("hint:"), "{e}");
    assert_eq!(e.lines().count(), 1, "one line: {e}");
}

#[test]
fn a_command_that_does_not_exist_exits_127() {
    let o = trace(&["--", "lockrace-no-such-command", "arg"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("command not found: lockrace-no-such-command"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_numbers_are_refused() {
    for (flag, v) in [
        ("--duration", "0"),
        ("--interval", "-1"),
        ("--duration", "x"),
    ] {
        let o = trace(&[&format!("{flag}={v}"), "--", "true"]);
        assert_ne!(o.status.code(), Some(0), "{flag} {v} accepted");
        assert!(stderr(&o).contains(flag), "{flag} {v}: {}", stderr(&o));
    }
}

#[test]
fn help_shows_examples() {
    let o = Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(["trace", "--help"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for needle in ["--pid", "--path", "--interval", "--perfetto", "Examples:"] {
        assert!(out.contains(needle), "{needle} missing from:\n{out}");
    }
}
