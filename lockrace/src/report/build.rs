//! The one constructor of the report document, [`document`]: the [`Facts`] (where the events
//! came from, what the capture lost: [`loss_reasons`] words it once) and the analysis ->
//! per-lock tables, worst handoffs, whoops, diagnosis, verdict.
//!
//! Invariants: pure (no I/O); a document is complete unless a fact or the analysis says why
//! not, and nothing changes it after it is built; the verdict is derived from the document
//! alone, so a document read back from JSON renders the same; a diagnosis is only emitted when
//! its counter is non-zero and always carries the numbers behind it in `evidence`.
use serde_json::json;

use super::capture::program_reports;
use super::model::*;
use crate::analysis::{
    self, Analysis, HandoffOutcome, HandoffRecord, LockSummary, TimelineWhat, WhoopsResult,
    hist::LogHist,
};
use crate::capture::CaptureStats;
use lockrace_common::k;

/// Tasks listed in the document.
const TASKS_CAP: usize = 256;

/// What a document says besides the analysis: where its events came from and what is known to
/// be missing. Every report document is made from one by [`document`].
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `uname -r` where the events were recorded.
    pub kernel_release: String,
    /// The tracefs field naming the probes resolved (empty: nothing was traced).
    pub lock_field_names: String,
    /// Owners and blockers as the kernel's addresses instead of `#N` labels.
    pub raw_pointers: bool,
    /// What the capture saw and lost; None for untraced runs.
    pub capture: Option<CaptureInfo>,
    /// `lockrace trace`: what was traced and how it ended.
    pub trace: Option<TraceInfo>,
    /// `lockrace run`: the workload's own account (with its probe effect).
    pub workload: Option<WorkloadReport>,
    /// Why the document is incomplete, in the order the report lists them (the analysis adds
    /// its own after these).
    pub incomplete: Vec<String>,
}

impl Facts {
    /// Facts about the running kernel: its release, nothing traced yet.
    pub fn here() -> Facts {
        Facts {
            kernel_release: crate::host::kernel_release(),
            ..Facts::default()
        }
    }
}

/// The one way a report document is made: `facts`, then (for traced or re-read events) the
/// analysis: per-lock tables, worst handoffs, whoops, diagnosis and verdict. The document is
/// complete unless a fact or the analysis says why not; it is not changed afterwards.
pub fn document(facts: Facts, analysis: Option<&Analysis>) -> Document {
    let mut doc = Document::new(facts.kernel_release);
    doc.kernel.lock_field_names = facts.lock_field_names;
    doc.raw_pointers = facts.raw_pointers;
    doc.capture = facts.capture;
    doc.trace = facts.trace;
    doc.workload = facts.workload;
    for why in facts.incomplete {
        doc.mark_incomplete(why);
    }
    if let Some(a) = analysis {
        fill(&mut doc, a);
    }
    doc
}

/// Where a capture's losses are reported: they read differently for a live `run`, a live
/// `trace` (which can be narrowed), and a file recorded earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossContext {
    Run,
    Trace,
    Recording,
}

/// The capture's figures in the document.
pub fn capture_info(stats: &CaptureStats) -> CaptureInfo {
    let programs = program_reports(stats);
    // The same rule as the document's completeness: misses of the timing programs are listed,
    // they do not make the capture incomplete (`report::capture::missed_reason`).
    let complete = stats.complete() && super::capture::missed_reason(&programs).is_none();
    CaptureInfo {
        events: stats.events,
        dropped: stats.dropped,
        complete,
        probes: Some(stats.probes.name().to_string()),
        programs,
        missed: Some(stats.missed),
    }
}

/// What a capture lost, as [`loss_reasons`] words it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Losses<'a> {
    /// Records the kernel could not write (ring buffer full).
    pub dropped: u64,
    /// Records that did not decode.
    pub decode_errors: u64,
    /// The attached programs, whose recursion misses are events never seen.
    pub programs: &'a [ProgramReport],
}

