//! Recorded kernel events (lockrace/tests/fixtures/events/*.jsonl, from real runs on 6.18):
//! re-analysing each gives the checked-in document (lockrace/tests/fixtures/analysis/
//! NAME.expected.json) and the facts the kernel semantics demand.
//!
//! After an intended change of the analysis, regenerate the expected documents with
//! `LOCKRACE_BLESS=1 cargo test -p lockrace --test integration analysis_fixtures` and review the
//! diff.
use std::path::{Path, PathBuf};

use lockrace::analysis::{Acquisition, AnalysisInput, RoleInput, WhoopsInput, analyze};
use lockrace::cmd::report::analyze_file;
use lockrace::jsonl::reader::read_events;
use lockrace::report::model::Document;
use lockrace_common::k;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn events_file(name: &str) -> PathBuf {
    fixtures().join("events").join(format!("{name}.jsonl"))
}

/// The document with what legitimately varies between builds normalized.
fn normalized(doc: &Document) -> serde_json::Value {
    let mut v = serde_json::to_value(doc).unwrap();
    v["lockrace_version"] = serde_json::Value::from("VERSION");
    v
}

fn check_expected(name: &str) -> Document {
    let doc = analyze_file(&events_file(name), None).unwrap();
    let got = normalized(&doc);
    let path = fixtures()
        .join("analysis")
        .join(format!("{name}.expected.json"));
    if std::env::var_os("LOCKRACE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    if got != want {
        let g = serde_json::to_string_pretty(&got).unwrap();
        let w = serde_json::to_string_pretty(&want).unwrap();
        let first = g
            .lines()
            .zip(w.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{name}: the analysis changed (first difference at line {}):\n got: {}\nwant: {}\n\
             (LOCKRACE_BLESS=1 regenerates the expected file)",
            first + 1,
            g.lines().nth(first).unwrap_or(""),
            w.lines().nth(first).unwrap_or("")
        );
    }
    // The expected document also reads back as a Document.
    let back: Document = serde_json::from_value(want).unwrap();
    assert_eq!(back.locks.len(), doc.locks.len());
    doc
}

/// ground_truth.py: a holder, then three waiters that request 50 ms apart; the holder releases
/// once all three are blocked. Linux must grant them in request order.
#[test]
fn ground_truth_is_fifo_in_request_order() {
    let doc = check_expected("ground-truth");
    assert!(doc.complete, "{:?}", doc.incomplete_reasons);
    assert_eq!(doc.locks.len(), 1);
    let l = &doc.locks[0];
    let holder = l.grant_order[0];
    let waiters = l.block_order.clone();
    assert_eq!(waiters.len(), 3);
    assert!(!waiters.contains(&holder));
    let mut expect = vec![holder];
    expect.extend(&waiters);
    assert_eq!(l.grant_order, expect);
    assert_eq!(l.handoffs.fifo, 3);
    assert_eq!(
        l.handoffs.self_barge + l.handoffs.newcomer_barge + l.handoffs.waiter_reorder,
        0
    );
    assert_eq!(l.wake_inversions, 0);
    assert_eq!(l.spurious_wakes, 0);
    assert_eq!(l.overlapping_grants, 0);
    assert_eq!(l.owners.len(), 4);
    assert_eq!(l.kind, "posix");
    // They requested 50 ms apart and waited for the release: ~200, ~150, ~100 ms.
    let p = &l.wait_ns;
    assert_eq!(p.count, 3);
    assert!(p.max.unwrap() > 150_000_000 && p.max.unwrap() < 250_000_000);
    assert!(doc.verdict[0].starts_with("Linux woke your waiters in FIFO order every time, and"));
    assert!(doc.diagnosis.is_empty());
}

