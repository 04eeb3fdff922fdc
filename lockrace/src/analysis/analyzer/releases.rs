//! Releases: an unlock (explicit, or implicit at close) removes the owner's holds over its
//! range ([`Core::release`], cutting holds that only partly overlap) and opens a handoff when
//! waiters can proceed; an unlock whose event lands just after the grant it enabled (the
//! tracepoint fires after the kernel drops its spinlock) is applied at that grant.
//!
//! Invariant: a release is applied once (`release_applied`), whichever event comes first.
use super::*;

impl<'o> Core<'o> {
    pub(super) fn on_unlock(&mut self, e: &Event, l: &LockData, class: LockClass) {
        let tid = e.tid;
        let ts = e.ts_ns;
        self.note_role_owner(e.tgid, l);
        let batch = self.take_issued(tid);
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        if let Some(v) = self.by_inode.get(&(l.dev, l.ino, class)) {
            ids.extend(v.iter().copied().filter(|&id| {
                let k = &self.locks[id].sum.key;
                overlaps(k.start, k.end, l.start, l.end)
            }));
        }
        let applied = self.req_mut(tid).is_some_and(|r| r.release_applied);
        if let Some(i) = self.stale_recent.iter().position(|&(o, lid, gts)| {
            o == l.owner && ids.contains(&lid) && ts.saturating_sub(gts) <= RACE_WINDOW_NS
        }) {
            // The grant that made us drop this hold came first only in the event stream; the
            // release was applied at that grant.
            let (_, lid, _) = self.stale_recent.remove(i);
            ids.retain(|&x| x != lid);
            self.stats.inconsistencies = self.stats.inconsistencies.saturating_sub(1);
            self.stats.raced_releases += 1;
        }
        if l.ret == 0 && !applied {
            self.release(e, &ids, l.owner, l.start, l.end, batch);
        } else {
            self.attribute_other(e, &batch);
        }
        let first = ids.first().copied();
        self.scratch = ids;
        if let Some(r) = self.req_mut(tid) {
            r.ltype = Some(k::F_UNLCK);
            r.fl = l.fl;
            r.lock = r.lock.or(first);
            r.outcome = Some((l.ret, ts));
            r.phase = Phase::Done;
        }
    }

    /// An unlock (or flock conversion) by `e.tid` with owner `owner` over [start, end] on the
    /// given locks; `batch` is the wakeups it issued.
    pub(super) fn release(
        &mut self,
        e: &Event,
        ids: &[usize],
        owner: u64,
        start: i64,
        end: i64,
        batch: Vec<Issued>,
    ) {
        let tid = e.tid;
        let ts = e.ts_ns;
        let me = TaskRef { tid, tgid: e.tgid };
        for &id in ids {
            let removed = self.cut_holds(id, owner, start, end, None, tid, ts);
            let woke: Vec<&Issued> = batch.iter().filter(|w| w.lock == id).collect();
            if removed == 0 && woke.is_empty() {
                continue;
            }
            self.locks[id].sum.releases += 1;
            let open = !self.locks[id].waiters.is_empty()
                && (!woke.is_empty() || self.waiters_can_proceed(id));
            if open {
                self.open_handoff(id, e, &woke);
            }
            if let Some(obs) = obs_of(&mut self.obs) {
                obs.on_release(&ReleaseRecord {
                    task: me,
                    lock: self.locks[id].sum.key,
                    enter_ts: self
                        .tasks
                        .get(&tid)
                        .and_then(|t| t.req.as_ref())
                        .and_then(|r| r.enter_ts),
                    ts_ns: ts,
                    cpu: e.cpu,
                    woke: woke.iter().map(|w| (w.wakee, w.ts)).collect(),
                });
            }
        }
        self.check_wake_order(e, &batch);
        for w in batch.iter().filter(|w| !ids.contains(&w.lock)) {
            self.timeline_wake(e, w);
        }
    }