/// The incomplete reasons a capture's losses give (events dropped by the kernel, records that
/// did not decode, program runs the kernel skipped, tasks not followed), one line each, in
/// that order. The one copy of these sentences; `untracked` is
/// [`CaptureStats::untracked_reason`] (a recording's trailer already lists it among its
/// reasons).
///
/// A recursion miss is counted by the kernel before lockrace's filter runs, so it may be an
/// event of a task nobody traced; it still makes the report incomplete, since nothing tells
/// which task it was (the fast probe set, whose scheduler programs are `tp_btf`, has none in
/// practice: docs/BENCHMARKS.md).
pub fn loss_reasons(
    ctx: LossContext,
    losses: Losses<'_>,
    untracked: Option<String>,
) -> Vec<String> {
    let Losses {
        dropped,
        decode_errors,
        programs,
    } = losses;
    let mut out = Vec::new();
    if dropped > 0 {
        out.push(match ctx {
            LossContext::Run => {
                format!("{dropped} events dropped (ring buffer full; try --ring-buffer-mb)")
            }
            LossContext::Trace => format!(
                "{dropped} events were dropped by the kernel (ring buffer full): counts are lower \
                 bounds; try a larger --ring-buffer-mb, or narrow the trace with --pid or --path"
            ),
            LossContext::Recording => {
                format!("{dropped} events dropped (ring buffer full) while recording")
            }
        });
    }
    if decode_errors > 0 {
        out.push(match ctx {
            LossContext::Recording => {
                format!("{decode_errors} records did not decode while recording")
            }
            _ => format!("{decode_errors} records did not decode"),
        });
    }
    out.extend(super::capture::missed_reason(programs));
    out.extend(untracked);
    out
}

/// [`loss_reasons`] of a live capture that ended with `stats`.
pub fn capture_loss_reasons(ctx: LossContext, stats: &CaptureStats) -> Vec<String> {
    let programs = program_reports(stats);
    let losses = Losses {
        dropped: stats.dropped,
        decode_errors: stats.decode_errors,
        programs: &programs,
    };
    loss_reasons(ctx, losses, stats.untracked_reason())
}

/// Fill `doc` from `a`, after the facts (their drop counts and completeness feed the diagnosis
/// and the verdict).
fn fill(doc: &mut Document, a: &Analysis) {
    let st = &a.stats;
    doc.analysis = Some(AnalysisReport {
        events: st.events,
        lock_events: st.lock_events,
        sched_events: st.sched_events,
        syscall_events: st.syscall_events,
        duration_ns: st.last_ts.saturating_sub(st.first_ts),
        reordered: st.reordered,
        out_of_order: st.out_of_order,
        syscalls: st.syscalls,
        unfinished_requests: st.unfinished_requests,
        unfinished_blocked: st.unfinished_blocked,
        missing_exits: st.missing_exits,
        missing_enters: st.missing_enters,
        lock_events_outside_syscalls: st.lock_events_outside_syscalls,
        implicit_unlocks: st.implicit_unlocks,
        inconsistencies: st.inconsistencies,
        raced_releases: st.raced_releases,
        unattributed_wakes: st.unattributed_wakes,
        unexpected_returns: st.unexpected_returns,
    });
    doc.tasks = a
        .tasks
        .iter()
        .take(TASKS_CAP)
        .map(|t| TaskReport {
            tid: t.tid,
            tgid: t.tgid,
            comm: t.comm.clone(),
        })
        .collect();
    // Kernel pointers become `#N` labels unless the document keeps raw pointers.
    let mut labels = crate::redact::Labels::new(doc.raw_pointers);
    doc.locks = a
        .locks
        .iter()
        .map(|l| lock_report(l, &mut labels))
        .collect();
    super::contention::fill(&mut doc.locks, a);
    doc.worst_handoffs = a
        .worst_handoffs
        .iter()
        .map(|h| handoff_report(h, a))
        .collect();
    doc.whoops = a.whoops.as_ref().map(whoops_report);
    for r in &a.incomplete {
        doc.mark_incomplete(r.clone());
    }
    if let Some(c) = doc.capture.as_ref()
        && c.dropped > 0
        && !doc.incomplete_reasons.iter().any(|r| r.contains("dropped"))
    {
        let why = format!(
            "{} events were dropped by the kernel (ring buffer full): counts are lower bounds",
            c.dropped
        );
        doc.mark_incomplete(why);
    }
    doc.diagnosis = diagnose(doc, a, &mut labels);
    doc.verdict = verdict(doc);
}

