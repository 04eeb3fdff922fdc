//! Requests: the dispatch of every event ([`Core::process`]), the task table, and a lock
//! syscall from its entry to its exit ([`Core::on_enter`], [`Core::on_exit`],
//! [`Core::end_request`]), with the lock events inside it routed by kind (`posix_lock_inode`
//! and `flock_lock_inode`, `fcntl_setlk`, `locks_remove_posix`).
//!
//! Invariants: lock events outside a syscall (close() dropping locks, a capture that started
//! mid-call) get an implicit request; a request that never exits is counted when the events
//! end, not lost.
use super::*;

impl<'o> Core<'o> {
    pub(super) fn process(&mut self, e: &Event) {
        let st = &mut self.stats;
        if st.events == 0 {
            st.first_ts = e.ts_ns;
        }
        st.events += 1;
        st.first_ts = st.first_ts.min(e.ts_ns);
        st.last_ts = st.last_ts.max(e.ts_ns);
        self.touch(e);
        match e.kind {
            Kind::SysEnterFcntl | Kind::SysEnterFlock => {
                self.stats.syscall_events += 1;
                self.on_enter(e);
            }
            Kind::SysExitFcntl | Kind::SysExitFlock => {
                self.stats.syscall_events += 1;
                self.on_exit(e);
            }
            Kind::PosixLockInode | Kind::FlockLockInode => {
                self.stats.lock_events += 1;
                self.on_lock(e);
            }
            Kind::FcntlSetlk => {
                self.stats.lock_events += 1;
                self.on_setlk(e);
            }
            Kind::LocksRemovePosix => {
                self.stats.lock_events += 1;
                self.on_remove_posix(e);
            }
            Kind::SchedWaking => {
                self.stats.sched_events += 1;
                self.on_waking(e);
            }
            Kind::SchedSwitch => {
                self.stats.sched_events += 1;
                self.on_switch(e);
            }
            Kind::SchedWakeup | Kind::SchedMigrateTask => self.stats.sched_events += 1,
        }
    }

