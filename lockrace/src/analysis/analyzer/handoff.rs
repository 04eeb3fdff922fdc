//! Handoffs: opened at a release that leaves waiters able to proceed ([`Core::open_handoff`]),
//! decided by the next conflicting grant ([`Core::resolve_handoff`]): FIFO when the grantee was
//! the longest-waiting live waiter, `waiter_reorder` when it jumped an older one, `self_barge`
//! when the releaser itself took the lock back while a waiter was still waiting,
//! `newcomer_barge` when a task that was not waiting took it, `unresolved` when no waiter was
//! left to decide; [`Core::finalize`] keeps the worst records.
//!
//! Invariants: a handoff is decided once; a compatible (shared) grant does not decide it; one
//! record per waiting episode in the worst list.
use super::*;

impl<'o> Core<'o> {
    pub(super) fn open_handoff(&mut self, id: usize, e: &Event, woke: &[&Issued]) {
        if let Some(prev) = self.locks[id].open.take() {
            self.finalize(id, *prev);
        }
        let mut pending: Vec<(Pending, WaiterAtRelease)> = self.locks[id]
            .waiters
            .iter()
            .filter_map(|&w| {
                let t = self.tasks.get(&w)?;
                let r = t.req.as_ref()?;
                let fb = r.first_block?;
                Some((
                    Pending {
                        tid: w,
                        first_block: fb,
                        want: r.kind(),
                        start: r.start,
                        end: r.end,
                    },
                    WaiterAtRelease {
                        task: TaskRef {
                            tid: w,
                            tgid: t.tgid,
                        },
                        first_block_ts: fb,
                        want: r.kind(),
                        woken: matches!(r.phase, Phase::Woken { .. } | Phase::Running),
                    },
                ))
            })
            .collect();
        pending.sort_by_key(|p| p.0.first_block);
        let mut rec = HandoffRecord {
            lock: id,
            release_ts: e.ts_ns,
            releaser: TaskRef {
                tid: e.tid,
                tgid: e.tgid,
            },
            releaser_cpu: e.cpu,
            waiters: pending.iter().take(WAITERS_CAP).map(|p| p.1).collect(),
            waiters_total: pending.len(),
            wake_order: woke.iter().map(|w| w.wakee).collect(),
            outcome: HandoffOutcome::Unresolved,
            next: None,
            grant_ts: None,
            oldest_wait_ns: 0,
            timeline: Vec::new(),
            timeline_truncated: false,
        };
        for w in woke {
            push_timeline(
                &mut rec,
                TimelineEntry {
                    ts_ns: w.ts,
                    tid: e.tid,
                    cpu: w.cpu,
                    what: TimelineWhat::Woke {
                        wakee: w.wakee,
                        target_cpu: w.target_cpu,
                    },
                },
            );
        }
        push_timeline(
            &mut rec,
            TimelineEntry {
                ts_ns: e.ts_ns,
                tid: e.tid,
                cpu: e.cpu,
                what: TimelineWhat::Released,
            },
        );
        self.locks[id].open = Some(Box::new(OpenHandoff {
            rec,
            pending: pending.into_iter().map(|p| p.0).collect(),
            resolved: false,
        }));
    }

