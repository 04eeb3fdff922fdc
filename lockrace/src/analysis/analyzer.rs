//! The streaming analyzer: one state machine fed event by event ([`Analyzer::push`]), closed
//! with [`Analyzer::finish`].
//!
//! Model (docs/EVENTS.md has the kernel semantics):
//! - a *request* is one lock syscall of one task (keyed by tid, never by the kernel's reused
//!   `struct file_lock` address); lock events outside a syscall (close() dropping locks, or a
//!   capture that started mid-call) get an implicit request;
//! - a *lock* is (dev, ino, class) plus the union of overlapping byte ranges: requests whose
//!   ranges overlap land in the same lock (two groups are merged when a request bridges them);
//! - a *waiter* is a request that blocked (FILE_LOCK_DEFERRED) and has no decision yet; its
//!   phase goes Blocked -> Woken (sched_waking) -> Running (switched in, or any own event) ->
//!   Blocked again (spurious wake) or Done (grant/error);
//! - wakeups are attributed to the waker's next lock event (an unlock's wakeups come before its
//!   event) or to its syscall exit (a granted waiter wakes its nested children after its grant);
//! - a *handoff* opens at a release that leaves waiters able to proceed and is decided by the
//!   next conflicting grant.
//!
//! Invariants: no panic on any event sequence; memory is bounded by the number of tasks, locks
//! and concurrent waiters (never by the number of events) except the per-role grant notes of a
//! whoops correlation (16 bytes per role grant on the memfd); events are put back in timestamp
//! order by a bounded reorder buffer first.
use std::collections::hash_map::Entry;

use lockrace_common::k;

use super::AnalysisInput;
use super::contention::{Contention, WaitEnd, WriterWait};
use super::fasthash::FastMap;
use super::hist::LogHist;
use super::observer::{
    AfterWake, BlockRec, HoldRecord, Observer, RECORD_LIST_CAP, ReleaseRecord, RequestOutcome,
    RequestRecord, WakeRec,
};
use super::reorder::{DEFAULT_CAP, DEFAULT_WINDOW_NS, Reorder};
use super::types::*;
use super::whoops::{self, GrantNote, PeerState};
use crate::events::{Comm, Event, Kind, LockData};

/// Two sibling waiters woken against their block order count as a wake inversion only when
/// their block events are further apart than this: the tracepoint fires after the kernel drops
/// its spinlock, so two nearly simultaneous blockers can be stamped in the other order.
pub const INVERSION_MARGIN_NS: u64 = 20_000;
/// An unlock event this soon after a grant it conflicted with is the tracepoint race (the event
/// fires after the kernel drops its lock), not a missed release.
pub const RACE_WINDOW_NS: u64 = 100_000;
/// Wakeups a task may have issued and not yet had attributed.
const ISSUED_CAP: usize = 64;
/// Sibling-order checks look at this many wakeups of one batch.
const ORDER_CHECK_CAP: usize = 32;
const EAGAIN: i32 = 11;
const EINTR: i32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sys {
    Fcntl(u64),
    Flock(u64),
    /// F_GETLK and friends: no lock decision.
    Test,
    /// Lock events without a syscall entry.
    Implicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Entered,
    Blocked,
    Woken { ts: u64, waker_cpu: u32 },
    Running,
    Done,
}

#[derive(Default)]
struct RecBuf {
    blocks: Vec<BlockRec>,
    wakes: Vec<WakeRec>,
    truncated: bool,
}

impl RecBuf {
    fn set_then(&mut self, then: AfterWake) {
        if let Some(w) = self.wakes.last_mut()
            && w.then == AfterWake::Pending
        {
            w.then = then;
        }
    }
}

