//! `lockrace compare A.json B.json` through the real binary, one case per exit status: 0 within
//! the bounds, 1 beyond a bound, 2 bad input (with one `lockrace: ...` line, never a panic).
//! The reports are small hand-written fixtures under tests/fixtures/compare/.
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compare")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn compare(a: &str, b: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .arg("compare")
        .args([fixture(a), fixture(b)])
        .args(extra)
        .output()
        .expect("run lockrace compare")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one-line error of a bad-input run, which must exit 2.
fn bad_input(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "error is not one line: {err}");
    assert!(err.starts_with("lockrace: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

const WHOOPS_50: [&str; 4] = ["--metric", "whoops_per_handoff", "--max-increase", "50"];

#[test]
fn within_the_bound_exits_0_and_prints_the_table() {
    let out = compare("base.json", "within.json", &WHOOPS_50);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text.contains("kernel 6.1.0-54-cloud-amd64, posix/reopen, 500 iterations"));
    assert!(text.contains("kernel 6.1.0-53-cloud-amd64"));
    let row = text.lines().find(|l| l.contains("whoops/handoff")).unwrap();
    assert!(row.contains("1.50") && row.contains("2.10"), "{row}");
    assert!(row.contains("+0.60 (+40.0%)  worse"), "{row}");
    for label in [
        "self_barge share",
        "fifo share",
        "wake-to-run p99",
        "wait p50",
        "handoffs/s",
    ] {
        assert!(text.contains(label), "{label} missing:\n{text}");
    }
    assert!(
        text.contains("ok whoops_per_handoff: 1.50 -> 2.10 (+40.0%), bound +50%"),
        "{text}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_bounds_exits_0_whatever_changed() {
    let out = compare("base.json", "regressed.json", &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).contains("+1.50 (+100.0%)  worse"));
}

#[test]
fn beyond_a_bound_exits_1_and_names_the_metric() {
    let out = compare(
        "base.json",
        "regressed.json",
        &[
            "--metric",
            "whoops_per_handoff",
            "--max-increase",
            "50",
            "--metric",
            "self_barge_share",
            "--max-increase",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("REGRESSION whoops_per_handoff: 1.50 -> 3.00 (+100.0%), bound +50%"),
        "{text}"
    );
    assert!(text.contains("ok self_barge_share"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "lockrace: regression: whoops_per_handoff beyond its bound"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let err = bad_input(&compare("base.json", "no-such-report.json", &[]));
    assert!(
        err.contains("cannot read") && err.contains("no-such-report.json"),
        "{err}"
    );

    let err = bad_input(&compare("events.jsonl", "base.json", &[]));
    assert!(
        err.contains("events.jsonl is not a lockrace report"),
        "{err}"
    );

    let err = bad_input(&compare("base.json", "schema-2.json", &[]));
    assert!(
        err.contains("schema-2.json has schema_version 2, this lockrace reads 1"),
        "{err}"
    );

    let err = bad_input(&compare(
        "base.json",
        "within.json",
        &["--metric", "whoops", "--max-increase", "5"],
    ));
    assert!(err.contains("unknown metric \"whoops\""), "{err}");
    assert!(
        err.contains("whoops_per_handoff"),
        "the hint lists the names: {err}"
    );

    let err = bad_input(&compare(
        "base.json",
        "within.json",
        &["--metric", "dropped"],
    ));
    assert!(
        err.contains("each --metric needs one --max-increase"),
        "{err}"
    );

    let err = bad_input(&compare(
        "base.json",
        "untraced.json",
        &["--metric", "dropped", "--max-increase", "0"],
    ));
    assert!(err.contains("untraced.json has no dropped"), "{err}");
}

#[test]
fn an_untraced_report_compares_on_what_it_has() {
    let out = compare("base.json", "untraced.json", &WHOOPS_50);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let row = text.lines().find(|l| l.contains("dropped events")).unwrap();
    assert!(row.trim_end().ends_with('-'), "{row}");
}

#[test]
fn help_documents_metrics_and_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(["compare", "--help"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success());
    for name in [
        "whoops_per_handoff",
        "self_barge_share",
        "wake_to_run_p99_ns",
        "dropped",
    ] {
        assert!(text.contains(name), "{name} missing from --help");
    }
    assert!(text.contains("Exit status: 0"), "{text}");
    assert!(text.contains("--max-increase 50"), "{text}");
}