fn percentiles(h: &LogHist) -> Percentiles {
    Percentiles {
        count: h.count(),
        p50: h.quantile(0.5),
        p90: h.quantile(0.9),
        p99: h.quantile(0.99),
        max: h.max(),
    }
}

fn histogram(h: &LogHist) -> Vec<HistBucket> {
    h.log2_buckets()
        .into_iter()
        .map(|b| HistBucket {
            lo_ns: b.lo,
            hi_ns: b.hi,
            count: b.count,
        })
        .collect()
}

pub fn hex(v: u64) -> String {
    format!("{v:#x}")
}

fn lock_report(l: &LockSummary, labels: &mut crate::redact::Labels) -> LockReport {
    LockReport {
        name: l.key.label(),
        dev: l.key.dev,
        device: l.key.device(),
        ino: l.key.ino,
        path: l.path.clone(),
        kind: l.flavors.label(),
        range: RangeReport {
            start: l.key.start,
            end: (l.key.end != i64::MAX).then_some(l.key.end),
        },
        owners: l
            .owners
            .iter()
            .map(|o| OwnerReport {
                owner: labels.label(o.owner),
                tgids: o.tgids.clone(),
            })
            .collect(),
        owners_truncated: l.owners_truncated,
        requests: l.requests,
        blocks: l.blocks,
        blocked_requests: l.blocked_requests,
        grants: l.grants,
        releases: l.releases,
        errors: l.errors,
        would_block: l.would_block,
        handoffs: HandoffCountsReport {
            fifo: l.handoffs.fifo,
            self_barge: l.handoffs.self_barge,
            newcomer_barge: l.handoffs.newcomer_barge,
            waiter_reorder: l.handoffs.waiter_reorder,
            unresolved: l.handoffs.unresolved,
        },
        wake_inversions: l.wake_inversions,
        wake_order_ambiguous: l.wake_order_ambiguous,
        spurious_wakes: l.spurious_wakes,
        overlapping_grants: l.overlapping_grants,
        block_order: l.block_order.clone(),
        grant_order: l.grant_order.clone(),
        wait_ns: percentiles(&l.wait),
        wake_to_run_ns: percentiles(&l.wake_to_run),
        wait_histogram: histogram(&l.wait),
        wake_to_run_histogram: histogram(&l.wake_to_run),
        wakes: l.wakes,
        wakes_same_cpu: l.wakes_same_cpu,
        contention: None,
    }
}

fn task_report(a: &Analysis, tid: u32, tgid: u32) -> TaskReport {
    TaskReport {
        tid,
        tgid,
        comm: a.comm_of(tid).unwrap_or("?").to_string(),
    }
}

fn who(a: &Analysis, tid: u32) -> String {
    format!("{} ({tid})", a.comm_of(tid).unwrap_or("?"))
}