/// posix/reopen: real mutual exclusion; the releaser barges most of the time.
#[test]
fn posix_reopen_shows_barging_not_a_fifo_violation() {
    let doc = check_expected("posix-reopen");
    assert!(doc.complete, "{:?}", doc.incomplete_reasons);
    assert_eq!(doc.locks.len(), 1);
    let l = &doc.locks[0];
    assert_eq!(l.kind, "posix");
    assert_eq!(l.owners.len(), 2);
    assert!(l.owners.iter().all(|o| o.tgids.len() == 1));
    assert_eq!(l.overlapping_grants, 0);
    assert_eq!(l.wake_inversions, 0);
    assert_eq!(l.handoffs.newcomer_barge + l.handoffs.waiter_reorder, 0);
    assert!(l.handoffs.self_barge > l.handoffs.fifo, "{:?}", l.handoffs);
    assert!(l.handoffs.fifo > 0);
    assert_eq!(l.spurious_wakes, l.blocks - l.blocked_requests);
    let a = doc.analysis.as_ref().unwrap();
    assert_eq!(a.inconsistencies, 0);
    assert_eq!(a.implicit_unlocks, 2, "close() dropped the locks");
    assert!(a.reordered > 0, "this recording has per-CPU reordering");
    let codes: Vec<&str> = doc.diagnosis.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, vec!["lock-barging"]);
    assert!(doc.verdict[0].contains("the releaser re-took the lock before the woken waiter ran"));
}

/// ofd/same: both roles lock through one open file description: one owner, no exclusion.
#[test]
fn ofd_same_description_has_no_mutual_exclusion() {
    let doc = check_expected("ofd-same");
    let l = &doc.locks[0];
    assert_eq!(l.kind, "ofd");
    assert_eq!(l.owners.len(), 1);
    assert_eq!(l.owners[0].tgids.len(), 2);
    assert_eq!(l.blocks, 0);
    assert!(l.overlapping_grants > 0);
    assert_eq!(doc.diagnosis[0].code, "no-mutual-exclusion");
    assert_eq!(
        doc.diagnosis[0].evidence["owner"],
        l.owners[0].owner.as_str()
    );
    assert!(doc.verdict[0].starts_with("No mutual exclusion"));
}

/// An acquisition log derived from the traced grants the way the workload defines whoops
/// (a role got the lock again before the other side had its turn).
fn derived_roles(events: &[lockrace::events::Event]) -> WhoopsInput {
    let grants: Vec<(u32, u64, u32, u64)> = events
        .iter()
        .filter(|e| e.kind == lockrace::events::Kind::PosixLockInode)
        .filter_map(|e| {
            let l = e.lock()?;
            (l.ret == 0 && l.lock_type != k::F_UNLCK).then_some((e.tgid, e.ts_ns, l.dev, l.ino))
        })
        .collect();
    let (dev, ino) = (grants[0].2, grants[0].3);
    let mut tgids: Vec<u32> = grants.iter().map(|g| g.0).collect();
    tgids.sort_unstable();
    tgids.dedup();
    let mut roles: Vec<RoleInput> = tgids
        .iter()
        .map(|&t| RoleInput {
            name: format!("role{t}"),
            tgid: t,
            acquisitions: vec![],
        })
        .collect();
    let mut prev = None;
    for (tgid, ts, _, _) in grants {
        let r = roles.iter_mut().find(|r| r.tgid == tgid).unwrap();
        r.acquisitions.push(Acquisition {
            ts_ns: ts + 2_000,
            whoops: prev == Some(tgid),
        });
        prev = Some(tgid);
    }
    WhoopsInput { dev, ino, roles }
}

#[test]
fn whoops_on_recorded_events_are_all_explained() {
    for (name, shared) in [("posix-reopen", false), ("ofd-same", true)] {
        let (events, _) = read_events(&events_file(name)).unwrap();
        let input = AnalysisInput {
            whoops: Some(derived_roles(&events)),
            ..Default::default()
        };
        let a = analyze(&events, &input);
        let w = a.whoops.as_ref().unwrap();
        assert!(w.total > 0, "{name}: no whoops derived");
        assert_eq!(w.explained, w.total, "{name}: {w:?}");
        assert!(w.mismatches.is_empty(), "{name}: {:?}", w.mismatches);
        if shared {
            // Once both roles have locked, every whoops is a shared-owner one.
            assert!(
                w.by_cause.no_exclusion >= w.total - 1,
                "{name}: {:?}",
                w.by_cause
            );
        } else {
            assert_eq!(w.by_cause.no_exclusion, 0, "{name}");
            assert!(w.by_cause.self_barge > 0, "{name}: {:?}", w.by_cause);
        }
    }
}