    /// The first conflicting grant after a release decides the handoff.
    pub(super) fn resolve_handoff(&mut self, id: usize, e: &Event, l: &LockData) {
        let ltype = l.lock_type;
        let clash =
            |p: &Pending| conflicts(p.want, ltype) && overlaps(p.start, p.end, l.start, l.end);
        let g = e.tid;
        let ts = e.ts_ns;
        let tasks = &self.tasks;
        let Some(open) = self.locks[id].open.as_mut() else {
            return;
        };
        if open.resolved {
            if open.pending.iter().any(|p| p.tid == g) || open.rec.releaser.tid == g {
                push_timeline(
                    &mut open.rec,
                    TimelineEntry {
                        ts_ns: ts,
                        tid: g,
                        cpu: e.cpu,
                        what: TimelineWhat::Granted { outcome: None },
                    },
                );
            }
            return;
        }
        let live = |p: &Pending| {
            p.tid != g
                && tasks
                    .get(&p.tid)
                    .and_then(|t| t.req.as_ref())
                    .is_some_and(|r| r.waiting() && r.lock == Some(id))
        };
        let outcome = if let Some(gp) = open.pending.iter().find(|p| p.tid == g) {
            let jumped = open
                .pending
                .iter()
                .any(|p| live(p) && p.first_block < gp.first_block && clash(p));
            if jumped {
                HandoffOutcome::WaiterReorder
            } else {
                HandoffOutcome::Fifo
            }
        } else if open.pending.iter().any(|p| live(p) && clash(p)) {
            if g == open.rec.releaser.tid {
                HandoffOutcome::SelfBarge
            } else {
                HandoffOutcome::NewcomerBarge
            }
        } else if open.pending.iter().any(live) {
            // A compatible (shared) grant: the waiters can still get it; not decided yet.
            return;
        } else {
            HandoffOutcome::Unresolved
        };
        open.resolved = true;
        open.rec.outcome = outcome;
        open.rec.next = Some(TaskRef {
            tid: g,
            tgid: e.tgid,
        });
        open.rec.grant_ts = Some(ts);
        open.rec.oldest_wait_ns = open
            .pending
            .iter()
            .map(|p| ts.saturating_sub(p.first_block))
            .max()
            .unwrap_or(0);
        push_timeline(
            &mut open.rec,
            TimelineEntry {
                ts_ns: ts,
                tid: g,
                cpu: e.cpu,
                what: TimelineWhat::Granted {
                    outcome: Some(outcome),
                },
            },
        );
        self.locks[id].sum.handoffs.add(outcome);
    }

    /// Close a handoff record: count it if undecided, and keep it if it is among the worst.
    pub(super) fn finalize(&mut self, id: usize, mut open: OpenHandoff) {
        if !open.resolved {
            open.rec.outcome = HandoffOutcome::Unresolved;
            let end = open
                .rec
                .timeline
                .last()
                .map(|t| t.ts_ns)
                .unwrap_or(open.rec.release_ts);
            open.rec.oldest_wait_ns = open
                .pending
                .iter()
                .map(|p| end.saturating_sub(p.first_block))
                .max()
                .unwrap_or(0);
            let id = resolve(&self.locks, id);
            self.locks[id].sum.handoffs.add(HandoffOutcome::Unresolved);
        }
        let key = |r: &HandoffRecord| (r.outcome.is_unfair(), r.oldest_wait_ns);
        let k = key(&open.rec);
        // One record per waiting episode (lock, oldest waiter, its first block): a waiter
        // barged a thousand times would otherwise fill the list with copies.
        let episode = |r: &HandoffRecord| {
            (
                resolve(&self.locks, r.lock),
                r.waiters.first().map(|w| (w.task.tid, w.first_block_ts)),
            )
        };
        let ep = episode(&open.rec);
        if let Some(i) = self.worst.iter().position(|w| episode(w) == ep) {
            if key(&self.worst[i]) >= k {
                return;
            }
            self.worst.remove(i);
        }
        if self.worst.len() < WORST_CAP || self.worst.last().is_some_and(|w| key(w) < k) {
            let pos = self.worst.partition_point(|w| key(w) >= k);
            self.worst.insert(pos, open.rec);
            self.worst.truncate(WORST_CAP);
        }
    }

    pub(super) fn timeline(&mut self, id: usize, ts: u64, tid: u32, cpu: u32, what: TimelineWhat) {
        if let Some(open) = self.locks[id].open.as_mut()
            && (open.pending.iter().any(|p| p.tid == tid) || open.rec.releaser.tid == tid)
        {
            push_timeline(
                &mut open.rec,
                TimelineEntry {
                    ts_ns: ts,
                    tid,
                    cpu,
                    what,
                },
            );
        }
    }

    pub(super) fn timeline_wake(&mut self, e: &Event, w: &Issued) {
        let id = resolve(&self.locks, w.lock);
        if let Some(open) = self.locks[id].open.as_mut()
            && open.pending.iter().any(|p| p.tid == w.wakee)
        {
            push_timeline(
                &mut open.rec,
                TimelineEntry {
                    ts_ns: w.ts,
                    tid: e.tid,
                    cpu: w.cpu,
                    what: TimelineWhat::Woke {
                        wakee: w.wakee,
                        target_cpu: w.target_cpu,
                    },
                },
            );
        }
    }
}
