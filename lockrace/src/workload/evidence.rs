//! Kernel evidence for the seed's other claims: pure functions over decoded [`Event`]s.
//!
//! - [`upgrade_windows`]: each shared-to-exclusive upgrade of one process, from its syscall entry
//!   to its exit, and what happened on the inode meanwhile. Linux's flock_lock_inode() removes
//!   the caller's old lock BEFORE it looks for conflicts (flock(2): "converting a lock is not
//!   guaranteed to be atomic"), so an upgrade that has to wait holds nothing while it waits and
//!   another process can be granted the exclusive lock in that window ("stolen").
//!   posix_lock_inode() looks for conflicts first and replaces the lock in place, so a waiting
//!   fcntl upgrade keeps its read lock and a competing exclusive request blocks behind it.
//! - [`independence`]: flock and POSIX/OFD locks on one inode never conflict (two separate
//!   lists in the kernel's file_lock_context): grants of one kind while the other is held, and
//!   no request ever blocked.
//! - [`call_path`]: which syscalls and kernel paths a process's lock requests took (`lockf` is
//!   `fcntl(F_SETLKW)` and ends in posix_lock_inode with `FL_POSIX`, like a plain fcntl lock).
//!
//! Invariants: no I/O; events may come in any order (they are sorted by `ts_ns` here, stable);
//! only `posix_lock_inode` / `flock_lock_inode` events count as requests and grants
//! (`fcntl_setlk` repeats the outcome of a whole fcntl call); unknown or malformed sequences
//! (an exit without an entry, an event of another inode) are skipped, never a panic.
use std::collections::BTreeSet;

use lockrace_common::k;
use serde::{Deserialize, Serialize};

use crate::events::{Event, Kind};

fn sorted(events: &[Event]) -> Vec<&Event> {
    let mut v: Vec<&Event> = events.iter().collect();
    v.sort_by_key(|e| e.ts_ns);
    v
}

/// The lock event of `e` when it is a request/grant/release on (dev, ino).
fn inode_lock(e: &Event, dev: u32, ino: u64) -> Option<&crate::events::LockData> {
    if !matches!(e.kind, Kind::PosixLockInode | Kind::FlockLockInode) {
        return None;
    }
    e.lock().filter(|l| l.dev == dev && l.ino == ino)
}

/// One upgrade: a shared lock holder asking for the exclusive lock.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UpgradeWindow {
    pub tid: u32,
    /// The upgrade's syscall entry and exit (None: the capture ended first).
    pub enter_ns: u64,
    pub exit_ns: Option<u64>,
    /// The upgrade request returned FILE_LOCK_DEFERRED at least once: it had to wait.
    pub waited: bool,
    /// The upgrader released a lock (type F_UNLCK) inside its own upgrade call.
    pub explicit_unlock: bool,
    /// Another process was granted an exclusive lock of the same kind on the inode after the
    /// upgrade began and before the upgrade was granted (only possible if the upgrader's shared
    /// lock was already gone).
    pub stolen_by: Option<u32>,
    /// Exclusive requests of other processes that blocked while the upgrade was in flight.
    pub others_blocked: u64,
    /// Non-blocking exclusive requests of other processes refused (EAGAIN) while the upgrade
    /// was in flight: the upgrader still held a conflicting lock.
    #[serde(default)]
    pub others_refused: u64,
    pub granted: bool,
}

