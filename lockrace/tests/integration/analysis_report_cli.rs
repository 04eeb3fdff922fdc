//! `lockrace report FILE` through the real binary: good input gives the report and the files;
//! bad input gives one error line naming the file (and line), never a panic.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lockrace::analysis::synth::{self, Actor, Flavor, Script};
use lockrace::events::to_json;
use lockrace_common::k::F_WRLCK;

fn lockrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(args)
        .output()
        .expect("run lockrace")
}

fn jsonl(events: &[lockrace::events::Event]) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&to_json(e));
        s.push('\n');
    }
    s
}

fn barging_events() -> String {
    let s_ = Actor::new(100, 100, 0, "server", 0x1000, Flavor::Posix);
    let c = Actor::new(200, 200, 1, "client", 0x2000, Flavor::Posix);
    let mut s = Script::new();
    s.lock_now(&s_, F_WRLCK);
    s.lock_block(&c, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c]);
    s.lock_now(&s_, F_WRLCK);
    s.run(&c);
    s.retry_block(&c, F_WRLCK, s_.held);
    s.unlock(&s_, &[&c]);
    s.run(&c);
    s.retry_grant(&c, F_WRLCK);
    jsonl(&s.events)
}

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one-line error of a failed run.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "error is not one line: {err}");
    assert!(err.starts_with("lockrace: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn good_file_prints_the_verdict_and_writes_json_and_perfetto() {
    let dir = tempfile::tempdir().unwrap();
    let ev = write(dir.path(), "ev.jsonl", barging_events());
    let json = dir.path().join("r.json");
    let trace = dir.path().join("t.json");
    let out = lockrace(&[
        "report",
        s(&ev),
        "--json",
        s(&json),
        "--perfetto",
        s(&trace),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(
            "Linux woke your waiters in FIFO order every time, but the releaser re-took the lock"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("Worst handoffs"));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["complete"], true);
    assert_eq!(doc["locks"][0]["handoffs"]["self_barge"], 1);
    assert_eq!(doc["locks"][0]["handoffs"]["fifo"], 1);
    assert_eq!(doc["workload"], serde_json::Value::Null);
    assert_eq!(doc["whoops"], serde_json::Value::Null);
    assert_eq!(doc["diagnosis"][0]["code"], "lock-barging");
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    assert!(t["traceEvents"].as_array().unwrap().len() > 10);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.json");
    let missing = dir.path().join("nope.jsonl");
    let err = error_line(&lockrace(&["report", s(&missing), "--perfetto", s(&trace)]));
    assert!(
        err.contains("cannot read") && err.contains("nope.jsonl"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(
        !trace.exists(),
        "a trace was left behind for a missing input"
    );
    let err = error_line(&lockrace(&["report", s(dir.path())]));
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty.jsonl", "");
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(err.contains("empty.jsonl: empty file"), "{err}");
    let p = write(dir.path(), "blank.jsonl", "\n\n  \n");
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(err.contains("blank.jsonl: no events"), "{err}");
}

#[test]
fn truncated_last_line_is_an_incomplete_capture() {
    let dir = tempfile::tempdir().unwrap();
    let text = barging_events();
    let cut = &text[..text.len() - 40];
    let lines = cut.lines().count();
    let p = write(dir.path(), "cut.jsonl", cut);
    let json = dir.path().join("r.json");
    let out = lockrace(&["report", s(&p), "--json", s(&json)]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("This report is incomplete"), "{stdout}");
    assert!(
        stdout.contains(&format!("cut.jsonl:{lines}: the last line is cut short")),
        "{stdout}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc["complete"], false);
    assert_eq!(doc["capture"]["complete"], false);
}

#[test]
fn truncated_line_in_the_middle_is_an_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = barging_events();
    let mut lines: Vec<&str> = text.lines().collect();
    let third = lines[2];
    lines[2] = &third[..third.len() / 2];
    let p = write(dir.path(), "mid.jsonl", lines.join("\n") + "\n");
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(err.contains("mid.jsonl:3: not a lockrace event"), "{err}");
}

#[test]
fn non_jsonl_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "text.jsonl", "hello world\nsecond line\n");
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(err.contains("text.jsonl:1: not a lockrace event"), "{err}");
    let p = write(
        dir.path(),
        "bin.jsonl",
        [0x7fu8, b'E', b'L', b'F', 0xff, 0xfe, 0, 1, b'\n', 2],
    );
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(err.contains("bin.jsonl:1: not a lockrace event"), "{err}");
    let p = write(dir.path(), "obj.jsonl", "{\"a\": 1}\n");
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(err.contains("obj.jsonl:1: not a lockrace event"), "{err}");
    let good = barging_events();
    let first = good.lines().next().unwrap();
    let p = write(
        dir.path(),
        "field.jsonl",
        format!(
            "{first}\n{}\n",
            r#"{"ts_ns":1,"cpu":0,"tgid":1,"tid":1,"comm":"x","kind":"posix_lock_inode"}"#
        ),
    );
    let err = error_line(&lockrace(&["report", s(&p)]));
    assert!(
        err.contains("field.jsonl:2: posix_lock_inode event without field `dev`"),
        "{err}"
    );
}

#[test]
fn unknown_kinds_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = barging_events();
    text.push_str(
        r#"{"ts_ns":99999999999,"cpu":0,"tgid":1,"tid":1,"comm":"x","kind":"lock_of_the_future"}"#,
    );
    text.push('\n');
    let p = write(dir.path(), "future.jsonl", &text);
    let out = lockrace(&["report", s(&p)]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 events of unknown kinds were skipped (first: \"lock_of_the_future\""),
        "{stdout}"
    );
    let only = write(
        dir.path(),
        "only.jsonl",
        r#"{"ts_ns":1,"cpu":0,"tgid":1,"tid":1,"comm":"x","kind":"nope"}"#.to_string() + "\n",
    );
    let err = error_line(&lockrace(&["report", s(&only)]));
    assert!(err.contains("no event lockrace knows"), "{err}");
}

#[test]
fn out_of_order_and_unfinished_requests_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = synth::handoff_stream(2_000, 5);
    // Move one early event far past the reorder window and drop the final exit events.
    let early = events.remove(10);
    events.push(lockrace::events::Event {
        ts_ns: early.ts_ns,
        ..early
    });
    let last = *events.last().unwrap();
    events.push(lockrace::events::Event {
        ts_ns: last.ts_ns + 10_000_000_000,
        ..last
    });
    events.swap(10, 500);
    let p = write(dir.path(), "messy.jsonl", jsonl(&events));
    let out = lockrace(&["report", s(&p)]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Incomplete:"), "{stdout}");
    assert!(stdout.contains("out of order"), "{stdout}");
}