fn handoff_report(h: &HandoffRecord, a: &Analysis) -> HandoffReport {
    let t0 = h
        .timeline
        .iter()
        .map(|t| t.ts_ns)
        .min()
        .unwrap_or(h.release_ts);
    let timeline = h
        .timeline
        .iter()
        .map(|t| {
            let me = who(a, t.tid);
            let (event, text) = match t.what {
                TimelineWhat::Released => ("released", format!("{me} released the lock")),
                TimelineWhat::Woke { wakee, target_cpu } => (
                    "woke",
                    format!(
                        "{me} woke {} (waker on cpu {}, wakee aimed at cpu {target_cpu})",
                        who(a, wakee),
                        t.cpu
                    ),
                ),
                TimelineWhat::Ran { latency_ns } => (
                    "ran",
                    format!(
                        "{me} got cpu {} {} after its wakeup",
                        t.cpu,
                        fmt_ns(latency_ns)
                    ),
                ),
                TimelineWhat::Reblocked => (
                    "reblocked",
                    format!("{me} retried, found the lock taken, blocked again"),
                ),
                TimelineWhat::Granted { outcome: Some(o) } => (
                    "granted",
                    format!("{me} got the lock: {}", outcome_phrase(o)),
                ),
                TimelineWhat::Granted { outcome: None } => {
                    ("granted", format!("{me} got the lock"))
                }
                TimelineWhat::Failed { ret } => (
                    "failed",
                    format!("{me} gave up waiting ({})", errno_name(ret)),
                ),
            };
            TimelineItem {
                ts_ns: t.ts_ns,
                dt_ns: t.ts_ns.saturating_sub(t0),
                tid: t.tid,
                cpu: t.cpu,
                event: event.to_string(),
                text,
            }
        })
        .collect();
    let (spans, wakeups) = super::spans::derive(h);
    HandoffReport {
        lock: h.lock,
        release_ts_ns: h.release_ts,
        releaser: task_report(a, h.releaser.tid, h.releaser.tgid),
        releaser_cpu: h.releaser_cpu,
        outcome: h.outcome.code().to_string(),
        waiters: h
            .waiters
            .iter()
            .map(|w| WaiterReport {
                tid: w.task.tid,
                tgid: w.task.tgid,
                comm: a.comm_of(w.task.tid).unwrap_or("?").to_string(),
                first_block_ts_ns: w.first_block_ts,
                want: if w.want == k::F_RDLCK {
                    "read"
                } else {
                    "write"
                }
                .to_string(),
                woken: w.woken,
            })
            .collect(),
        waiters_total: h.waiters_total,
        wake_order: h.wake_order.clone(),
        next: h.next.map(|n| task_report(a, n.tid, n.tgid)),
        grant_ts_ns: h.grant_ts,
        oldest_wait_ns: h.oldest_wait_ns,
        timeline,
        timeline_truncated: h.timeline_truncated,
        spans,
        wakeups,
    }
}

fn outcome_phrase(o: HandoffOutcome) -> &'static str {
    match o {
        HandoffOutcome::Fifo => "fifo, the longest-waiting waiter",
        HandoffOutcome::SelfBarge => "self_barge, the releaser took it back",
        HandoffOutcome::NewcomerBarge => "newcomer_barge, a task that was not waiting",
        HandoffOutcome::WaiterReorder => "waiter_reorder, ahead of an earlier waiter",
        HandoffOutcome::Unresolved => "unresolved",
    }
}

fn errno_name(ret: i32) -> String {
    match -ret {
        4 => "EINTR".into(),
        11 => "EAGAIN".into(),
        35 => "EDEADLK".into(),
        512 => "ERESTARTSYS".into(),
        n => format!("errno {n}"),
    }
}

fn whoops_report(w: &WhoopsResult) -> WhoopsReport {
    let causes = |c: &analysis::whoops::CauseCounts| WhoopsCauses {
        self_barge: c.self_barge,
        peer_not_waiting: c.peer_not_waiting,
        no_exclusion: c.no_exclusion,
    };
    let p = &w.by_peer_state;
    WhoopsReport {
        total: w.total,
        explained: w.explained,
        by_cause: causes(&w.by_cause),
        by_peer_state: PeerStates {
            not_in_request: p.not_in_request,
            in_request_not_blocked: p.in_request_not_blocked,
            blocked: p.blocked,
            woken_not_running: p.woken_not_running,
            running_not_retried: p.running_not_retried,
            shared_owner: p.shared_owner,
        },
        roles: w
            .roles
            .iter()
            .map(|r| RoleWhoopsReport {
                role: r.name.clone(),
                tgid: r.tgid,
                acquisitions: r.acquisitions,
                grants: r.grants,
                whoops: r.whoops,
                explained: r.explained,
                by_cause: causes(&r.by_cause),
            })
            .collect(),
        mismatches: w.mismatches.clone(),
        examples: w
            .examples
            .iter()
            .map(|e| WhoopsExampleReport {
                role: e.role.clone(),
                index: e.index,
                acquisition_ts_ns: e.acquisition_ts,
                grant_ts_ns: e.grant_ts,
                cause: e.cause.code().to_string(),
            })
            .collect(),
    }
}

fn owner_reason(kind: &str) -> &'static str {
    if kind.contains("ofd") || kind.contains("flock") {
        "OFD and flock locks belong to the open file description, and a descriptor passed over \
         SCM_RIGHTS (or dup'ed, or inherited) is the same description"
    } else {
        "POSIX locks belong to the process, so its threads share them"
    }
}