/// Every upgrade of process `upgrader` on (dev, ino): a `flock(LOCK_EX)` or an fcntl write-lock
/// request made while it holds a shared lock of that kind.
pub fn upgrade_windows(events: &[Event], upgrader: u32, dev: u32, ino: u64) -> Vec<UpgradeWindow> {
    let mut out = Vec::new();
    // The lock type the upgrader holds, per kind (flock, posix).
    let mut holds: [Option<u8>; 2] = [None, None];
    let mut open: Option<(UpgradeWindow, Kind)> = None;
    let slot = |kind: Kind| usize::from(kind == Kind::PosixLockInode);
    for e in sorted(events) {
        if let Some(l) = inode_lock(e, dev, ino) {
            if e.tgid == upgrader {
                match (l.lock_type, l.ret) {
                    (k::F_UNLCK, _) => holds[slot(e.kind)] = None,
                    (t, 0) => holds[slot(e.kind)] = Some(t),
                    _ => {}
                }
                if let Some((w, kind)) = open.as_mut()
                    && *kind == e.kind
                {
                    if l.ret == k::FILE_LOCK_DEFERRED {
                        w.waited = true;
                    }
                    if l.lock_type == k::F_UNLCK {
                        w.explicit_unlock = true;
                    }
                    if l.lock_type == k::F_WRLCK && l.ret == 0 {
                        w.granted = true;
                    }
                }
            } else if let Some((w, kind)) = open.as_mut()
                && *kind == e.kind
                && !w.granted
                && l.lock_type == k::F_WRLCK
            {
                if l.ret == 0 && w.stolen_by.is_none() {
                    w.stolen_by = Some(e.tgid);
                } else if l.ret == k::FILE_LOCK_DEFERRED {
                    w.others_blocked += 1;
                } else if l.ret == -libc::EAGAIN {
                    w.others_refused += 1;
                }
            }
            continue;
        }
        if e.tgid != upgrader {
            continue;
        }
        let Some(s) = e.syscall() else { continue };
        match e.kind {
            Kind::SysEnterFlock | Kind::SysEnterFcntl if open.is_none() => {
                let kind = if e.kind == Kind::SysEnterFlock {
                    (s.cmd & !k::LOCK_NB == k::LOCK_EX).then_some(Kind::FlockLockInode)
                } else {
                    let setlk = matches!(
                        s.cmd,
                        k::F_SETLK | k::F_SETLKW | k::F_OFD_SETLK | k::F_OFD_SETLKW
                    );
                    let write = s.l_type.is_none_or(|t| t == i16::from(k::F_WRLCK));
                    (setlk && write).then_some(Kind::PosixLockInode)
                };
                if let Some(kind) = kind
                    && holds[slot(kind)] == Some(k::F_RDLCK)
                {
                    open = Some((
                        UpgradeWindow {
                            tid: e.tid,
                            enter_ns: e.ts_ns,
                            exit_ns: None,
                            waited: false,
                            explicit_unlock: false,
                            stolen_by: None,
                            others_blocked: 0,
                            others_refused: 0,
                            granted: false,
                        },
                        kind,
                    ));
                }
            }
            Kind::SysExitFlock | Kind::SysExitFcntl
                if open.as_ref().is_some_and(|(w, _)| w.tid == e.tid) =>
            {
                if let Some((mut w, _)) = open.take() {
                    w.exit_ns = Some(e.ts_ns);
                    out.push(w);
                }
            }
            _ => {}
        }
    }
    if let Some((w, _)) = open {
        out.push(w);
    }
    out
}

/// The upgrade windows, counted.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeSummary {
    pub upgrades: u64,
    /// Upgrades that had to wait (a window in which the outcome was open).
    pub waited: u64,
    /// Windows in which another process got the exclusive lock first.
    pub stolen: u64,
    /// Upgrades with an explicit F_UNLCK event of the upgrader inside.
    pub explicit_unlocks: u64,
    /// Windows in which another process's exclusive request blocked (the upgrader still held
    /// a lock that conflicted with it).
    pub others_blocked: u64,
    /// Windows in which another process's non-blocking exclusive request was refused (EAGAIN).
    #[serde(default)]
    pub others_refused: u64,
    pub granted: u64,
}

impl UpgradeSummary {
    pub fn of(windows: &[UpgradeWindow]) -> UpgradeSummary {
        let n = |f: &dyn Fn(&UpgradeWindow) -> bool| windows.iter().filter(|w| f(w)).count() as u64;
        UpgradeSummary {
            upgrades: windows.len() as u64,
            waited: n(&|w| w.waited),
            stolen: n(&|w| w.stolen_by.is_some()),
            explicit_unlocks: n(&|w| w.explicit_unlock),
            others_blocked: n(&|w| w.others_blocked > 0),
            others_refused: n(&|w| w.others_refused > 0),
            granted: n(&|w| w.granted),
        }
    }

    /// True when the events prove the shared lock was dropped before the exclusive one was
    /// granted in at least one upgrade.
    pub fn released_first(&self) -> bool {
        self.stolen > 0 || self.explicit_unlocks > 0
    }

