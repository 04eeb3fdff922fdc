//! The kernel matrix table: one row per kernel (and the host), with the figures read from each
//! run's JSON report, or the reason the kernel has none.
//!
//! Invariants: the figures are defined as in `lockrace compare` (lockrace/src/report/compare.rs; a test
//! reads the same fixture): whoops/handoff = all whoops / all turns, self_barge share = self_barge
//! over decided handoffs (unresolved excluded) of the run's memfd lock, wake-to-run percentiles of
//! that lock, dropped = capture.dropped. xtask does not link lockrace (its build compiles eBPF),
//! so the field paths are repeated here.
use serde_json::Value;

/// One kernel's figures (None: not in the report, e.g. untraced).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub release: String,
    pub whoops_per_handoff: Option<f64>,
    pub self_barge_share: Option<f64>,
    pub wake_to_run_p50_ns: Option<u64>,
    pub wake_to_run_p99_ns: Option<u64>,
    pub dropped: Option<u64>,
    pub complete: bool,
}

/// A row: the kernel's label, its figures or why it has none, and the scheduler features in
/// force during the run (None: the kernel did not show them).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub label: String,
    pub result: Result<Figures, String>,
    pub sched: Option<Vec<String>>,
}

/// The table's scheduler-features cell: the requested names that were in force, `as booted`
/// when nothing was requested (or for the host, where nothing is written) and the kernel showed
/// its features, `-` when it did not.
pub fn sched_cell(row: &Row, requested: &[String]) -> String {
    match &row.sched {
        None => "-".into(),
        Some(_) if requested.is_empty() || row.label == "host" => "as booted".into(),
        Some(now) => {
            let set: Vec<&str> = requested
                .iter()
                .map(String::as_str)
                .filter(|r| now.iter().any(|n| n == r))
                .collect();
            if set.is_empty() {
                "-".into()
            } else {
                set.join(",")
            }
        }
    }
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// The figures of one report (pure).
pub fn figures(doc: &Value) -> Figures {
    let roles: Vec<&Value> = doc
        .pointer("/workload/roles")
        .and_then(Value::as_array)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let sum = |k: &str| -> Option<u64> { roles.iter().map(|r| u64_at(r, &[k])).sum() };
    let whoops_per_handoff = match (sum("whoops"), sum("iterations")) {
        (Some(w), Some(t)) if t > 0 => Some(w as f64 / t as f64),
        _ => None,
    };
    let locks = doc
        .get("locks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let memfd = doc
        .pointer("/workload/roles/0/memfd_ino")
        .and_then(Value::as_u64)
        .filter(|&i| i != 0);
    let lock = memfd
        .and_then(|ino| locks.iter().find(|l| u64_at(l, &["ino"]) == Some(ino)))
        .or_else(|| {
            locks
                .iter()
                .max_by_key(|l| u64_at(l, &["grants"]).unwrap_or(0))
        });
    let handoff = |k: &str| lock.and_then(|l| u64_at(l, &["handoffs", k]));
    let decided: Option<u64> = ["fifo", "self_barge", "newcomer_barge", "waiter_reorder"]
        .iter()
        .map(|k| handoff(k))
        .sum();
    let self_barge_share = match (handoff("self_barge"), decided) {
        (Some(n), Some(d)) if d > 0 => Some(n as f64 / d as f64),
        _ => None,
    };
    Figures {
        release: doc
            .pointer("/kernel/release")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string(),
        whoops_per_handoff,
        self_barge_share,
        wake_to_run_p50_ns: lock.and_then(|l| u64_at(l, &["wake_to_run_ns", "p50"])),
        wake_to_run_p99_ns: lock.and_then(|l| u64_at(l, &["wake_to_run_ns", "p99"])),
        dropped: u64_at(doc, &["capture", "dropped"]),
        complete: doc
            .get("complete")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// A duration for humans: `850 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// The table, then one line per kernel without figures (pure). With `requested` scheduler
/// features, a last column shows those in force in each row.
pub fn render(rows: &[Row], accel: &str, requested: &[String]) -> String {
    let header = [
        "kernel",
        "release",
        "whoops/handoff",
        "self_barge",
        "wake-to-run p50",
        "p99",
        "dropped",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.map(String::from).to_vec()];
    if !requested.is_empty() {
        cells[0].push("sched features".into());
    }
    for r in rows {
        let mut row: Vec<String> = match &r.result {
            Ok(f) => [
                r.label.clone(),
                format!(
                    "{}{}",
                    f.release,
                    if f.complete { "" } else { " (incomplete)" }
                ),
                opt(f.whoops_per_handoff, |v| format!("{v:.2}")),
                opt(f.self_barge_share, |v| format!("{:.1}%", v * 100.0)),
                opt(f.wake_to_run_p50_ns, fmt_ns),
                opt(f.wake_to_run_p99_ns, fmt_ns),
                opt(f.dropped, |v| v.to_string()),
            ]
            .to_vec(),
            Err(_) => [
                r.label.clone(),
                "FAILED".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]
            .to_vec(),
        };
        if !requested.is_empty() {
            row.push(sched_cell(r, requested));
        }
        cells.push(row);
    }
    let widths: Vec<usize> = (0..cells[0].len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for c in &cells {
        let mut line = String::from("  ");
        for (i, cell) in c.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i < 2 || i == 7 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.iter().any(|r| r.label != "host") {
        out.push_str(&format!(
            "  VM rows ran under {accel}: their timings are not those of real hardware; compare \
             VM rows with each other.\n"
        ));
    }
    for r in rows {
        if let Err(why) = &r.result {
            out.push_str(&format!("  {}: {why}\n", r.label));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lockrace/tests/fixtures/compare")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn figures_are_those_lockrace_compare_reads() {
        // The same numbers lockrace/tests/integration/compare_cli.rs expects from this fixture.
        let f = figures(&fixture("base.json"));
        assert_eq!(
            f,
            Figures {
                release: "6.1.0-54-cloud-amd64".into(),
                whoops_per_handoff: Some(1.5),
                self_barge_share: Some(0.75),
                wake_to_run_p50_ns: Some(94_000),
                wake_to_run_p99_ns: Some(15_000_000),
                dropped: Some(0),
                complete: true,
            }
        );
        let u = figures(&fixture("untraced.json"));
        assert_eq!(
            (u.self_barge_share, u.dropped, u.whoops_per_handoff),
            (None, None, Some(1.5))
        );
    }

    #[test]
    fn the_table_aligns_and_lists_failures_last() {
        let rows = vec![
            Row {
                label: "host".into(),
                result: Ok(figures(&fixture("base.json"))),
                sched: None,
            },
            Row {
                label: "6.1.0-53".into(),
                result: Err("kernel panic: VFS: Unable to mount root fs".into()),
                sched: None,
            },
        ];
        let t = render(&rows, "TCG", &[]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "  kernel    release               whoops/handoff  self_barge  wake-to-run p50       \
             p99  dropped"
        );
        assert_eq!(
            lines[1],
            "  host      6.1.0-54-cloud-amd64            1.50       75.0%          94.0 µs  \
             15.00 ms        0"
        );
        assert!(lines[2].starts_with("  6.1.0-53  FAILED"), "{}", lines[2]);
        assert!(lines[3].contains("under TCG"), "{t}");
        assert_eq!(
            lines[4],
            "  6.1.0-53: kernel panic: VFS: Unable to mount root fs"
        );
    }

    #[test]
    fn requested_scheduler_features_get_a_column() {
        let want = vec!["NO_WAKEUP_PREEMPTION".to_string()];
        let in_force: Vec<String> = ["PLACE_LAG", "NO_WAKEUP_PREEMPTION"]
            .map(String::from)
            .to_vec();
        let rows = vec![
            Row {
                label: "host".into(),
                result: Ok(figures(&fixture("base.json"))),
                sched: Some(vec!["WAKEUP_PREEMPTION".into()]),
            },
            Row {
                label: "6.12.117+deb12.NO_WAKEUP_PREEMPTION".into(),
                result: Ok(figures(&fixture("base.json"))),
                sched: Some(in_force.clone()),
            },
            Row {
                label: "6.1.0-54.NO_WAKEUP_PREEMPTION".into(),
                result: Err("unknown scheduler feature".into()),
                sched: None,
            },
        ];
        let t = render(&rows, "TCG", &want);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("dropped  sched features"), "{t}");
        assert!(lines[1].ends_with("  as booted"), "{t}");
        assert!(lines[2].ends_with("  NO_WAKEUP_PREEMPTION"), "{t}");
        assert!(lines[3].ends_with("  -"), "{t}");
        assert_eq!(sched_cell(&rows[1], &[]), "as booted");
        assert_eq!(sched_cell(&rows[0], &want), "as booted");
    }
}
