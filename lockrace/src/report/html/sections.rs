//! The sections of one report's page, top to bottom: verdict, diagnosis, the workload's own
//! account, the per-lock table, the whoops and their causes, the worst handoffs (drawn by
//! [`super::svg`]), the histograms, and what is missing.
//!
//! Invariants: every text from the document goes through [`super::esc`]; each section is
//! omitted when the document has nothing for it; `<p class="verdict-line">` per verdict
//! sentence (the browser test reads it).
use std::fmt::Write;

use super::svg::{handoff_figure, histogram_svg};
use super::{HISTOGRAM_LOCKS, LOCKS_SHOWN, Options, esc};
use crate::report::build::{fmt_ns, pct};
use crate::report::model::{Document, LockReport, Percentiles, Severity};

pub(super) fn verdict_section(b: &mut String, doc: &Document, id: &str) {
    let clean = doc.diagnosis.is_empty() && doc.complete;
    let _ = writeln!(
        b,
        "<section class=\"verdict{}\" id=\"{id}-verdict\">",
        if clean { " clean" } else { "" }
    );
    if doc.verdict.is_empty() {
        let _ = writeln!(
            b,
            "<p class=\"verdict-line\">No lock events were analysed.</p>"
        );
    }
    for line in &doc.verdict {
        let _ = writeln!(b, "<p class=\"verdict-line\">{}</p>", esc(line));
    }
    let badge = if doc.complete {
        "<span class=\"badge ok\">complete</span>"
    } else {
        "<span class=\"badge incomplete\">incomplete</span>"
    };
    let _ = writeln!(b, "<p class=\"note\">{badge}</p>\n</section>");
}

pub(super) fn diagnosis_section(b: &mut String, doc: &Document, h: u8) {
    if doc.diagnosis.is_empty() {
        return;
    }
    let _ = writeln!(b, "<section class=\"diagnosis\">\n<h{h}>Diagnosis</h{h}>");
    let _ = writeln!(b, "<ul class=\"diagnosis\">");
    for d in &doc.diagnosis {
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(
            b,
            "<li class=\"{sev}\"><span class=\"badge {sev}\">{sev}</span> <code>{}</code> {}</li>",
            esc(&d.code),
            esc(&d.message)
        );
    }
    let _ = writeln!(b, "</ul>\n</section>");
}

pub(super) fn opt_ns(v: Option<u64>) -> String {
    v.map(fmt_ns).unwrap_or_else(|| "-".into())
}

pub(super) fn workload_section(b: &mut String, doc: &Document, h: u8) {
    let Some(w) = &doc.workload else { return };
    if w.roles.is_empty() {
        return;
    }
    let _ = writeln!(
        b,
        "<section class=\"workload\">\n<h{h}>The workload's own account</h{h}>"
    );
    let _ = writeln!(
        b,
        "<table>\n<tr><th class=\"l\">role</th><th>pid</th><th>turns</th><th>acquisitions</th>\
         <th>whoops</th><th>whoops/turn</th><th>overlaps</th><th>elapsed</th>\
         <th>handoff p50</th><th>handoff p99</th></tr>"
    );
    for r in &w.roles {
        let per = if r.iterations > 0 {
            format!("{:.2}", r.whoops as f64 / r.iterations as f64)
        } else {
            "-".into()
        };
        let (p50, p99) = r
            .handoff_latency
            .as_ref()
            .map(|l| (opt_ns(l.p50_ns), opt_ns(l.p99_ns)))
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{per}</td>\
             <td{}>{}</td><td>{}</td><td>{p50}</td><td>{p99}</td></tr>",
            esc(&r.role),
            r.pid,
            r.iterations,
            r.acquisitions,
            r.whoops,
            if r.overlaps > 0 { " class=\"bad\"" } else { "" },
            r.overlaps,
            fmt_ns(r.elapsed_ns)
        );
    }
    let _ = writeln!(b, "</table>");
    if let Some(e) = &w.probe_effect {
        let ratio = e
            .ratio
            .map(|r| format!(" (ratio {r:.2})"))
            .unwrap_or_default();
        let _ = writeln!(
            b,
            "<p class=\"note\">Probe effect: whoops per handoff {:.2} untraced, {:.2} traced{ratio}.</p>",
            e.untraced_whoops_per_handoff, e.traced_whoops_per_handoff
        );
    }
    let _ = writeln!(b, "</section>");
}

