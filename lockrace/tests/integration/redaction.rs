//! Kernel addresses stay out of shared files (issue "Hardening"): the JSONL a capture writes,
//! the JSON report and the Perfetto trace carry per-run ids or `#N` labels, and re-analysing a
//! redacted JSONL gives the same report as the raw one (the ids follow the objects' lifetimes,
//! so everything the analyzer compares compares the same).
use std::path::{Path, PathBuf};

use lockrace::analysis::{AnalysisInput, analyze, synth};
use lockrace::capture::Sink;
use lockrace::cmd::report::analyze_file;
use lockrace::events::Event;
use lockrace::jsonl::Collector;
use lockrace::jsonl::reader::read_events;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(format!("{name}.jsonl"))
}

/// Write `events` through a capture's JSONL writer (redacting unless `raw`), with its trailer.
fn write(events: &[Event], path: &Path, raw: bool) {
    let mut c = Collector::new_with(false, Some(path), raw).unwrap();
    for e in events {
        c.push(e).unwrap();
    }
    c.finish().unwrap();
    let stats = lockrace::capture::CaptureStats {
        events: events.len() as u64,
        dropped: 0,
        decode_errors: 0,
        untracked_tasks: 0,
        ..Default::default()
    };
    let trailer = c.trailer(&stats, "type (6.9+ names)", vec![]);
    c.write_meta(&[lockrace::jsonl::Meta::LockraceTrailer(trailer)])
        .unwrap();
}

/// Any value in `text` that looks like a kernel address (0xffff...: the direct map and the
/// kernel image are in the top half of the address space).
fn kernel_addresses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        let v = if let Some(h) = word.strip_prefix("0x") {
            u64::from_str_radix(h, 16).ok()
        } else {
            word.parse::<u64>().ok()
        };
        if v.is_some_and(|v| v >= 0xffff_0000_0000_0000) {
            out.push(word.to_string());
        }
    }
    out
}

/// The document without what may differ: the version, the kernel (the fixtures have no header
/// line), and the owners' labels and order (numbered in the order the analysis lists owners,
/// which is by pointer value: the kernel's addresses or the ids).
fn normalized(doc: &lockrace::report::model::Document) -> serde_json::Value {
    let mut v = serde_json::to_value(doc).unwrap();
    v["lockrace_version"] = "VERSION".into();
    v["kernel"] = serde_json::Value::Null;
    for l in v["locks"].as_array_mut().unwrap() {
        let mut owners: Vec<serde_json::Value> = l["owners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                assert!(o["owner"].as_str().unwrap().starts_with('#'), "{o}");
                o["tgids"].clone()
            })
            .collect();
        owners.sort_by_key(|t| t.to_string());
        l["owners"] = owners.into();
    }
    for d in v["diagnosis"].as_array_mut().unwrap() {
        d["evidence"]["owner"] = serde_json::Value::Null;
        d["evidence"]["owners"] = serde_json::Value::Null;
    }
    v
}

#[test]
fn redacted_files_carry_no_kernel_address_and_analyse_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ground-truth", "ofd-same", "posix-reopen"] {
        let (events, _) = read_events(&fixture(name)).unwrap();
        let raw_text = std::fs::read_to_string(fixture(name)).unwrap();
        assert!(!kernel_addresses(&raw_text).is_empty(), "{name}: fixture");

        let redacted = dir.path().join(format!("{name}.jsonl"));
        write(&events, &redacted, false);
        let text = std::fs::read_to_string(&redacted).unwrap();
        assert_eq!(kernel_addresses(&text), Vec::<String>::new(), "{name}");

        // The offline report of the redacted file equals the raw file's.
        let trace = dir.path().join(format!("{name}.trace.json"));
        let from_ids = analyze_file(&redacted, Some(&trace)).unwrap();
        let from_raw = analyze_file(&fixture(name), None).unwrap();
        let (a, b) = (normalized(&from_ids), normalized(&from_raw));
        assert_eq!(a, b, "{name}: the analysis changed");
        let report = serde_json::to_string(&from_ids).unwrap();
        assert_eq!(kernel_addresses(&report), Vec::<String>::new(), "{name}");
        let trace = std::fs::read_to_string(&trace).unwrap();
        assert_eq!(kernel_addresses(&trace), Vec::<String>::new(), "{name}");

        // The report of the raw events names no kernel address either (labels), unless asked.
        let doc = analyze_file(&fixture(name), None).unwrap();
        assert!(
            doc.locks
                .iter()
                .flat_map(|l| &l.owners)
                .all(|o| o.owner.starts_with('#')),
            "{name}"
        );
        let kept = dir.path().join(format!("{name}.raw.jsonl"));
        write(&events, &kept, true);
        let kept = std::fs::read_to_string(&kept).unwrap();
        assert!(
            kept.lines()
                .next()
                .unwrap()
                .contains("\"raw_pointers\":true")
        );
        assert!(
            !kernel_addresses(&kept).is_empty(),
            "{name}: --raw-pointers"
        );
    }
}

#[test]
fn synthetic_streams_analyse_the_same_redacted() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 7, 42] {
        let events = synth::handoff_stream(20_000, seed);
        let path = dir.path().join(format!("s{seed}.jsonl"));
        write(&events, &path, false);
        let (back, _) = read_events(&path).unwrap();
        assert_eq!(back.len(), events.len());
        let input = AnalysisInput::default();
        let (a, b) = (analyze(&events, &input), analyze(&back, &input));
        assert_eq!(a.stats, b.stats, "seed {seed}");
        assert_eq!(a.locks.len(), b.locks.len());
        for (x, y) in a.locks.iter().zip(&b.locks) {
            assert_eq!(
                (x.requests, x.blocks, x.grants, x.releases),
                (y.requests, y.blocks, y.grants, y.releases)
            );
            assert_eq!(x.handoffs, y.handoffs, "seed {seed}");
            assert_eq!(x.wake_inversions, y.wake_inversions);
            assert_eq!(x.overlapping_grants, y.overlapping_grants);
            assert_eq!(x.owners.len(), y.owners.len(), "seed {seed}");
        }
    }
}
