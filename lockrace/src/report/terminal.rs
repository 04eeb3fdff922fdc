//! The terminal report: verdict first, then the diagnosis, a table per lock with log2
//! histograms of wait time and wake-to-run latency, the worst handoffs as short timelines, and
//! what is missing.
//!
//! Invariants: rendered from the [`Document`] alone (a saved JSON report renders the same); plain
//! ASCII apart from `µ`; bounded output (at most [`LOCKS_SHOWN`] locks and
//! [`HANDOFFS_SHOWN`] timelines, the JSON has the rest).
use std::fmt::Write;

use super::build::fmt_ns;
use super::model::{Document, HistBucket, LockReport, Percentiles, Severity};

pub const LOCKS_SHOWN: usize = 6;
pub const HANDOFFS_SHOWN: usize = 3;
const BAR: usize = 36;

pub fn render(doc: &Document) -> String {
    let mut o = String::new();
    let mut lines = doc.verdict.iter();
    if let Some(first) = lines.next() {
        let _ = writeln!(o, "{first}");
    }
    for l in lines {
        let _ = writeln!(o, "{l}");
    }
    if doc.verdict.is_empty() {
        let _ = writeln!(o, "No lock events were analysed.");
    }

    if !doc.diagnosis.is_empty() {
        let _ = writeln!(o, "\nDiagnosis");
        for d in &doc.diagnosis {
            let sev = match d.severity {
                Severity::Error => "ERROR",
                Severity::Warning => "warn ",
                Severity::Info => "info ",
            };
            let _ = writeln!(o, "  {sev} {}: {}", d.code, d.message);
        }
    }

    if !doc.locks.is_empty() {
        let mut order: Vec<usize> = (0..doc.locks.len()).collect();
        order.sort_by_key(|&i| {
            let l = &doc.locks[i];
            std::cmp::Reverse((l.blocks + l.overlapping_grants, l.grants))
        });
        let _ = writeln!(o, "\nLocks");
        for &i in order.iter().take(LOCKS_SHOWN) {
            lock_table(&mut o, doc, i, &doc.locks[i]);
        }
        if doc.locks.len() > LOCKS_SHOWN {
            let _ = writeln!(
                o,
                "  ... and {} more locks with less contention (see --json)",
                doc.locks.len() - LOCKS_SHOWN
            );
        }
    }

    if !doc.worst_handoffs.is_empty() {
        let _ = writeln!(o, "\nWorst handoffs");
        for (n, h) in doc.worst_handoffs.iter().take(HANDOFFS_SHOWN).enumerate() {
            let lock = doc
                .locks
                .get(h.lock)
                .map(super::contention::display_name)
                .unwrap_or_else(|| "?".to_string());
            let _ = writeln!(
                o,
                "  #{} {} on {lock}: {} ({}) released it with {} waiter(s); oldest waited {}",
                n + 1,
                h.outcome,
                h.releaser.comm,
                h.releaser.tid,
                h.waiters_total,
                fmt_ns(h.oldest_wait_ns)
            );
            for t in &h.timeline {
                let _ = writeln!(o, "      +{:<10} {}", fmt_ns(t.dt_ns), t.text);
            }
            if h.timeline_truncated {
                let _ = writeln!(o, "      ...");
            }
        }
    }

    if let Some(w) = &doc.whoops
        && !w.roles.is_empty()
    {
        let p = &w.by_peer_state;
        let _ = writeln!(
            o,
            "\nWhoops: what the other side was doing at each whoops grant"
        );
        let _ = writeln!(
            o,
            "  waiting: blocked {}, woken not yet running {}, running not yet retried {}; not waiting: outside any lock request {}, in the syscall but not blocked yet {}; same owner {}",
            p.blocked,
            p.woken_not_running,
            p.running_not_retried,
            p.not_in_request,
            p.in_request_not_blocked,
            p.shared_owner
        );
        let _ = writeln!(o, "  per role:");
        for r in &w.roles {
            let _ = writeln!(
                o,
                "    {:<8} tgid {:<7} acquisitions {:<7} grants traced {:<7} whoops {:<6} explained {:<6} (self_barge {}, peer_not_waiting {}, no_exclusion {})",
                r.role,
                r.tgid,
                r.acquisitions,
                r.grants,
                r.whoops,
                r.explained,
                r.by_cause.self_barge,
                r.by_cause.peer_not_waiting,
                r.by_cause.no_exclusion
            );
        }
    }

    let _ = writeln!(o);
    let mut facts = vec![format!("kernel {}", doc.kernel.release)];
    if let Some(c) = &doc.capture {
        facts.push(format!(
            "{} events captured, {} dropped",
            c.events, c.dropped
        ));
    }
    if let Some(a) = &doc.analysis {
        facts.push(format!(
            "{} events analysed over {}",
            a.events,
            fmt_ns(a.duration_ns)
        ));
    }
    let _ = writeln!(o, "{}", facts.join("; "));
    if let Some(line) = doc.capture.as_ref().and_then(super::capture::programs_line) {
        let _ = writeln!(o, "{line}");
    }
    if let Some(t) = &doc.trace {
        let open = match t.open_requests_at_end {
            0 => String::new(),
            n => format!(" ({n} lock requests were still in progress then)"),
        };
        let _ = writeln!(
            o,
            "Traced {} for {}; ended by {}{open}: the report covers everything up to that moment.",
            t.target,
            fmt_ns(t.traced_ns),
            t.ended_by.replace('_', " ")
        );
    }
    if !doc.complete {
        let _ = writeln!(o, "Incomplete:");
        for r in &doc.incomplete_reasons {
            let _ = writeln!(o, "  - {r}");
        }
    }
    o
}

