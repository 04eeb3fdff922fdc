//! What each task was doing around one handoff: blocked, runnable and holding spans, and the
//! wakeups between them, derived from the analyzer's handoff record (its waiters and its short
//! timeline). This is what the HTML report draws as lanes; the JSON report carries it too.
//!
//! Invariants: pure; a span never ends before it starts; a start is `None` only when the state
//! began before the record (the releaser's holding span, a waiter woken earlier with no switch-in
//! in the record), an end is `None` only when the state lasted past the record's last entry;
//! spans of one task never overlap; one wakeup per `Woke` entry.
use std::collections::BTreeMap;

use super::model::{SpanReport, WakeupReport};
use crate::analysis::{HandoffRecord, TimelineWhat};

/// A task's state while walking the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cur {
    /// Running, or not involved in the lock (not drawn).
    Idle,
    Blocked(Option<u64>),
    Runnable(Option<u64>),
    Woken,
    Holding(Option<u64>),
}

struct Walk {
    cur: BTreeMap<u32, Cur>,
    spans: Vec<SpanReport>,
}

impl Walk {
    fn emit(&mut self, tid: u32, state: &str, start: Option<u64>, end: Option<u64>) {
        let start = match (start, end) {
            // Clock skew between CPUs can put an end a few ns before its start.
            (Some(s), Some(e)) if s > e => Some(e),
            _ => start,
        };
        self.spans.push(SpanReport {
            tid,
            state: state.to_string(),
            start_ts_ns: start,
            end_ts_ns: end,
        });
    }

    /// End `tid`'s current span at `ts` (None: at the end of the record) and set `next`.
    fn switch(&mut self, tid: u32, ts: Option<u64>, next: Cur) {
        let cur = self.cur.get(&tid).copied().unwrap_or(Cur::Idle);
        match cur {
            Cur::Idle => {}
            Cur::Blocked(s) => self.emit(tid, "blocked", s, ts),
            Cur::Runnable(s) => self.emit(tid, "runnable", s, ts),
            Cur::Woken => self.emit(tid, "woken", None, ts),
            Cur::Holding(s) => self.emit(tid, "holding", s, ts),
        }
        self.cur.insert(tid, next);
    }

    fn state(&self, tid: u32) -> Cur {
        self.cur.get(&tid).copied().unwrap_or(Cur::Idle)
    }
}