/// Lock indices, most contended first (as the terminal orders them).
pub(super) fn lock_order(doc: &Document) -> Vec<usize> {
    let mut order: Vec<usize> = (0..doc.locks.len()).collect();
    order.sort_by_key(|&i| {
        let l = &doc.locks[i];
        std::cmp::Reverse((l.blocks + l.overlapping_grants, l.grants))
    });
    order
}

/// The index of the lock the whoops are about (the run's memfd).
pub(super) fn whoops_lock(doc: &Document) -> Option<usize> {
    doc.whoops.as_ref()?;
    let ino = doc
        .workload
        .as_ref()?
        .roles
        .iter()
        .map(|r| r.memfd_ino)
        .find(|&i| i != 0)?;
    doc.locks.iter().position(|l| l.ino == ino)
}

pub(super) fn pcts(p: &Percentiles) -> String {
    match (p.p50, p.p99) {
        (Some(a), Some(b)) => format!("{} / {}", fmt_ns(a), fmt_ns(b)),
        _ => "-".into(),
    }
}

pub(super) fn locks_section(b: &mut String, doc: &Document, h: u8) {
    if doc.locks.is_empty() {
        return;
    }
    let wl = whoops_lock(doc);
    let order = lock_order(doc);
    let shown = &order[..order.len().min(LOCKS_SHOWN)];
    let bad = |n: u64| if n > 0 { " class=\"bad\"" } else { "" };
    let _ = writeln!(b, "<section class=\"locks\">\n<h{h}>Locks</h{h}>");
    let _ = writeln!(
        b,
        "<table class=\"locks\">\n<tr><th class=\"l\">#</th><th class=\"l\">lock</th>\
         <th class=\"l\">kind</th><th>owners</th><th>requests</th><th>blocked requests</th>\
         <th>blocks</th><th>grants</th><th>releases</th><th>errors</th><th>spurious wakes</th>\
         <th>wake inversions</th><th>overlapping grants</th></tr>"
    );
    for &i in shown {
        let l = &doc.locks[i];
        let path = l
            .path
            .as_deref()
            .map(|p| format!(" <span class=\"note\">{}</span>", esc(p)))
            .unwrap_or_default();
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{i}</td><td class=\"l\"><code>{}</code>{path}</td>\
             <td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td{}>{}</td></tr>",
            esc(&l.name),
            esc(&l.kind),
            l.owners.len(),
            l.requests,
            l.blocked_requests,
            l.blocks,
            l.grants,
            l.releases,
            l.errors,
            l.spurious_wakes,
            bad(l.wake_inversions),
            l.wake_inversions,
            bad(l.overlapping_grants),
            l.overlapping_grants
        );
    }
    let _ = writeln!(b, "</table>");
    let _ = writeln!(
        b,
        "<table class=\"handoff-classes\">\n<tr><th class=\"l\">#</th><th>handoffs</th>\
         <th>fifo</th><th>self_barge</th><th>newcomer_barge</th><th>waiter_reorder</th>\
         <th>unresolved</th><th>whoops</th><th>whoops causes: self_barge / peer_not_waiting / \
         no_exclusion</th><th>wait p50 / p99</th><th>wake-to-run p50 / p99</th></tr>"
    );
    for &i in shown {
        let l = &doc.locks[i];
        let hd = &l.handoffs;
        let all = hd.fifo + hd.self_barge + hd.newcomer_barge + hd.waiter_reorder + hd.unresolved;
        let (whoops, causes) = match (&doc.whoops, wl) {
            (Some(w), Some(j)) if j == i => (
                w.total.to_string(),
                format!(
                    "{} / {} / {}",
                    w.by_cause.self_barge, w.by_cause.peer_not_waiting, w.by_cause.no_exclusion
                ),
            ),
            _ => ("-".into(), "-".into()),
        };
        let share = |n: u64| {
            if all > 0 && n > 0 {
                format!(" <span class=\"note\">({})</span>", pct(n, all))
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{i}</td><td>{all}</td><td>{}{}</td><td{}>{}{}</td><td{}>{}{}</td>\
             <td{}>{}{}</td><td>{}</td><td>{whoops}</td><td>{causes}</td><td>{}</td><td>{}</td></tr>",
            hd.fifo,
            share(hd.fifo),
            bad(hd.self_barge),
            hd.self_barge,
            share(hd.self_barge),
            bad(hd.newcomer_barge),
            hd.newcomer_barge,
            share(hd.newcomer_barge),
            bad(hd.waiter_reorder),
            hd.waiter_reorder,
            share(hd.waiter_reorder),
            hd.unresolved,
            pcts(&l.wait_ns),
            pcts(&l.wake_to_run_ns)
        );
    }
    let _ = writeln!(b, "</table>");
    if doc.locks.len() > LOCKS_SHOWN {
        let _ = writeln!(
            b,
            "<p class=\"note\">... and {} more locks with less contention (see --json).</p>",
            doc.locks.len() - LOCKS_SHOWN
        );
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Handoffs are releases with waiters: <b>fifo</b> the longest-waiting \
         waiter got the lock next; <b>self_barge</b> the releaser took it back while a woken \
         waiter was pending; <b>newcomer_barge</b> a task that was not waiting got it; \
         <b>waiter_reorder</b> a later waiter was granted first; <b>unresolved</b> no grant \
         decided it. Whoops belong to the run's memfd.</p>\n</section>"
    );
}