fn lock_table(o: &mut String, doc: &Document, i: usize, l: &LockReport) {
    let path = l
        .path
        .as_deref()
        .map(|p| format!(" {p}"))
        .unwrap_or_default();
    let owners: Vec<String> = l
        .owners
        .iter()
        .take(4)
        .map(|ow| {
            let names: Vec<String> = ow
                .tgids
                .iter()
                .take(4)
                .map(|tg| {
                    let comm = doc
                        .tasks
                        .iter()
                        .find(|t| t.tgid == *tg)
                        .map(|t| t.comm.as_str())
                        .unwrap_or("?");
                    format!("{comm}/{tg}")
                })
                .collect();
            format!("{} [{}]", ow.owner, names.join(" "))
        })
        .collect();
    let _ = writeln!(o, "  [{i}] {}{path}  {} lock", l.name, l.kind);
    let more = if l.owners.len() > 4 { " ..." } else { "" };
    let _ = writeln!(
        o,
        "      owners ({}): {}{more}",
        l.owners.len(),
        owners.join(", ")
    );
    let _ = writeln!(
        o,
        "      requests {}  blocked {} ({} blocks, {} spurious wakes)  grants {}  releases {}  errors {}",
        l.requests, l.blocked_requests, l.blocks, l.spurious_wakes, l.grants, l.releases, l.errors
    );
    let h = &l.handoffs;
    let _ = writeln!(
        o,
        "      handoffs: fifo {}  self_barge {}  newcomer_barge {}  waiter_reorder {}  unresolved {}",
        h.fifo, h.self_barge, h.newcomer_barge, h.waiter_reorder, h.unresolved
    );
    let _ = writeln!(
        o,
        "      wake inversions {}  overlapping grants {}",
        l.wake_inversions, l.overlapping_grants
    );
    for line in super::contention::terminal_lines(l) {
        let _ = writeln!(o, "      {line}");
    }
    let _ = writeln!(o, "      wait        {}", pct_line(&l.wait_ns));
    let same = if l.wake_to_run_ns.count > 0 {
        format!(
            "  (on the waker's CPU: {})",
            super::build::pct(l.wakes_same_cpu, l.wake_to_run_ns.count)
        )
    } else {
        String::new()
    };
    let _ = writeln!(o, "      wake-to-run {}{same}", pct_line(&l.wake_to_run_ns));
    if !l.wait_histogram.is_empty() {
        let _ = writeln!(o, "      wait time, first block -> decision:");
        histogram(o, &l.wait_histogram);
    }
    if !l.wake_to_run_histogram.is_empty() {
        let _ = writeln!(o, "      wake-to-run latency, sched_waking -> switched in:");
        histogram(o, &l.wake_to_run_histogram);
    }
}

fn pct_line(p: &Percentiles) -> String {
    match (p.p50, p.p90, p.p99, p.max) {
        (Some(a), Some(b), Some(c), Some(d)) => format!(
            "p50 {}  p90 {}  p99 {}  max {}  (n={})",
            fmt_ns(a),
            fmt_ns(b),
            fmt_ns(c),
            fmt_ns(d),
            p.count
        ),
        _ => "no samples".to_string(),
    }
}

fn histogram(o: &mut String, buckets: &[HistBucket]) {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    for b in buckets {
        let n = ((b.count as f64 / max as f64) * BAR as f64).ceil() as usize;
        let _ = writeln!(
            o,
            "        {:>9} .. {:<9} |{:<BAR$}| {}",
            fmt_ns(b.lo_ns),
            fmt_ns(b.hi_ns.saturating_add(1)),
            "#".repeat(n.min(BAR)),
            b.count
        );
    }
}