fn diagnose(doc: &Document, a: &Analysis, labels: &mut crate::redact::Labels) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    for (i, (l, s)) in doc.locks.iter().zip(&a.locks).enumerate() {
        // The path when known (`trace` resolves them), else `major:minor/ino`.
        let name = super::contention::display_name(l);
        if l.overlapping_grants > 0 {
            let ev = s.first_overlap;
            let owner = ev.map(|e| labels.label(e.owner));
            out.push(Diagnosis {
                code: "no-mutual-exclusion".into(),
                severity: Severity::Error,
                message: format!(
                    "{}: {} times a task was granted the lock while another task held it under \
                     the same owner {}: the lock does not exclude them ({})",
                    name,
                    l.overlapping_grants,
                    owner.clone().unwrap_or_default(),
                    owner_reason(&l.kind)
                ),
                evidence: json!({
                    "lock": i,
                    "owner": owner,
                    "owners": l.owners,
                    "overlapping_grants": l.overlapping_grants,
                    "blocks": l.blocks,
                    "first": ev.map(|e| json!({
                        "ts_ns": e.ts_ns,
                        "holder_tid": e.holder.tid,
                        "holder_tgid": e.holder.tgid,
                        "grantee_tid": e.grantee.tid,
                        "grantee_tgid": e.grantee.tgid,
                    })),
                }),
            });
        }
        if l.wake_inversions > 0 {
            let ev = s.first_inversion;
            let blocker = ev.map(|e| labels.label(e.blocker));
            out.push(Diagnosis {
                code: "wake-order-inversion".into(),
                severity: Severity::Error,
                message: format!(
                    "{}: the kernel woke sibling waiters against the order they blocked in {} \
                     release(s); fs/locks.c promises FIFO wakeups, so this is a kernel bug or a \
                     tracing artefact: please report it with the events file",
                    name, l.wake_inversions
                ),
                evidence: json!({
                    "lock": i,
                    "wake_inversions": l.wake_inversions,
                    "first": ev.map(|e| json!({
                        "waker_tid": e.waker.tid,
                        "blocker": blocker,
                        "first_woken_tid": e.first_woken,
                        "first_woken_block_ts_ns": e.first_woken_block_ts,
                        "first_wake_ts_ns": e.first_wake_ts,
                        "later_woken_tid": e.later_woken,
                        "later_woken_block_ts_ns": e.later_woken_block_ts,
                        "later_wake_ts_ns": e.later_wake_ts,
                    })),
                }),
            });
        }
        let h = &l.handoffs;
        let decided = h.fifo + h.self_barge + h.newcomer_barge + h.waiter_reorder;
        let barged = h.self_barge + h.newcomer_barge;
        if barged > 0 {
            out.push(Diagnosis {
                code: "lock-barging".into(),
                severity: Severity::Warning,
                message: format!(
                    "{}: in {barged} of {decided} handoffs ({}) the lock went to a task that was \
                     not waiting ({} times the releaser itself, {} times a newcomer) while a woken \
                     waiter had not run yet: Linux wakes waiters, it does not hand the lock over",
                    name,
                    pct(barged, decided),
                    h.self_barge,
                    h.newcomer_barge
                ),
                evidence: json!({
                    "lock": i,
                    "handoffs": l.handoffs,
                    "spurious_wakes": l.spurious_wakes,
                    "wake_to_run_ns": l.wake_to_run_ns,
                    "wakes": l.wakes,
                    "wakes_same_cpu": l.wakes_same_cpu,
                }),
            });
        }
        if h.waiter_reorder > 0 {
            out.push(Diagnosis {
                code: "fifo-grant-violation".into(),
                severity: Severity::Warning,
                message: format!(
                    "{}: in {} of {decided} handoffs a later waiter got the lock before an \
                     earlier, conflicting one (a waiter that lost a race is queued again at the \
                     tail)",
                    name, h.waiter_reorder
                ),
                evidence: json!({
                    "lock": i,
                    "handoffs": l.handoffs,
                    "block_order": l.block_order.iter().take(20).collect::<Vec<_>>(),
                    "grant_order": l.grant_order.iter().take(20).collect::<Vec<_>>(),
                }),
            });
        }
    }
    if let Some(c) = doc.capture.as_ref()
        && c.dropped > 0
    {
        out.push(Diagnosis {
            code: "events-dropped".into(),
            severity: Severity::Warning,
            message: format!(
                "{} events were dropped by the kernel (ring buffer full): every count is a lower \
                 bound (try a larger --ring-buffer-mb)",
                c.dropped
            ),
            evidence: json!({ "dropped": c.dropped, "events": c.events }),
        });
    }
    out.extend(super::contention::diagnose(doc));
    out.sort_by_key(|d| std::cmp::Reverse(d.severity));
    out
}

