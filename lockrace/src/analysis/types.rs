//! The analyzer's output: per-lock aggregates, handoff records, whoops results and counters.
//!
//! Invariants: everything here is bounded (orders capped at [`ORDER_CAP`], timelines at
//! [`TIMELINE_CAP`], owners at [`OWNERS_CAP`]); no I/O; `report::build::document` turns it into
//! the versioned report document.
use super::hist::LogHist;
use super::whoops::WhoopsResult;

/// `block_order` / `grant_order` keep this many tgids.
pub const ORDER_CAP: usize = 1000;
/// Entries kept in one handoff timeline.
pub const TIMELINE_CAP: usize = 32;
/// Waiters listed in one handoff record (all of them are used for the classification).
pub const WAITERS_CAP: usize = 16;
/// Distinct owners listed per lock.
pub const OWNERS_CAP: usize = 64;
/// Worst handoffs kept.
pub const WORST_CAP: usize = 8;

/// Which of the kernel's lock lists a lock lives on: POSIX and OFD locks share one (they
/// conflict with each other), flock locks have their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockClass {
    Posix,
    Flock,
}

/// A lock as the report names it: one inode, one class, and the union of the byte ranges of
/// the requests that overlapped each other (`end == i64::MAX` is "to end of file").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockKey {
    pub dev: u32,
    pub ino: u64,
    pub class: LockClass,
    pub start: i64,
    pub end: i64,
}

impl LockKey {
    /// `major:minor` of the kernel's `s_dev` encoding (major << 20 | minor).
    pub fn device(&self) -> String {
        format!("{}:{}", self.dev >> 20, self.dev & 0xf_ffff)
    }

    /// Short name: `0:1/1234` (+ the range when it is not the whole file).
    pub fn label(&self) -> String {
        let mut s = format!("{}/{}", self.device(), self.ino);
        if !(self.start == 0 && self.end == i64::MAX) {
            if self.end == i64::MAX {
                s.push_str(&format!("[{}..EOF]", self.start));
            } else {
                s.push_str(&format!("[{}..{}]", self.start, self.end));
            }
        }
        if self.class == LockClass::Flock {
            s.push_str(" (flock)");
        }
        s
    }
}

/// Lock flavours seen on a lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flavors {
    pub posix: bool,
    pub ofd: bool,
    pub flock: bool,
}

