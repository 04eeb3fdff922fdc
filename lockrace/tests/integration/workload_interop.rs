//! Interop with seed-style peers written in Python 3 (tests/fixtures/seed_*.py): the defaults
//! (OFD lock, one shared description, state in the shared file offset, 64-byte sealed memfd)
//! are the seed's, so a Python server works with `lockrace client` and vice versa.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::workload_support::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn python(script: &str, sock: &Path) -> Command {
    let mut c = Command::new("/usr/bin/env");
    c.arg("python3")
        .arg(fixture(script))
        .arg(sock)
        .arg("100")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn python_server_with_lockrace_client() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let py = python("seed_server.py", &sock).spawn().unwrap();
    wait_for_path(&sock, Duration::from_secs(10));
    let client = run_within(
        lockrace().arg("client").arg("--socket").arg(&sock).args([
            "--json",
            "--stall-timeout",
            "20",
        ]),
        Duration::from_secs(30),
        "lockrace client",
    );
    let (st, out, err) = output_within(py, Duration::from_secs(30), "python server");
    assert!(st.success(), "python server: {err}");
    assert!(out.starts_with("server iterations=100 "), "{out}");
    assert!(client.status.success(), "{}", text(&client.stderr));
    let v: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    assert_eq!(v["role"], "client");
    assert_eq!(v["iterations"], 100);
}

#[test]
fn lockrace_server_with_python_client() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let server = lockrace()
        .arg("server")
        .arg("--socket")
        .arg(&sock)
        .args(["--json", "--stall-timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_path(&sock, Duration::from_secs(10));
    let py = run_within(
        &mut python("seed_client.py", &sock),
        Duration::from_secs(30),
        "python client",
    );
    let (st, out, err) = output_within(server, Duration::from_secs(30), "lockrace server");
    assert!(py.status.success(), "python client: {}", text(&py.stderr));
    assert!(text(&py.stdout).starts_with("client iterations=100 "));
    assert!(st.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["role"], "server");
    assert_eq!(v["iterations"], 100);
    assert!(v["memfd_ino"].as_u64().unwrap() > 0);
}