pub(super) fn whoops_section(b: &mut String, doc: &Document, h: u8) {
    let Some(w) = &doc.whoops else { return };
    let _ = writeln!(
        b,
        "<section class=\"whoops\">\n<h{h}>Whoops and their causes</h{h}>"
    );
    let _ = writeln!(
        b,
        "<table>\n<tr><th class=\"l\">role</th><th>tgid</th><th>acquisitions</th>\
         <th>kernel grants</th><th>whoops</th><th>explained</th><th>self_barge</th>\
         <th>peer_not_waiting</th><th>no_exclusion</th></tr>"
    );
    for r in &w.roles {
        let mismatch = if r.grants != r.acquisitions {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td{mismatch}>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.role),
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
    let c = &w.by_cause;
    let _ = writeln!(
        b,
        "<tr><th class=\"l\">all</th><td></td><td></td><td></td><th>{}</th><th>{}</th>\
         <th>{}</th><th>{}</th><th>{}</th></tr>\n</table>",
        w.total, w.explained, c.self_barge, c.peer_not_waiting, c.no_exclusion
    );
    let p = &w.by_peer_state;
    let _ = writeln!(
        b,
        "<p class=\"note\">What the other side was doing at each whoops grant: waiting \
         (blocked {}, woken not yet running {}, running not yet retried {}); not waiting \
         (outside any lock request {}, in the syscall but not blocked yet {}); same lock owner \
         {}.</p>",
        p.blocked,
        p.woken_not_running,
        p.running_not_retried,
        p.not_in_request,
        p.in_request_not_blocked,
        p.shared_owner
    );
    for m in &w.mismatches {
        let _ = writeln!(b, "<p class=\"note\">Mismatch: {}</p>", esc(m));
    }
    let _ = writeln!(b, "</section>");
}

pub(super) fn handoffs_section(b: &mut String, doc: &Document, opts: &Options, id: &str, h: u8) {
    if doc.worst_handoffs.is_empty() || opts.handoffs == 0 {
        return;
    }
    let shown = opts.handoffs.min(doc.worst_handoffs.len());
    let _ = writeln!(
        b,
        "<section class=\"handoffs\">\n<h{h}>Worst handoffs ({shown} of {})</h{h}>",
        doc.worst_handoffs.len()
    );
    let _ = writeln!(
        b,
        "<div class=\"legend\"><span style=\"--c: var(--blocked)\">blocked on the lock</span>\
         <span style=\"--c: var(--runnable)\">woken, waiting for a CPU</span>\
         <span style=\"--c: var(--woken)\">woken earlier (when it ran is not recorded)</span>\
         <span style=\"--c: var(--holding)\">holding the lock</span>\
         <span style=\"--c: var(--ink)\">wakeup, waker &#8594; wakee</span>\
         <span style=\"--c: var(--grant)\">grant</span></div>"
    );
    for (n, ho) in doc.worst_handoffs.iter().take(shown).enumerate() {
        handoff_figure(b, doc, ho, n + 1, id);
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Unfair outcomes first, then by how long the oldest waiter had \
         waited. Bars that reach the left edge began before the window (their full length is \
         in the tooltip); bars that reach the right edge lasted past the last recorded \
         event.</p>\n</section>"
    );
}

pub(super) fn histograms_section(b: &mut String, doc: &Document, h: u8) {
    let locks: Vec<(usize, &LockReport)> = lock_order(doc)
        .into_iter()
        .map(|i| (i, &doc.locks[i]))
        .filter(|(_, l)| !l.wait_histogram.is_empty() || !l.wake_to_run_histogram.is_empty())
        .take(HISTOGRAM_LOCKS)
        .collect();
    if locks.is_empty() {
        return;
    }
    let _ = writeln!(
        b,
        "<section class=\"histograms\">\n<h{h}>Wait time and wake-to-run latency</h{h}>"
    );
    for (i, l) in locks {
        let _ = writeln!(
            b,
            "<h{} class=\"lock\">[{i}] <code>{}</code></h{}>\n<div class=\"hists\">",
            h + 1,
            esc(&l.name),
            h + 1
        );
        if !l.wait_histogram.is_empty() {
            let _ = writeln!(b, "<div>");
            histogram_svg(
                b,
                &format!(
                    "wait time, first block -> decision (n={}, p50 {})",
                    l.wait_ns.count,
                    opt_ns(l.wait_ns.p50)
                ),
                "wait",
                &l.wait_histogram,
            );
            let _ = writeln!(b, "</div>");
        }
        if !l.wake_to_run_histogram.is_empty() {
            let same = if l.wake_to_run_ns.count > 0 {
                format!(
                    ", on the waker's CPU {}",
                    pct(l.wakes_same_cpu, l.wake_to_run_ns.count)
                )
            } else {
                String::new()
            };
            let _ = writeln!(b, "<div>");
            histogram_svg(
                b,
                &format!(
                    "wake-to-run, sched_waking -> switched in (n={}, p50 {}{same})",
                    l.wake_to_run_ns.count,
                    opt_ns(l.wake_to_run_ns.p50)
                ),
                "w2r",
                &l.wake_to_run_histogram,
            );
            let _ = writeln!(b, "</div>");
        }
        let _ = writeln!(b, "</div>");
    }
    let _ = writeln!(
        b,
        "<p class=\"note\">Power-of-two buckets; each bar's tooltip gives its range and \
         count.</p>\n</section>"
    );
}

pub(super) fn completeness_section(b: &mut String, doc: &Document, h: u8) {
    let _ = writeln!(
        b,
        "<section class=\"completeness\">\n<h{h}>Completeness</h{h}>"
    );
    if doc.complete {
        let _ = writeln!(
            b,
            "<p>Nothing is missing: no event was dropped or cut, and every request ended.</p>"
        );
    } else {
        let _ = writeln!(b, "<ul>");
        for r in &doc.incomplete_reasons {
            let _ = writeln!(b, "<li>{}</li>", esc(r));
        }
        let _ = writeln!(b, "</ul>");
    }
    if let Some(a) = &doc.analysis {
        let _ = writeln!(
            b,
            "<p class=\"note\">{} events ({} lock, {} sched, {} syscall) over {}; {} reordered, \
             {} out of order, {} raced releases, {} unattributed wakes, {} unfinished requests.</p>",
            a.events,
            a.lock_events,
            a.sched_events,
            a.syscall_events,
            fmt_ns(a.duration_ns),
            a.reordered,
            a.out_of_order,
            a.raced_releases,
            a.unattributed_wakes,
            a.unfinished_requests
        );
    }
    if let Some(line) = doc
        .capture
        .as_ref()
        .and_then(crate::report::capture::programs_line)
    {
        let _ = writeln!(b, "<p class=\"note programs\">{}</p>", esc(&line));
    }
    let _ = writeln!(b, "</section>");
}