impl Flavors {
    pub fn label(&self) -> String {
        let mut v = Vec::new();
        if self.posix {
            v.push("posix");
        }
        if self.ofd {
            v.push("ofd");
        }
        if self.flock {
            v.push("flock");
        }
        if v.is_empty() {
            "unknown".into()
        } else {
            v.join("+")
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TaskRef {
    pub tid: u32,
    pub tgid: u32,
}

/// How the lock went on after a release that had waiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandoffOutcome {
    /// The longest-waiting (conflicting) waiter got it.
    Fifo,
    /// The releaser re-took it while a waiter of the release was still pending.
    SelfBarge,
    /// A task that was not waiting at the release got it while a waiter was still pending.
    NewcomerBarge,
    /// A waiter got it before an earlier, conflicting waiter that was still pending.
    WaiterReorder,
    /// Nothing was decided before the next release (every waiter had gone, or no grant).
    Unresolved,
}

impl HandoffOutcome {
    pub fn code(self) -> &'static str {
        match self {
            HandoffOutcome::Fifo => "fifo",
            HandoffOutcome::SelfBarge => "self_barge",
            HandoffOutcome::NewcomerBarge => "newcomer_barge",
            HandoffOutcome::WaiterReorder => "waiter_reorder",
            HandoffOutcome::Unresolved => "unresolved",
        }
    }
    /// Anything but FIFO where a grant decided the handoff.
    pub fn is_unfair(self) -> bool {
        matches!(
            self,
            HandoffOutcome::SelfBarge
                | HandoffOutcome::NewcomerBarge
                | HandoffOutcome::WaiterReorder
        )
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffCounts {
    pub fifo: u64,
    pub self_barge: u64,
    pub newcomer_barge: u64,
    pub waiter_reorder: u64,
    pub unresolved: u64,
}

impl HandoffCounts {
    pub fn add(&mut self, o: HandoffOutcome) {
        match o {
            HandoffOutcome::Fifo => self.fifo += 1,
            HandoffOutcome::SelfBarge => self.self_barge += 1,
            HandoffOutcome::NewcomerBarge => self.newcomer_barge += 1,
            HandoffOutcome::WaiterReorder => self.waiter_reorder += 1,
            HandoffOutcome::Unresolved => self.unresolved += 1,
        }
    }
    pub fn merge(&mut self, o: &HandoffCounts) {
        self.fifo += o.fifo;
        self.self_barge += o.self_barge;
        self.newcomer_barge += o.newcomer_barge;
        self.waiter_reorder += o.waiter_reorder;
        self.unresolved += o.unresolved;
    }
    /// Handoffs a grant decided.
    pub fn decided(&self) -> u64 {
        self.fifo + self.self_barge + self.newcomer_barge + self.waiter_reorder
    }
    pub fn total(&self) -> u64 {
        self.decided() + self.unresolved
    }
}

/// First evidence of two tasks holding conflicting locks at once (same owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlapEvidence {
    pub ts_ns: u64,
    pub owner: u64,
    pub holder: TaskRef,
    pub holder_type: u8,
    pub grantee: TaskRef,
    pub grantee_type: u8,
}

/// First evidence of the kernel waking two sibling waiters against their block order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InversionEvidence {
    pub waker: TaskRef,
    pub blocker: u64,
    /// Woken first, although it blocked later.
    pub first_woken: u32,
    pub first_woken_block_ts: u64,
    pub first_wake_ts: u64,
    /// Woken after it, although it blocked earlier.
    pub later_woken: u32,
    pub later_woken_block_ts: u64,
    pub later_wake_ts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerSummary {
    pub owner: u64,
    pub tgids: Vec<u32>,
}

/// Everything the analyzer learnt about one lock.
#[derive(Clone, Debug)]
pub struct LockSummary {
    pub key: LockKey,
    /// The file's path when the caller knew it ([`super::AnalysisInput::paths`]).
    pub path: Option<String>,
    pub flavors: Flavors,
    pub owners: Vec<OwnerSummary>,
    pub owners_truncated: bool,
    /// Lock requests (read or write) that reached the kernel's lock code for this lock.
    pub requests: u64,
    /// Times a request blocked (FILE_LOCK_DEFERRED), re-blocks after a wakeup included.
    pub blocks: u64,
    /// Requests that blocked at least once.
    pub blocked_requests: u64,
    pub grants: u64,
    /// Unlocks that released a lock we saw granted, or woke a waiter.
    pub releases: u64,
    /// Requests that ended with an error (-EAGAIN of a non-blocking request included).
    pub errors: u64,
    /// Of which -EAGAIN (a non-blocking request that conflicted).
    pub would_block: u64,
    pub handoffs: HandoffCounts,
    pub wake_inversions: u64,
    /// Sibling wakeups against block order by less than the clock margin (not counted above).
    pub wake_order_ambiguous: u64,
    pub spurious_wakes: u64,
    pub overlapping_grants: u64,
    pub block_order: Vec<u32>,
    pub grant_order: Vec<u32>,
    /// First block -> grant or error, per request that blocked.
    pub wait: LogHist,
    /// sched_waking of a blocked waiter -> its next switch-in.
    pub wake_to_run: LogHist,
    /// Wakeups of blocked waiters.
    pub wakes: u64,
    /// Of the wakeups followed by a switch-in: the wakee ran on the waker's CPU.
    pub wakes_same_cpu: u64,
    pub first_overlap: Option<OverlapEvidence>,
    pub first_inversion: Option<InversionEvidence>,
    /// Busy attempts (polling) and writers passed by newer readers.
    pub contention: super::contention::Contention,
}

/// What happened around a handoff, in time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineWhat {
    /// `tid` released the lock (unlock event).
    Released,
    /// `tid` (the waker, on `cpu`) woke `other` (aimed at `target_cpu`).
    Woke { wakee: u32, target_cpu: i32 },
    /// `tid` was switched in on `cpu`, `latency_ns` after its wakeup.
    Ran { latency_ns: u64 },
    /// `tid` retried and blocked again.
    Reblocked,
    /// `tid` was granted the lock; `outcome` is set on the grant that decided the handoff.
    Granted { outcome: Option<HandoffOutcome> },
    /// `tid`'s request ended with an error.
    Failed { ret: i32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub ts_ns: u64,
    pub tid: u32,
    pub cpu: u32,
    pub what: TimelineWhat,
}

/// A waiter present at a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaiterAtRelease {
    pub task: TaskRef,
    pub first_block_ts: u64,
    /// Requested type (0 read, 1 write).
    pub want: u8,
    /// Already woken (by this release or before it) when the release happened.
    pub woken: bool,
}

/// One release that had waiters, and who got the lock next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffRecord {
    /// Index into [`Analysis::locks`].
    pub lock: usize,
    pub release_ts: u64,
    pub releaser: TaskRef,
    pub releaser_cpu: u32,
    /// Waiters in block order (first [`WAITERS_CAP`]).
    pub waiters: Vec<WaiterAtRelease>,
    pub waiters_total: usize,
    /// Tids in the order the release woke them.
    pub wake_order: Vec<u32>,
    pub outcome: HandoffOutcome,
    pub next: Option<TaskRef>,
    pub grant_ts: Option<u64>,
    /// How long the oldest waiter had waited when the handoff was decided (the ranking key).
    pub oldest_wait_ns: u64,
    pub timeline: Vec<TimelineEntry>,
    pub timeline_truncated: bool,
}

