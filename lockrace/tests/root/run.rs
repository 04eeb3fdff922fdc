//! Root integration tests of the traced `lockrace run`, `record` and `report` on the real
//! kernel. They FAIL (never skip) when eBPF cannot load.
use std::process::Command;

use serde_json::Value;

use crate::lockrace;

/// `lockrace run ARGS --json F` traced, returning the parsed report.
fn traced_run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = lockrace()
        .arg("run")
        .args(args)
        .args(["--no-baseline", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lockrace run {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// The lock entry of the memfd (the only lock of a run).
fn memfd_lock(doc: &Value) -> &Value {
    let ino = doc["workload"]["roles"][0]["memfd_ino"].as_u64().unwrap();
    let locks = doc["locks"].as_array().unwrap();
    let mine: Vec<&Value> = locks
        .iter()
        .filter(|l| l["ino"].as_u64() == Some(ino))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one lock on the memfd expected, got {locks:?}"
    );
    mine[0]
}

#[test]
fn posix_reopen_kernel_grants_equal_acquisitions_and_every_whoops_is_explained() {
    let doc = traced_run(&[
        "--lock",
        "posix",
        "--share",
        "reopen",
        "--iterations",
        "2000",
    ]);
    assert_eq!(
        doc["capture"]["dropped"], 0,
        "capture dropped events: {}",
        doc["capture"]
    );
    assert_eq!(doc["capture"]["complete"], true, "{}", doc["capture"]);
    let roles = doc["whoops"]["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2);
    for r in roles {
        assert_eq!(
            r["grants"], r["acquisitions"],
            "kernel grants != acquisitions for {r}"
        );
        assert!(r["acquisitions"].as_u64().unwrap() >= 2000);
    }
    let lock = memfd_lock(&doc);
    assert!(
        lock["blocks"].as_u64().unwrap() > 0,
        "posix/reopen must block: {lock}"
    );
    assert_eq!(lock["overlapping_grants"], 0);
    assert_eq!(doc["whoops"]["explained"], doc["whoops"]["total"]);
    let workload_whoops: u64 = doc["workload"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["whoops"].as_u64().unwrap())
        .sum();
    assert_eq!(doc["whoops"]["total"].as_u64().unwrap(), workload_whoops);
    assert!(doc["kernel"]["release"].as_str().unwrap().len() > 2);
}

#[test]
fn ofd_same_description_never_blocks_one_owner_no_mutual_exclusion() {
    let doc = traced_run(&["--lock", "ofd", "--share", "same", "--iterations", "2000"]);
    assert_eq!(doc["capture"]["dropped"], 0);
    let lock = memfd_lock(&doc);
    assert_eq!(
        lock["blocks"], 0,
        "OFD locks through one description never conflict: {lock}"
    );
    assert_eq!(lock["blocked_requests"], 0);
    assert_eq!(
        lock["owners"].as_array().unwrap().len(),
        1,
        "exactly one owner: {}",
        lock["owners"]
    );
    let codes: Vec<&str> = doc["diagnosis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"no-mutual-exclusion"),
        "diagnosis: {codes:?}"
    );
    for r in doc["whoops"]["roles"].as_array().unwrap() {
        assert_eq!(r["grants"], r["acquisitions"]);
    }
}

#[test]
fn ground_truth_recorded_then_reported_keeps_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("gt.jsonl");
    let lockfile = dir.path().join("gt.lock");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ground_truth.py"
    );
    let out = lockrace()
        .args([
            "record",
            "--events",
            events.to_str().unwrap(),
            "--",
            "python3",
            script,
            lockfile.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let order: Value = serde_json::from_slice(&out.stdout).unwrap();
    let holder = order["holder"].as_u64().unwrap();
    let waiters: Vec<u64> = order["waiters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();

    let json = dir.path().join("gt.json");
    let out = lockrace()
        .args([
            "report",
            events.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let locks = doc["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{locks:?}");
    let block_order: Vec<u64> = locks[0]["block_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let grant_order: Vec<u64> = locks[0]["grant_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(block_order, waiters);
    let mut expected = vec![holder];
    expected.extend(&waiters);
    assert_eq!(grant_order, expected);
    assert_eq!(locks[0]["handoffs"]["fifo"], 3);
}

#[test]
fn record_propagates_the_exit_status_and_127_for_a_missing_command() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("e.jsonl");
    let st = lockrace()
        .args([
            "record",
            "--events",
            events.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
    let out = lockrace()
        .args([
            "record",
            "--events",
            events.to_str().unwrap(),
            "--",
            "/nonexistent/cmd",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found: /nonexistent/cmd"));
}

#[test]
fn record_follows_the_command_and_the_children_it_forks() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("f.jsonl");
    let (a, b) = (dir.path().join("a.lock"), dir.path().join("b.lock"));
    // flock(1) locks A and runs sh, which runs a second flock(1) on B: grandchildren count too.
    let inner = format!("flock {} true", b.display());
    let st = lockrace()
        .args([
            "record",
            "--events",
            events.to_str().unwrap(),
            "--",
            "flock",
        ])
        .arg(&a)
        .args(["sh", "-c", &inner])
        .status()
        .unwrap();
    assert!(st.success());
    let locks: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "flock_lock_inode" && v["lock_type"] == 1 && v["ret"] == 0)
        .collect();
    let inodes: std::collections::BTreeSet<u64> =
        locks.iter().map(|v| v["ino"].as_u64().unwrap()).collect();
    let tgids: std::collections::BTreeSet<u64> =
        locks.iter().map(|v| v["tgid"].as_u64().unwrap()).collect();
    assert_eq!(
        inodes.len(),
        2,
        "both files' flock grants recorded: {locks:?}"
    );
    assert_eq!(tgids.len(), 2, "the command and its grandchild: {locks:?}");
}

/// `lockrace record --max-tasks 64 -- CMD`: stderr and the trailer's incomplete reasons.
fn record_small_maps(dir: &std::path::Path, cmd: &[&str]) -> (String, Vec<String>) {
    let events = dir.join("t.jsonl");
    let out = lockrace()
        .args([
            "record",
            "--probes",
            "full",
            "--max-tasks",
            "64",
            "--events",
        ])
        .arg(&events)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let text = std::fs::read_to_string(&events).unwrap();
    let trailer: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let reasons = trailer["lockrace_trailer"]["incomplete_reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no trailer: {trailer}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    (err, reasons)
}

/// A task map that fills up is counted and reported, never silent: 100 live children of the
/// recorded shell do not fit in `--max-tasks 64`.
#[test]
fn a_full_task_map_marks_the_recording_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let (err, reasons) = record_small_maps(
        dir.path(),
        &["sh", "-c", "for i in $(seq 100); do sleep 1 & done; wait"],
    );
    assert!(err.contains("NOT FOLLOWED"), "{err}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("could not be followed") && r.contains("--max-tasks")),
        "{reasons:?}"
    );
}

/// Threads give their slots back when they exit: 200 short-lived threads, one after the other,
/// fit in `--max-tasks 64`.
#[test]
fn exited_threads_do_not_fill_the_task_map() {
    let dir = tempfile::tempdir().unwrap();
    let (err, reasons) = record_small_maps(
        dir.path(),
        &[
            "python3",
            "-c",
            "import threading\nfor _ in range(200):\n    t = threading.Thread(target=lambda: None)\n    t.start()\n    t.join()",
        ],
    );
    assert!(!err.contains("NOT FOLLOWED"), "{err}");
    assert!(reasons.is_empty(), "{reasons:?}");
}

#[test]
fn without_root_tracing_is_refused_in_one_line_and_run_falls_back_untraced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let events = dir.path().join("e.jsonl");
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_lockrace"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = as_nobody(&["record", "--events", events.to_str().unwrap(), "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("lockrace: tracing needs root"), "{err}");
    assert!(err.contains("sudo"), "{err}");

    let out = as_nobody(&[
        "run",
        "--iterations",
        "50",
        "--tmpdir-parent",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not root, so the run is untraced"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("untraced"));
}
