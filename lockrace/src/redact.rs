//! Kernel addresses out of everything lockrace writes: the [`Redactor`] replaces the `owner`,
//! `fl` and `blocker` pointers of lock events with small per-run ids, so a shared JSONL file,
//! report or Perfetto trace says nothing about the kernel's address layout (KASLR). With
//! `--raw-pointers` outputs keep the real values. The analysis always works on the real values
//! (it keeps them in memory); only outputs are redacted.
//!
//! The kernel reuses addresses, so an id is bound to an object's lifetime, not to an address
//! (docs/EVENTS.md, "Kernel addresses", states the rules for users):
//!
//! - `fl` (a request's `struct file_lock`): a new id when a new request starts using the
//!   address. A request is one lock syscall of a task (enter to exit), or, outside a syscall,
//!   the close path (`posix_lock_inode` up to `locks_remove_posix`, or one `flock_lock_inode`).
//!   Late events of a request find its id again (each address keeps its last few bindings).
//! - `blocker`: the id currently bound to that address (the earlier waiter's request, for
//!   nested waiters). An address no request is using is a granted lock's record (the kernel
//!   copies a granted request into a new `file_lock`): it gets an id of its own, kept while
//!   waiters refer to it. A request that started before such a reference (events arrive a
//!   little out of order) takes that id over; one that starts later is a new object.
//! - `owner`: a `files_struct` for POSIX locks (one per process) or a `struct file` for OFD and
//!   flock locks. A `files_struct` owner gets a new id when another process uses the address
//!   (the first one exited and its memory was reused); a `struct file` owner ends when the file
//!   is closed (`locks_remove_posix` with that owner, or a flock unlock outside `flock()`), and
//!   its next use gets a new id.
//! - 0 (no blocker, no owner) stays 0; ids start at 1 and never repeat within a run, across
//!   all three fields, so two fields compare equal exactly when their ids do.
//!
//! Invariants: pure (no I/O); every event is answered (never an error); what it remembers is
//! one entry per address seen (the kernel reuses a bounded set) and one per task inside a
//! request.
use std::collections::HashMap;

use lockrace_common::k;

use crate::events::{Data, Event, Kind};

/// Bindings an address keeps (the current one last).
const HISTORY: usize = 4;

/// One lock request: a task and the global sequence number of its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Req {
    tid: u32,
    seq: u64,
}