/// Analyzer counters, for the report's completeness section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub lock_events: u64,
    pub sched_events: u64,
    pub syscall_events: u64,
    pub first_ts: u64,
    pub last_ts: u64,
    /// Put back in order by the reorder buffer.
    pub reordered: u64,
    /// Too late to put back in order (processed out of order).
    pub out_of_order: u64,
    /// Lock syscalls seen entering.
    pub syscalls: u64,
    /// Requests still open when the events ended (of which blocked).
    pub unfinished_requests: u64,
    pub unfinished_blocked: u64,
    /// A new syscall entry from a task whose previous one never exited.
    pub missing_exits: u64,
    /// Syscall exits without their entry (capture started mid-call).
    pub missing_enters: u64,
    /// Acquire events outside any lock syscall (missed entry, or a kernel-internal caller).
    pub lock_events_outside_syscalls: u64,
    /// Unlocks outside syscalls (close() dropping locks).
    pub implicit_unlocks: u64,
    /// A grant conflicting with a lock held under another owner: a release was missed.
    pub inconsistencies: u64,
    /// Unlock events that came after the grant they enabled (the tracepoint fires after the
    /// kernel drops its lock); the release was applied at the grant.
    pub raced_releases: u64,
    /// Wakeups of waiters that could not be attributed to a lock event of the waker.
    pub unattributed_wakes: u64,
    /// Lock events with a return value the kernel does not produce.
    pub unexpected_returns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
}

/// The analysis of one event stream.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    pub stats: Stats,
    /// Sorted by (dev, ino, class, start).
    pub locks: Vec<LockSummary>,
    /// Worst first.
    pub worst_handoffs: Vec<HandoffRecord>,
    pub whoops: Option<WhoopsResult>,
    /// Tasks seen (tid order).
    pub tasks: Vec<TaskInfo>,
    /// Why figures may be incomplete, one line each.
    pub incomplete: Vec<String>,
}

impl Analysis {
    pub fn comm_of(&self, tid: u32) -> Option<&str> {
        self.tasks
            .binary_search_by_key(&tid, |t| t.tid)
            .ok()
            .map(|i| self.tasks[i].comm.as_str())
    }
    /// Total handoff counts over every lock.
    pub fn handoff_totals(&self) -> HandoffCounts {
        let mut c = HandoffCounts::default();
        for l in &self.locks {
            c.merge(&l.handoffs);
        }
        c
    }
}
