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
//! Layout: this file holds the [`Analyzer`] (the reorder buffer in front of the state machine)
//! and the state machine's root, `Core`; its steps live in one file each: `requests` (event
//! dispatch, syscall entry/exit), `locks` (lock groups by overlapping ranges), `grants`
//! (blocks, grants, errors), `releases` (unlocks, held ranges), `handoff` (open, decide,
//! finalize: the barging classification), `wakeups` (waking, switch-in, wake order), `roles`
//! (the whoops correlation's grant notes), `finish` (the [`Analysis`]); `state` the types they
//! share; `tests` unit tests of the steps on hand-built sequences.
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
/// Names of pruned tasks kept for the report ([`Analyzer::prune_tasks`]).
pub const RETIRED_CAP: usize = 4096;
const EAGAIN: i32 = 11;
const EINTR: i32 = 4;

mod finish;
mod grants;
mod handoff;
mod locks;
mod releases;
mod requests;
mod roles;
mod state;
#[cfg(test)]
mod tests;
mod wakeups;

use self::state::*;

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
