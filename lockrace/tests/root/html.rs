//! Root integration tests of `--html` on live captures: the traced `run` and `trace` write a
//! self-contained page whose timelines match the JSON report of the same capture (one lane per
//! task of each drawn handoff, one arrow per wakeup), with the workload's and the whoops' own
//! sections. They FAIL (never skip) when eBPF cannot load.
use std::collections::BTreeSet;

use serde_json::Value;

use crate::{lockrace, read_json};

use crate::html_support::assert_self_contained;

/// As the HTML report escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The lanes and wakeup arrows of handoff `rank`'s figure in `page`.
fn figure(page: &str, rank: usize) -> (BTreeSet<u64>, Vec<(u64, u64)>) {
    let open = format!("<figure class=\"handoff\" data-rank=\"{rank}\"");
    let start = page
        .find(&open)
        .unwrap_or_else(|| panic!("no figure {rank}"));
    let end = start + page[start..].find("</figure>").unwrap();
    let fig = &page[start..end];
    let attr = |tag: &str, key: &str| -> Vec<u64> {
        fig.match_indices(tag)
            .map(|(i, _)| {
                let t = &fig[i..i + fig[i..].find('>').unwrap()];
                let k = format!("{key}=\"");
                let v = &t[t.find(&k).unwrap() + k.len()..];
                v[..v.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    };
    let lanes = attr("<g class=\"lane\"", "data-tid");
    let set: BTreeSet<u64> = lanes.iter().copied().collect();
    assert_eq!(set.len(), lanes.len(), "a lane per task, once: {lanes:?}");
    let arrows = attr("<line class=\"wakeup\"", "data-from")
        .into_iter()
        .zip(attr("<line class=\"wakeup\"", "data-to"))
        .collect();
    (set, arrows)
}

/// Every drawn handoff matches its entry in the JSON report.
fn check_handoffs(page: &str, doc: &Value, drawn: usize) {
    let worst = doc["worst_handoffs"].as_array().unwrap();
    assert_eq!(
        page.matches("<figure class=\"handoff\"").count(),
        worst.len().min(drawn)
    );
    for (i, h) in worst.iter().take(drawn).enumerate() {
        let (lanes, arrows) = figure(page, i + 1);
        let mut tasks = BTreeSet::new();
        tasks.insert(h["releaser"]["tid"].as_u64().unwrap());
        for w in h["waiters"].as_array().unwrap() {
            tasks.insert(w["tid"].as_u64().unwrap());
        }
        for t in h["timeline"].as_array().unwrap() {
            tasks.insert(t["tid"].as_u64().unwrap());
        }
        if let Some(n) = h["next"]["tid"].as_u64() {
            tasks.insert(n);
        }
        for s in h["spans"].as_array().unwrap() {
            tasks.insert(s["tid"].as_u64().unwrap());
        }
        assert_eq!(lanes, tasks, "handoff {}", i + 1);
        let wakeups: Vec<(u64, u64)> = h["wakeups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["waker_tid"].as_u64().unwrap(),
                    w["wakee_tid"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(arrows, wakeups, "handoff {}", i + 1);
    }
}

#[test]
fn a_traced_run_writes_the_page_of_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let (html, json) = (dir.path().join("run.html"), dir.path().join("run.json"));
    let out = lockrace()
        .args([
            "run",
            "--lock",
            "posix",
            "--share",
            "reopen",
            "--iterations",
            "500",
            "--no-baseline",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lockrace run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let doc = read_json(&json);
    assert_self_contained(&page);
    for line in doc["verdict"].as_array().unwrap() {
        let text = esc(line.as_str().unwrap());
        assert!(page.contains(&text), "verdict line missing: {text}");
    }
    assert!(page.contains("own account</h2>"), "the workload section");
    let w = &doc["whoops"];
    assert!(page.contains("Whoops and their causes</h2>"));
    assert!(
        page.contains(&format!(
            "<th class=\"l\">all</th><td></td><td></td><td></td><th>{}</th><th>{}</th>",
            w["total"], w["explained"]
        )),
        "the whoops totals of the report"
    );
    assert!(
        !doc["worst_handoffs"].as_array().unwrap().is_empty(),
        "500 posix/reopen turns without a contended release?"
    );
    check_handoffs(&page, &doc, 5);
    assert!(page.contains("<svg class=\"histogram wait\""));
}

#[test]
fn trace_writes_the_page_of_what_it_traced() {
    let dir = tempfile::tempdir().unwrap();
    let (html, json) = (dir.path().join("t.html"), dir.path().join("t.json"));
    let lockfile = dir.path().join("lockfile");
    std::fs::write(&lockfile, b"").unwrap();
    let f = lockfile.to_str().unwrap();
    let script = format!(
        "flock {f} -c 'sleep 0.2' & flock {f} -c 'sleep 0.2' & flock {f} -c 'sleep 0.2'; wait"
    );
    let out = lockrace()
        .args(["trace", "--html-handoffs", "8"])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lockrace trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let doc = read_json(&json);
    assert_self_contained(&page);
    let lock = doc["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"].as_str() == Some(f))
        .unwrap_or_else(|| panic!("the lock file is not among the locks: {}", doc["locks"]));
    assert!(lock["grants"].as_u64().unwrap() >= 3, "{lock}");
    assert!(page.contains(&format!("<span class=\"note\">{f}</span>")));
    check_handoffs(&page, &doc, 8);
    assert!(page.contains("<figure class=\"handoff\" data-rank=\"1\""));
}