    /// One sentence: what the kernel did with the upgrades.
    pub fn verdict(&self) -> String {
        if self.upgrades == 0 {
            return "no upgrade seen in the kernel events".to_string();
        }
        if self.released_first() {
            format!(
                "not atomic: in {} of {} upgrades another process was granted the exclusive lock \
                 while the upgrade was in flight (the shared lock was dropped first{})",
                self.stolen,
                self.upgrades,
                if self.explicit_unlocks > 0 {
                    format!(", with an explicit unlock in {}", self.explicit_unlocks)
                } else {
                    String::new()
                }
            )
        } else if self.waited > 0 && (self.others_blocked > 0 || self.others_refused > 0) {
            format!(
                "converted in place: {} of {} upgrades waited, none lost the lock, and the other \
                 process's exclusive request was refused in {} and blocked in {} of them, behind \
                 the lock the upgrader kept",
                self.waited, self.upgrades, self.others_refused, self.others_blocked
            )
        } else {
            format!(
                "no upgrade lost the lock ({} upgrades, {} waited)",
                self.upgrades, self.waited
            )
        }
    }
}

/// flock vs POSIX/OFD locks on one inode.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Independence {
    pub flock_grants: u64,
    pub posix_grants: u64,
    /// Requests of either kind that blocked (FILE_LOCK_DEFERRED).
    pub blocks: u64,
    /// Exclusive grants of one kind while another process held the other kind exclusively.
    pub concurrent_grants: u64,
}

impl Independence {
    /// True when both kinds were granted, some while the other was held, and nothing blocked.
    pub fn proves_independence(&self) -> bool {
        self.flock_grants > 0
            && self.posix_grants > 0
            && self.concurrent_grants > 0
            && self.blocks == 0
    }
}

/// Count flock and POSIX/OFD grants on (dev, ino) and how often one was granted while the other
/// kind was held by another process. A release's event is stamped just after the kernel drops
/// its spinlock, so a grant within that instant can be counted concurrent; the workload's own
/// overlap counter is the direct measure, this is the kernel's side.
pub fn independence(events: &[Event], dev: u32, ino: u64) -> Independence {
    let mut out = Independence::default();
    // Holder (tgid) of the exclusive lock per kind: [flock, posix].
    let mut held: [Option<u32>; 2] = [None, None];
    for e in sorted(events) {
        let Some(l) = inode_lock(e, dev, ino) else {
            continue;
        };
        let (me, other) = if e.kind == Kind::FlockLockInode {
            (0, 1)
        } else {
            (1, 0)
        };
        if l.ret == k::FILE_LOCK_DEFERRED {
            out.blocks += 1;
            continue;
        }
        match (l.lock_type, l.ret) {
            (k::F_UNLCK, _) if held[me] == Some(e.tgid) => held[me] = None,
            (k::F_WRLCK, 0) => {
                if me == 0 {
                    out.flock_grants += 1;
                } else {
                    out.posix_grants += 1;
                }
                if held[other].is_some_and(|t| t != e.tgid) {
                    out.concurrent_grants += 1;
                }
                held[me] = Some(e.tgid);
            }
            _ => {}
        }
    }
    out
}

/// The path a set of processes' lock requests took through the kernel.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct CallPath {
    /// Distinct fcntl commands entered (7 = F_SETLKW, 38 = F_OFD_SETLKW, ...).
    pub fcntl_cmds: BTreeSet<u64>,
    /// The commands of the fcntl calls that asked for a lock (`l_type` read or write), and of
    /// those that released one (`l_type` F_UNLCK). glibc's lockf(F_ULOCK) is
    /// fcntl(F_SETLK, F_UNLCK), so the two differ for lockf.
    #[serde(default)]
    pub lock_cmds: BTreeSet<u64>,
    #[serde(default)]
    pub unlock_cmds: BTreeSet<u64>,
    pub fcntl_calls: u64,
    pub flock_calls: u64,
    /// posix_lock_inode events on the inode, and the distinct `flags` they carried.
    pub posix_events: u64,
    pub posix_flags: BTreeSet<u32>,
    pub flock_events: u64,
}

