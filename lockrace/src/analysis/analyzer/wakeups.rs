//! Wakeups: `sched_waking` of a waiter is attributed to the waker's next lock event (an
//! unlock's wakeups come before its event) or to its syscall exit (a granted waiter wakes its
//! nested children after its grant); the order of sibling wakeups is checked against their
//! block order (wake inversions); `sched_switch` ends a waiter's wake-to-run latency.
//!
//! Invariants: a task keeps at most `ISSUED_CAP` unattributed wakeups; blockers stamped closer
//! than `INVERSION_MARGIN_NS` are not an inversion (the tracepoint race).
use super::*;

impl<'o> Core<'o> {
    /// Wakeups not part of a release (children of a decided or re-queued waiter).
    pub(super) fn attribute_other(&mut self, e: &Event, batch: &[Issued]) {
        if batch.is_empty() {
            return;
        }
        self.check_wake_order(e, batch);
        for w in batch {
            self.timeline_wake(e, w);
        }
    }

    /// The kernel wakes the waiters of one blocker in the order they blocked: flag any pair of
    /// siblings (same blocker address) woken the other way round.
    pub(super) fn check_wake_order(&mut self, e: &Event, batch: &[Issued]) {
        let n = batch.len().min(ORDER_CHECK_CAP);
        if n < 2 {
            return;
        }
        let mut inverted_locks: Vec<usize> = Vec::new();
        for j in 1..n {
            for i in 0..j {
                let (a, b) = (&batch[i], &batch[j]);
                if a.blocker == 0
                    || a.blocker != b.blocker
                    || a.lock != b.lock
                    || a.wakee == b.wakee
                {
                    continue;
                }
                if b.last_block >= a.last_block {
                    continue;
                }
                let id = resolve(&self.locks, a.lock);
                let s = &mut self.locks[id].sum;
                if a.last_block - b.last_block > INVERSION_MARGIN_NS {
                    if !inverted_locks.contains(&id) {
                        inverted_locks.push(id);
                        s.wake_inversions += 1;
                    }
                    if s.first_inversion.is_none() {
                        s.first_inversion = Some(InversionEvidence {
                            waker: TaskRef {
                                tid: e.tid,
                                tgid: e.tgid,
                            },
                            blocker: a.blocker,
                            first_woken: a.wakee,
                            first_woken_block_ts: a.last_block,
                            first_wake_ts: a.ts,
                            later_woken: b.wakee,
                            later_woken_block_ts: b.last_block,
                            later_wake_ts: b.ts,
                        });
                    }
                } else {
                    s.wake_order_ambiguous += 1;
                }
            }
        }
    }

    // ---------------------------------------------------------------- scheduler

    pub(super) fn on_waking(&mut self, e: &Event) {
        let Some(s) = e.sched() else { return };
        let w = s.target_tid;
        if w == e.tid {
            return;
        }
        let waker = TaskRef {
            tid: e.tid,
            tgid: e.tgid,
        };
        let Some(t) = self.tasks.get_mut(&w) else {
            return;
        };
        let Some(r) = t.req.as_mut() else { return };
        if !r.waiting() || r.phase != Phase::Blocked {
            return;
        }
        let Some(id) = r.lock else { return };
        r.phase = Phase::Woken {
            ts: e.ts_ns,
            waker_cpu: e.cpu,
        };
        if let Some(rec) = r.rec.as_mut() {
            if rec.wakes.len() < RECORD_LIST_CAP {
                rec.wakes.push(WakeRec {
                    ts_ns: e.ts_ns,
                    waker,
                    waker_cpu: e.cpu,
                    target_cpu: s.target_cpu,
                    run_ts: None,
                    run_cpu: None,
                    then: AfterWake::Pending,
                });
            } else {
                rec.truncated = true;
            }
        }
        let issued = Issued {
            wakee: w,
            ts: e.ts_ns,
            cpu: e.cpu,
            target_cpu: s.target_cpu,
            lock: id,
            blocker: r.blocker,
            last_block: r.last_block,
        };
        self.locks[id].sum.wakes += 1;
        if let Some(t) = self.tasks.get_mut(&e.tid) {
            if t.issued.len() >= ISSUED_CAP {
                t.issued.remove(0);
                self.stats.unattributed_wakes += 1;
            }
            t.issued.push(issued);
        }
    }

    pub(super) fn on_switch(&mut self, e: &Event) {
        let Some(s) = e.sched() else { return };
        let next = s.target_tid;
        let Some(t) = self.tasks.get_mut(&next) else {
            return;
        };
        let Some(r) = t.req.as_mut() else { return };
        let Phase::Woken { ts, waker_cpu } = r.phase else {
            return;
        };
        let lat = e.ts_ns.saturating_sub(ts);
        r.phase = Phase::Running;
        if let Some(rec) = r.rec.as_mut()
            && let Some(w) = rec.wakes.last_mut()
            && w.run_ts.is_none()
        {
            w.run_ts = Some(e.ts_ns);
            w.run_cpu = Some(e.cpu);
        }
        let Some(id) = r.lock else { return };
        let sum = &mut self.locks[id].sum;
        sum.wake_to_run.record(lat);
        if e.cpu == waker_cpu {
            sum.wakes_same_cpu += 1;
        }
        self.timeline(
            id,
            e.ts_ns,
            next,
            e.cpu,
            TimelineWhat::Ran { latency_ns: lat },
        );
    }

    // ---------------------------------------------------------------- whoops
}