struct Req {
    sys: Sys,
    enter_ts: Option<u64>,
    /// Requested type from the syscall arguments (0 read, 1 write, 2 unlock).
    want: Option<u8>,
    lock: Option<usize>,
    ltype: Option<u8>,
    /// Byte range of the lock event.
    start: i64,
    end: i64,
    first_block: Option<u64>,
    last_block: u64,
    blocker: u64,
    fl: u64,
    blocks: u32,
    phase: Phase,
    /// (ret, ts) of the decision.
    outcome: Option<(i32, u64)>,
    counted: bool,
    /// The release of this unlock was applied early, at the grant it enabled.
    release_applied: bool,
    /// A waiting writer: read grants to newer requests while it waited.
    readers_ahead: u64,
    /// The byte range the caller asked for (fcntl with `SEEK_SET`), when known.
    asked: Option<(i64, i64)>,
    rec: Option<Box<RecBuf>>,
}

impl Req {
    fn new(sys: Sys, enter_ts: Option<u64>, want: Option<u8>, rec: bool) -> Req {
        Req {
            sys,
            enter_ts,
            want,
            lock: None,
            ltype: None,
            start: 0,
            end: i64::MAX,
            first_block: None,
            last_block: 0,
            blocker: 0,
            fl: 0,
            blocks: 0,
            phase: Phase::Entered,
            outcome: None,
            counted: false,
            release_applied: false,
            readers_ahead: 0,
            asked: None,
            rec: rec.then(Box::default),
        }
    }
    fn waiting(&self) -> bool {
        self.blocks > 0 && self.outcome.is_none()
    }
    /// Type used for conflict checks.
    fn kind(&self) -> u8 {
        self.ltype.or(self.want).unwrap_or(k::F_WRLCK)
    }
}

/// A wakeup a task issued, waiting to be attributed to its next lock event.
#[derive(Clone, Copy, Debug)]
struct Issued {
    wakee: u32,
    ts: u64,
    cpu: u32,
    target_cpu: i32,
    lock: usize,
    blocker: u64,
    last_block: u64,
}

struct Task {
    tgid: u32,
    comm: Comm,
    /// CPU of its last event.
    cpu: u32,
    /// Timestamp of its last event.
    last_ts: u64,
    req: Option<Req>,
    issued: Vec<Issued>,
}

/// Names of pruned tasks kept for the report ([`Analyzer::prune_tasks`]).
pub const RETIRED_CAP: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Hold {
    owner: u64,
    task: TaskRef,
    ltype: u8,
    start: i64,
    end: i64,
    since: u64,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    tid: u32,
    first_block: u64,
    want: u8,
    start: i64,
    end: i64,
}

struct OpenHandoff {
    rec: HandoffRecord,
    pending: Vec<Pending>,
    resolved: bool,
}

struct LockState {
    merged_into: Option<usize>,
    holds: Vec<Hold>,
    /// Waiting tids in first-block order.
    waiters: Vec<u32>,
    open: Option<Box<OpenHandoff>>,
    sum: LockSummary,
}

impl LockState {
    fn new(key: LockKey) -> LockState {
        LockState {
            merged_into: None,
            holds: Vec::new(),
            waiters: Vec::new(),
            open: None,
            sum: LockSummary {
                key,
                path: None,
                flavors: Flavors::default(),
                owners: Vec::new(),
                owners_truncated: false,
                requests: 0,
                blocks: 0,
                blocked_requests: 0,
                grants: 0,
                releases: 0,
                errors: 0,
                would_block: 0,
                handoffs: HandoffCounts::default(),
                wake_inversions: 0,
                wake_order_ambiguous: 0,
                spurious_wakes: 0,
                overlapping_grants: 0,
                block_order: Vec::new(),
                grant_order: Vec::new(),
                wait: LogHist::default(),
                wake_to_run: LogHist::default(),
                wakes: 0,
                wakes_same_cpu: 0,
                first_overlap: None,
                first_inversion: None,
                contention: Contention::default(),
            },
        }
    }
}

struct WhoopsTrack {
    dev: u32,
    ino: u64,
    tgids: Vec<u32>,
    /// Last owner seen per role on the memfd.
    owner: Vec<Option<u64>>,
    /// Tids seen per role.
    tids: Vec<Vec<u32>>,
    grants: Vec<Vec<GrantNote>>,
}

impl WhoopsTrack {
    fn role(&self, tgid: u32) -> Option<usize> {
        self.tgids.iter().position(|&t| t == tgid)
    }
}

