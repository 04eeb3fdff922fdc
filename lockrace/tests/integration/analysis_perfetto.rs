//! Structural checks of the Perfetto (Chrome JSON) trace: valid JSON, balanced B/E, unique flow
//! ids forming single chains, named tracks, and slices that nest or are disjoint on every track
//! (Perfetto's importer drops partially overlapping complete events).
use std::collections::{BTreeMap, HashMap, HashSet};

use lockrace::analysis::synth::{self, Actor, Flavor, Script};
use lockrace::analysis::{AnalysisInput, Analyzer};
use lockrace::report::perfetto::PerfettoWriter;
use lockrace_common::k::{F_RDLCK, F_WRLCK};
use serde_json::Value;

fn trace_of(events: &[lockrace::events::Event]) -> Value {
    let mut w = PerfettoWriter::new(Vec::new()).unwrap();
    {
        let mut a = Analyzer::with_observer(&AnalysisInput::default(), &mut w);
        a.extend(events);
        a.finish();
    }
    let bytes = w.finish().unwrap();
    serde_json::from_slice(&bytes).expect("the trace is valid JSON")
}

/// (start ns, duration ns, name) of a complete slice.
type Slice = (i64, i64, String);

fn ts_ns(v: &Value) -> i64 {
    (v.as_f64().expect("numeric ts") * 1000.0).round() as i64
}

/// Every structural property the UI relies on; returns the number of flows.
fn check(trace: &Value) -> usize {
    let evs = trace["traceEvents"].as_array().expect("traceEvents array");
    assert!(!evs.is_empty());
    let mut named: HashSet<(u64, u64)> = HashSet::new();
    let mut be: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut flows: BTreeMap<u64, Vec<(i64, bool, bool)>> = BTreeMap::new();
    let mut tracks: HashMap<(u64, u64), Vec<Slice>> = HashMap::new();
    for e in evs {
        let ph = e["ph"].as_str().expect("ph");
        let key = (
            e["pid"].as_u64().expect("pid"),
            e["tid"].as_u64().expect("tid"),
        );
        match ph {
            "M" => {
                if e["name"] == "thread_name" {
                    assert!(e["args"]["name"].is_string());
                    named.insert(key);
                }
            }
            "B" => be.entry(key).or_default().push(e["name"].to_string()),
            "E" => {
                let open = be.get_mut(&key).and_then(|s| s.pop());
                assert!(open.is_some(), "E without B: {e}");
            }
            "X" => {
                let start = ts_ns(&e["ts"]);
                let dur = ts_ns(&e["dur"]);
                assert!(dur >= 0, "negative duration: {e}");
                tracks
                    .entry(key)
                    .or_default()
                    .push((start, dur, e["name"].to_string()));
                if let Some(id) = e["bind_id"].as_u64() {
                    let fin = e["flow_in"].as_bool().unwrap_or(false);
                    let fout = e["flow_out"].as_bool().unwrap_or(false);
                    assert!(fin || fout, "bind_id without direction: {e}");
                    flows.entry(id).or_default().push((start, fin, fout));
                }
            }
            "i" => assert!(e["ts"].is_number()),
            other => panic!("unexpected phase {other}"),
        }
    }
    for (k, open) in &be {
        assert!(open.is_empty(), "B without E on {k:?}: {open:?}");
    }
    for k in tracks.keys() {
        assert!(named.contains(k), "track {k:?} has no thread_name");
    }
    for (id, parts) in &flows {
        let starts = parts.iter().filter(|p| p.2 && !p.1).count();
        let steps = parts.iter().filter(|p| p.1 && p.2).count();
        let ends = parts.iter().filter(|p| p.1 && !p.2).count();
        assert_eq!(starts, 1, "flow {id} must start once: {parts:?}");
        assert!(steps <= 1 && ends <= 1, "flow {id} reused: {parts:?}");
        let at = |want: (bool, bool)| parts.iter().find(|p| (p.1, p.2) == want).map(|p| p.0);
        let s = at((false, true)).unwrap();
        if let Some(t) = at((true, true)) {
            assert!(s <= t, "flow {id} steps back in time");
            if let Some(f) = at((true, false)) {
                assert!(t <= f, "flow {id} ends before its step");
            }
        }
    }
    // Perfetto's rule: intervals closed on the left, open on the right; a complete slice must
    // nest in the enclosing one or start at/after its end.
    for (k, slices) in tracks.iter_mut() {
        slices.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
        let mut stack: Vec<Slice> = Vec::new();
        for s in slices.iter() {
            while let Some(top) = stack.last() {
                let end = top.0 + top.1;
                if end < s.0 || (end == s.0 && !(top.1 == 0 && s.1 == 0)) {
                    stack.pop();
                } else {
                    break;
                }
            }
            if let Some(top) = stack.last() {
                let end = top.0 + top.1;
                assert!(
                    s.0 + s.1 <= end,
                    "on {k:?}, {s:?} partially overlaps {top:?}"
                );
            }
            stack.push(s.clone());
        }
    }
    flows.len()
}