/// "93%", "<1%", "100%".
pub fn pct(n: u64, d: u64) -> String {
    if d == 0 {
        return "0%".into();
    }
    let p = n as f64 * 100.0 / d as f64;
    if n > 0 && p < 1.0 {
        "<1%".into()
    } else if n < d && p > 99.0 {
        ">99%".into()
    } else {
        format!("{:.0}%", p)
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

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [a] => a.clone(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

/// The answer, most important first. Derived from the document alone.
pub fn verdict(doc: &Document) -> Vec<String> {
    let mut out = Vec::new();
    // Polling and starved writers (report/contention.rs).
    let contended = super::contention::verdict(doc);
    let sum = |f: &dyn Fn(&LockReport) -> u64| doc.locks.iter().map(f).sum::<u64>();
    let overlaps = sum(&|l| l.overlapping_grants);
    let inversions = sum(&|l| l.wake_inversions);
    let fifo = sum(&|l| l.handoffs.fifo);
    let sb = sum(&|l| l.handoffs.self_barge);
    let nb = sum(&|l| l.handoffs.newcomer_barge);
    let ro = sum(&|l| l.handoffs.waiter_reorder);
    let unresolved = sum(&|l| l.handoffs.unresolved);
    let spurious = sum(&|l| l.spurious_wakes);
    let grants = sum(&|l| l.grants);
    let decided = fifo + sb + nb + ro;

    if overlaps > 0 {
        let l = doc
            .locks
            .iter()
            .max_by_key(|l| l.overlapping_grants)
            .expect("overlaps > 0 implies a lock");
        let owners = match l.owners.as_slice() {
            [one] => format!(" (one owner, {}, for tgids {:?})", one.owner, one.tgids),
            _ => String::new(),
        };
        out.push(format!(
            "No mutual exclusion: {overlaps} times a task was granted {} while another task held \
             it under the same lock owner{owners}. They never wait for each other: {}.",
            l.name,
            owner_reason(&l.kind)
        ));
    }
    if decided > 0 {
        let wake = if inversions == 0 {
            "Linux woke your waiters in FIFO order every time".to_string()
        } else {
            format!(
                "Linux woke waiters against their block order in {inversions} release(s) (a \
                 kernel FIFO bug: see the diagnosis)"
            )
        };
        let mut clauses = Vec::new();
        if sb > 0 {
            clauses.push(format!(
                "the releaser re-took the lock before the woken waiter ran in {} of handoffs ({sb} \
                 of {decided})",
                pct(sb, decided)
            ));
        }
        if nb > 0 {
            clauses.push(format!(
                "a task that was not waiting took it first in {} ({nb} of {decided})",
                pct(nb, decided)
            ));
        }
        if ro > 0 {
            clauses.push(format!(
                "a later waiter was granted before an earlier one in {} ({ro} of {decided})",
                pct(ro, decided)
            ));
        }
        if clauses.is_empty() {
            out.push(format!(
                "{wake}, and the longest-waiting waiter got the lock next in all {decided} \
                 handoffs."
            ));
        } else {
            out.push(format!("{wake}, but {}.", join_and(&clauses)));
            out.push(format!(
                "The longest-waiting waiter got the lock next in {fifo} of {decided} handoffs \
                 ({}).",
                pct(fifo, decided)
            ));
        }
        if spurious > 0 {
            out.push(format!(
                "{spurious} wakeups were in vain: the woken waiter retried, found the lock taken \
                 again, and went back to sleep."
            ));
        }
        let w2r = doc
            .locks
            .iter()
            .filter(|l| l.wake_to_run_ns.count > 0)
            .max_by_key(|l| l.wake_to_run_ns.count);
        if let Some(l) = w2r
            && sb + nb > 0
            && let (Some(p50), Some(p99)) = (l.wake_to_run_ns.p50, l.wake_to_run_ns.p99)
        {
            out.push(format!(
                "A woken waiter needed {} (median, p99 {}) to get a CPU; the releaser was already \
                 running and needed none.",
                fmt_ns(p50),
                fmt_ns(p99)
            ));
        }
    } else if unresolved > 0 {
        out.push(format!(
            "{unresolved} releases had waiters, but no grant followed that decided who won."
        ));
    } else if overlaps == 0 && grants > 0 && contended.is_empty() {
        out.push(format!(
            "No task had to wait for a lock: {grants} grants, no contended release to judge."
        ));
    } else if grants == 0 && doc.analysis.is_some() {
        out.push("No lock was granted in these events.".to_string());
    }
    out.extend(contended);
    if let Some(w) = &doc.whoops {
        if w.total == 0 {
            out.push("No whoops: every acquisition found the other side had made progress.".into());
        } else {
            let mut parts = Vec::new();
            let c = &w.by_cause;
            if c.self_barge > 0 {
                parts.push(format!(
                    "{} self_barge (the other side was waiting; the releaser took the lock back)",
                    c.self_barge
                ));
            }
            if c.peer_not_waiting > 0 {
                parts.push(format!(
                    "{} peer_not_waiting (the other side was not asking for the lock: \
                     scheduling, not lock fairness)",
                    c.peer_not_waiting
                ));
            }
            if c.no_exclusion > 0 {
                parts.push(format!(
                    "{} no_exclusion (one lock owner for both sides)",
                    c.no_exclusion
                ));
            }
            let unexplained = w.total.saturating_sub(w.explained);
            let tail = if unexplained > 0 {
                format!("; {unexplained} could not be matched with a traced grant")
            } else {
                String::new()
            };
            out.push(format!(
                "{} whoops, {} explained by the kernel events: {}{tail}.",
                w.total,
                w.explained,
                if parts.is_empty() {
                    "none".to_string()
                } else {
                    join_and(&parts)
                }
            ));
        }
    }
    if !doc.complete {
        let n = doc.incomplete_reasons.len();
        let first = doc
            .incomplete_reasons
            .first()
            .cloned()
            .unwrap_or_else(|| "unknown reason".into());
        let more = if n > 1 {
            format!(" (and {} more reason(s) below)", n - 1)
        } else {
            String::new()
        };
        out.push(format!("This report is incomplete: {first}{more}."));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_never_round_to_a_lie() {
        assert_eq!(pct(0, 10), "0%");
        assert_eq!(pct(1, 1000), "<1%");
        assert_eq!(pct(999, 1000), ">99%");
        assert_eq!(pct(10, 10), "100%");
        assert_eq!(pct(93, 100), "93%");
        assert_eq!(pct(3, 0), "0%");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_ns(850), "850 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(4_560_000), "4.56 ms");
        assert_eq!(fmt_ns(1_230_000_000), "1.23 s");
    }

    #[test]
    fn timing_program_misses_leave_the_capture_complete_lock_program_misses_do_not() {
        use crate::capture::{CaptureStats, progstats::program_stats};
        let stats = |name: &str| CaptureStats {
            events: 10,
            programs: vec![
                program_stats("posix_lock_inode", (0, 0, Some(0)), false),
                program_stats(name, (0, 0, Some(4)), false),
            ],
            missed: 4,
            ..Default::default()
        };
        let timing = capture_info(&stats("sched_waking"));
        assert!(timing.complete, "{timing:?}");
        assert_eq!(timing.missed, Some(4));
        let lock = capture_info(&stats("fcntl_setlk"));
        assert!(!lock.complete, "{lock:?}");
        assert_eq!(lock.missed, Some(4));
    }

    #[test]
    fn lists_join_in_english() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join_and(&s(&["a"])), "a");
        assert_eq!(join_and(&s(&["a", "b"])), "a and b");
        assert_eq!(join_and(&s(&["a", "b", "c"])), "a, b, and c");
    }
}