#[inline]
fn overlaps(a_start: i64, a_end: i64, b_start: i64, b_end: i64) -> bool {
    a_start <= b_end && b_start <= a_end
}

/// Two lock types conflict unless both are read locks.
#[inline]
fn conflicts(a: u8, b: u8) -> bool {
    !(a == k::F_RDLCK && b == k::F_RDLCK)
}

fn push_capped(v: &mut Vec<u32>, x: u32) {
    if v.len() < ORDER_CAP {
        v.push(x);
    }
}

/// Where per-request records go: borrowed for the caller's scope, or owned by the analyzer (a
/// live capture's reader thread owns its analyzer, so it must be `Send + 'static`).
enum ObsSlot<'o> {
    Borrowed(&'o mut (dyn Observer + Send)),
    Owned(Box<dyn Observer + Send>),
}

fn obs_of<'a>(o: &'a mut Option<ObsSlot<'_>>) -> Option<&'a mut dyn Observer> {
    match o.as_mut()? {
        ObsSlot::Borrowed(b) => Some(&mut **b),
        ObsSlot::Owned(b) => Some(b.as_mut()),
    }
}

struct Core<'o> {
    obs: Option<ObsSlot<'o>>,
    tasks: FastMap<u32, Task>,
    locks: Vec<LockState>,
    by_inode: FastMap<(u32, u64, LockClass), Vec<usize>>,
    /// `fl` of a blocked request -> its tid (to rebuild the waiter tree).
    waiter_by_fl: FastMap<u64, u32>,
    stats: Stats,
    worst: Vec<HandoffRecord>,
    whoops: Option<WhoopsTrack>,
    scratch: Vec<usize>,
    /// Holds dropped as stale at a grant: (owner, lock, grant ts), to recognise a late unlock.
    stale_recent: Vec<(u64, usize, u64)>,
    /// Names of pruned tasks the results still refer to (at most [`RETIRED_CAP`]).
    retired: Vec<TaskInfo>,
}

/// Sizes of the analyzer's state ([`Analyzer::footprint`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub tasks: usize,
    pub locks: usize,
    pub waiters: usize,
    pub holds: usize,
    pub issued_wakes: usize,
    pub blocked_fls: usize,
    pub reorder_buffered: usize,
    pub worst: usize,
    /// The one state that grows: 16 bytes per role grant on the memfd (whoops correlation).
    pub role_grant_notes: usize,
}

/// The streaming analyzer. See the module documentation.
pub struct Analyzer<'o> {
    reorder: Reorder,
    core: Core<'o>,
    input: AnalysisInput,
}