    /// The current task exists, is named, and is on a CPU (so a pending wakeup is over).
    pub(super) fn touch(&mut self, e: &Event) {
        let t = match self.tasks.entry(e.tid) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                if let Some(obs) = obs_of(&mut self.obs)
                    && e.tid != 0
                {
                    obs.on_task(e.tid, e.tgid, &e.comm.as_str());
                }
                if let Some(w) = self.whoops.as_mut()
                    && let Some(ri) = w.role(e.tgid)
                {
                    w.tids[ri].push(e.tid);
                }
                v.insert(Task {
                    tgid: e.tgid,
                    comm: e.comm,
                    cpu: e.cpu,
                    last_ts: e.ts_ns,
                    req: None,
                    issued: Vec::new(),
                })
            }
        };
        t.tgid = e.tgid;
        t.comm = e.comm;
        t.cpu = e.cpu;
        t.last_ts = t.last_ts.max(e.ts_ns);
        if let Some(r) = t.req.as_mut()
            && let Phase::Woken { .. } = r.phase
        {
            r.phase = Phase::Running;
        }
    }

    pub(super) fn req_mut(&mut self, tid: u32) -> Option<&mut Req> {
        self.tasks.get_mut(&tid)?.req.as_mut()
    }

    pub(super) fn take_issued(&mut self, tid: u32) -> Vec<Issued> {
        self.tasks
            .get_mut(&tid)
            .map(|t| std::mem::take(&mut t.issued))
            .unwrap_or_default()
    }

    // ---------------------------------------------------------------- syscalls

    pub(super) fn on_enter(&mut self, e: &Event) {
        let Some(s) = e.syscall() else { return };
        self.stats.syscalls += 1;
        let (sys, want) = if e.kind == Kind::SysEnterFcntl {
            match s.cmd {
                k::F_SETLK | k::F_SETLKW | k::F_OFD_SETLK | k::F_OFD_SETLKW => (
                    Sys::Fcntl(s.cmd),
                    s.l_type
                        .and_then(|t| u8::try_from(t).ok())
                        .filter(|&t| t <= k::F_UNLCK),
                ),
                _ => (Sys::Test, None),
            }
        } else {
            let want = match s.cmd & !k::LOCK_NB {
                k::LOCK_SH => Some(k::F_RDLCK),
                k::LOCK_EX => Some(k::F_WRLCK),
                k::LOCK_UN => Some(k::F_UNLCK),
                _ => None,
            };
            (Sys::Flock(s.cmd), want)
        };
        let leftover = self.take_issued(e.tid);
        self.stats.unattributed_wakes += leftover.len() as u64;
        if let Some(old) = self.tasks.get_mut(&e.tid).and_then(|t| t.req.take()) {
            if old.sys != Sys::Implicit && old.sys != Sys::Test {
                self.stats.missing_exits += 1;
            }
            self.end_request(e.tid, e.tgid, old, None);
        }
        let rec = self.obs.is_some();
        let asked = match sys {
            Sys::Fcntl(_) if s.l_type.is_some() => asked_range(s.l_whence, s.l_start, s.l_len),
            _ => None,
        };
        if let Some(t) = self.tasks.get_mut(&e.tid) {
            let mut r = Req::new(sys, Some(e.ts_ns), want, rec);
            r.asked = asked;
            t.req = Some(r);
        }
    }

    pub(super) fn on_exit(&mut self, e: &Event) {
        let tid = e.tid;
        if self.req_mut(tid).is_none() {
            self.stats.missing_enters += 1;
            return;
        }
        // Wakeups after the last lock event: a decided waiter waking its nested children.
        let batch = self.take_issued(tid);
        self.attribute_other(e, &batch);
        let ret = e.syscall().map(|s| s.ret).unwrap_or(0);
        if self.req_mut(tid).is_some_and(|r| r.waiting()) {
            // The wait ended without a traced decision (interrupted, or a dropped event).
            let ret = if ret < 0 {
                i32::try_from(ret).unwrap_or(-EINTR)
            } else {
                -EINTR
            };
            self.fail(e, ret);
        }
        if let Some(req) = self.tasks.get_mut(&tid).and_then(|t| t.req.take()) {
            self.end_request(tid, e.tgid, req, Some(e.ts_ns));
        }
    }

    /// A request is over (exit, replaced, or end of events): forget its waiter state and emit
    /// its record.
    pub(super) fn end_request(&mut self, tid: u32, tgid: u32, req: Req, exit_ts: Option<u64>) {
        if req.readers_ahead > 0
            && let (Some(id), Some(fb)) = (req.lock, req.first_block)
        {
            let (end, end_ts) = match req.outcome {
                Some((0, ts)) => (WaitEnd::Granted, ts),
                Some((r, ts)) => (WaitEnd::Failed(r), ts),
                None => (WaitEnd::StillWaiting, exit_ts.unwrap_or(self.stats.last_ts)),
            };
            let id = resolve(&self.locks, id);
            self.locks[id].sum.contention.writer_wait_ended(WriterWait {
                writer: TaskRef { tid, tgid },
                first_block_ts: fb,
                end_ts,
                end,
                readers_ahead: req.readers_ahead,
            });
        }
        if req.waiting()
            && let Some(id) = req.lock
        {
            self.remove_waiter(id, tid);
        }
        if req.fl != 0 && self.waiter_by_fl.get(&req.fl) == Some(&tid) {
            self.waiter_by_fl.remove(&req.fl);
        }
        if req.sys == Sys::Test {
            return;
        }
        let Some(obs) = obs_of(&mut self.obs) else {
            return;
        };
        let Some(rec) = req.rec else { return };
        let lock_type = req.ltype.or(req.want);
        let outcome = match req.outcome {
            Some((0, _)) if lock_type == Some(k::F_UNLCK) => RequestOutcome::Unlocked,
            Some((0, _)) => RequestOutcome::Granted,
            Some((r, _)) => RequestOutcome::Failed(r),
            None if exit_ts.is_some() => RequestOutcome::NoDecision,
            None => RequestOutcome::Unfinished,
        };
        let (cmd, is_flock) = match req.sys {
            Sys::Fcntl(c) => (Some(c), false),
            Sys::Flock(c) => (Some(c), true),
            _ => (None, false),
        };
        let rr = RequestRecord {
            task: TaskRef { tid, tgid },
            lock: req
                .lock
                .map(|id| self.locks[resolve(&self.locks, id)].sum.key),
            cmd,
            is_flock,
            lock_type,
            enter_ts: req.enter_ts,
            exit_ts,
            blocks: rec.blocks,
            wakes: rec.wakes,
            truncated: rec.truncated,
            outcome,
            outcome_ts: req.outcome.map(|o| o.1),
        };
        obs.on_request(&rr);
    }

    // ---------------------------------------------------------------- lock events

    pub(super) fn lock_class(e: &Event, l: &LockData) -> LockClass {
        if e.kind == Kind::FlockLockInode
            || (l.flags & k::FL_FLOCK != 0 && l.flags & k::FL_POSIX == 0)
        {
            LockClass::Flock
        } else {
            LockClass::Posix
        }
    }

    pub(super) fn on_lock(&mut self, e: &Event) {
        let Some(l) = e.lock().copied() else { return };
        let class = Self::lock_class(e, &l);
        let tid = e.tid;
        let need_new = match self.tasks.get(&tid).and_then(|t| t.req.as_ref()) {
            None => true,
            Some(r) => r.outcome.is_some() || r.sys == Sys::Test,
        };
        if need_new {
            if let Some(old) = self.tasks.get_mut(&tid).and_then(|t| t.req.take()) {
                self.end_request(tid, e.tgid, old, None);
            }
            if l.lock_type == k::F_UNLCK {
                self.stats.implicit_unlocks += 1;
            } else {
                self.stats.lock_events_outside_syscalls += 1;
            }
            let rec = self.obs.is_some();
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.req = Some(Req::new(Sys::Implicit, None, Some(l.lock_type), rec));
            }
        }
        if l.lock_type == k::F_UNLCK {
            self.on_unlock(e, &l, class);
        } else if l.lock_type <= k::F_WRLCK {
            self.on_acquire(e, &l, class);
        } else {
            self.stats.unexpected_returns += 1;
        }
    }

    /// fcntl_setlk: the final result of one fcntl() call. Used as the decision only when no
    /// posix_lock_inode event decided the request (filesystems with their own ->lock, dropped
    /// events, interrupted waits).
    pub(super) fn on_setlk(&mut self, e: &Event) {
        let Some(l) = e.lock().copied() else { return };
        let decided = self
            .tasks
            .get(&e.tid)
            .and_then(|t| t.req.as_ref())
            .is_none_or(|r| r.outcome.is_some());
        if decided {
            return;
        }
        if self.req_mut(e.tid).is_some_and(|r| r.waiting()) && l.ret < 0 {
            self.fail(e, l.ret);
            return;
        }
        if l.ret == k::FILE_LOCK_DEFERRED {
            return;
        }
        self.on_lock(e);
    }

    /// locks_remove_posix: close() dropping a process's POSIX locks. The unlock normally shows as
    /// a posix_lock_inode event just before (same task, same `fl`); only when it did not is this
    /// event the release.
    pub(super) fn on_remove_posix(&mut self, e: &Event) {
        let Some(l) = e.lock().copied() else { return };
        let seen = self
            .tasks
            .get(&e.tid)
            .and_then(|t| t.req.as_ref())
            .is_some_and(|r| r.fl == l.fl && r.ltype == Some(k::F_UNLCK) && r.outcome.is_some());
        if !seen {
            self.on_lock(e);
        }
    }
}
