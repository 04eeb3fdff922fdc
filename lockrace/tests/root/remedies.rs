//! Root tests of the seed's other claims, from the kernel's own events: flock upgrades are not
//! atomic and fcntl ones convert in place, flock and fcntl locks ignore each other, lockf is
//! fcntl(F_SETLKW), and compare-sync's traced pass adds self-barges to the file-lock rows.
//! They FAIL (never skip) when eBPF cannot load.
use std::io::BufRead;

use lockrace::events::{Event, from_json};
use lockrace::workload::evidence::{self, CallPath};
use serde_json::Value;

use crate::lockrace;

/// One traced workload at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `lockrace run ARGS --json F` traced; returns the JSON and stdout.
fn traced(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = lockrace()
        .arg("run")
        .args(args)
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "lockrace run {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(),
        stdout,
    )
}

fn upgrade(lock: &str) -> (Value, String) {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let (v, stdout) = traced(&[
        "--scenario",
        "upgrade",
        "--lock",
        lock,
        "--iterations",
        "500",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(v["report"], "lockrace-scenario");
    assert_eq!(v["complete"], true, "{}", v["incomplete_reasons"]);
    assert_eq!(v["kernel"]["capture"]["dropped"], 0);
    // The scenario's events file ends with the run's trailer, so `lockrace report` reads it as
    // complete and finds every acquisition the roles logged.
    let report = dir.path().join("report.json");
    let out = lockrace()
        .arg("report")
        .arg(&events)
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lockrace report of a scenario's events: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["complete"], true, "{}", r["incomplete_reasons"]);
    for role in r["whoops"]["roles"].as_array().expect("whoops roles") {
        assert_eq!(role["acquisitions"], 1000, "{role}");
    }
    (v, stdout)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn flock_upgrades_drop_the_shared_lock_first_and_get_stolen() {
    let (v, stdout) = upgrade("flock");
    let u = &v["kernel"]["upgrade"];
    assert_eq!(n(&u["upgrades"]), 500, "{u}");
    assert_eq!(
        n(&u["waited"]),
        500,
        "every upgrade waited for the client's shared lock: {u}"
    );
    assert_eq!(n(&u["granted"]), 500, "{u}");
    // In every window the client was granted the exclusive lock while the server's upgrade was
    // in flight: impossible had the server's shared lock still been held.
    assert_eq!(n(&u["stolen"]), 500, "an upgrade kept its shared lock: {u}");
    assert_eq!(n(&u["others_refused"]), 0, "{u}");
    // The roles saw the same thefts the kernel did.
    for r in v["workload"]["roles"].as_array().unwrap() {
        assert_eq!(r["upgrade"]["stolen"], u["stolen"], "{r}");
        assert_eq!(r["overlaps"], 0);
    }
    assert!(
        stdout.contains("verdict: flock upgrade not atomic"),
        "{stdout}"
    );
}

#[test]
fn fcntl_upgrades_convert_in_place() {
    for lock in ["posix", "ofd"] {
        let (v, stdout) = upgrade(lock);
        let u = &v["kernel"]["upgrade"];
        assert_eq!(n(&u["upgrades"]), 500, "{lock}: {u}");
        assert_eq!(n(&u["waited"]), 500, "{lock}: {u}");
        assert_eq!(n(&u["granted"]), 500, "{lock}: {u}");
        assert_eq!(
            n(&u["stolen"]),
            0,
            "{lock}: an fcntl upgrade lost its read lock: {u}"
        );
        assert_eq!(n(&u["explicit_unlocks"]), 0, "{lock}: {u}");
        // The client's non-blocking upgrade was refused in every window: the read lock the
        // server's pending upgrade kept still conflicted.
        assert_eq!(
            n(&u["others_refused"]),
            500,
            "{lock}: the client's try was not refused in every window: {u}"
        );
        for r in v["workload"]["roles"].as_array().unwrap() {
            assert_eq!(r["upgrade"]["stolen"], 0, "{lock}: {r}");
        }
        assert_eq!(v["workload"]["roles"][1]["upgrade"]["refused"], 500);
        // The requests went through posix_lock_inode (OFD flagged for ofd).
        let path = &v["kernel"]["server_path"];
        assert_eq!(path["flock_calls"], 0);
        let want_cmd = if lock == "posix" { 7 } else { 38 };
        assert_eq!(path["fcntl_cmds"], serde_json::json!([want_cmd]), "{path}");
        assert!(
            stdout.contains(&format!("verdict: {lock} upgrade converted in place")),
            "{stdout}"
        );
    }
}

#[test]
fn flock_and_fcntl_locks_on_one_file_never_wait_for_each_other() {
    let _one = serial();
    for lock in ["posix", "ofd"] {
        let (v, stdout) = traced(&[
            "--scenario",
            "mixed",
            "--lock",
            lock,
            "--iterations",
            "1000",
        ]);
        assert_eq!(v["kernel"]["capture"]["dropped"], 0);
        let i = &v["kernel"]["independence"];
        assert!(n(&i["flock_grants"]) >= 1000, "{i}");
        assert!(n(&i["posix_grants"]) >= 1000, "{i}");
        assert_eq!(
            n(&i["blocks"]),
            0,
            "{lock}: a request waited for the other kind: {i}"
        );
        assert!(n(&i["concurrent_grants"]) > 0, "{i}");
        let overlaps: u64 = v["workload"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| n(&r["overlaps"]))
            .sum();
        assert!(overlaps > 0, "{lock}: both roles never inside at once");
        assert!(stdout.contains("do not see each other"), "{stdout}");
    }
}

fn read_events(path: &std::path::Path) -> Vec<Event> {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    f.lines()
        .map(|l| l.unwrap())
        .filter(|l| !lockrace::jsonl::file::is_meta_line(l))
        .map(|l| from_json(&l).expect("a lockrace event"))
        .collect()
}

/// A traced `run --lock LOCK --share reopen`: the call path of both roles' requests.
fn call_path_of(lock: &str) -> CallPath {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let (v, _) = traced(&[
        "--lock",
        lock,
        "--share",
        "reopen",
        "--iterations",
        "1000",
        "--no-baseline",
        // The call path is read from the syscall records, which only the full set has.
        "--probes",
        "full",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(v["capture"]["dropped"], 0);
    let roles = v["workload"]["roles"].as_array().unwrap();
    let tgids: Vec<u32> = roles.iter().map(|r| n(&r["pid"]) as u32).collect();
    let dev = n(&roles[0]["memfd_dev"]) as u32;
    let ino = n(&roles[0]["memfd_ino"]);
    evidence::call_path(&read_events(&events), &tgids, dev, ino)
}

#[test]
fn lockf_requests_are_posix_fcntl_setlkw_like_a_plain_fcntl_lock() {
    let lockf = call_path_of("lockf");
    assert!(lockf.is_plain_posix_setlkw(), "{lockf:?}");
    assert!(lockf.fcntl_calls >= 4000, "{lockf:?}");
    let posix = call_path_of("posix");
    assert!(posix.is_plain_posix_setlkw(), "{posix:?}");
    // The same syscall command for the lock requests (F_SETLKW; glibc's lockf releases with
    // F_SETLK, lockrace's posix flavour with F_SETLKW) and the same kernel flags on the
    // blocking requests.
    assert_eq!(lockf.lock_cmds, posix.lock_cmds);
    assert_eq!(
        lockf.lock_cmds,
        std::collections::BTreeSet::from([lockrace_common::k::F_SETLKW])
    );
    let sleeping = |p: &CallPath| -> Vec<u32> {
        p.posix_flags
            .iter()
            .copied()
            .filter(|f| f & lockrace_common::k::FL_SLEEP != 0)
            .collect()
    };
    assert_eq!(
        sleeping(&lockf),
        sleeping(&posix),
        "lockf {} vs posix {}",
        lockf.signature(),
        posix.signature()
    );
}

#[test]
fn compare_sync_traces_the_file_lock_rows() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cs.json");
    let out = lockrace()
        .args([
            "compare-sync",
            "--iterations",
            "500",
            "--repeat",
            "1",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("self-barge/handoff"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["traced"], true);
    assert_eq!(v["trace_iterations"], 500);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for r in &rows[..6] {
        let t = &r["traced"];
        assert!(t.is_object(), "file-lock row without traced figures: {r}");
        let sb = t["self_barge_whoops_per_handoff"].as_f64().unwrap();
        assert!(
            sb >= 0.0 && sb <= t["whoops_per_handoff"].as_f64().unwrap() + 1e-9,
            "{t}"
        );
    }
    for r in &rows[6..] {
        assert!(r["traced"].is_null(), "eventfd/futex take no lock: {r}");
    }
    // posix on private descriptions blocks, so the kernel decided handoffs there.
    assert!(n(&rows[0]["traced"]["kernel_handoffs"]) > 0, "{}", rows[0]);
}