impl<'o> Analyzer<'o> {
    pub fn new(input: &AnalysisInput) -> Analyzer<'o> {
        Analyzer::build(input, None)
    }

    /// An analyzer that streams per-request/hold/release records to `obs` as well.
    pub fn with_observer(
        input: &AnalysisInput,
        obs: &'o mut (dyn Observer + Send),
    ) -> Analyzer<'o> {
        Analyzer::build(input, Some(ObsSlot::Borrowed(obs)))
    }

    /// Like [`Analyzer::with_observer`], owning the observer (dropped at [`Analyzer::finish`]),
    /// so the analyzer can move to another thread.
    pub fn with_owned_observer(
        input: &AnalysisInput,
        obs: Box<dyn Observer + Send>,
    ) -> Analyzer<'static> {
        Analyzer::build(input, Some(ObsSlot::Owned(obs)))
    }

    fn build(input: &AnalysisInput, obs: Option<ObsSlot<'o>>) -> Analyzer<'o> {
        let whoops = input.whoops.as_ref().map(|w| WhoopsTrack {
            dev: w.dev,
            ino: w.ino,
            tgids: w.roles.iter().map(|r| r.tgid).collect(),
            owner: vec![None; w.roles.len()],
            tids: vec![Vec::new(); w.roles.len()],
            grants: vec![Vec::new(); w.roles.len()],
        });
        Analyzer {
            reorder: Reorder::new(
                input.reorder_window_ns.unwrap_or(DEFAULT_WINDOW_NS),
                DEFAULT_CAP,
            ),
            core: Core {
                obs,
                tasks: FastMap::default(),
                locks: Vec::new(),
                by_inode: FastMap::default(),
                waiter_by_fl: FastMap::default(),
                stats: Stats::default(),
                worst: Vec::new(),
                whoops,
                scratch: Vec::new(),
                stale_recent: Vec::new(),
                retired: Vec::new(),
            },
            input: input.clone(),
        }
    }

    /// Feed one event (any order within the reorder window).
    #[inline]
    pub fn push(&mut self, e: &Event) {
        let core = &mut self.core;
        self.reorder.push(e, |ev| core.process(ev));
    }

    /// Feed many events.
    pub fn extend<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            self.push(e);
        }
    }

    /// Sizes of the analyzer's internal state (for tests proving it stays bounded).
    pub fn footprint(&self) -> Footprint {
        let c = &self.core;
        Footprint {
            tasks: c.tasks.len(),
            locks: c.locks.len(),
            waiters: c.locks.iter().map(|l| l.waiters.len()).sum(),
            holds: c.locks.iter().map(|l| l.holds.len()).sum(),
            issued_wakes: c.tasks.values().map(|t| t.issued.len()).sum(),
            blocked_fls: c.waiter_by_fl.len(),
            reorder_buffered: self.reorder.len(),
            worst: c.worst.len(),
            role_grant_notes: c
                .whoops
                .as_ref()
                .map(|w| w.grants.iter().map(Vec::len).sum())
                .unwrap_or(0),
        }
    }

    /// The events' clock reached `now_ns` with no newer event: analyse what the reorder buffer
    /// held longer than its window (a live capture that went quiet).
    pub fn advance(&mut self, now_ns: u64) {
        let core = &mut self.core;
        self.reorder.advance(now_ns, |ev| core.process(ev));
    }

    /// Forget tasks idle since before `before_ts` (no request in progress, no wakeup pending),
    /// so a long capture of many short-lived processes keeps flat memory. The names of those
    /// the results refer to (worst handoffs, busy tasks, starved writers) are kept, up to
    /// [`RETIRED_CAP`]. Not for `run` (its whoops correlation follows the roles' tasks).
    /// Returns how many were forgotten.
    pub fn prune_tasks(&mut self, before_ts: u64) -> usize {
        let c = &mut self.core;
        if c.whoops.is_some() {
            return 0;
        }
        let idle: Vec<u32> = c
            .tasks
            .iter()
            .filter(|(_, t)| t.req.is_none() && t.issued.is_empty() && t.last_ts < before_ts)
            .map(|(&tid, _)| tid)
            .collect();
        if idle.is_empty() {
            return 0;
        }
        let mut cited: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for h in &c.worst {
            cited.insert(h.releaser.tid);
            cited.extend(h.next.map(|n| n.tid));
            cited.extend(h.waiters.iter().map(|w| w.task.tid));
            cited.extend(h.timeline.iter().map(|t| t.tid));
        }
        for l in c.locks.iter().filter(|l| l.merged_into.is_none()) {
            let ct = &l.sum.contention;
            cited.extend(ct.tasks.iter().map(|t| t.task.tid));
            cited.extend(ct.streak_task.map(|t| t.tid));
            cited.extend(ct.worst_wait.map(|w| w.writer.tid));
            cited.extend(l.sum.first_overlap.map(|o| o.holder.tid));
            cited.extend(l.sum.first_overlap.map(|o| o.grantee.tid));
        }
        for tid in &idle {
            let Some(t) = c.tasks.remove(tid) else {
                continue;
            };
            if cited.contains(tid)
                && c.retired.len() < RETIRED_CAP
                && !c.retired.iter().any(|r| r.tid == *tid)
            {
                c.retired.push(TaskInfo {
                    tid: *tid,
                    tgid: t.tgid,
                    comm: t.comm.as_str().into_owned(),
                });
            }
        }
        c.tasks.shrink_to_fit();
        idle.len()
    }

    /// Counters so far (events still in the reorder buffer are not counted yet).
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Visit every lock as it stands now (merged groups once, in creation order), without
    /// closing anything: for periodic summaries of a live capture.
    pub fn for_each_lock(&self, mut f: impl FnMut(&LockSummary)) {
        for l in self.core.locks.iter().filter(|l| l.merged_into.is_none()) {
            f(&l.sum);
        }
    }

    /// Drain the reorder buffer, close what is still open and summarize.
    pub fn finish(mut self) -> Analysis {
        let core = &mut self.core;
        self.reorder.drain(|ev| core.process(ev));
        self.core.stats.reordered = self.reorder.reordered;
        self.core.stats.out_of_order = self.reorder.late;
        self.core.finish(&self.input)
    }
}