    /// A grant that conflicts with another owner's hold whose task is inside its unlock call:
    /// the kernel already released it (the unlock's tracepoint fires after the kernel drops its
    /// spinlock, and a waiter woken on that CPU can preempt the releaser right there, retry and
    /// be granted first). Apply that release now, before the grant.
    pub(super) fn apply_inflight_releases(&mut self, e: &Event, l: &LockData, id: usize) {
        let mut inflight: Vec<Hold> = Vec::new();
        for h in &self.locks[id].holds {
            if h.task.tid == e.tid
                || h.owner == l.owner
                || !overlaps(h.start, h.end, l.start, l.end)
                || !conflicts(h.ltype, l.lock_type)
            {
                continue;
            }
            let unlocking = self
                .tasks
                .get(&h.task.tid)
                .and_then(|t| t.req.as_ref())
                .is_some_and(|r| {
                    r.outcome.is_none()
                        && !r.release_applied
                        && r.want == Some(k::F_UNLCK)
                        && matches!(r.sys, Sys::Fcntl(_) | Sys::Flock(_))
                });
            if unlocking && !inflight.iter().any(|x| x.task.tid == h.task.tid) {
                inflight.push(*h);
            }
        }
        for h in inflight {
            let Some(t) = self.tasks.get(&h.task.tid) else {
                continue;
            };
            let ev = Event {
                ts_ns: e.ts_ns,
                cpu: t.cpu,
                tgid: t.tgid,
                tid: h.task.tid,
                comm: t.comm,
                kind: e.kind,
                data: e.data,
            };
            let batch = self.take_issued(h.task.tid);
            self.release(&ev, &[id], h.owner, h.start, h.end, batch);
            if let Some(r) = self.req_mut(h.task.tid) {
                r.release_applied = true;
                r.lock = r.lock.or(Some(id));
            }
            self.stats.raced_releases += 1;
        }
    }

    /// True when no remaining holder conflicts with any waiter (the lock is free for them).
    pub(super) fn waiters_can_proceed(&self, id: usize) -> bool {
        let s = &self.locks[id];
        s.waiters.iter().all(|w| {
            let Some(r) = self.tasks.get(w).and_then(|t| t.req.as_ref()) else {
                return true;
            };
            s.holds.iter().all(|h| {
                h.task.tid == *w
                    || !conflicts(h.ltype, r.kind())
                    || !overlaps(h.start, h.end, r.start, r.end)
            })
        })
    }

    /// Remove (the [start, end] part of) the holds of `owner` (only those of task `only_tid`
    /// when set); returns how many holds were touched. Emits their records.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cut_holds(
        &mut self,
        id: usize,
        owner: u64,
        start: i64,
        end: i64,
        only_tid: Option<u32>,
        by: u32,
        ts: u64,
    ) -> usize {
        let s = &mut self.locks[id];
        let mut touched = 0;
        let mut i = 0;
        while i < s.holds.len() {
            let h = s.holds[i];
            if h.owner != owner
                || !overlaps(h.start, h.end, start, end)
                || only_tid.is_some_and(|t| t != h.task.tid)
            {
                i += 1;
                continue;
            }
            touched += 1;
            s.holds.swap_remove(i);
            if let Some(obs) = obs_of(&mut self.obs) {
                obs.on_hold(&HoldRecord {
                    task: h.task,
                    lock: s.sum.key,
                    owner: h.owner,
                    lock_type: h.ltype,
                    start_ts: h.since,
                    end_ts: ts,
                    released: true,
                    released_by: Some(by),
                });
            }
            if h.start < start {
                s.holds.push(Hold {
                    end: start - 1,
                    since: ts,
                    ..h
                });
            }
            if h.end > end {
                s.holds.push(Hold {
                    start: end.saturating_add(1),
                    since: ts,
                    ..h
                });
            }
        }
        touched
    }

    // ---------------------------------------------------------------- handoffs
}
