//! `--html FILE` through the real binary, without a browser (html_browser.rs loads a page
//! in Chromium): `report` on the recorded fixtures, `compare` of two reports side by side, an
//! untraced `run`, and the errors (an unwritable file, a scenario) in the one-line style.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::html_support::assert_self_contained;

fn lockrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run lockrace")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(format!("{name}.jsonl"))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "lockrace failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn report_writes_one_self_contained_page_from_the_same_document() {
    let dir = tempfile::tempdir().unwrap();
    let (html, json) = (dir.path().join("r.html"), dir.path().join("r.json"));
    let terminal = ok(&lockrace(&[
        "report",
        s(&fixture("ground-truth")),
        "--json",
        s(&json),
        "--html",
        s(&html),
        "--html-handoffs",
        "1",
    ]));
    let page = std::fs::read_to_string(&html).unwrap();
    assert_self_contained(&page);
    assert!(page.starts_with("<!DOCTYPE html>"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The verdict the terminal printed first is the page's first verdict line.
    let first = doc["verdict"][0].as_str().unwrap();
    assert!(terminal.starts_with(first), "{terminal}");
    assert!(page.contains(&format!("<p class=\"verdict-line\">{first}</p>")));
    // --html-handoffs 1 of the document's worst handoffs, with its spans and wakeups.
    assert!(doc["worst_handoffs"].as_array().unwrap().len() > 1);
    assert_eq!(page.matches("<figure class=\"handoff\"").count(), 1);
    let worst = &doc["worst_handoffs"][0];
    assert_eq!(
        page.matches("<line class=\"wakeup\"").count(),
        worst["wakeups"].as_array().unwrap().len()
    );
    let spans = worst["spans"].as_array().unwrap().len();
    assert!(spans > 0, "the model carries the spans");
    assert!(page.matches("<rect class=\"span ").count() <= spans);
    // Every lock of the document has its row.
    for l in doc["locks"].as_array().unwrap() {
        let name = l["name"].as_str().unwrap();
        assert!(page.contains(&format!("<code>{name}</code>")), "{name}");
    }
}

#[test]
fn compare_renders_both_reports_side_by_side_with_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let mut reports = Vec::new();
    for (name, whoops) in [("posix-reopen", 150), ("ofd-same", 3)] {
        let json = dir.path().join(format!("{name}.json"));
        ok(&lockrace(&[
            "report",
            s(&fixture(name)),
            "--json",
            s(&json),
        ]));
        // Offline reports of these older recordings have no workload: give them the roles'
        // account a `run` report carries, so whoops per handoff can be charted.
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v["workload"] = serde_json::json!({
            "lock": "posix", "share": "reopen", "iterations": 100,
            "roles": [
                {"role": "server", "pid": 1, "iterations": 100, "acquisitions": 100 + whoops,
                 "whoops": whoops, "overlaps": 0, "elapsed_ns": 1_000_000_000u64},
                {"role": "client", "pid": 2, "iterations": 100, "acquisitions": 100,
                 "whoops": 0, "overlaps": 0, "elapsed_ns": 1_000_000_000u64}
            ],
            "probe_effect": null
        });
        std::fs::write(&json, serde_json::to_string_pretty(&v).unwrap()).unwrap();
        reports.push(json);
    }
    let html = dir.path().join("cmp.html");
    let out = lockrace(&[
        "compare",
        s(&reports[0]),
        s(&reports[1]),
        "--html",
        s(&html),
    ]);
    let table = ok(&out);
    assert!(table.contains("whoops/handoff"), "{table}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_self_contained(&page);
    assert_eq!(page.matches("<section class=\"report\"").count(), 2);
    assert!(page.contains("data-report=\"A\"") && page.contains("data-report=\"B\""));
    // One chart bar per report: 150/200 and 3/200 whoops per completed turn.
    assert!(page.contains("<rect class=\"bar\" data-value=\"0.75\""));
    assert!(page.contains("<rect class=\"bar\" data-value=\"0.015\""));
    assert!(page.contains("(-98.0%)  better"), "the B - A column");
    // Both reports' own sections, with element ids unique per column.
    assert_eq!(page.matches("<section class=\"verdict").count(), 2);
    let ids: Vec<&str> = page
        .match_indices(" id=\"")
        .map(|(i, _)| {
            let rest = &page[i + 5..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "duplicate ids: {ids:?}");
}

#[test]
fn an_untraced_run_writes_its_workload_page() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("run.html");
    let out = lockrace(&[
        "run",
        "--no-trace",
        "--lock",
        "posix",
        "--share",
        "reopen",
        "--iterations",
        "20",
        "--html",
        s(&html),
        "--tmpdir-parent",
        s(dir.path()),
    ]);
    ok(&out);
    // stderr is not a terminal here: no progress line.
    assert!(
        !out.stderr.contains(&b'\r'),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert_self_contained(&page);
    assert!(page.contains("<title>lockrace: posix/reopen</title>"));
    assert!(page.contains("own account</h2>"), "the workload section");
    for role in ["server", "client"] {
        assert!(
            page.contains(&format!("<td class=\"l\">{role}</td>")),
            "{role} row missing"
        );
    }
    // Untraced: no kernel view, said so in the verdict.
    assert!(page.contains("No lock events were analysed."));
}

#[test]
fn html_errors_are_one_line_with_a_hint_where_one_helps() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("missing-dir/r.html");
    let out = lockrace(&["report", s(&fixture("ground-truth")), "--html", s(&nowhere)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("lockrace: cannot write the HTML report "),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let out = lockrace(&[
        "run",
        "--no-trace",
        "--scenario",
        "upgrade",
        "--html",
        s(&dir.path().join("x.html")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("lockrace: --html draws the turn loop's report")
            && err.contains("(hint: drop --html and use --json FILE)"),
        "{err}"
    );
    for bad in ["0", "9", "x"] {
        let out = lockrace(&[
            "report",
            s(&fixture("ground-truth")),
            "--html-handoffs",
            bad,
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--html-handoffs {bad} was accepted"
        );
    }
}