impl<'o> Core<'o> {
    fn process(&mut self, e: &Event) {
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
    fn touch(&mut self, e: &Event) {
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

    fn req_mut(&mut self, tid: u32) -> Option<&mut Req> {
        self.tasks.get_mut(&tid)?.req.as_mut()
    }

    fn take_issued(&mut self, tid: u32) -> Vec<Issued> {
        self.tasks
            .get_mut(&tid)
            .map(|t| std::mem::take(&mut t.issued))
            .unwrap_or_default()
    }

    // ---------------------------------------------------------------- syscalls

    fn on_enter(&mut self, e: &Event) {
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

    fn on_exit(&mut self, e: &Event) {
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
    fn end_request(&mut self, tid: u32, tgid: u32, req: Req, exit_ts: Option<u64>) {
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

    fn lock_class(e: &Event, l: &LockData) -> LockClass {
        if e.kind == Kind::FlockLockInode
            || (l.flags & k::FL_FLOCK != 0 && l.flags & k::FL_POSIX == 0)
        {
            LockClass::Flock
        } else {
            LockClass::Posix
        }
    }

    fn on_lock(&mut self, e: &Event) {
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
    fn on_setlk(&mut self, e: &Event) {
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
    fn on_remove_posix(&mut self, e: &Event) {
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

    /// The lock group for a request on (dev, ino, class, [start, end]); creates or merges groups.
    fn group_for(&mut self, dev: u32, ino: u64, class: LockClass, start: i64, end: i64) -> usize {
        let ids = self.by_inode.entry((dev, ino, class)).or_default();
        let mut hit = None;
        let mut multi = false;
        for &id in ids.iter() {
            let k = &self.locks[id].sum.key;
            if overlaps(k.start, k.end, start, end) {
                if hit.is_none() {
                    hit = Some(id);
                } else {
                    multi = true;
                }
            }
        }
        let Some(h) = hit else {
            let id = self.locks.len();
            ids.push(id);
            self.locks.push(LockState::new(LockKey {
                dev,
                ino,
                class,
                start,
                end,
            }));
            return id;
        };
        if multi {
            let others: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&id| {
                    let k = &self.locks[id].sum.key;
                    id != h && overlaps(k.start, k.end, start, end)
                })
                .collect();
            ids.retain(|id| !others.contains(id));
            for o in others {
                self.merge_lock(h, o);
            }
        }
        let k = &mut self.locks[h].sum.key;
        k.start = k.start.min(start);
        k.end = k.end.max(end);
        h
    }

    /// Fold lock `o` into lock `h` (a request bridged their ranges).
    fn merge_lock(&mut self, h: usize, o: usize) {
        if let Some(open) = self.locks[o].open.take() {
            self.finalize(o, *open);
        }
        let key = self.locks[o].sum.key;
        let other = std::mem::replace(&mut self.locks[o], LockState::new(key));
        self.locks[o].merged_into = Some(h);
        for t in self.tasks.values_mut() {
            if let Some(r) = t.req.as_mut()
                && r.lock == Some(o)
            {
                r.lock = Some(h);
            }
            for w in t.issued.iter_mut() {
                if w.lock == o {
                    w.lock = h;
                }
            }
        }
        let tasks = &self.tasks;
        let s = &mut self.locks[h];
        s.holds.extend(other.holds);
        s.waiters.extend(other.waiters);
        s.waiters.sort_by_key(|tid| {
            tasks
                .get(tid)
                .and_then(|t| t.req.as_ref())
                .and_then(|r| r.first_block)
                .unwrap_or(u64::MAX)
        });
        let (a, b) = (&mut s.sum, &other.sum);
        a.key.start = a.key.start.min(b.key.start);
        a.key.end = a.key.end.max(b.key.end);
        a.flavors.posix |= b.flavors.posix;
        a.flavors.ofd |= b.flavors.ofd;
        a.flavors.flock |= b.flavors.flock;
        for ow in &b.owners {
            for &tg in &ow.tgids {
                note_owner(a, ow.owner, tg);
            }
        }
        a.owners_truncated |= b.owners_truncated;
        a.requests += b.requests;
        a.blocks += b.blocks;
        a.blocked_requests += b.blocked_requests;
        a.grants += b.grants;
        a.releases += b.releases;
        a.errors += b.errors;
        a.would_block += b.would_block;
        a.handoffs.merge(&b.handoffs);
        a.wake_inversions += b.wake_inversions;
        a.wake_order_ambiguous += b.wake_order_ambiguous;
        a.spurious_wakes += b.spurious_wakes;
        a.overlapping_grants += b.overlapping_grants;
        for &x in &b.block_order {
            push_capped(&mut a.block_order, x);
        }
        for &x in &b.grant_order {
            push_capped(&mut a.grant_order, x);
        }
        a.wait.merge(&b.wait);
        a.wake_to_run.merge(&b.wake_to_run);
        a.wakes += b.wakes;
        a.wakes_same_cpu += b.wakes_same_cpu;
        a.first_overlap = a.first_overlap.min_by_ts(b.first_overlap);
        if a.first_inversion.is_none() {
            a.first_inversion = b.first_inversion;
        }
        a.contention.merge(&b.contention);
    }

    fn on_acquire(&mut self, e: &Event, l: &LockData, class: LockClass) {
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
            .filter(|&(s, e)| class == LockClass::Posix && l.start <= s && e <= l.end);
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

    fn block(&mut self, e: &Event, l: &LockData, id: usize) {
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

    fn grant(&mut self, e: &Event, l: &LockData, id: usize) {
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
    fn note_readers_ahead(&mut self, e: &Event, l: &LockData, id: usize) {
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

    fn fail(&mut self, e: &Event, ret: i32) {
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

    fn remove_waiter(&mut self, id: usize, tid: u32) {
        let id = resolve(&self.locks, id);
        let w = &mut self.locks[id].waiters;
        if let Some(p) = w.iter().position(|&t| t == tid) {
            w.remove(p);
        }
    }

    fn on_unlock(&mut self, e: &Event, l: &LockData, class: LockClass) {
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
    fn release(
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
    fn apply_inflight_releases(&mut self, e: &Event, l: &LockData, id: usize) {
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
    fn waiters_can_proceed(&self, id: usize) -> bool {
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
    fn cut_holds(
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

    fn open_handoff(&mut self, id: usize, e: &Event, woke: &[&Issued]) {
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
    fn resolve_handoff(&mut self, id: usize, e: &Event, l: &LockData) {
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
    fn finalize(&mut self, id: usize, mut open: OpenHandoff) {
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

    fn timeline(&mut self, id: usize, ts: u64, tid: u32, cpu: u32, what: TimelineWhat) {
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

    fn timeline_wake(&mut self, e: &Event, w: &Issued) {
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

    /// Wakeups not part of a release (children of a decided or re-queued waiter).
    fn attribute_other(&mut self, e: &Event, batch: &[Issued]) {
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
    fn check_wake_order(&mut self, e: &Event, batch: &[Issued]) {
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

    fn on_waking(&mut self, e: &Event) {
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

    fn on_switch(&mut self, e: &Event) {
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

    fn note_role_owner(&mut self, tgid: u32, l: &LockData) {
        if let Some(w) = self.whoops.as_mut()
            && w.dev == l.dev
            && w.ino == l.ino
            && let Some(ri) = w.role(tgid)
        {
            w.owner[ri] = Some(l.owner);
        }
    }

    fn note_role_grant(&mut self, e: &Event, l: &LockData) {
        let Some(w) = self.whoops.as_ref() else {
            return;
        };
        if w.dev != l.dev || w.ino != l.ino {
            return;
        }
        let Some(ri) = w.role(e.tgid) else { return };
        let shared = w
            .tgids
            .iter()
            .enumerate()
            .any(|(rj, &tg)| tg != e.tgid && w.owner[rj] == Some(l.owner));
        // The most telling state among the other roles' tasks.
        let mut peer = if shared {
            PeerState::SharedOwner
        } else {
            PeerState::NotInRequest
        };
        if !shared {
            for (rj, &tg) in w.tgids.iter().enumerate() {
                if tg == e.tgid {
                    continue;
                }
                for tid in &w.tids[rj] {
                    let Some(r) = self.tasks.get(tid).and_then(|t| t.req.as_ref()) else {
                        continue;
                    };
                    let on_memfd = r.lock.is_none_or(|id| {
                        let k = &self.locks[resolve(&self.locks, id)].sum.key;
                        k.dev == w.dev && k.ino == w.ino
                    });
                    let state = if !on_memfd || r.outcome.is_some() {
                        PeerState::NotInRequest
                    } else if r.waiting() {
                        match r.phase {
                            Phase::Woken { .. } => PeerState::WokenNotRunning,
                            Phase::Running => PeerState::RunningNotRetried,
                            _ => PeerState::Blocked,
                        }
                    } else if matches!(r.sys, Sys::Fcntl(_) | Sys::Flock(_))
                        && r.want.is_some_and(|t| t <= k::F_WRLCK)
                    {
                        PeerState::InRequestNotBlocked
                    } else {
                        PeerState::NotInRequest
                    };
                    if state.rank() > peer.rank() {
                        peer = state;
                    }
                }
            }
        }
        if let Some(w) = self.whoops.as_mut() {
            w.grants[ri].push(GrantNote {
                ts_ns: e.ts_ns,
                cause: peer.cause(),
                peer,
            });
        }
    }

    // ---------------------------------------------------------------- end

    fn finish(&mut self, input: &AnalysisInput) -> Analysis {
        let last = self.stats.last_ts;
        let mut tids: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.req.is_some())
            .map(|(&tid, _)| tid)
            .collect();
        tids.sort_unstable();
        for tid in tids {
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            let tgid = t.tgid;
            let Some(req) = t.req.take() else { continue };
            if req.outcome.is_none() && req.sys != Sys::Test {
                self.stats.unfinished_requests += 1;
                if req.blocks > 0 {
                    self.stats.unfinished_blocked += 1;
                }
            }
            self.end_request(tid, tgid, req, None);
        }
        for id in 0..self.locks.len() {
            if self.locks[id].merged_into.is_some() {
                continue;
            }
            let holds = std::mem::take(&mut self.locks[id].holds);
            if let Some(obs) = obs_of(&mut self.obs) {
                for h in holds {
                    obs.on_hold(&HoldRecord {
                        task: h.task,
                        lock: self.locks[id].sum.key,
                        owner: h.owner,
                        lock_type: h.ltype,
                        start_ts: h.since,
                        end_ts: last.max(h.since),
                        released: false,
                        released_by: None,
                    });
                }
            }
            if let Some(open) = self.locks[id].open.take() {
                self.finalize(id, *open);
            }
        }

        // Live locks in a stable order; handoff records point at their index.
        let mut live: Vec<usize> = (0..self.locks.len())
            .filter(|&id| self.locks[id].merged_into.is_none())
            .collect();
        live.sort_by_key(|&id| {
            let k = &self.locks[id].sum.key;
            (k.dev, k.ino, k.class, k.start, k.end)
        });
        let mut index = vec![usize::MAX; self.locks.len()];
        for (i, &id) in live.iter().enumerate() {
            index[id] = i;
        }
        let locks: Vec<LockSummary> = live
            .iter()
            .map(|&id| {
                let mut s = self.locks[id].sum.clone();
                s.owners.sort_by_key(|o| o.owner);
                s.path = input.path_of(s.key.dev, s.key.ino).map(str::to_string);
                s
            })
            .collect();
        let mut worst = std::mem::take(&mut self.worst);
        for w in worst.iter_mut() {
            w.lock = index[resolve(&self.locks, w.lock)];
        }
        worst.retain(|w| w.lock != usize::MAX);

        let whoops = match (&input.whoops, self.whoops.as_mut()) {
            (Some(wi), Some(wt)) => Some(whoops::correlate(
                &wi.roles,
                &std::mem::take(&mut wt.grants),
            )),
            _ => None,
        };

        let mut tasks: Vec<TaskInfo> = self
            .tasks
            .iter()
            .filter(|(tid, _)| **tid != 0)
            .map(|(&tid, t)| TaskInfo {
                tid,
                tgid: t.tgid,
                comm: t.comm.as_str().into_owned(),
            })
            .collect();
        for r in std::mem::take(&mut self.retired) {
            if !self.tasks.contains_key(&r.tid) {
                tasks.push(r);
            }
        }
        tasks.sort_by_key(|t| t.tid);

        let st = self.stats;
        let mut incomplete = Vec::new();
        if st.out_of_order > 0 {
            incomplete.push(format!(
                "{} events arrived later than the {} ms reorder window and were analysed out of order",
                st.out_of_order,
                input.reorder_window_ns.unwrap_or(DEFAULT_WINDOW_NS) / 1_000_000
            ));
        }
        if st.unfinished_requests > 0 {
            incomplete.push(format!(
                "{} lock requests ({} of them blocked) had not ended when the events stopped: their outcome is unknown",
                st.unfinished_requests, st.unfinished_blocked
            ));
        }
        if st.inconsistencies > 0 {
            incomplete.push(format!(
                "{} grants conflicted with a lock held under another owner: some releases are missing from the events",
                st.inconsistencies
            ));
        }
        if let Some(w) = &whoops {
            for m in &w.mismatches {
                incomplete.push(format!("whoops correlation: {m}"));
            }
        }
        Analysis {
            stats: st,
            locks,
            worst_handoffs: worst,
            whoops,
            tasks,
            incomplete,
        }
    }
}

/// The inclusive byte range of a `struct flock` relative to the file start (`SEEK_SET`); None
/// for `SEEK_CUR`/`SEEK_END` (the file position is not known here) or a malformed range.
fn asked_range(whence: i16, start: i64, len: i64) -> Option<(i64, i64)> {
    if whence != 0 || start < 0 {
        return None;
    }
    match len {
        0 => Some((start, i64::MAX)),
        l if l > 0 => Some((start, start.checked_add(l - 1)?)),
        l => {
            let s = start.checked_add(l)?;
            (s >= 0).then_some((s, start - 1))
        }
    }
}

fn resolve(locks: &[LockState], mut id: usize) -> usize {
    let mut hops = 0;
    while let Some(n) = locks[id].merged_into {
        id = n;
        hops += 1;
        if hops > locks.len() {
            break;
        }
    }
    id
}

fn note_owner(s: &mut LockSummary, owner: u64, tgid: u32) {
    if let Some(o) = s.owners.iter_mut().find(|o| o.owner == owner) {
        if !o.tgids.contains(&tgid) && o.tgids.len() < OWNERS_CAP {
            o.tgids.push(tgid);
        }
    } else if s.owners.len() < OWNERS_CAP {
        s.owners.push(OwnerSummary {
            owner,
            tgids: vec![tgid],
        });
    } else {
        s.owners_truncated = true;
    }
}

fn push_timeline(rec: &mut HandoffRecord, entry: TimelineEntry) {
    if rec.timeline.len() < TIMELINE_CAP {
        rec.timeline.push(entry);
    } else {
        rec.timeline_truncated = true;
    }
}

trait MinByTs {
    fn min_by_ts(self, other: Option<OverlapEvidence>) -> Option<OverlapEvidence>;
}

impl MinByTs for Option<OverlapEvidence> {
    fn min_by_ts(self, other: Option<OverlapEvidence>) -> Option<OverlapEvidence> {
        match (self, other) {
            (Some(a), Some(b)) => Some(if b.ts_ns < a.ts_ns { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}
