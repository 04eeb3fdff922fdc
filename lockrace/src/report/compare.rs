//! What `lockrace compare A.json B.json [--metric NAME --max-increase PCT]...` compares: the
//! main figures of two JSON reports side by side with their deltas, and optional regression
//! bounds (the command itself, reading the files and printing, is `cmd::compare`; the HTML
//! side by side is `report::html::compare`).
//!
//! Exit codes (the contract `git bisect run` scripts rely on): 0 when every bound holds (or none
//! was given), 1 when a metric of B grew beyond its bound relative to A, 2 on bad input (missing
//! or unreadable file, not a lockrace report, schema_version this lockrace does not read, unknown
//! metric, a bound without its metric, a bounded metric absent from a report).
//!
//! Invariants: metrics are read from the JSON by field path, not through the typed `Document`, so
//! a report written by an older lockrace of the same schema_version still compares; a test
//! serialises a real `Document` to keep the paths in step with the model. The per-lock figures
//! come from one lock, the run's memfd when the report has a workload, else the lock with the
//! most grants. Everything here is pure: extraction, the bound check, the table.
use std::fmt::Write as _;

use serde_json::Value;

use crate::report::build::fmt_ns;
use crate::report::model::SCHEMA_VERSION;

/// Every bound holds.
pub const EXIT_OK: u8 = 0;
/// A metric grew beyond its bound.
pub const EXIT_REGRESSION: u8 = 1;
/// The input cannot be compared.
pub const EXIT_BAD_INPUT: u8 = 2;

/// How a metric's value is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A plain ratio (`342.20`).
    Ratio,
    /// A fraction shown as a percentage (`0.25` -> `25.0%`).
    Share,
    /// Nanoseconds shown as a duration.
    Ns,
    /// Events per second.
    PerSec,
    /// A count.
    Count,
}

/// One comparable figure of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// The name `--metric` takes.
    pub name: &'static str,
    /// The row label of the table.
    pub label: &'static str,
    pub unit: Unit,
    /// True when a larger value is worse (the regression direction `--max-increase` bounds).
    pub higher_is_worse: bool,
}

const fn metric(
    name: &'static str,
    label: &'static str,
    unit: Unit,
    higher_is_worse: bool,
) -> MetricDef {
    MetricDef {
        name,
        label,
        unit,
        higher_is_worse,
    }
}

/// The metrics, in table order. Keep [`HELP`] in step (a test checks it).
pub const METRICS: &[MetricDef] = &[
    metric("whoops_per_handoff", "whoops/handoff", Unit::Ratio, true),
    metric("self_barge_share", "self_barge share", Unit::Share, true),
    metric("fifo_share", "fifo share", Unit::Share, false),
    metric("wake_to_run_p50_ns", "wake-to-run p50", Unit::Ns, true),
    metric("wake_to_run_p99_ns", "wake-to-run p99", Unit::Ns, true),
    metric("wait_p50_ns", "wait p50", Unit::Ns, true),
    metric("wait_p99_ns", "wait p99", Unit::Ns, true),
    metric("handoffs_per_s", "handoffs/s", Unit::PerSec, false),
    metric("dropped", "dropped events", Unit::Count, true),
];

/// The `--help` text after the options: metric names, bounds, exit codes, examples.
pub const HELP: &str = "\
Metrics (for --metric; per-lock figures are those of the run's memfd, else of the lock with the
most grants):
  whoops_per_handoff   all whoops / all completed turns (workload.roles[])
  self_barge_share     self_barge / decided handoffs (fifo + self_barge + newcomer_barge +
                       waiter_reorder; unresolved ones excluded)
  fifo_share           fifo / decided handoffs (higher is better)
  wake_to_run_p50_ns   sched_waking of a blocked waiter -> its switch-in, median
  wake_to_run_p99_ns   the same, 99th percentile
  wait_p50_ns          first block -> grant, median
  wait_p99_ns          the same, 99th percentile
  handoffs_per_s       completed turns of both roles per second (higher is better)
  dropped              events the kernel could not write (capture.dropped)

A bound `--metric NAME --max-increase PCT` fails when B's value exceeds A's by more than PCT
percent (when A is 0: when B is above 0). Each --metric takes the --max-increase at the same
position. Bounds limit increases, the regression direction of every metric but fifo_share and
handoffs_per_s.

Exit status: 0 every bound holds, 1 a metric grew beyond its bound, 2 bad input (missing file,
not a lockrace report, schema_version mismatch, unknown metric, metric absent from a report).

