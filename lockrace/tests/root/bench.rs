//! Root integration tests of what `cargo xtask bench` measures, on the real kernel: the lean
//! probe set of a traced run still sees every grant, and the lock storm's in-process capture
//! decodes every record of every lock call. They FAIL (never skip) when eBPF cannot load.

use serde_json::Value;

use crate::lockrace;

fn json_of(out: &std::process::Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

#[test]
fn lean_probes_see_every_grant_of_the_handoff_and_drop_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = lockrace()
        .args([
            "run",
            "--lock",
            "posix",
            "--share",
            "reopen",
            "--iterations",
            "2000",
            "--no-baseline",
            "--probes",
            "lean",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lockrace run --probes lean failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(7 probes attached"),
        "lean attaches 7 programs: {stderr}"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["capture"]["dropped"], 0, "{}", doc["capture"]);
    let roles = doc["whoops"]["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2);
    for r in roles {
        assert_eq!(
            r["grants"], r["acquisitions"],
            "kernel grants != acquisitions for {r}"
        );
        assert!(r["acquisitions"].as_u64().unwrap() >= 2000);
    }
    assert_eq!(doc["whoops"]["explained"], doc["whoops"]["total"]);
}

#[test]
fn storm_capture_decodes_four_events_per_lock_call_without_drops() {
    let out = lockrace()
        .args([
            "bench",
            "storm",
            "--procs",
            "2",
            "--threads",
            "2",
            "--duration",
            "0.5",
            "--rate",
            "100000",
            "--capture",
            "count",
        ])
        .output()
        .unwrap();
    let v = json_of(&out, "lockrace bench storm --capture count");
    let calls = v["calls"].as_u64().unwrap();
    let events = v["events"].as_u64().unwrap();
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["dropped"], 0, "{v}");
    assert_eq!(v["decode_errors"], 0, "{v}");
    assert!(calls > 10_000, "{v}");
    // sys_enter_fcntl, posix_lock_inode, fcntl_setlk and sys_exit_fcntl per call; the workers'
    // start-up adds a few lock-free fcntl calls, which the kernel side filters out.
    assert!(
        events >= 4 * calls && events <= 4 * calls + 1_000,
        "{events} events for {calls} calls: {v}"
    );
}

#[test]
fn storm_under_record_writes_every_event_as_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("storm.jsonl");
    let out = lockrace()
        .args(["record", "--events"])
        .arg(&file)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_lockrace"))
        .args([
            "bench",
            "storm",
            "--procs",
            "1",
            "--threads",
            "2",
            "--duration",
            "0.3",
            "--rate",
            "20000",
        ])
        .output()
        .unwrap();
    let v = json_of(&out, "lockrace record -- lockrace bench storm");
    let calls = v["calls"].as_u64().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut posix = 0u64;
    for line in text
        .lines()
        .filter(|l| !lockrace::jsonl::file::is_meta_line(l))
    {
        let e = lockrace::events::from_json(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        posix += u64::from(e.kind == lockrace::events::Kind::PosixLockInode);
    }
    // One per fcntl lock call, plus at most one per thread when its close() drops the
    // process's remaining POSIX locks (locks_remove_posix unlocks through posix_lock_inode).
    assert!(
        posix >= calls && posix <= calls + 2,
        "{posix} posix_lock_inode events for {calls} fcntl lock calls"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("DROPPED"), "{stderr}");
}
