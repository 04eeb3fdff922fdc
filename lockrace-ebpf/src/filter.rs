//! In-kernel filtering: which tasks and files are traced, and which tasks are inside a lock
//! request right now (so that scheduler events are shipped only for them).
//!
//! Invariants: with no filter (`FILTER.by_tgid == 0`) every task is traced; sched events are
//! never shipped for a task that is neither in `IN_REQUEST` nor woken by one, so the
//! machine-wide stream of context switches never reaches user space.
use aya_ebpf::{macros::map, maps::HashMap};
use lockrace_common::{FilterConfig, IN_REQUEST_IDLE, InodeKey};

use crate::emit;

#[unsafe(no_mangle)]
static FILTER: FilterConfig = FilterConfig {
    by_tgid: 0,
    by_inode: 0,
    lean: 0,
    _pad: 0,
};

/// tgid -> 1. Filled by user space, extended on fork for traced parents.
#[map(name = "TRACED_TGIDS")]
pub static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// (dev, ino) -> 1: `--path` filter.
#[map(name = "TRACED_INODES")]
pub static TRACED_INODES: HashMap<InodeKey, u8> = HashMap::with_max_entries(1024, 0);

/// tid -> the syscall's cmd (fcntl cmd or flock operation) while the task is inside a fcntl
/// lock command or flock(), `IN_REQUEST_IDLE` after it (kept for its next request).
#[map(name = "IN_REQUEST")]
pub static IN_REQUEST: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

#[inline(always)]
pub fn config() -> FilterConfig {
    // SAFETY: read-only global set by the loader before load; volatile so the compiler does not
    // fold the default value.
    unsafe { core::ptr::read_volatile(&FILTER) }
}

/// The lean probe set: the lock programs keep `IN_REQUEST` (see `FilterConfig::lean`).
#[inline(always)]
pub fn lean() -> bool {
    config().lean != 0
}

#[inline(always)]
pub fn tgid_traced(tgid: u32) -> bool {
    config().by_tgid == 0 || unsafe { TRACED_TGIDS.get(&tgid) }.is_some()
}

/// Whether a lock event on (dev, ino) by `tgid` passes; adopts `tgid` when it locks a traced
/// inode so its syscalls and wakeups are followed from then on.
#[inline(always)]
pub fn lock_traced(tgid: u32, dev: u32, ino: u64) -> bool {
    let cfg = config();
    if cfg.by_inode != 0 {
        let key = InodeKey { ino, dev, _pad: 0 };
        if unsafe { TRACED_INODES.get(&key) }.is_none() {
            return false;
        }
        follow(tgid);
        return true;
    }
    cfg.by_tgid == 0 || unsafe { TRACED_TGIDS.get(&tgid) }.is_some()
}

/// Whether (dev, ino) is one of the `--path` files.
#[inline(always)]
pub fn inode_traced(dev: u32, ino: u64) -> bool {
    let key = InodeKey { ino, dev, _pad: 0 };
    unsafe { TRACED_INODES.get(&key) }.is_some()
}

#[inline(always)]
pub fn adopt_child(parent_tgid: u32, child: u32) {
    if config().by_tgid != 0 && unsafe { TRACED_TGIDS.get(&parent_tgid) }.is_some() {
        follow(child);
    }
}

/// Add `tgid` to `TRACED_TGIDS` (an update when it is there already); a full map is counted.
#[inline(always)]
fn follow(tgid: u32) {
    if TRACED_TGIDS.insert(&tgid, &1, 0).is_err() {
        emit::count_map_full();
    }
}

/// A thread exited: forget its tid. `sched_process_fork` fires for new threads too, so
/// `adopt_child` adds their tids; no live process has a thread's tid as its tgid, so the entry
/// only takes a slot. A group leader's entry stays (its other threads may still run).
#[inline(always)]
pub fn forget_thread(tid: u32, tgid: u32) {
    if tid != tgid && config().by_tgid != 0 {
        let _ = TRACED_TGIDS.remove(&tid);
    }
}

#[inline(always)]
pub fn in_request(tid: u32) -> bool {
    // SAFETY: value read, not kept.
    unsafe { IN_REQUEST.get(&tid) }.is_some_and(|&cmd| cmd != IN_REQUEST_IDLE)
}

/// `tid` entered a lock request with `cmd`: a store into its entry when it has one (from its
/// earlier requests), an insert otherwise.
#[inline(always)]
pub fn enter_request(tid: u32, cmd: u64) {
    match IN_REQUEST.get_ptr_mut(&tid) {
        // SAFETY: the entry's value; concurrent readers see the old or the new u64.
        Some(p) => unsafe { core::ptr::write_volatile(p, cmd) },
        None => {
            if IN_REQUEST.insert(&tid, &cmd, 0).is_err() {
                emit::count_map_full();
            }
        }
    }
}

/// The cmd of the request `tid` is leaving, marking it idle; None when it was not inside one.
#[inline(always)]
pub fn leave_request(tid: u32) -> Option<u64> {
    let p = IN_REQUEST.get_ptr_mut(&tid)?;
    // SAFETY: the entry's value, read then overwritten by the task itself.
    let cmd = unsafe { core::ptr::read_volatile(p) };
    if cmd == IN_REQUEST_IDLE {
        return None;
    }
    unsafe { core::ptr::write_volatile(p, IN_REQUEST_IDLE) };
    Some(cmd)
}