#[test]
fn synthetic_stream_trace_is_well_formed() {
    let events = synth::handoff_stream(20_000, 11);
    let t = trace_of(&events);
    let flows = check(&t);
    assert!(flows > 100, "expected many wake flows, got {flows}");
    let names: HashSet<String> = t["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e["name"]
                .as_str()
                .map(|s| s.split(' ').next().unwrap().to_string())
        })
        .collect();
    for want in [
        "blocked", "holding", "unlock", "wake", "wakeup", "runnable", "granted",
    ] {
        assert!(names.contains(want), "no {want} events in the trace");
    }
}

#[test]
fn nested_waiters_readers_and_shared_owners_trace_is_well_formed() {
    let s_ = Actor::new(100, 100, 0, "server", 0x1000, Flavor::Posix);
    let c1 = Actor::new(200, 200, 1, "c1", 0x2000, Flavor::Posix);
    let c2 = Actor::new(201, 201, 1, "c2", 0x2100, Flavor::Posix);
    let r1 = Actor::new(300, 300, 0, "r1", 0x3000, Flavor::Ofd);
    let r2 = Actor::new(301, 301, 1, "r2", 0x3000, Flavor::Ofd);
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c1, F_WRLCK, s_.held);
    s.lock_block(&c2, F_WRLCK, c1.fl);
    s.unlock(&s_, &[&c1]);
    s.lock_now(&s_, F_WRLCK);
    s.run(&c1);
    s.retry_block(&c1, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c1]);
    s.run(&c1);
    s.retry_grant(&c1, F_WRLCK);
    s.waking(&c1, &c2);
    s.run(&c2);
    s.retry_block(&c2, F_WRLCK, c1.held);
    s.unlock(&c1, &[&c2]);
    s.run(&c2);
    s.retry_grant(&c2, F_WRLCK);
    s.unlock(&c2, &[]);
    s.lock_now(&r1, F_RDLCK);
    s.lock_now(&r2, F_WRLCK);
    s.unlock(&r1, &[]);
    // Left blocked and still held at the end of the events.
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c1, F_WRLCK, s_.held);
    let t = trace_of(&s.events);
    assert!(check(&t) >= 4);
}

#[test]
fn write_errors_surface_at_finish() {
    /// Accepts `left` bytes, then fails like a full disk.
    struct Full {
        left: usize,
    }
    impl std::io::Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = b.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = PerfettoWriter::new(Full { left: 2_000 }).unwrap();
    {
        let mut a = Analyzer::with_observer(&AnalysisInput::default(), &mut w);
        a.extend(&synth::handoff_stream(2_000, 1));
        a.finish();
    }
    let err = w.finish().err().expect("the write error is reported");
    assert!(err.to_string().contains("disk full"));
}

#[test]
fn recorded_fixtures_trace_is_well_formed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    for name in ["ground-truth", "posix-reopen", "ofd-same"] {
        let (events, _) =
            lockrace::jsonl::reader::read_events(&dir.join(format!("{name}.jsonl"))).unwrap();
        let t = trace_of(&events);
        let flows = check(&t);
        if name != "ofd-same" {
            assert!(flows > 0, "{name}: no wake flows");
        }
    }
}