#[derive(Clone, Copy, Debug)]
struct LockBinding {
    id: u64,
    /// The request using the address; None for a granted lock's record seen as a blocker.
    req: Option<Req>,
    /// The latest event that referred to it (as fl or blocker).
    last_ts: u64,
    /// When its request ended (None while it runs, and for records).
    ended_ts: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnerKind {
    /// A `files_struct`: POSIX locks of process `tgid`.
    Files { tgid: u32 },
    /// A `struct file`: OFD and flock locks (shared by every process holding the file).
    File,
}

#[derive(Clone, Copy, Debug)]
struct OwnerBinding {
    id: u64,
    kind: OwnerKind,
    ended: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    /// Inside a fcntl/flock syscall.
    Syscall,
    /// Lock events outside a syscall (close path, or a capture that started mid-call).
    Implicit,
}

#[derive(Clone, Debug)]
struct Task {
    req: Req,
    open: Open,
    /// Addresses its request bound (usually one).
    addrs: Vec<u64>,
}

/// Replaces kernel pointers of an event stream by lifetime-bound ids. Feed it every event in
/// the order they are written ([`Redactor::event`]).
#[derive(Debug)]
pub struct Redactor {
    next_id: u64,
    next_seq: u64,
    locks: HashMap<u64, Vec<LockBinding>>,
    owners: HashMap<u64, OwnerBinding>,
    tasks: HashMap<u32, Task>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new()
    }
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor {
            next_id: 1,
            next_seq: 1,
            locks: HashMap::new(),
            owners: HashMap::new(),
            tasks: HashMap::new(),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The event as written: lock events with ids for `owner`, `fl` and `blocker`; others as
    /// they are (syscall events still move the task's request on).
    pub fn event(&mut self, e: &Event) -> Event {
        match &e.data {
            Data::Syscall(_) => {
                match e.kind {
                    Kind::SysEnterFcntl | Kind::SysEnterFlock => {
                        self.end_request(e.tid, e.ts_ns);
                        self.start_request(e.tid, Open::Syscall);
                    }
                    _ => self.end_request(e.tid, e.ts_ns),
                }
                *e
            }
            Data::Sched(_) => *e,
            Data::Lock(l) => {
                let req = match self.tasks.get(&e.tid) {
                    Some(t) => t.req,
                    None => self.start_request(e.tid, Open::Implicit),
                };
                let open = self.tasks.get(&e.tid).map(|t| t.open);
                let mut out = *l;
                out.fl = self.fl(l.fl, req, e.ts_ns);
                out.blocker = self.blocker(l.blocker, e.ts_ns);
                out.owner = self.owner(l.owner, l.flags, e.tgid);
                let closing = match e.kind {
                    Kind::LocksRemovePosix => true,
                    Kind::FlockLockInode => open == Some(Open::Implicit),
                    _ => false,
                };
                if closing {
                    if let Some(o) = self.owners.get_mut(&l.owner)
                        && o.kind == OwnerKind::File
                        && (e.kind == Kind::LocksRemovePosix || l.lock_type == k::F_UNLCK)
                    {
                        o.ended = true;
                    }
                    if open == Some(Open::Implicit) {
                        self.end_request(e.tid, e.ts_ns);
                    }
                }
                Event {
                    data: Data::Lock(out),
                    ..*e
                }
            }
        }
    }

    fn start_request(&mut self, tid: u32, open: Open) -> Req {
        let req = Req {
            tid,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.tasks.insert(
            tid,
            Task {
                req,
                open,
                addrs: Vec::new(),
            },
        );
        req
    }

    /// The task's request (if any) ends at `ts`: its bindings remember when.
    fn end_request(&mut self, tid: u32, ts: u64) {
        let Some(task) = self.tasks.remove(&tid) else {
            return;
        };
        for a in task.addrs {
            if let Some(b) = self
                .locks
                .get_mut(&a)
                .and_then(|v| v.iter_mut().find(|b| b.req == Some(task.req)))
            {
                b.ended_ts = Some(ts);
            }
        }
    }

    fn push_binding(&mut self, addr: u64, b: LockBinding) {
        let v = self.locks.entry(addr).or_default();
        if v.len() == HISTORY {
            v.remove(0);
        }
        v.push(b);
    }

    /// The id of `addr` used as the request's `fl`.
    fn fl(&mut self, addr: u64, req: Req, ts: u64) -> u64 {
        if addr == 0 {
            return 0;
        }
        if let Some(v) = self.locks.get_mut(&addr) {
            if let Some(b) = v.iter_mut().rev().find(|b| b.req == Some(req)) {
                b.last_ts = b.last_ts.max(ts);
                return b.id;
            }
            // A record that waiters referred to after this request began: it was this request
            // (its first event arrived late).
            if let Some(b) = v.last_mut()
                && b.req.is_none()
                && ts <= b.last_ts
            {
                b.req = Some(req);
                let id = b.id;
                self.bind_to_task(req, addr);
                return id;
            }
        }
        let id = self.id();
        self.push_binding(
            addr,
            LockBinding {
                id,
                req: Some(req),
                last_ts: ts,
                ended_ts: None,
            },
        );
        self.bind_to_task(req, addr);
        id
    }

    fn bind_to_task(&mut self, req: Req, addr: u64) {
        if let Some(t) = self.tasks.get_mut(&req.tid)
            && t.req == req
            && !t.addrs.contains(&addr)
        {
            t.addrs.push(addr);
        }
    }

    /// The id currently bound to `addr`, referred to as a blocker at `ts`.
    fn blocker(&mut self, addr: u64, ts: u64) -> u64 {
        if addr == 0 {
            return 0;
        }
        if let Some(b) = self.locks.get_mut(&addr).and_then(|v| v.last_mut()) {
            // A request that had ended before this reference no longer owns the address.
            let freed = b.ended_ts.is_some_and(|end| end < ts);
            if !freed {
                b.last_ts = b.last_ts.max(ts);
                return b.id;
            }
        }
        let id = self.id();
        self.push_binding(
            addr,
            LockBinding {
                id,
                req: None,
                last_ts: ts,
                ended_ts: None,
            },
        );
        id
    }

    /// The id of lock owner `addr` in an event with `flags` by process `tgid`.
    fn owner(&mut self, addr: u64, flags: u32, tgid: u32) -> u64 {
        if addr == 0 {
            return 0;
        }
        let hint = if flags & (k::FL_FLOCK | k::FL_OFDLCK) != 0 {
            Some(OwnerKind::File)
        } else if flags & FL_CLOSE == 0 {
            Some(OwnerKind::Files { tgid })
        } else {
            // The close path (FL_POSIX | FL_CLOSE): a files_struct or, for OFD locks, the file.
            None
        };
        if let Some(b) = self.owners.get(&addr) {
            let same = !b.ended
                && match (b.kind, hint) {
                    (_, None) => true,
                    (OwnerKind::File, Some(OwnerKind::File)) => true,
                    (OwnerKind::Files { tgid: a }, Some(OwnerKind::Files { tgid: c })) => a == c,
                    _ => false,
                };
            if same {
                return b.id;
            }
        }
        let id = self.id();
        self.owners.insert(
            addr,
            OwnerBinding {
                id,
                kind: hint.unwrap_or(OwnerKind::Files { tgid }),
                ended: false,
            },
        );
        id
    }
}

/// `FL_CLOSE`: the unlock of a file being closed (include/linux/filelock.h).
const FL_CLOSE: u32 = 64;

/// How reports and traces name a pointer the analysis reports: the real value (`0x...`) with
/// `--raw-pointers`, else `#N`, numbered in order of first appearance in that output (0 stays
/// `0x0`: no pointer).
#[derive(Debug, Default)]
pub struct Labels {
    raw: bool,
    ids: HashMap<u64, u64>,
}

impl Labels {
    pub fn new(raw_pointers: bool) -> Labels {
        Labels {
            raw: raw_pointers,
            ids: HashMap::new(),
        }
    }

    pub fn raw(&self) -> bool {
        self.raw
    }

    pub fn label(&mut self, v: u64) -> String {
        if self.raw || v == 0 {
            return format!("{v:#x}");
        }
        let n = self.ids.len() as u64 + 1;
        format!("#{}", *self.ids.entry(v).or_insert(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Comm, LockData, SyscallData};

    const FL_POSIX_SLEEP: u32 = k::FL_POSIX | k::FL_SLEEP;

    fn ev(ts: u64, tgid: u32, tid: u32, kind: Kind, data: Data) -> Event {
        Event {
            ts_ns: ts,
            cpu: 0,
            tgid,
            tid,
            comm: Comm::from_str_lossy("t"),
            kind,
            data,
        }
    }

    fn enter(ts: u64, tid: u32) -> Event {
        ev(
            ts,
            tid,
            tid,
            Kind::SysEnterFcntl,
            Data::Syscall(SyscallData {
                cmd: 7,
                ..Default::default()
            }),
        )
    }

    fn exit(ts: u64, tid: u32) -> Event {
        ev(
            ts,
            tid,
            tid,
            Kind::SysExitFcntl,
            Data::Syscall(SyscallData {
                cmd: 7,
                ..Default::default()
            }),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn lock(
        ts: u64,
        tid: u32,
        kind: Kind,
        fl: u64,
        blocker: u64,
        owner: u64,
        flags: u32,
        lock_type: u8,
    ) -> Event {
        ev(
            ts,
            tid,
            tid,
            kind,
            Data::Lock(LockData {
                dev: 1,
                ino: 2,
                owner,
                fl,
                blocker,
                lock_type,
                flags,
                ret: 0,
                start: 0,
                end: i64::MAX,
                fl_pid: tid,
            }),
        )
    }

    fn ids(r: &mut Redactor, e: &Event) -> (u64, u64, u64) {
        let l = *r.event(e).lock().unwrap();
        (l.fl, l.blocker, l.owner)
    }

    const A: u64 = 0xffff_8880_1234_5000;
    const B: u64 = 0xffff_8880_1234_6000;
    const OWNER: u64 = 0xffff_8880_aaaa_0000;

    #[test]
    fn one_request_keeps_its_id_and_the_next_request_at_the_same_address_gets_a_new_one() {
        let mut r = Redactor::new();
        r.event(&enter(1, 10));
        let (fl1, _, o1) = ids(
            &mut r,
            &lock(2, 10, Kind::PosixLockInode, A, B, OWNER, FL_POSIX_SLEEP, 1),
        );
        let (fl1b, _, o1b) = ids(
            &mut r,
            &lock(3, 10, Kind::PosixLockInode, A, 0, OWNER, FL_POSIX_SLEEP, 1),
        );
        let (fl1c, _, _) = ids(
            &mut r,
            &lock(4, 10, Kind::FcntlSetlk, A, 0, OWNER, FL_POSIX_SLEEP, 1),
        );
        assert_eq!((fl1, fl1), (fl1b, fl1c));
        assert_eq!(o1, o1b);
        r.event(&exit(5, 10));
        // The same task, a new fcntl: the kernel allocated the same address again.
        r.event(&enter(6, 10));
        let (fl2, _, o2) = ids(
            &mut r,
            &lock(7, 10, Kind::PosixLockInode, A, 0, OWNER, FL_POSIX_SLEEP, 2),
        );
        assert_ne!(fl2, fl1);
        assert_eq!(o2, o1, "same process, same files_struct");
        // Another task's request at that address while the first one runs (late event of the
        // first request keeps its id).
        r.event(&enter(8, 11));
        let (fl3, _, _) = ids(
            &mut r,
            &lock(9, 11, Kind::PosixLockInode, A, 0, 0xbeef, FL_POSIX_SLEEP, 1),
        );
        assert_ne!(fl3, fl2);
        let (late, _, _) = ids(
            &mut r,
            &lock(10, 10, Kind::FcntlSetlk, A, 0, OWNER, FL_POSIX_SLEEP, 2),
        );
        assert_eq!(late, fl2);
        // Nothing is an address any more.
        for v in [fl1, fl2, fl3, o1] {
            assert!(v < 100, "{v:#x}");
        }
    }

    #[test]
    fn blockers_map_to_the_request_they_name_and_records_get_their_own_ids() {
        let mut r = Redactor::new();
        // W1 blocks under a granted lock's record B; W2 blocks under W1's request A.
        r.event(&enter(1, 20));
        let (w1, rec, _) = ids(
            &mut r,
            &lock(2, 20, Kind::PosixLockInode, A, B, 1, FL_POSIX_SLEEP, 1),
        );
        r.event(&enter(3, 21));
        let (w2, under, _) = ids(
            &mut r,
            &lock(4, 21, Kind::PosixLockInode, 0x77, A, 2, FL_POSIX_SLEEP, 1),
        );
        assert_eq!(
            under, w1,
            "nested waiter names the earlier waiter's request"
        );
        assert_ne!(rec, w1);
        assert_ne!(w2, w1);
        // A third waiter under the same record: same id.
        r.event(&enter(5, 22));
        let (_, rec2, _) = ids(
            &mut r,
            &lock(6, 22, Kind::PosixLockInode, 0x99, B, 3, FL_POSIX_SLEEP, 1),
        );
        assert_eq!(rec2, rec);
        // W1's request ends; later a waiter names A as blocker: a new object (a granted
        // lock's record at the reused address), not W1's request.
        r.event(&exit(7, 20));
        r.event(&enter(8, 23));
        let (_, later, _) = ids(
            &mut r,
            &lock(9, 23, Kind::PosixLockInode, 0x55, A, 4, FL_POSIX_SLEEP, 1),
        );
        assert_ne!(later, w1);
        // ... but a reference stamped before W1's exit (it arrived late) still names W1.
        r.event(&enter(10, 24));
        let (_, early, _) = ids(
            &mut r,
            &lock(6, 24, Kind::PosixLockInode, 0x66, A, 5, FL_POSIX_SLEEP, 1),
        );
        assert_eq!(
            early, later,
            "the current binding, once the address was rebound"
        );
    }

    #[test]
    fn a_request_seen_after_a_waiter_named_it_takes_that_id_over() {
        let mut r = Redactor::new();
        // W2's block (ts 20) is written before W1's (ts 10): W2 names A first.
        r.event(&enter(5, 31));
        let (_, under, _) = ids(
            &mut r,
            &lock(20, 31, Kind::PosixLockInode, B, A, 1, FL_POSIX_SLEEP, 1),
        );
        r.event(&enter(1, 30));
        let (w1, _, _) = ids(
            &mut r,
            &lock(10, 30, Kind::PosixLockInode, A, 0x42, 2, FL_POSIX_SLEEP, 1),
        );
        assert_eq!(w1, under);
        // A request that starts after the last reference: a new object at that address.
        r.event(&exit(30, 30));
        r.event(&enter(40, 32));
        let (fresh, _, _) = ids(
            &mut r,
            &lock(41, 32, Kind::PosixLockInode, A, 0, 3, FL_POSIX_SLEEP, 1),
        );
        assert_ne!(fresh, w1);
    }

    #[test]
    fn close_path_requests_and_file_owners_end_at_close() {
        let mut r = Redactor::new();
        let ofd = k::FL_POSIX | k::FL_OFDLCK | k::FL_SLEEP;
        // An OFD lock by process 40 on file F, then the same file from process 41 (passed over
        // SCM_RIGHTS): one owner.
        r.event(&enter(1, 40));
        let (_, _, f1) = ids(
            &mut r,
            &lock(2, 40, Kind::PosixLockInode, A, 0, OWNER, ofd, 1),
        );
        r.event(&exit(3, 40));
        r.event(&enter(4, 41));
        let (_, _, f2) = ids(
            &mut r,
            &lock(5, 41, Kind::PosixLockInode, A, 0, OWNER, ofd, 1),
        );
        r.event(&exit(6, 41));
        assert_eq!(f1, f2);
        // The last close: posix_lock_inode(F_UNLCK, FL_POSIX|FL_CLOSE) and locks_remove_posix,
        // outside any syscall, both with the stack lock B: one request.
        let close = k::FL_POSIX | FL_CLOSE;
        let (c1, _, f3) = ids(
            &mut r,
            &lock(7, 41, Kind::PosixLockInode, B, 0, OWNER, close, 2),
        );
        let (c2, _, f4) = ids(
            &mut r,
            &lock(8, 41, Kind::LocksRemovePosix, B, 0, OWNER, close, 2),
        );
        assert_eq!((c1, f3), (c2, f4));
        assert_eq!(f3, f1);
        // The next close by that task reuses the stack address: a new request.
        let (c3, _, _) = ids(
            &mut r,
            &lock(9, 41, Kind::PosixLockInode, B, 0, 0x5, close, 2),
        );
        assert_ne!(c3, c1);
        // The struct file was freed: a new file at that address is a new owner.
        r.event(&enter(10, 42));
        let (_, _, f5) = ids(
            &mut r,
            &lock(11, 42, Kind::PosixLockInode, A, 0, OWNER, ofd, 1),
        );
        assert_ne!(f5, f1);
        // flock: an unlock outside flock() is the close of the file.
        let fl = k::FL_FLOCK;
        r.event(&ev(
            12,
            43,
            43,
            Kind::SysEnterFlock,
            Data::Syscall(SyscallData {
                cmd: 2,
                ..Default::default()
            }),
        ));
        let (_, _, g1) = ids(
            &mut r,
            &lock(13, 43, Kind::FlockLockInode, A, 0, 0x9000, fl, 1),
        );
        r.event(&ev(
            14,
            43,
            43,
            Kind::SysExitFlock,
            Data::Syscall(SyscallData {
                cmd: 2,
                ..Default::default()
            }),
        ));
        let (u1, _, g2) = ids(
            &mut r,
            &lock(15, 43, Kind::FlockLockInode, B, 0, 0x9000, fl | FL_CLOSE, 2),
        );
        assert_eq!(g1, g2);
        let (u2, _, g3) = ids(
            &mut r,
            &lock(16, 44, Kind::FlockLockInode, B, 0, 0x9000, fl, 1),
        );
        assert_ne!(g3, g1, "a new file after the close");
        assert_ne!(u2, u1, "each close-path flock event is its own request");
    }

    #[test]
    fn a_files_struct_reused_by_another_process_gets_a_new_id() {
        let mut r = Redactor::new();
        r.event(&enter(1, 50));
        let (_, _, p1) = ids(
            &mut r,
            &lock(2, 50, Kind::PosixLockInode, A, 0, OWNER, FL_POSIX_SLEEP, 1),
        );
        // Thread 51 of process 50: same owner.
        let mut t = lock(3, 51, Kind::PosixLockInode, B, 0, OWNER, FL_POSIX_SLEEP, 1);
        t.tgid = 50;
        assert_eq!(ids(&mut r, &t).2, p1);
        // Its close path (no thread of another process can be in it): same owner.
        let c = lock(
            4,
            50,
            Kind::LocksRemovePosix,
            B,
            0,
            OWNER,
            k::FL_POSIX | FL_CLOSE,
            2,
        );
        assert_eq!(ids(&mut r, &c).2, p1);
        // Process 60 with the same files_struct address: 50 exited, its memory was reused.
        r.event(&enter(5, 60));
        let (_, _, p2) = ids(
            &mut r,
            &lock(6, 60, Kind::PosixLockInode, A, 0, OWNER, FL_POSIX_SLEEP, 1),
        );
        assert_ne!(p2, p1);
    }

    #[test]
    fn zero_stays_zero_other_events_pass_and_ids_never_repeat() {
        let mut r = Redactor::new();
        let e = lock(1, 70, Kind::PosixLockInode, 0, 0, 0, FL_POSIX_SLEEP, 1);
        assert_eq!(ids(&mut r, &e), (0, 0, 0));
        let s = enter(2, 70);
        assert_eq!(r.event(&s), s);
        let mut seen = std::collections::HashSet::new();
        for i in 0..50u64 {
            r.event(&enter(10 + i, 71));
            let (fl, b, o) = ids(
                &mut r,
                &lock(
                    11 + i,
                    71,
                    Kind::PosixLockInode,
                    A + i % 3,
                    B + i,
                    OWNER + i,
                    FL_POSIX_SLEEP,
                    1,
                ),
            );
            r.event(&exit(12 + i, 71));
            for v in [fl, b, o] {
                seen.insert(v);
            }
        }
        assert_eq!(
            seen.len(),
            150,
            "every request, record and owner has its own id"
        );
    }

    #[test]
    fn labels_number_by_first_appearance_unless_raw() {
        let mut l = Labels::new(false);
        assert_eq!(l.label(A), "#1");
        assert_eq!(l.label(B), "#2");
        assert_eq!(l.label(A), "#1");
        assert_eq!(l.label(0), "0x0");
        let mut raw = Labels::new(true);
        assert_eq!(raw.label(A), "0xffff888012345000");
        assert!(raw.raw() && !l.raw());
    }
}
