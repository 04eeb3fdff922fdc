//! Report side of [`crate::analysis::contention`]: the per-lock `contention` object (busy
//! attempts of non-blocking requests, writers passed by newer readers), the `polling-lock` and
//! `writer-starvation` diagnoses, their verdict sentences and terminal lines.
//!
//! Invariants: pure; `contention` is present only on locks that had a non-blocking request or a
//! writer passed by a reader (so documents of blocking-only workloads are unchanged); a
//! diagnosis always carries its numbers in `evidence`, naming the lock by its index.
use serde_json::json;

use super::build::{fmt_ns, pct};
use super::model::{
    BusyTaskReport, ContentionReport, Diagnosis, Document, LockReport, Severity, TaskReport,
    WriterWaitReport,
};
use crate::analysis::Analysis;
use crate::analysis::contention::{
    Contention, POLLING_MIN_RETRIES, STARVATION_MIN_READERS, WaitEnd,
};

/// Tasks listed per lock in `contention.busy_tasks`.
pub const BUSY_TASKS_SHOWN: usize = 16;

fn task(a: &Analysis, tid: u32, tgid: u32) -> TaskReport {
    TaskReport {
        tid,
        tgid,
        comm: a.comm_of(tid).unwrap_or("?").to_string(),
    }
}

/// The `contention` object of a lock, or None when it had nothing to report.
pub fn report(c: &Contention, a: &Analysis) -> Option<ContentionReport> {
    if c.nonblocking == 0 && c.readers_ahead == 0 && c.writers_passed == 0 {
        return None;
    }
    let mut tasks: Vec<BusyTaskReport> = c
        .tasks
        .iter()
        .map(|t| BusyTaskReport {
            tid: t.task.tid,
            tgid: t.task.tgid,
            comm: a.comm_of(t.task.tid).unwrap_or("?").to_string(),
            attempts: t.attempts,
            busy: t.busy,
            retries: t.retries,
            longest_streak: t.longest_streak,
        })
        .collect();
    tasks.sort_by_key(|t| (std::cmp::Reverse(t.busy), t.tid));
    let truncated = c.tasks_truncated || tasks.len() > BUSY_TASKS_SHOWN;
    tasks.truncate(BUSY_TASKS_SHOWN);
    Some(ContentionReport {
        nonblocking_requests: c.nonblocking,
        busy_attempts: c.busy,
        busy_retries: c.retries,
        busy_longest_streak: c.longest_streak,
        busy_streak_task: c.streak_task.map(|t| task(a, t.tid, t.tgid)),
        busy_tasks: tasks,
        busy_tasks_truncated: truncated,
        readers_ahead_of_writers: c.readers_ahead,
        writers_passed: c.writers_passed,
        starved_writers: c.starved_writers,
        worst_writer_wait: c.worst_wait.map(|w| WriterWaitReport {
            writer: task(a, w.writer.tid, w.writer.tgid),
            first_block_ts_ns: w.first_block_ts,
            waited_ns: w.waited_ns(),
            ended: match w.end {
                WaitEnd::Granted => "granted".into(),
                WaitEnd::Failed(_) => "failed".into(),
                WaitEnd::StillWaiting => "still_waiting".into(),
            },
            readers_ahead: w.readers_ahead,
        }),
    })
}

/// Fill every lock's `contention` (locks and summaries are index-aligned).
pub fn fill(locks: &mut [LockReport], a: &Analysis) {
    for (l, s) in locks.iter_mut().zip(&a.locks) {
        l.contention = report(&s.contention, a);
    }
}

/// The lock as people know it: its path (with the range and class) when known, else its name.
pub fn display_name(l: &LockReport) -> String {
    let Some(p) = &l.path else {
        return l.name.clone();
    };
    let mut s = p.clone();
    match l.range.end {
        _ if l.range.start == 0 && l.range.end.is_none() => {}
        None => s.push_str(&format!("[{}..EOF]", l.range.start)),
        Some(e) => s.push_str(&format!("[{}..{e}]", l.range.start)),
    }
    if l.name.ends_with(" (flock)") {
        s.push_str(" (flock)");
    }
    s
}

fn who(t: &TaskReport) -> String {
    format!("{} ({})", t.comm, t.tid)
}