impl CallPath {
    /// Every lock request went through fcntl(F_SETLKW) (releases through F_SETLK or F_SETLKW)
    /// into posix_lock_inode as a plain POSIX lock (FL_POSIX set, FL_OFDLCK and FL_FLOCK not).
    pub fn is_plain_posix_setlkw(&self) -> bool {
        self.fcntl_calls > 0
            && self.lock_cmds.iter().all(|&c| c == k::F_SETLKW)
            && !self.lock_cmds.is_empty()
            && self
                .fcntl_cmds
                .iter()
                .all(|&c| c == k::F_SETLKW || c == k::F_SETLK)
            && self.flock_calls == 0
            && self.flock_events == 0
            && self.posix_events > 0
            && self
                .posix_flags
                .iter()
                .all(|f| f & k::FL_POSIX != 0 && f & (k::FL_OFDLCK | k::FL_FLOCK) == 0)
    }

    /// `fcntl(cmd 7) x2000 -> posix_lock_inode x2003 flags {65, 129}`, for people.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.fcntl_calls > 0 || self.posix_events > 0 {
            let join = |s: &BTreeSet<u64>| {
                let v: Vec<String> = s.iter().map(u64::to_string).collect();
                if v.is_empty() {
                    "-".to_string()
                } else {
                    v.join("|")
                }
            };
            parts.push(format!(
                "fcntl(lock cmd {}, unlock cmd {}) x{} -> posix_lock_inode x{} flags {:?}",
                join(&self.lock_cmds),
                join(&self.unlock_cmds),
                self.fcntl_calls,
                self.posix_events,
                self.posix_flags
            ));
        }
        if self.flock_calls > 0 || self.flock_events > 0 {
            parts.push(format!(
                "flock() x{} -> flock_lock_inode x{}",
                self.flock_calls, self.flock_events
            ));
        }
        if parts.is_empty() {
            "no lock calls".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// `fcntl cmd {7} -> posix_lock_inode flags {1, 129}`: what two call paths must share to be
    /// the same.
    pub fn signature(&self) -> String {
        format!(
            "fcntl cmd {:?} (lock {:?}, unlock {:?}), flock calls {}, posix_lock_inode flags {:?}, \
             flock_lock_inode events {}",
            self.fcntl_cmds,
            self.lock_cmds,
            self.unlock_cmds,
            self.flock_calls,
            self.posix_flags,
            self.flock_events
        )
    }
}

