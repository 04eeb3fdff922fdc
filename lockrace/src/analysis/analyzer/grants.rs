//! Lock decisions: a request that blocked (FILE_LOCK_DEFERRED) becomes a waiter
//! ([`Core::block`]), a grant ends its wait and may decide the open handoff ([`Core::grant`]),
//! an error ends it ([`Core::fail`]); readers granted ahead of a waiting writer are counted.
//!
//! Invariants: a grant that overlaps a conflicting hold of another owner is an overlapping
//! grant (counted with its first evidence) unless the hold is stale; a waiter is removed from
//! its group's waiter list exactly once.
use super::*;

impl<'o> Core<'o> {
    /// The range a POSIX grant asked for when no syscall record told us (the fast and lean
    /// probe sets have none): posix_lock_inode traces the lock after coalescing it with the
    /// owner's adjacent or overlapping locks of the same type (fs/locks.c at v6.18,
    /// `posix_lock_inode`: `request = fl` once merged), so the traced range minus what this
    /// owner already held of that type is what it asked for, when that is one interval.
    fn unmerged_range(&self, l: &LockData, class: LockClass) -> Option<(i64, i64)> {
        if class != LockClass::Posix || l.ret != 0 {
            return None;
        }
        let ids = self.by_inode.get(&(l.dev, l.ino, class))?;
        let mut held: Vec<(i64, i64)> = ids
            .iter()
            .flat_map(|&id| self.locks[id].holds.iter())
            .filter(|h| h.owner == l.owner && h.ltype == l.lock_type)
            .filter(|h| l.start <= h.start && h.end <= l.end)
            .map(|h| (h.start, h.end))
            .collect();
        if held.is_empty() {
            return None;
        }
        held.sort_unstable();
        // What is left of [l.start, l.end] once the held pieces are taken out.
        let mut left = Vec::new();
        let mut at = l.start;
        for (s, e) in held {
            if s > at {
                left.push((at, s - 1));
            }
            at = at.max(e.saturating_add(1));
        }
        if at <= l.end {
            left.push((at, l.end));
        }
        match left[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    pub(super) fn on_acquire(&mut self, e: &Event, l: &LockData, class: LockClass) {
        let tid = e.tid;
        // A granted POSIX lock is reported after the kernel coalesced it with the owner's
        // adjacent locks of the same type (posix_lock_inode traces the merged lock), so the
        // range the caller asked for names the lock, when the syscall told us (sqlite locks
        // single adjacent bytes: pending, reserved, then the shared range).
        let asked = self
            .tasks
            .get(&tid)
            .and_then(|t| t.req.as_ref())
            .and_then(|r| r.asked)
            .filter(|&(s, e)| class == LockClass::Posix && l.start <= s && e <= l.end)
            .or_else(|| self.unmerged_range(l, class));
        let mut l = *l;
        if let Some((start, end)) = asked {
            l.start = start;
            l.end = end;
        }
        let l = &l;
        let id = self.group_for(l.dev, l.ino, class, l.start, l.end);
        {
            let s = &mut self.locks[id].sum;
            if l.flags & k::FL_OFDLCK != 0 {
                s.flavors.ofd = true;
            } else if class == LockClass::Flock {
                s.flavors.flock = true;
            } else {
                s.flavors.posix = true;
            }
            note_owner(s, l.owner, e.tgid);
        }
        self.note_role_owner(e.tgid, l);
        let first = {
            let Some(r) = self.req_mut(tid) else { return };
            r.ltype = Some(l.lock_type);
            r.start = l.start;
            r.end = l.end;
            if r.want.is_none() {
                r.want = Some(l.lock_type);
            }
            r.lock = Some(id);
            let first = !r.counted;
            r.counted = true;
            first
        };
        if first {
            self.locks[id].sum.requests += 1;
            // Non-blocking requests (no FL_SLEEP) that conflict fail with EAGAIN: polling.
            self.locks[id].sum.contention.attempt(
                TaskRef { tid, tgid: e.tgid },
                l.flags & k::FL_SLEEP == 0,
                l.ret == -EAGAIN,
            );
        }
        // flock conversion: the kernel drops the file's old lock (waking its waiters) first.
        let batch = self.take_issued(tid);
        if class == LockClass::Flock
            && self.locks[id]
                .holds
                .iter()
                .any(|h| h.owner == l.owner && h.ltype != l.lock_type)
        {
            self.release(e, &[id], l.owner, l.start, l.end, batch);
        } else {
            // Wakeups inside this call: children of a re-queued request.
            self.attribute_other(e, &batch);
        }
        match l.ret {
            k::FILE_LOCK_DEFERRED => self.block(e, l, id),
            0 => self.grant(e, l, id),
            r if r < 0 => self.fail(e, r),
            _ => self.stats.unexpected_returns += 1,
        }
    }

    pub(super) fn block(&mut self, e: &Event, l: &LockData, id: usize) {
        let tid = e.tid;
        let ts = e.ts_ns;
        let parent = self
            .waiter_by_fl
            .get(&l.blocker)
            .copied()
            .filter(|&p| p != tid);
        let Some(r) = self.req_mut(tid) else { return };
        let first = r.first_block.is_none();
        if first {
            r.first_block = Some(ts);
        }
        r.blocks += 1;
        r.last_block = ts;
        r.blocker = l.blocker;
        let old_fl = std::mem::replace(&mut r.fl, l.fl);
        r.phase = Phase::Blocked;
        if let Some(rec) = r.rec.as_mut() {
            rec.set_then(AfterWake::Reblocked(ts));
            if rec.blocks.len() < RECORD_LIST_CAP {
                rec.blocks.push(BlockRec {
                    ts_ns: ts,
                    blocker: l.blocker,
                    parent,
                });
            } else {
                rec.truncated = true;
            }
        }
        if old_fl != 0 && old_fl != l.fl && self.waiter_by_fl.get(&old_fl) == Some(&tid) {
            self.waiter_by_fl.remove(&old_fl);
        }
        if l.fl != 0 {
            self.waiter_by_fl.insert(l.fl, tid);
        }
        let s = &mut self.locks[id];
        s.sum.blocks += 1;
        if first {
            s.sum.blocked_requests += 1;
            push_capped(&mut s.sum.block_order, e.tgid);
            s.waiters.push(tid);
        } else {
            s.sum.spurious_wakes += 1;
            if !s.waiters.contains(&tid) {
                s.waiters.push(tid);
            }
            self.timeline(id, ts, tid, e.cpu, TimelineWhat::Reblocked);
        }
    }

    pub(super) fn grant(&mut self, e: &Event, l: &LockData, id: usize) {
        let tid = e.tid;
        let ts = e.ts_ns;
        let me = TaskRef { tid, tgid: e.tgid };
        if l.lock_type == k::F_RDLCK {
            self.note_readers_ahead(e, l, id);
        }
        self.apply_inflight_releases(e, l, id);
        // Who else holds a conflicting lock right now?
        let mut stale = 0usize;
        let mut stale_holds: Vec<Hold> = Vec::new();
        {
            let s = &mut self.locks[id];
            let mut i = 0;
            while i < s.holds.len() {
                let h = s.holds[i];
                let clash = h.task.tid != tid
                    && overlaps(h.start, h.end, l.start, l.end)
                    && conflicts(h.ltype, l.lock_type);
                if clash && h.owner == l.owner {
                    s.sum.overlapping_grants += 1;
                    if s.sum.first_overlap.is_none() {
                        s.sum.first_overlap = Some(OverlapEvidence {
                            ts_ns: ts,
                            owner: l.owner,
                            holder: h.task,
                            holder_type: h.ltype,
                            grantee: me,
                            grantee_type: l.lock_type,
                        });
                    }
                } else if clash {
                    // The kernel would not have granted this: we missed that release (or its
                    // event is late: see `stale_recent`).
                    stale += 1;
                    if self.stale_recent.len() >= 16 {
                        self.stale_recent.remove(0);
                    }
                    self.stale_recent.push((h.owner, id, ts));
                    if !stale_holds.iter().any(|x: &Hold| x.owner == h.owner) {
                        stale_holds.push(h);
                    }
                }
                i += 1;
            }
        }
        self.stats.inconsistencies += stale as u64;
        // That release happened just before this grant: apply it here, so a release that left
        // waiters opens its handoff (decided by this grant) whether its event is late or lost.
        for h in stale_holds {
            let ev = match self.tasks.get(&h.task.tid) {
                Some(t) => Event {
                    cpu: t.cpu,
                    tgid: t.tgid,
                    tid: h.task.tid,
                    comm: t.comm,
                    ..*e
                },
                None => Event {
                    tgid: h.task.tgid,
                    tid: h.task.tid,
                    ..*e
                },
            };
            self.release(&ev, &[id], h.owner, l.start, l.end, Vec::new());
        }
        // The task's own lock on this range is replaced (re-lock, upgrade, downgrade).
        self.cut_holds(id, l.owner, l.start, l.end, Some(tid), tid, ts);
        {
            let s = &mut self.locks[id];
            s.holds.push(Hold {
                owner: l.owner,
                task: me,
                ltype: l.lock_type,
                start: l.start,
                end: l.end,
                since: ts,
            });
            s.sum.grants += 1;
            push_capped(&mut s.sum.grant_order, e.tgid);
        }
        let waited = {
            let Some(r) = self.req_mut(tid) else { return };
            let waited = r.outcome.is_none().then_some(r.first_block).flatten();
            r.outcome = Some((0, ts));
            r.phase = Phase::Done;
            if let Some(rec) = r.rec.as_mut() {
                rec.set_then(AfterWake::Granted(ts));
            }
            waited
        };
        if let Some(fb) = waited {
            self.locks[id].sum.wait.record(ts.saturating_sub(fb));
            self.remove_waiter(id, tid);
        }
        self.resolve_handoff(id, e, l);
        self.note_role_grant(e, l);
    }

    /// A read grant on `id`: every waiting writer that blocked before this reader's request
    /// arrived (and whose range it overlaps) is passed by it.
    pub(super) fn note_readers_ahead(&mut self, e: &Event, l: &LockData, id: usize) {
        let Some(r) = self.tasks.get(&e.tid).and_then(|t| t.req.as_ref()) else {
            return;
        };
        let arrived = r.enter_ts.or(r.first_block).unwrap_or(e.ts_ns);
        let mut passed = 0;
        for i in 0..self.locks[id].waiters.len() {
            let w = self.locks[id].waiters[i];
            if w == e.tid {
                continue;
            }
            let Some(wr) = self.tasks.get_mut(&w).and_then(|t| t.req.as_mut()) else {
                continue;
            };
            if wr.waiting()
                && wr.kind() == k::F_WRLCK
                && overlaps(wr.start, wr.end, l.start, l.end)
                && wr.first_block.is_some_and(|fb| fb < arrived)
            {
                wr.readers_ahead += 1;
                passed += 1;
            }
        }
        self.locks[id].sum.contention.readers_ahead += passed;
    }

    pub(super) fn fail(&mut self, e: &Event, ret: i32) {
        let tid = e.tid;
        let ts = e.ts_ns;
        let Some(r) = self.req_mut(tid) else { return };
        let waited = r.waiting().then_some(r.first_block).flatten();
        let id = r.lock;
        r.outcome = Some((ret, ts));
        r.phase = Phase::Done;
        if let Some(rec) = r.rec.as_mut() {
            rec.set_then(AfterWake::Failed(ts));
        }
        let Some(id) = id else { return };
        let s = &mut self.locks[id].sum;
        s.errors += 1;
        if ret == -EAGAIN {
            s.would_block += 1;
        }
        if let Some(fb) = waited {
            s.wait.record(ts.saturating_sub(fb));
            self.remove_waiter(id, tid);
            self.timeline(id, ts, tid, e.cpu, TimelineWhat::Failed { ret });
        }
    }

    pub(super) fn remove_waiter(&mut self, id: usize, tid: u32) {
        let id = resolve(&self.locks, id);
        let w = &mut self.locks[id].waiters;
        if let Some(p) = w.iter().position(|&t| t == tid) {
            w.remove(p);
        }
    }
}