Examples:
  lockrace compare good.json new.json
  lockrace compare good.json new.json --html compare.html   # both reports side by side, charted
  lockrace compare good.json new.json --metric whoops_per_handoff --max-increase 50
  lockrace compare good.json target/vm/6.1.0-54/report.json \\
      --metric whoops_per_handoff --max-increase 50 --metric wake_to_run_p99_ns --max-increase 100";

/// The metric called `name`.
pub fn find_metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// One report's values, in [`METRICS`] order (None: the report does not have it, e.g. an
/// untraced run has no locks and no capture).
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    pub values: Vec<Option<f64>>,
}

impl Metrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        let i = METRICS.iter().position(|m| m.name == name)?;
        self.values.get(i).copied().flatten()
    }
}

/// What identifies a report in the table header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub kernel: String,
    /// `posix/reopen, 500 iterations`, or empty when not a `run` report.
    pub workload: String,
    pub complete: bool,
}

/// Checks that `text` is a lockrace JSON report this lockrace reads; `name` is for messages.
pub fn parse_report(text: &str, name: &str) -> anyhow::Result<Value> {
    let not_report = || {
        crate::error::hinted(
            format!("{name} is not a lockrace report"),
            "write one with `lockrace run --json FILE` or `lockrace report EVENTS --json FILE`",
        )
    };
    let v: Value = serde_json::from_str(text).map_err(|_| not_report())?;
    let (Some(version), Some(_)) = (
        v.get("schema_version").and_then(Value::as_u64),
        v.get("lockrace_version").and_then(Value::as_str),
    ) else {
        return Err(not_report());
    };
    if version != u64::from(SCHEMA_VERSION) {
        return Err(crate::error::hinted(
            format!("{name} has schema_version {version}, this lockrace reads {SCHEMA_VERSION}"),
            "compare reports written by the same lockrace version",
        ));
    }
    Ok(v)
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

/// The lock the per-lock metrics come from: the workload's memfd, else the most granted lock.
pub fn primary_lock(doc: &Value) -> Option<&Value> {
    let locks = doc.get("locks")?.as_array()?;
    let memfd_ino = doc
        .pointer("/workload/roles/0/memfd_ino")
        .and_then(Value::as_u64)
        .filter(|&ino| ino != 0);
    if let Some(ino) = memfd_ino
        && let Some(l) = locks.iter().find(|l| u64_at(l, &["ino"]) == Some(ino))
    {
        return Some(l);
    }
    locks
        .iter()
        .max_by_key(|l| u64_at(l, &["grants"]).unwrap_or(0))
}

/// Every metric of a parsed report (pure).
pub fn extract(doc: &Value) -> Metrics {
    let roles: Vec<&Value> = doc
        .pointer("/workload/roles")
        .and_then(Value::as_array)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let sum = |k: &str| -> Option<u64> { roles.iter().map(|r| u64_at(r, &[k])).sum() };
    let turns = sum("iterations").filter(|_| !roles.is_empty());
    let whoops = sum("whoops");
    let longest = roles
        .iter()
        .filter_map(|r| u64_at(r, &["elapsed_ns"]))
        .max()
        .filter(|&e| e > 0);
    let lock = primary_lock(doc);
    let handoff = |k: &str| lock.and_then(|l| u64_at(l, &["handoffs", k]));
    let decided: Option<u64> = ["fifo", "self_barge", "newcomer_barge", "waiter_reorder"]
        .iter()
        .map(|k| handoff(k))
        .sum();
    let share = |k: &str| match (handoff(k), decided) {
        (Some(n), Some(d)) if d > 0 => Some(n as f64 / d as f64),
        _ => None,
    };
    let pct = |field: &str, p: &str| lock.and_then(|l| u64_at(l, &[field, p])).map(|n| n as f64);
    let values = METRICS
        .iter()
        .map(|m| match m.name {
            "whoops_per_handoff" => match (whoops, turns) {
                (Some(w), Some(t)) if t > 0 => Some(w as f64 / t as f64),
                _ => None,
            },
            "self_barge_share" => share("self_barge"),
            "fifo_share" => share("fifo"),
            "wake_to_run_p50_ns" => pct("wake_to_run_ns", "p50"),
            "wake_to_run_p99_ns" => pct("wake_to_run_ns", "p99"),
            "wait_p50_ns" => pct("wait_ns", "p50"),
            "wait_p99_ns" => pct("wait_ns", "p99"),
            "handoffs_per_s" => match (turns, longest) {
                (Some(t), Some(e)) => Some(t as f64 * 1e9 / e as f64),
                _ => None,
            },
            "dropped" => u64_at(doc, &["capture", "dropped"]).map(|n| n as f64),
            _ => None,
        })
        .collect();
    Metrics { values }
}

/// The kernel and workload of a parsed report, for the table header.
pub fn identity(doc: &Value) -> Identity {
    let s = |p: &str| doc.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let workload = match doc.get("workload").filter(|w| !w.is_null()) {
        Some(_) => format!(
            "{}/{}, {} iterations",
            s("/workload/lock"),
            s("/workload/share"),
            u64_at(doc, &["workload", "iterations"]).unwrap_or(0)
        ),
        None => String::new(),
    };
    Identity {
        kernel: s("/kernel/release").to_string(),
        workload,
        complete: doc
            .get("complete")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// A regression bound: B's `metric` may exceed A's by at most `max_increase_pct` percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub metric: &'static MetricDef,
    pub max_increase_pct: f64,
}

/// Pairs each `--metric` with the `--max-increase` at the same position (pure).
pub fn parse_bounds(metrics: &[String], max_increase: &[f64]) -> anyhow::Result<Vec<Bound>> {
    if metrics.len() != max_increase.len() {
        return Err(crate::error::hinted(
            format!(
                "each --metric needs one --max-increase (got {} --metric, {} --max-increase)",
                metrics.len(),
                max_increase.len()
            ),
            "e.g. --metric whoops_per_handoff --max-increase 50",
        ));
    }
    metrics
        .iter()
        .zip(max_increase)
        .map(|(name, &pct)| {
            let metric = find_metric(name).ok_or_else(|| {
                let names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
                crate::error::hinted(
                    format!("unknown metric {name:?}"),
                    format!("one of {}", names.join(", ")),
                )
            })?;
            if !pct.is_finite() || pct < 0.0 {
                anyhow::bail!("--max-increase for {name} must be a percentage >= 0, got {pct}");
            }
            Ok(Bound {
                metric,
                max_increase_pct: pct,
            })
        })
        .collect()
}

/// Relative change from `a` to `b` in percent; None when `a` is 0 (infinite unless `b` is 0 too).
pub fn change_pct(a: f64, b: f64) -> Option<f64> {
    if a == 0.0 {
        (b == 0.0).then_some(0.0)
    } else {
        Some((b - a) / a.abs() * 100.0)
    }
}

/// True when `b` exceeds `a` by more than `pct` percent (when `a` is 0: when `b` is above 0).
pub fn exceeds(a: f64, b: f64, pct: f64) -> bool {
    if a == 0.0 {
        b > 0.0
    } else {
        // A small tolerance so that `--max-increase 50` admits exactly +50% despite rounding.
        b - a > a.abs() * pct / 100.0 * (1.0 + 1e-12)
    }
}

/// One bound checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub bound: Bound,
    pub a: f64,
    pub b: f64,
    pub exceeded: bool,
}

/// Checks every bound (pure). A bounded metric missing from either report is bad input.
pub fn check(
    a: &Metrics,
    b: &Metrics,
    names: (&str, &str),
    bounds: &[Bound],
) -> anyhow::Result<Vec<Checked>> {
    bounds
        .iter()
        .map(|bound| {
            let name = bound.metric.name;
            let get = |m: &Metrics, file: &str| {
                m.get(name).ok_or_else(|| {
                    crate::error::hinted(
                        format!("{file} has no {name}"),
                        "bound only metrics both reports have; an untraced run has only \
                         whoops_per_handoff and handoffs_per_s",
                    )
                })
            };
            let (va, vb) = (get(a, names.0)?, get(b, names.1)?);
            Ok(Checked {
                bound: *bound,
                a: va,
                b: vb,
                exceeded: exceeds(va, vb, bound.max_increase_pct),
            })
        })
        .collect()
}

/// The exit status for a list of checked bounds.
pub fn exit_code(checked: &[Checked]) -> u8 {
    if checked.iter().any(|c| c.exceeded) {
        EXIT_REGRESSION
    } else {
        EXIT_OK
    }
}

/// A value in its metric's unit.
pub fn fmt_value(unit: Unit, v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    match unit {
        Unit::Ratio => format!("{v:.2}"),
        Unit::Share => format!("{:.1}%", v * 100.0),
        Unit::Ns => fmt_ns(v.max(0.0).round() as u64),
        Unit::PerSec => format!("{v:.0}"),
        Unit::Count => format!("{v:.0}"),
    }
}

/// The delta column: absolute change in the metric's unit, then the relative change.
pub fn fmt_delta(def: &MetricDef, a: Option<f64>, b: Option<f64>) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return "-".into();
    };
    let d = b - a;
    if d == 0.0 {
        return "0".into();
    }
    let sign = if d < 0.0 { "-" } else { "+" };
    let abs = match def.unit {
        Unit::Ratio => format!("{sign}{:.2}", d.abs()),
        Unit::Share => format!("{sign}{:.1} pts", d.abs() * 100.0),
        Unit::Ns => format!("{sign}{}", fmt_ns(d.abs().round() as u64)),
        Unit::PerSec | Unit::Count => format!("{sign}{:.0}", d.abs()),
    };
    let rel = match change_pct(a, b) {
        Some(p) => format!("{p:+.1}%"),
        None => "new".into(),
    };
    let judged = if (d > 0.0) == def.higher_is_worse {
        "  worse"
    } else {
        "  better"
    };
    format!("{abs} ({rel}){judged}")
}

