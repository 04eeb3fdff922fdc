//! The analyzer's state: a task and its request in progress ([`Req`], its [`Phase`] as a
//! waiter), the wakeups it issued and not yet attributed ([`Issued`]), a lock group's holds,
//! waiters and open handoff ([`LockState`], [`OpenHandoff`]), the whoops correlation's view of
//! the roles ([`WhoopsTrack`]), and the small pure helpers every step uses (range overlap,
//! type conflict, merged-group resolution, capped pushes).
//!
//! Invariants: a request is keyed by its task's tid, never by the kernel's reused `struct
//! file_lock` address; every list here is capped (see the `*_CAP` constants) except the role
//! grant notes of a whoops correlation.
use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sys {
    Fcntl(u64),
    Flock(u64),
    /// F_GETLK and friends: no lock decision.
    Test,
    /// Lock events without a syscall entry.
    Implicit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Entered,
    Blocked,
    Woken { ts: u64, waker_cpu: u32 },
    Running,
    Done,
}

#[derive(Default)]
pub(super) struct RecBuf {
    pub(super) blocks: Vec<BlockRec>,
    pub(super) wakes: Vec<WakeRec>,
    pub(super) truncated: bool,
}

impl RecBuf {
    pub(super) fn set_then(&mut self, then: AfterWake) {
        if let Some(w) = self.wakes.last_mut()
            && w.then == AfterWake::Pending
        {
            w.then = then;
        }
    }
}

pub(super) struct Req {
    pub(super) sys: Sys,
    pub(super) enter_ts: Option<u64>,
    /// Requested type from the syscall arguments (0 read, 1 write, 2 unlock).
    pub(super) want: Option<u8>,
    pub(super) lock: Option<usize>,
    pub(super) ltype: Option<u8>,
    /// Byte range of the lock event.
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) first_block: Option<u64>,
    pub(super) last_block: u64,
    pub(super) blocker: u64,
    pub(super) fl: u64,
    pub(super) blocks: u32,
    pub(super) phase: Phase,
    /// (ret, ts) of the decision.
    pub(super) outcome: Option<(i32, u64)>,
    pub(super) counted: bool,
    /// The release of this unlock was applied early, at the grant it enabled.
    pub(super) release_applied: bool,
    /// A waiting writer: read grants to newer requests while it waited.
    pub(super) readers_ahead: u64,
    /// The byte range the caller asked for (fcntl with `SEEK_SET`), when known.
    pub(super) asked: Option<(i64, i64)>,
    pub(super) rec: Option<Box<RecBuf>>,
}

impl Req {
    pub(super) fn new(sys: Sys, enter_ts: Option<u64>, want: Option<u8>, rec: bool) -> Req {
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
    pub(super) fn waiting(&self) -> bool {
        self.blocks > 0 && self.outcome.is_none()
    }
    /// Type used for conflict checks.
    pub(super) fn kind(&self) -> u8 {
        self.ltype.or(self.want).unwrap_or(k::F_WRLCK)
    }
}

/// A wakeup a task issued, waiting to be attributed to its next lock event.
#[derive(Clone, Copy, Debug)]
pub(super) struct Issued {
    pub(super) wakee: u32,
    pub(super) ts: u64,
    pub(super) cpu: u32,
    pub(super) target_cpu: i32,
    pub(super) lock: usize,
    pub(super) blocker: u64,
    pub(super) last_block: u64,
}

pub(super) struct Task {
    pub(super) tgid: u32,
    pub(super) comm: Comm,
    /// CPU of its last event.
    pub(super) cpu: u32,
    /// Timestamp of its last event.
    pub(super) last_ts: u64,
    pub(super) req: Option<Req>,
    pub(super) issued: Vec<Issued>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Hold {
    pub(super) owner: u64,
    pub(super) task: TaskRef,
    pub(super) ltype: u8,
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) since: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub(super) tid: u32,
    pub(super) first_block: u64,
    pub(super) want: u8,
    pub(super) start: i64,
    pub(super) end: i64,
}

pub(super) struct OpenHandoff {
    pub(super) rec: HandoffRecord,
    pub(super) pending: Vec<Pending>,
    pub(super) resolved: bool,
}

pub(super) struct LockState {
    pub(super) merged_into: Option<usize>,
    pub(super) holds: Vec<Hold>,
    /// Waiting tids in first-block order.
    pub(super) waiters: Vec<u32>,
    pub(super) open: Option<Box<OpenHandoff>>,
    pub(super) sum: LockSummary,
}

impl LockState {
    pub(super) fn new(key: LockKey) -> LockState {
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

pub(super) struct WhoopsTrack {
    pub(super) dev: u32,
    pub(super) ino: u64,
    pub(super) tgids: Vec<u32>,
    /// Last owner seen per role on the memfd.
    pub(super) owner: Vec<Option<u64>>,
    /// Tids seen per role.
    pub(super) tids: Vec<Vec<u32>>,
    pub(super) grants: Vec<Vec<GrantNote>>,
}

impl WhoopsTrack {
    pub(super) fn role(&self, tgid: u32) -> Option<usize> {
        self.tgids.iter().position(|&t| t == tgid)
    }
}

#[inline]
pub(super) fn overlaps(a_start: i64, a_end: i64, b_start: i64, b_end: i64) -> bool {
    a_start <= b_end && b_start <= a_end
}

/// Two lock types conflict unless both are read locks.
#[inline]
pub(super) fn conflicts(a: u8, b: u8) -> bool {
    !(a == k::F_RDLCK && b == k::F_RDLCK)
}

pub(super) fn push_capped(v: &mut Vec<u32>, x: u32) {
    if v.len() < ORDER_CAP {
        v.push(x);
    }
}

/// Where per-request records go: borrowed for the caller's scope, or owned by the analyzer (a
/// live capture's reader thread owns its analyzer, so it must be `Send + 'static`).
pub(super) enum ObsSlot<'o> {
    Borrowed(&'o mut (dyn Observer + Send)),
    Owned(Box<dyn Observer + Send>),
}

pub(super) fn obs_of<'a>(o: &'a mut Option<ObsSlot<'_>>) -> Option<&'a mut dyn Observer> {
    match o.as_mut()? {
        ObsSlot::Borrowed(b) => Some(&mut **b),
        ObsSlot::Owned(b) => Some(b.as_mut()),
    }
}

/// The inclusive byte range of a `struct flock` relative to the file start (`SEEK_SET`); None
/// for `SEEK_CUR`/`SEEK_END` (the file position is not known here) or a malformed range.
pub(super) fn asked_range(whence: i16, start: i64, len: i64) -> Option<(i64, i64)> {
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

pub(super) fn resolve(locks: &[LockState], mut id: usize) -> usize {
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

pub(super) fn note_owner(s: &mut LockSummary, owner: u64, tgid: u32) {
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

pub(super) fn push_timeline(rec: &mut HandoffRecord, entry: TimelineEntry) {
    if rec.timeline.len() < TIMELINE_CAP {
        rec.timeline.push(entry);
    } else {
        rec.timeline_truncated = true;
    }
}

pub(super) trait MinByTs {
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
