//! Per-request, per-hold and per-release records, streamed to an [`Observer`] while the
//! analyzer runs (the Perfetto writer is one). This is the "every request reconstructed" view;
//! the aggregates in [`super::types`] are the bounded one.
//!
//! Invariants: each record is emitted once, when it is complete (a request at its syscall exit or
//! when the events end, a hold when it is released or when the events end); per-record lists
//! are capped at [`RECORD_LIST_CAP`] with a `truncated` flag, so memory stays bounded.
use super::types::{LockKey, TaskRef};

pub const RECORD_LIST_CAP: usize = 64;

/// One block (or re-block) of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRec {
    pub ts_ns: u64,
    /// The kernel address the request waits under (`blocker`).
    pub blocker: u64,
    /// The waiter whose request that address is, when it is one (nested waiter tree).
    pub parent: Option<u32>,
}

/// What a woken waiter did next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterWake {
    Pending,
    Reblocked(u64),
    Granted(u64),
    Failed(u64),
}

/// One wakeup a blocked request received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeRec {
    pub ts_ns: u64,
    pub waker: TaskRef,
    pub waker_cpu: u32,
    pub target_cpu: i32,
    /// When and where the wakee was next switched in.
    pub run_ts: Option<u64>,
    pub run_cpu: Option<u32>,
    pub then: AfterWake,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Granted,
    Failed(i32),
    /// Unlock request done.
    Unlocked,
    /// The syscall ended without a lock decision (e.g. F_GETLK, or an interrupted wait).
    NoDecision,
    /// The events ended first.
    Unfinished,
}

/// A lock request from syscall entry to exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub task: TaskRef,
    pub lock: Option<LockKey>,
    /// fcntl cmd or flock operation, None when the entry was not seen.
    pub cmd: Option<u64>,
    pub is_flock: bool,
    /// 0 read, 1 write, 2 unlock.
    pub lock_type: Option<u8>,
    pub enter_ts: Option<u64>,
    pub exit_ts: Option<u64>,
    pub blocks: Vec<BlockRec>,
    pub wakes: Vec<WakeRec>,
    pub truncated: bool,
    pub outcome: RequestOutcome,
    pub outcome_ts: Option<u64>,
}

/// A lock held by a task, from grant to release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    pub task: TaskRef,
    pub lock: LockKey,
    pub owner: u64,
    pub lock_type: u8,
    pub start_ts: u64,
    pub end_ts: u64,
    /// False when still held when the events ended.
    pub released: bool,
    /// The task whose unlock ended it (may differ from `task` when an owner is shared).
    pub released_by: Option<u32>,
}

/// An unlock that released something or woke someone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub task: TaskRef,
    pub lock: LockKey,
    pub enter_ts: Option<u64>,
    pub ts_ns: u64,
    pub cpu: u32,
    /// Waiters this unlock woke, in wake order: (tid, waking ts).
    pub woke: Vec<(u32, u64)>,
}

/// Receives records as the analyzer completes them. Default methods ignore them.
pub trait Observer {
    fn on_task(&mut self, _tid: u32, _tgid: u32, _comm: &str) {}
    fn on_request(&mut self, _r: &RequestRecord) {}
    fn on_hold(&mut self, _h: &HoldRecord) {}
    fn on_release(&mut self, _r: &ReleaseRecord) {}
}

/// Collects every record (tests, small inputs).
#[derive(Default, Debug)]
pub struct Collect {
    pub tasks: Vec<(u32, u32, String)>,
    pub requests: Vec<RequestRecord>,
    pub holds: Vec<HoldRecord>,
    pub releases: Vec<ReleaseRecord>,
}

impl Observer for Collect {
    fn on_task(&mut self, tid: u32, tgid: u32, comm: &str) {
        self.tasks.push((tid, tgid, comm.to_string()));
    }
    fn on_request(&mut self, r: &RequestRecord) {
        self.requests.push(r.clone());
    }
    fn on_hold(&mut self, h: &HoldRecord) {
        self.holds.push(*h);
    }
    fn on_release(&mut self, r: &ReleaseRecord) {
        self.releases.push(r.clone());
    }
}