/// The spans and wakeups of one handoff record.
pub fn derive(h: &HandoffRecord) -> (Vec<SpanReport>, Vec<WakeupReport>) {
    let mut entries = h.timeline.clone();
    entries.sort_by_key(|t| t.ts_ns);
    let mut w = Walk {
        cur: BTreeMap::new(),
        spans: Vec::new(),
    };
    w.cur.insert(h.releaser.tid, Cur::Holding(None));
    for waiter in &h.waiters {
        let tid = waiter.task.tid;
        let woke_in_record = entries
            .iter()
            .any(|t| matches!(t.what, TimelineWhat::Woke { wakee, .. } if wakee == tid));
        if !waiter.woken || woke_in_record {
            w.cur.insert(tid, Cur::Blocked(Some(waiter.first_block_ts)));
            continue;
        }
        // Woken before the release: its first switch-in says when (ts - latency).
        let ran = entries.iter().find_map(|t| match t.what {
            TimelineWhat::Ran { latency_ns } if t.tid == tid => {
                Some(t.ts_ns - latency_ns.min(t.ts_ns))
            }
            _ => None,
        });
        match ran {
            Some(woke_at) => {
                let start = waiter.first_block_ts.min(woke_at);
                w.emit(tid, "blocked", Some(start), Some(woke_at));
                w.cur.insert(tid, Cur::Runnable(Some(woke_at)));
            }
            None => {
                w.cur.insert(tid, Cur::Woken);
            }
        }
    }
    let mut wakeups = Vec::new();
    for t in &entries {
        let (tid, ts) = (t.tid, t.ts_ns);
        match t.what {
            TimelineWhat::Woke { wakee, target_cpu } => {
                wakeups.push(WakeupReport {
                    ts_ns: ts,
                    waker_tid: tid,
                    wakee_tid: wakee,
                    waker_cpu: t.cpu,
                    target_cpu,
                });
                match w.state(wakee) {
                    Cur::Holding(_) => {}
                    _ => w.switch(wakee, Some(ts), Cur::Runnable(Some(ts))),
                }
            }
            TimelineWhat::Ran { latency_ns } => match w.state(tid) {
                Cur::Runnable(_) | Cur::Woken => w.switch(tid, Some(ts), Cur::Idle),
                Cur::Blocked(_) => {
                    // The wakeup itself is not in the record: the latency places it.
                    let woke_at = ts - latency_ns.min(ts);
                    w.switch(tid, Some(woke_at), Cur::Runnable(Some(woke_at)));
                    w.switch(tid, Some(ts), Cur::Idle);
                }
                Cur::Idle | Cur::Holding(_) => {}
            },
            TimelineWhat::Reblocked => w.switch(tid, Some(ts), Cur::Blocked(Some(ts))),
            TimelineWhat::Granted { .. } => match w.state(tid) {
                Cur::Holding(_) => {}
                _ => w.switch(tid, Some(ts), Cur::Holding(Some(ts))),
            },
            TimelineWhat::Released => match w.state(tid) {
                Cur::Holding(_) => w.switch(tid, Some(ts), Cur::Idle),
                _ => {
                    w.switch(tid, Some(ts), Cur::Idle);
                    w.emit(tid, "holding", None, Some(ts));
                }
            },
            TimelineWhat::Failed { .. } => w.switch(tid, Some(ts), Cur::Idle),
        }
    }
    let open: Vec<u32> = w.cur.keys().copied().collect();
    for tid in open {
        w.switch(tid, None, Cur::Idle);
    }
    let mut spans = w.spans;
    spans.sort_by_key(|s| {
        (
            s.tid,
            s.start_ts_ns.is_some(),
            s.start_ts_ns,
            s.end_ts_ns.is_none(),
        )
    });
    (spans, wakeups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{HandoffOutcome, TaskRef, TimelineEntry, WaiterAtRelease};

    const A: u32 = 100;
    const B: u32 = 200;

    fn entry(ts_ns: u64, tid: u32, what: TimelineWhat) -> TimelineEntry {
        TimelineEntry {
            ts_ns,
            tid,
            cpu: 0,
            what,
        }
    }

    fn record(waiter_woken: bool, timeline: Vec<TimelineEntry>) -> HandoffRecord {
        HandoffRecord {
            lock: 0,
            release_ts: 1_000,
            releaser: TaskRef { tid: A, tgid: A },
            releaser_cpu: 0,
            waiters: vec![WaiterAtRelease {
                task: TaskRef { tid: B, tgid: B },
                first_block_ts: 500,
                want: 1,
                woken: waiter_woken,
            }],
            waiters_total: 1,
            wake_order: vec![B],
            outcome: HandoffOutcome::SelfBarge,
            next: Some(TaskRef { tid: A, tgid: A }),
            grant_ts: Some(1_200),
            oldest_wait_ns: 700,
            timeline,
            timeline_truncated: false,
        }
    }

    fn span(tid: u32, state: &str, s: Option<u64>, e: Option<u64>) -> SpanReport {
        SpanReport {
            tid,
            state: state.into(),
            start_ts_ns: s,
            end_ts_ns: e,
        }
    }

    #[test]
    fn a_self_barge_with_a_raced_release() {
        // The wakeup is traced before the release (the unlock tracepoint fires late), the
        // releaser takes the lock back, and the waiter gets a CPU only afterwards.
        let h = record(
            true,
            vec![
                entry(
                    990,
                    A,
                    TimelineWhat::Woke {
                        wakee: B,
                        target_cpu: 1,
                    },
                ),
                entry(1_000, A, TimelineWhat::Released),
                entry(
                    1_200,
                    A,
                    TimelineWhat::Granted {
                        outcome: Some(HandoffOutcome::SelfBarge),
                    },
                ),
                entry(1_300, B, TimelineWhat::Ran { latency_ns: 310 }),
            ],
        );
        let (spans, wakeups) = derive(&h);
        assert_eq!(
            spans,
            vec![
                span(A, "holding", None, Some(1_000)),
                span(A, "holding", Some(1_200), None),
                span(B, "blocked", Some(500), Some(990)),
                span(B, "runnable", Some(990), Some(1_300)),
            ]
        );
        assert_eq!(wakeups.len(), 1);
        assert_eq!((wakeups[0].waker_tid, wakeups[0].wakee_tid), (A, B));
        assert_eq!(wakeups[0].target_cpu, 1);
    }

    #[test]
    fn a_waiter_woken_before_the_release_is_placed_by_its_latency() {
        let h = record(
            true,
            vec![
                entry(1_000, A, TimelineWhat::Released),
                entry(1_100, A, TimelineWhat::Granted { outcome: None }),
                entry(1_400, B, TimelineWhat::Ran { latency_ns: 600 }),
                entry(1_500, B, TimelineWhat::Reblocked),
            ],
        );
        let (spans, wakeups) = derive(&h);
        assert!(wakeups.is_empty());
        assert_eq!(
            spans,
            vec![
                span(A, "holding", None, Some(1_000)),
                span(A, "holding", Some(1_100), None),
                span(B, "blocked", Some(500), Some(800)),
                span(B, "runnable", Some(800), Some(1_400)),
                span(B, "blocked", Some(1_500), None),
            ]
        );
    }

    #[test]
    fn a_fifo_handoff_and_a_waiter_woken_out_of_the_record() {
        let fifo = record(
            false,
            vec![
                entry(1_000, A, TimelineWhat::Released),
                entry(
                    1_010,
                    A,
                    TimelineWhat::Woke {
                        wakee: B,
                        target_cpu: 0,
                    },
                ),
                entry(1_050, B, TimelineWhat::Ran { latency_ns: 40 }),
                entry(
                    1_060,
                    B,
                    TimelineWhat::Granted {
                        outcome: Some(HandoffOutcome::Fifo),
                    },
                ),
            ],
        );
        let (spans, wakeups) = derive(&fifo);
        assert_eq!(wakeups.len(), 1);
        assert_eq!(
            spans,
            vec![
                span(A, "holding", None, Some(1_000)),
                span(B, "blocked", Some(500), Some(1_010)),
                span(B, "runnable", Some(1_010), Some(1_050)),
                span(B, "holding", Some(1_060), None),
            ]
        );
        // Woken earlier, never seen running: its state is only known as "woken".
        let (spans, _) = derive(&record(true, vec![entry(1_000, A, TimelineWhat::Released)]));
        assert_eq!(
            spans,
            vec![
                span(A, "holding", None, Some(1_000)),
                span(B, "woken", None, None),
            ]
        );
    }

    #[test]
    fn spans_never_run_backwards_and_never_overlap_per_task() {
        // A switch-in whose latency reaches before the waiter's block (clock skew).
        let h = record(
            false,
            vec![
                entry(1_000, A, TimelineWhat::Released),
                entry(1_100, B, TimelineWhat::Ran { latency_ns: 900 }),
                entry(1_150, B, TimelineWhat::Failed { ret: -4 }),
            ],
        );
        let (spans, _) = derive(&h);
        for tid in [A, B] {
            let mine: Vec<&SpanReport> = spans.iter().filter(|s| s.tid == tid).collect();
            for s in &mine {
                if let (Some(a), Some(b)) = (s.start_ts_ns, s.end_ts_ns) {
                    assert!(a <= b, "{s:?}");
                }
            }
            for pair in mine.windows(2) {
                let end = pair[0].end_ts_ns.unwrap_or(u64::MAX);
                let start = pair[1].start_ts_ns.unwrap_or(0);
                assert!(end <= start, "{pair:?}");
            }
        }
    }
}
