//! `lockrace run --no-trace` end to end: every lock flavour and share mode completes, the JSON
//! document is the versioned one, and the inside counter shows which setups really exclude.

use std::time::Duration;

use crate::workload_support::*;
use lockrace::report::model::Document;

const LOCKS: [&str; 4] = ["posix", "ofd", "flock", "lockf"];
const SHARES: [&str; 2] = ["same", "reopen"];

/// Run one configuration and return its document.
fn run(lock: &str, share: &str, iterations: u64) -> Document {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = run_within(
        lockrace()
            .args(["run", "--no-trace", "--lock", lock, "--share", share])
            .args(["--iterations", &iterations.to_string()])
            .arg("--json")
            .arg(&json),
        Duration::from_secs(60),
        &format!("run --lock {lock} --share {share}"),
    );
    assert!(
        out.status.success(),
        "{lock}/{share}: {:?}\n{}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{lock} lock, share {share}, {iterations} iterations"
        )),
        "{stdout}"
    );
    let doc: Document = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc.schema_version, lockrace::report::model::SCHEMA_VERSION);
    assert!(doc.complete, "{:?}", doc.incomplete_reasons);
    assert!(
        doc.capture.is_none(),
        "untraced runs have no capture section"
    );
    doc
}

fn overlaps(doc: &Document) -> u64 {
    doc.workload
        .as_ref()
        .unwrap()
        .roles
        .iter()
        .map(|r| r.overlaps)
        .sum()
}

#[test]
fn every_flavour_and_share_mode_completes() {
    for lock in LOCKS {
        for share in SHARES {
            let doc = run(lock, share, 300);
            let w = doc.workload.unwrap();
            assert_eq!(
                (w.lock.as_str(), w.share.as_str(), w.iterations),
                (lock, share, 300)
            );
            let roles: Vec<&str> = w.roles.iter().map(|r| r.role.as_str()).collect();
            assert_eq!(roles, ["server", "client"]);
            for r in &w.roles {
                assert_eq!(r.iterations, 300, "{lock}/{share} {}", r.role);
                assert!(r.acquisitions >= r.iterations);
                assert_eq!(r.acquisitions, r.iterations + r.whoops);
                assert!(r.elapsed_ns > 0 && r.pid > 0);
            }
            // Both roles name the same memfd.
            assert_eq!(
                (w.roles[0].memfd_dev, w.roles[0].memfd_ino),
                (w.roles[1].memfd_dev, w.roles[1].memfd_ino)
            );
            assert!(w.roles[0].memfd_ino > 0);
        }
    }
}

#[test]
fn one_shared_description_does_not_exclude_ofd_or_flock() {
    // OFD and flock locks belong to the open file description; with --share same both roles
    // use ONE description, so the kernel never makes one wait for the other.
    for lock in ["ofd", "flock"] {
        let doc = run(lock, "same", 2000);
        assert!(
            overlaps(&doc) > 0,
            "{lock}/same: no overlap in 2000 iterations"
        );
    }
}

#[test]
fn process_locks_and_private_descriptions_exclude() {
    for (lock, share) in [
        ("posix", "same"),
        ("lockf", "same"),
        ("posix", "reopen"),
        ("ofd", "reopen"),
        ("flock", "reopen"),
        ("lockf", "reopen"),
    ] {
        let doc = run(lock, share, 2000);
        assert_eq!(
            overlaps(&doc),
            0,
            "{lock}/{share} let both roles in at once"
        );
    }
}

#[test]
fn role_json_and_acquisition_log_agree() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let (slog, clog) = (dir.path().join("s.acq"), dir.path().join("c.acq"));
    let common = ["--iterations", "200", "--lock", "posix", "--json"];
    let server = lockrace()
        .arg("server")
        .arg("--socket")
        .arg(&sock)
        .args(common)
        .arg("--acquisition-log")
        .arg(&slog)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = run_within(
        lockrace()
            .arg("client")
            .arg("--socket")
            .arg(&sock)
            .args(common)
            .arg("--acquisition-log")
            .arg(&clog),
        Duration::from_secs(30),
        "client",
    );
    let (st, sout, serr) = output_within(server, Duration::from_secs(30), "server");
    assert!(
        st.success() && client.status.success(),
        "{serr}\n{}",
        text(&client.stderr)
    );
    for (json, log, role) in [
        (sout, slog, "server"),
        (text(&client.stdout), clog, "client"),
    ] {
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        for key in [
            "role",
            "pid",
            "iterations",
            "acquisitions",
            "whoops",
            "overlaps",
            "elapsed_ns",
            "memfd_dev",
            "memfd_ino",
        ] {
            assert!(v.get(key).is_some(), "{role} JSON lacks {key}: {json}");
        }
        assert_eq!(v["role"], role);
        let acq = lockrace::workload::parse_acquisition_log(&std::fs::read_to_string(log).unwrap())
            .unwrap();
        assert_eq!(acq.len() as u64, v["acquisitions"].as_u64().unwrap());
        assert_eq!(
            acq.iter().filter(|a| a.whoops).count() as u64,
            v["whoops"].as_u64().unwrap()
        );
        assert!(acq.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    }
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the server left its socket behind"
    );
}

#[test]
fn plain_role_output_is_one_line() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let server = lockrace()
        .arg("server")
        .arg("--socket")
        .arg(&sock)
        .args(["--iterations", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = run_within(
        lockrace()
            .arg("client")
            .arg("--socket")
            .arg(&sock)
            .args(["--iterations", "10"]),
        Duration::from_secs(30),
        "client",
    );
    let (st, sout, _) = output_within(server, Duration::from_secs(30), "server");
    assert!(st.success() && client.status.success());
    assert_eq!(sout.lines().count(), 1);
    assert!(sout.starts_with("server: 10 turns, "), "{sout}");
    assert!(text(&client.stdout).starts_with("client: 10 turns, "));
}
