//! The terminal summary of a run: both roles side by side (turns, acquisitions, whoops,
//! overlaps, elapsed, handoffs/s, handoff latency), the memfd, and what an overlap means; for a
//! traced run the cross-check of kernel grants against the roles' acquisitions.
//!
//! Invariant: pure renderings of the outcome and the document (the roles' own figures are
//! shown as they reported them; `-` where a role did not report).
use crate::report::model::{Document, HandoffLatency, RoleReport};
use crate::workload::channel::Channel;
use crate::workload::execute::Workload;
use crate::workload::outcome::RunOutcome;
use crate::workload::sync::sync_name;
use crate::workload::{Scenario, SyncKind, lock_name};

fn fmt_ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

/// A latency in the summary: `12.3 us`, or `-` when the role measured none.
pub(super) fn latency_cell(
    r: &RoleReport,
    pick: impl Fn(&HandoffLatency) -> Option<u64>,
) -> String {
    r.handoff_latency
        .as_ref()
        .and_then(pick)
        .map_or_else(|| "-".to_string(), fmt_latency)
}

/// `850 ns`, `12.3 us`, `4.56 ms`.
pub fn fmt_latency(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// The side-by-side terminal summary.
pub fn render_summary(cfg: &Workload, outcome: &RunOutcome, traced: bool) -> String {
    let mut out = format!(
        "lockrace run: {}, {} iterations, {}\n",
        cfg.label(),
        cfg.iterations,
        if traced { "traced" } else { "untraced" }
    );
    let reports: Vec<Option<&RoleReport>> =
        outcome.roles().iter().map(|r| r.report.as_ref()).collect();
    let cell = |f: &dyn Fn(&RoleReport) -> String| -> Vec<String> {
        reports
            .iter()
            .map(|r| r.map_or_else(|| "-".to_string(), f))
            .collect()
    };
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "pid",
            outcome.roles().iter().map(|r| r.pid.to_string()).collect(),
        ),
        ("turns", cell(&|r| r.iterations.to_string())),
        ("acquisitions", cell(&|r| r.acquisitions.to_string())),
        ("whoops", cell(&|r| r.whoops.to_string())),
        (
            "whoops/handoff",
            cell(&|r| format!("{:.2}", r.whoops as f64 / r.iterations.max(1) as f64)),
        ),
        ("overlaps", cell(&|r| r.overlaps.to_string())),
        ("elapsed", cell(&|r| fmt_ms(r.elapsed_ns))),
        (
            "handoffs/s",
            cell(&|r| {
                if r.elapsed_ns == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", r.iterations as f64 * 1e9 / r.elapsed_ns as f64)
                }
            }),
        ),
        ("handoff p50", cell(&|r| latency_cell(r, |l| l.p50_ns))),
        ("handoff p99", cell(&|r| latency_cell(r, |l| l.p99_ns))),
    ];
    out.push_str(&format!("  {:<16}{:>14}{:>14}\n", "", "server", "client"));
    for (name, cells) in rows {
        out.push_str(&format!("  {name:<16}{:>14}{:>14}\n", cells[0], cells[1]));
    }
    if let Some(m) = outcome.memfd {
        let state = match (cfg.scenario, cfg.sync) {
            (Some(Scenario::Upgrade), _) => "scenario words at bytes 0..12",
            (_, SyncKind::Fcntl) => Channel::for_mode(cfg.lock, cfg.share).name(),
            (_, SyncKind::Eventfd) => "counter in bytes 0..8 (woken through eventfds)",
            (_, SyncKind::Futex) => "futex words at bytes 48..56",
        };
        out.push_str(&format!(
            "  memfd dev {}:{} ino {}, state in the {state}\n",
            m.dev >> 20,
            m.dev & 0xfffff,
            m.ino,
        ));
    }
    let overlaps: u64 = reports.iter().flatten().map(|r| r.overlaps).sum();
    if cfg.scenario == Some(Scenario::Mixed) && overlaps > 0 {
        out.push_str("  overlaps > 0: flock and fcntl locks on one file do not see each other\n");
    } else if overlaps > 0 && cfg.sync != SyncKind::Fcntl {
        out.push_str(&format!(
            "  overlaps > 0: the {} handoff let both roles in at once (a bug)\n",
            sync_name(cfg.sync)
        ));
    } else if overlaps > 0 {
        out.push_str(&format!(
            "  overlaps > 0: the {} lock did not exclude; both roles lock through one open file \
             description, which owns {} locks (try --share reopen)\n",
            lock_name(cfg.lock),
            lock_name(cfg.lock)
        ));
    }
    out
}

/// The cross-check line: kernel-seen grants per role vs the role's own acquisitions.
pub fn cross_check(doc: &Document) -> Option<String> {
    let w = doc.whoops.as_ref()?;
    let parts: Vec<String> = w
        .roles
        .iter()
        .map(|r| {
            let mark = if r.grants == r.acquisitions {
                "ok"
            } else {
                "MISMATCH"
            };
            format!(
                "{} {} kernel grants / {} acquisitions ({mark})",
                r.role, r.grants, r.acquisitions
            )
        })
        .collect();
    Some(format!("  cross-check: {}", parts.join("; ")))
}