/// The syscalls of `tgids` and the lock events on (dev, ino).
pub fn call_path(events: &[Event], tgids: &[u32], dev: u32, ino: u64) -> CallPath {
    let mut out = CallPath::default();
    for e in events {
        if let Some(l) = inode_lock(e, dev, ino) {
            if !tgids.contains(&e.tgid) {
                continue;
            }
            if e.kind == Kind::PosixLockInode {
                out.posix_events += 1;
                out.posix_flags.insert(l.flags);
            } else {
                out.flock_events += 1;
            }
            continue;
        }
        if !tgids.contains(&e.tgid) {
            continue;
        }
        match (e.kind, e.syscall()) {
            (Kind::SysEnterFcntl, Some(s)) => {
                out.fcntl_calls += 1;
                out.fcntl_cmds.insert(s.cmd);
                match s.l_type {
                    Some(t) if t == i16::from(k::F_UNLCK) => {
                        out.unlock_cmds.insert(s.cmd);
                    }
                    Some(_) => {
                        out.lock_cmds.insert(s.cmd);
                    }
                    None => {}
                }
            }
            (Kind::SysEnterFlock, Some(_)) => out.flock_calls += 1,
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Comm, Data, LockData, SyscallData};

    const DEV: u32 = 45;
    const INO: u64 = 7;

    /// A hand-written event stream, one call at a time.
    struct S {
        t: u64,
        out: Vec<Event>,
    }

    impl S {
        fn new() -> S {
            S {
                t: 1_000,
                out: Vec::new(),
            }
        }
        fn push(&mut self, tgid: u32, kind: Kind, data: Data) {
            self.t += 1_000;
            self.out.push(Event {
                ts_ns: self.t,
                cpu: 0,
                tgid,
                tid: tgid,
                comm: Comm::from_str_lossy("t"),
                kind,
                data,
            });
        }
        fn lock(&mut self, tgid: u32, kind: Kind, lock_type: u8, ret: i32, flags: u32) {
            self.push(
                tgid,
                kind,
                Data::Lock(LockData {
                    dev: DEV,
                    ino: INO,
                    owner: u64::from(tgid),
                    lock_type,
                    ret,
                    flags,
                    end: i64::MAX,
                    ..Default::default()
                }),
            );
        }
        fn sys(&mut self, tgid: u32, kind: Kind, cmd: u64, l_type: Option<i16>) {
            self.push(
                tgid,
                kind,
                Data::Syscall(SyscallData {
                    cmd,
                    l_type,
                    ..Default::default()
                }),
            );
        }
        /// A whole flock() call that is granted at once.
        fn flock(&mut self, tgid: u32, op: u64, lock_type: u8) {
            self.sys(tgid, Kind::SysEnterFlock, op, None);
            self.lock(tgid, Kind::FlockLockInode, lock_type, 0, k::FL_FLOCK);
            self.sys(tgid, Kind::SysExitFlock, op, None);
        }
        fn fcntl(&mut self, tgid: u32, lock_type: u8) {
            self.sys(
                tgid,
                Kind::SysEnterFcntl,
                k::F_SETLKW,
                Some(i16::from(lock_type)),
            );
            self.lock(
                tgid,
                Kind::PosixLockInode,
                lock_type,
                0,
                k::FL_POSIX | k::FL_SLEEP,
            );
            self.sys(tgid, Kind::SysExitFcntl, k::F_SETLKW, None);
        }
    }

    const A: u32 = 100; // the upgrader
    const B: u32 = 200;

    /// Both hold LOCK_SH; A upgrades and waits (its shared lock already gone); B unlocks and
    /// asks for LOCK_EX: granted at once if `stolen`, else A gets it first and B blocks.
    fn flock_round(s: &mut S, stolen: bool) {
        let fl = Kind::FlockLockInode;
        s.flock(A, k::LOCK_SH, k::F_RDLCK);
        s.flock(B, k::LOCK_SH, k::F_RDLCK);
        s.sys(A, Kind::SysEnterFlock, k::LOCK_EX, None);
        s.lock(A, fl, k::F_WRLCK, 1, k::FL_FLOCK | k::FL_SLEEP);
        s.flock(B, k::LOCK_UN, k::F_UNLCK);
        if stolen {
            s.flock(B, k::LOCK_EX, k::F_WRLCK);
            s.lock(A, fl, k::F_WRLCK, 1, k::FL_FLOCK | k::FL_SLEEP);
            s.flock(B, k::LOCK_UN, k::F_UNLCK);
            s.lock(A, fl, k::F_WRLCK, 0, k::FL_FLOCK | k::FL_SLEEP);
            s.sys(A, Kind::SysExitFlock, k::LOCK_EX, None);
            s.flock(A, k::LOCK_UN, k::F_UNLCK);
        } else {
            s.lock(A, fl, k::F_WRLCK, 0, k::FL_FLOCK | k::FL_SLEEP);
            s.sys(B, Kind::SysEnterFlock, k::LOCK_EX, None);
            s.lock(B, fl, k::F_WRLCK, 1, k::FL_FLOCK | k::FL_SLEEP);
            s.sys(A, Kind::SysExitFlock, k::LOCK_EX, None);
            s.flock(A, k::LOCK_UN, k::F_UNLCK);
            s.lock(B, fl, k::F_WRLCK, 0, k::FL_FLOCK | k::FL_SLEEP);
            s.sys(B, Kind::SysExitFlock, k::LOCK_EX, None);
            s.flock(B, k::LOCK_UN, k::F_UNLCK);
        }
    }

    #[test]
    fn a_stolen_flock_upgrade_is_seen_and_a_won_one_is_not() {
        let mut s = S::new();
        flock_round(&mut s, true);
        flock_round(&mut s, false);
        flock_round(&mut s, true);
        let w = upgrade_windows(&s.out, A, DEV, INO);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert_eq!(w[0].stolen_by, Some(B));
        // A won the race: B's request came after A's grant, outside the window.
        assert_eq!(w[1].stolen_by, None);
        assert_eq!(w[1].others_blocked, 0);
        assert!(
            w.iter()
                .all(|w| w.waited && w.granted && !w.explicit_unlock)
        );
        assert!(w.iter().all(|w| w.exit_ns.is_some()));
        let sum = UpgradeSummary::of(&w);
        assert_eq!((sum.upgrades, sum.stolen, sum.waited), (3, 2, 3));
        assert!(sum.released_first());
        assert!(
            sum.verdict().starts_with("not atomic: in 2 of 3"),
            "{}",
            sum.verdict()
        );
        // Shuffled input gives the same answer (sorted by timestamp inside).
        let mut rev = s.out.clone();
        rev.reverse();
        assert_eq!(upgrade_windows(&rev, A, DEV, INO), w);
        // Another inode or another upgrader: nothing.
        assert!(upgrade_windows(&s.out, A, DEV, INO + 1).is_empty());
        assert!(upgrade_windows(&s.out, 999, DEV, INO).is_empty());
    }

    #[test]
    fn an_fcntl_upgrade_converts_in_place_and_the_peer_blocks_behind_it() {
        let px = Kind::PosixLockInode;
        let sleep = k::FL_POSIX | k::FL_SLEEP;
        let mut s = S::new();
        for round in 0..2 {
            s.fcntl(A, k::F_RDLCK);
            s.fcntl(B, k::F_RDLCK);
            s.sys(A, Kind::SysEnterFcntl, k::F_SETLKW, Some(1));
            s.lock(A, px, k::F_WRLCK, 1, sleep);
            if round == 1 {
                // B first tries to upgrade its own read lock without waiting: refused.
                s.sys(B, Kind::SysEnterFcntl, k::F_SETLK, Some(1));
                s.lock(B, px, k::F_WRLCK, -libc::EAGAIN, k::FL_POSIX);
                s.sys(B, Kind::SysExitFcntl, k::F_SETLK, None);
            }
            s.fcntl(B, k::F_UNLCK);
            // B asks for the write lock: A's read lock is still there, so B blocks.
            s.sys(B, Kind::SysEnterFcntl, k::F_SETLKW, Some(1));
            s.lock(B, px, k::F_WRLCK, 1, sleep);
            s.lock(A, px, k::F_WRLCK, 0, sleep);
            s.sys(A, Kind::SysExitFcntl, k::F_SETLKW, None);
            s.fcntl(A, k::F_UNLCK);
            s.lock(B, px, k::F_WRLCK, 0, sleep);
            s.sys(B, Kind::SysExitFcntl, k::F_SETLKW, None);
            s.fcntl(B, k::F_UNLCK);
        }
        let w = upgrade_windows(&s.out, A, DEV, INO);
        assert_eq!(w.len(), 2);
        let sum = UpgradeSummary::of(&w);
        assert_eq!(
            sum,
            UpgradeSummary {
                upgrades: 2,
                waited: 2,
                stolen: 0,
                explicit_unlocks: 0,
                others_blocked: 2,
                others_refused: 1,
                granted: 2
            }
        );
        assert!(!sum.released_first());
        assert!(
            sum.verdict().starts_with("converted in place"),
            "{}",
            sum.verdict()
        );
        // A plain write lock (not held shared before) is not an upgrade.
        let mut t = S::new();
        t.fcntl(A, k::F_WRLCK);
        t.fcntl(A, k::F_UNLCK);
        assert!(upgrade_windows(&t.out, A, DEV, INO).is_empty());
        assert_eq!(
            UpgradeSummary::of(&[]).verdict(),
            "no upgrade seen in the kernel events"
        );
    }

    #[test]
    fn an_explicit_unlock_inside_the_upgrade_call_counts_as_released_first() {
        // What a kernel that unlocked through its own event would show (pre-2.6 cond_resched era
        // shape, or any implementation that traces the removal).
        let mut s = S::new();
        s.flock(A, k::LOCK_SH, k::F_RDLCK);
        s.sys(A, Kind::SysEnterFlock, k::LOCK_EX, None);
        s.lock(A, Kind::FlockLockInode, k::F_UNLCK, 0, k::FL_FLOCK);
        s.lock(A, Kind::FlockLockInode, k::F_WRLCK, 0, k::FL_FLOCK);
        // A capture that ends before the exit still yields the window.
        let w = upgrade_windows(&s.out, A, DEV, INO);
        assert_eq!(w.len(), 1);
        assert!(w[0].explicit_unlock && w[0].granted && w[0].exit_ns.is_none());
        assert!(UpgradeSummary::of(&w).released_first());
    }

    #[test]
    fn flock_and_posix_grants_interleave_without_blocks() {
        let mut s = S::new();
        for _ in 0..3 {
            s.flock(A, k::LOCK_EX, k::F_WRLCK);
            s.fcntl(B, k::F_WRLCK); // granted while A holds its flock lock
            s.flock(A, k::LOCK_UN, k::F_UNLCK);
            s.fcntl(B, k::F_UNLCK);
        }
        let ind = independence(&s.out, DEV, INO);
        assert_eq!(
            ind,
            Independence {
                flock_grants: 3,
                posix_grants: 3,
                blocks: 0,
                concurrent_grants: 3
            }
        );
        assert!(ind.proves_independence());
        // Two fcntl lockers that do conflict: one blocks, nothing concurrent.
        let mut t = S::new();
        t.fcntl(A, k::F_WRLCK);
        t.lock(
            B,
            Kind::PosixLockInode,
            k::F_WRLCK,
            1,
            k::FL_POSIX | k::FL_SLEEP,
        );
        t.fcntl(A, k::F_UNLCK);
        t.lock(
            B,
            Kind::PosixLockInode,
            k::F_WRLCK,
            0,
            k::FL_POSIX | k::FL_SLEEP,
        );
        let ind = independence(&t.out, DEV, INO);
        assert_eq!((ind.blocks, ind.concurrent_grants), (1, 0));
        assert!(!ind.proves_independence());
    }

    #[test]
    fn lockf_and_fcntl_take_the_same_path() {
        let mut lockf = S::new();
        lockf.fcntl(A, k::F_WRLCK);
        lockf.fcntl(A, k::F_UNLCK);
        let p = call_path(&lockf.out, &[A], DEV, INO);
        assert!(p.is_plain_posix_setlkw(), "{p:?}");
        assert_eq!(p.fcntl_cmds, BTreeSet::from([k::F_SETLKW]));
        assert_eq!(p.lock_cmds, BTreeSet::from([k::F_SETLKW]));
        assert_eq!(p.unlock_cmds, BTreeSet::from([k::F_SETLKW]));
        // glibc's lockf(F_ULOCK): fcntl(F_SETLK, F_UNLCK). Still the plain POSIX path.
        let mut glibc = S::new();
        glibc.fcntl(A, k::F_WRLCK);
        glibc.sys(A, Kind::SysEnterFcntl, k::F_SETLK, Some(2));
        glibc.lock(A, Kind::PosixLockInode, k::F_UNLCK, 0, k::FL_POSIX);
        glibc.sys(A, Kind::SysExitFcntl, k::F_SETLK, None);
        let g = call_path(&glibc.out, &[A], DEV, INO);
        assert!(g.is_plain_posix_setlkw(), "{g:?}");
        assert_eq!(g.unlock_cmds, BTreeSet::from([k::F_SETLK]));
        assert_eq!(g.lock_cmds, p.lock_cmds);
        // A non-blocking lock request is not F_SETLKW.
        let mut nb = S::new();
        nb.sys(A, Kind::SysEnterFcntl, k::F_SETLK, Some(1));
        nb.lock(A, Kind::PosixLockInode, k::F_WRLCK, 0, k::FL_POSIX);
        assert!(!call_path(&nb.out, &[A], DEV, INO).is_plain_posix_setlkw());
        assert_eq!(p.posix_flags, BTreeSet::from([k::FL_POSIX | k::FL_SLEEP]));
        assert!(p.signature().contains("fcntl cmd {7}"), "{}", p.signature());
        assert_eq!(
            p.describe(),
            "fcntl(lock cmd 7, unlock cmd 7) x2 -> posix_lock_inode x2 flags {129}"
        );
        assert_eq!(CallPath::default().describe(), "no lock calls");
        // OFD requests and flock are told apart.
        let mut ofd = S::new();
        ofd.sys(A, Kind::SysEnterFcntl, k::F_OFD_SETLKW, Some(1));
        ofd.lock(
            A,
            Kind::PosixLockInode,
            k::F_WRLCK,
            0,
            k::FL_POSIX | k::FL_OFDLCK | k::FL_SLEEP,
        );
        assert!(!call_path(&ofd.out, &[A], DEV, INO).is_plain_posix_setlkw());
        let mut fl = S::new();
        fl.flock(A, k::LOCK_EX, k::F_WRLCK);
        let p = call_path(&fl.out, &[A], DEV, INO);
        assert_eq!((p.flock_calls, p.flock_events), (1, 1));
        assert!(!p.is_plain_posix_setlkw());
        // Other processes do not count.
        assert_eq!(call_path(&lockf.out, &[B], DEV, INO), CallPath::default());
    }
}