/// `polling-lock` and `writer-starvation`.
pub fn diagnose(doc: &Document) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    for (i, l) in doc.locks.iter().enumerate() {
        let Some(c) = &l.contention else { continue };
        let name = display_name(l);
        if c.busy_retries >= POLLING_MIN_RETRIES {
            let streak_by = c
                .busy_streak_task
                .as_ref()
                .map(|t| format!(" by {}", who(t)))
                .unwrap_or_default();
            out.push(Diagnosis {
                code: "polling-lock".into(),
                severity: Severity::Warning,
                message: format!(
                    "{name}: {} of {} non-blocking attempts found the lock taken (EAGAIN) and \
                     were retried {} times (longest streak: {} failures in a row{streak_by}): \
                     the lock is polled (fail, sleep, retry), and a polled lock has no queue, so \
                     no fairness at all: whoever retries at the right moment wins",
                    c.busy_attempts, c.nonblocking_requests, c.busy_retries, c.busy_longest_streak
                ),
                evidence: json!({
                    "lock": i,
                    "path": l.path,
                    "nonblocking_requests": c.nonblocking_requests,
                    "busy_attempts": c.busy_attempts,
                    "retries": c.busy_retries,
                    "longest_streak": c.busy_longest_streak,
                    "streak_task": c.busy_streak_task,
                    "tasks": c.busy_tasks.iter().take(8).collect::<Vec<_>>(),
                }),
            });
        }
        if c.starved_writers > 0
            && let Some(w) = &c.worst_writer_wait
        {
            let still = if w.ended == "still_waiting" {
                ", and was still waiting when the events ended"
            } else {
                ""
            };
            out.push(Diagnosis {
                code: "writer-starvation".into(),
                severity: Severity::Warning,
                message: format!(
                    "{name}: {} writer wait(s) were passed by {STARVATION_MIN_READERS} or more \
                     readers that arrived after the writer; the worst, {}, waited {} while {} \
                     newer readers were granted ahead of it{still}: Linux grants a read lock \
                     whenever no holder conflicts, ignoring queued writers",
                    c.starved_writers,
                    who(&w.writer),
                    fmt_ns(w.waited_ns),
                    w.readers_ahead
                ),
                evidence: json!({
                    "lock": i,
                    "path": l.path,
                    "starved_writers": c.starved_writers,
                    "writers_passed": c.writers_passed,
                    "readers_ahead_of_writers": c.readers_ahead_of_writers,
                    "readers_ahead": w.readers_ahead,
                    "writer": w.writer,
                    "first_block_ts_ns": w.first_block_ts_ns,
                    "waited_ns": w.waited_ns,
                    "ended": w.ended,
                }),
            });
        }
    }
    out
}

/// Verdict sentences for polling and starved writers (empty when there were none).
pub fn verdict(doc: &Document) -> Vec<String> {
    let mut out = Vec::new();
    let polled: Vec<&LockReport> = doc
        .locks
        .iter()
        .filter(|l| {
            l.contention
                .as_ref()
                .is_some_and(|c| c.busy_retries >= POLLING_MIN_RETRIES)
        })
        .collect();
    if !polled.is_empty() {
        let busy: u64 = polled
            .iter()
            .filter_map(|l| l.contention.as_ref())
            .map(|c| c.busy_attempts)
            .sum();
        let tries: u64 = polled
            .iter()
            .filter_map(|l| l.contention.as_ref())
            .map(|c| c.nonblocking_requests)
            .sum();
        let retries: u64 = polled
            .iter()
            .filter_map(|l| l.contention.as_ref())
            .map(|c| c.busy_retries)
            .sum();
        let names: Vec<String> = polled.iter().take(3).map(|l| display_name(l)).collect();
        out.push(format!(
            "Polled, not queued: {busy} of {tries} non-blocking lock attempts ({}) found the lock \
             taken and were retried {retries} times, on {}{}. A polled lock has no queue and no \
             fairness: the kernel never hands it to the task that waited longest.",
            pct(busy, tries),
            names.join(", "),
            if polled.len() > 3 { " and more" } else { "" }
        ));
    }
    let starved: u64 = doc
        .locks
        .iter()
        .filter_map(|l| l.contention.as_ref())
        .map(|c| c.starved_writers)
        .sum();
    if starved > 0 {
        let worst = doc
            .locks
            .iter()
            .filter_map(|l| Some((l, l.contention.as_ref()?.worst_writer_wait.as_ref()?)))
            .max_by_key(|(_, w)| (w.readers_ahead, w.waited_ns));
        if let Some((l, w)) = worst {
            out.push(format!(
                "Writer starvation: {starved} writer wait(s) were passed by a stream of newer \
                 readers; on {} a writer waited {} while {} readers that came after it got the \
                 lock.",
                display_name(l),
                fmt_ns(w.waited_ns),
                w.readers_ahead
            ));
        }
    }
    out
}

/// Extra lines of a lock's terminal table.
pub fn terminal_lines(l: &LockReport) -> Vec<String> {
    let Some(c) = &l.contention else {
        return Vec::new();
    };
    let mut v = Vec::new();
    if c.nonblocking_requests > 0 {
        let tasks: Vec<String> = c
            .busy_tasks
            .iter()
            .filter(|t| t.busy > 0)
            .take(4)
            .map(|t| format!("{}/{} {}", t.comm, t.tid, t.busy))
            .collect();
        v.push(format!(
            "non-blocking: {} attempts, {} busy (EAGAIN), {} retries, longest streak {}{}",
            c.nonblocking_requests,
            c.busy_attempts,
            c.busy_retries,
            c.busy_longest_streak,
            if tasks.is_empty() {
                String::new()
            } else {
                format!("; busy per task: {}", tasks.join(", "))
            }
        ));
    }
    if c.writers_passed > 0 {
        v.push(format!(
            "writers passed by newer readers: {} ({} starved, {} read grants ahead of a writer)",
            c.writers_passed, c.starved_writers, c.readers_ahead_of_writers
        ));
    }
    v
}