/// The whole comparison: header, table, bounds (pure).
pub fn render(
    names: (&str, &str),
    ids: (&Identity, &Identity),
    m: (&Metrics, &Metrics),
    checked: &[Checked],
) -> String {
    let mut out = String::new();
    for (tag, name, id) in [("A", names.0, ids.0), ("B", names.1, ids.1)] {
        let mut what = format!(
            "kernel {}",
            if id.kernel.is_empty() {
                "?"
            } else {
                &id.kernel
            }
        );
        if !id.workload.is_empty() {
            what.push_str(&format!(", {}", id.workload));
        }
        if !id.complete {
            what.push_str(", INCOMPLETE");
        }
        let _ = writeln!(out, "{tag}: {name} ({what})");
    }
    if ids.0.workload != ids.1.workload {
        let _ = writeln!(
            out,
            "note: the two reports ran different workloads; their figures are not comparable"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "  {:<18}{:>14}{:>14}  B - A", "metric", "A", "B");
    for (i, def) in METRICS.iter().enumerate() {
        let (va, vb) = (m.0.values[i], m.1.values[i]);
        let _ = writeln!(
            out,
            "  {:<18}{:>14}{:>14}  {}",
            def.label,
            fmt_value(def.unit, va),
            fmt_value(def.unit, vb),
            fmt_delta(def, va, vb)
        );
    }
    if !checked.is_empty() {
        let _ = writeln!(out);
    }
    for c in checked {
        let change = match change_pct(c.a, c.b) {
            Some(p) => format!("{p:+.1}%"),
            None => "from 0".into(),
        };
        let _ = writeln!(
            out,
            "  {} {}: {} -> {} ({change}), bound +{}%",
            if c.exceeded { "REGRESSION" } else { "ok" },
            c.bound.metric.name,
            fmt_value(c.bound.metric.unit, Some(c.a)),
            fmt_value(c.bound.metric.unit, Some(c.b)),
            c.bound.max_increase_pct
        );
    }
    out
}

/// Everything but the file reading: the report text and the exit status (pure).
pub fn compare_texts(
    names: (&str, &str),
    texts: (&str, &str),
    bounds: &[Bound],
) -> anyhow::Result<(String, Vec<Checked>)> {
    let a = parse_report(texts.0, names.0)?;
    let b = parse_report(texts.1, names.1)?;
    let (ma, mb) = (extract(&a), extract(&b));
    let checked = check(&ma, &mb, names, bounds)?;
    let text = render(names, (&identity(&a), &identity(&b)), (&ma, &mb), &checked);
    Ok((text, checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{Document, HandoffCountsReport, LockReport, Percentiles};
    use crate::report::model::{RoleReport, WorkloadReport};

    /// A report as `lockrace run --json` writes it, with the figures the tests need.
    fn doc(whoops: u64, self_barge: u64, fifo: u64, p99: u64, dropped: u64) -> String {
        let mut d = Document::new("6.1.0-54-cloud-amd64".into());
        let role = |name: &str, w: u64| RoleReport {
            role: name.into(),
            pid: 1,
            iterations: 100,
            acquisitions: 100 + w,
            whoops: w,
            overlaps: 0,
            elapsed_ns: 2_000_000_000,
            memfd_dev: 1,
            memfd_ino: 42,
            ..Default::default()
        };
        d.workload = Some(WorkloadReport {
            lock: "posix".into(),
            share: "reopen".into(),
            iterations: 100,
            roles: vec![role("server", whoops), role("client", 0)],
            probe_effect: None,
            ..Default::default()
        });
        d.capture = Some(crate::report::model::CaptureInfo {
            events: 1000,
            dropped,
            complete: dropped == 0,
            ..Default::default()
        });
        let other = LockReport {
            ino: 7,
            grants: 1_000_000,
            ..Default::default()
        };
        let memfd = LockReport {
            ino: 42,
            grants: 200,
            handoffs: HandoffCountsReport {
                fifo,
                self_barge,
                unresolved: 50,
                ..Default::default()
            },
            wake_to_run_ns: Percentiles {
                count: 10,
                p50: Some(1_000),
                p99: Some(p99),
                ..Default::default()
            },
            wait_ns: Percentiles {
                count: 10,
                p50: Some(5_000),
                p99: None,
                ..Default::default()
            },
            ..Default::default()
        };
        d.locks = vec![other, memfd];
        serde_json::to_string(&d).unwrap()
    }

    fn bounds(pairs: &[(&str, f64)]) -> anyhow::Result<Vec<Bound>> {
        let names: Vec<String> = pairs.iter().map(|(n, _)| n.to_string()).collect();
        let pcts: Vec<f64> = pairs.iter().map(|(_, p)| *p).collect();
        parse_bounds(&names, &pcts)
    }

    /// The exit status and output (or error line) of comparing two texts.
    fn outcome(a: &str, b: &str, pairs: &[(&str, f64)]) -> (u8, String) {
        let r = bounds(pairs).and_then(|bs| compare_texts(("a.json", "b.json"), (a, b), &bs));
        match r {
            Ok((text, checked)) => (exit_code(&checked), text),
            Err(e) => (EXIT_BAD_INPUT, crate::error::render_error(&e)),
        }
    }

    #[test]
    fn metrics_come_from_the_real_document_model() {
        let v = parse_report(&doc(50, 30, 10, 8_000, 3), "a").unwrap();
        let m = extract(&v);
        assert_eq!(m.get("whoops_per_handoff"), Some(0.25));
        // Decided handoffs exclude the 50 unresolved ones; the memfd lock wins over the busier one.
        assert_eq!(m.get("self_barge_share"), Some(0.75));
        assert_eq!(m.get("fifo_share"), Some(0.25));
        assert_eq!(m.get("wake_to_run_p50_ns"), Some(1_000.0));
        assert_eq!(m.get("wake_to_run_p99_ns"), Some(8_000.0));
        assert_eq!(m.get("wait_p50_ns"), Some(5_000.0));
        assert_eq!(m.get("wait_p99_ns"), None);
        assert_eq!(m.get("handoffs_per_s"), Some(100.0));
        assert_eq!(m.get("dropped"), Some(3.0));
        assert_eq!(m.values.len(), METRICS.len());
        let id = identity(&v);
        assert_eq!(id.kernel, "6.1.0-54-cloud-amd64");
        assert_eq!(id.workload, "posix/reopen, 100 iterations");
    }

    #[test]
    fn an_untraced_report_has_only_the_workload_metrics() {
        let mut d = Document::new("x".into());
        d.workload = Some(WorkloadReport {
            lock: "ofd".into(),
            share: "same".into(),
            iterations: 10,
            roles: vec![],
            probe_effect: None,
            ..Default::default()
        });
        let m = extract(&serde_json::to_value(&d).unwrap());
        assert!(m.values.iter().all(Option::is_none), "{m:?}");
    }

    #[test]
    fn without_bounds_the_exit_status_is_0_and_the_table_has_every_metric() {
        let (code, text) = outcome(&doc(50, 30, 10, 8_000, 0), &doc(100, 30, 10, 8_000, 0), &[]);
        assert_eq!(code, EXIT_OK);
        for m in METRICS {
            assert!(text.contains(m.label), "{} missing from\n{text}", m.label);
        }
        let row = text.lines().find(|l| l.contains("whoops/handoff")).unwrap();
        assert!(row.contains("0.25") && row.contains("0.50"), "{row}");
        assert!(row.contains("+0.25 (+100.0%)  worse"), "{row}");
    }

    #[test]
    fn within_bounds_exits_0() {
        let (code, text) = outcome(
            &doc(50, 30, 10, 8_000, 0),
            &doc(75, 30, 10, 8_000, 0),
            &[("whoops_per_handoff", 50.0), ("dropped", 0.0)],
        );
        assert_eq!(code, EXIT_OK, "{text}");
        assert!(
            text.contains("ok whoops_per_handoff: 0.25 -> 0.38 (+50.0%), bound +50%"),
            "{text}"
        );
    }

    #[test]
    fn beyond_a_bound_exits_1() {
        let (code, text) = outcome(
            &doc(50, 30, 10, 8_000, 0),
            &doc(50, 30, 10, 20_000, 0),
            &[("whoops_per_handoff", 50.0), ("wake_to_run_p99_ns", 100.0)],
        );
        assert_eq!(code, EXIT_REGRESSION, "{text}");
        assert!(text.contains("REGRESSION wake_to_run_p99_ns"), "{text}");
        assert!(text.contains("ok whoops_per_handoff"), "{text}");
        // From zero, any increase exceeds any bound.
        let (code, _) = outcome(
            &doc(50, 30, 10, 8_000, 0),
            &doc(50, 30, 10, 8_000, 1),
            &[("dropped", 1000.0)],
        );
        assert_eq!(code, EXIT_REGRESSION);
    }

    #[test]
    fn bad_input_exits_2_with_one_line() {
        let good = doc(50, 30, 10, 8_000, 0);
        type Case<'a> = (String, String, Vec<(&'a str, f64)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "{\"a\": 1}".into(),
                good.clone(),
                vec![],
                "a.json is not a lockrace report",
            ),
            (
                "not json".into(),
                good.clone(),
                vec![],
                "a.json is not a lockrace report",
            ),
            (
                good.clone(),
                good.replace("\"schema_version\":1", "\"schema_version\":2"),
                vec![],
                "b.json has schema_version 2, this lockrace reads 1",
            ),
            (
                good.clone(),
                good.clone(),
                vec![("whoops", 5.0)],
                "unknown metric \"whoops\"",
            ),
            (
                good.clone(),
                good.clone(),
                vec![("wait_p99_ns", 5.0)],
                "a.json has no wait_p99_ns",
            ),
        ];
        for (a, b, pairs, want) in cases {
            let (code, err) = outcome(&a, &b, &pairs);
            assert_eq!(code, EXIT_BAD_INPUT, "{want}: {err}");
            assert!(err.starts_with(want), "want {want:?}, got {err:?}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        let err = parse_bounds(&["dropped".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("each --metric needs one --max-increase"),
            "{err}"
        );
        assert!(parse_bounds(&["dropped".into()], &[-1.0]).is_err());
    }

    #[test]
    fn exceeds_is_relative_and_inclusive() {
        assert!(!exceeds(100.0, 150.0, 50.0));
        assert!(exceeds(100.0, 150.1, 50.0));
        assert!(!exceeds(100.0, 10.0, 0.0));
        assert!(!exceeds(0.0, 0.0, 0.0));
        assert!(exceeds(0.0, 0.1, 1e9));
        assert_eq!(change_pct(0.0, 0.0), Some(0.0));
        assert_eq!(change_pct(0.0, 1.0), None);
        assert_eq!(change_pct(4.0, 3.0), Some(-25.0));
    }

    #[test]
    fn help_names_every_metric() {
        for m in METRICS {
            assert!(
                HELP.contains(&format!("  {} ", m.name)),
                "{} not in HELP",
                m.name
            );
        }
    }

    #[test]
    fn values_and_deltas_are_formatted_in_their_unit() {
        let share = find_metric("self_barge_share").unwrap();
        assert_eq!(fmt_value(Unit::Share, Some(0.756)), "75.6%");
        assert_eq!(
            fmt_delta(share, Some(0.5), Some(0.25)),
            "-25.0 pts (-50.0%)  better"
        );
        let p99 = find_metric("wake_to_run_p99_ns").unwrap();
        assert_eq!(
            fmt_delta(p99, Some(1000.0), Some(3500.0)),
            "+2.5 µs (+250.0%)  worse"
        );
        let dropped = find_metric("dropped").unwrap();
        assert_eq!(fmt_delta(dropped, Some(0.0), Some(0.0)), "0");
        assert_eq!(fmt_delta(dropped, Some(0.0), Some(4.0)), "+4 (new)  worse");
        assert_eq!(fmt_delta(dropped, None, Some(4.0)), "-");
        assert_eq!(fmt_value(Unit::Ns, None), "-");
    }
}
