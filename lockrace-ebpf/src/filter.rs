//! In-kernel filtering: which tasks and files are traced, and which tasks are inside a lock
//! request right now (so that scheduler events are shipped only for them).
//!
//! Invariants: with no filter (`FILTER.by_tgid == 0`) every task is traced; sched events are
//! never shipped for a task that is neither in `IN_REQUEST` nor woken by one, so the
//! machine-wide stream of context switches never reaches user space.
use aya_ebpf::{macros::map, maps::HashMap};
use lockrace_common::{FilterConfig, InodeKey};

#[unsafe(no_mangle)]
static FILTER: FilterConfig = FilterConfig {
    by_tgid: 0,
    by_inode: 0,
};

/// tgid -> 1. Filled by user space, extended on fork for traced parents.
#[map(name = "TRACED_TGIDS")]
pub static TRACED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// (dev, ino) -> 1: `--path` filter.
#[map(name = "TRACED_INODES")]
pub static TRACED_INODES: HashMap<InodeKey, u8> = HashMap::with_max_entries(1024, 0);

/// tid -> the syscall's cmd (fcntl cmd or flock operation), while the task is inside a
/// fcntl lock command or flock().
#[map(name = "IN_REQUEST")]
pub static IN_REQUEST: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

#[inline(always)]
fn config() -> FilterConfig {
    // SAFETY: read-only global set by the loader before load; volatile so the compiler does not
    // fold the default value.
    unsafe { core::ptr::read_volatile(&FILTER) }
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
        let _ = TRACED_TGIDS.insert(&tgid, &1, 0);
        return true;
    }
    cfg.by_tgid == 0 || unsafe { TRACED_TGIDS.get(&tgid) }.is_some()
}

#[inline(always)]
pub fn adopt_child(parent_tgid: u32, child: u32) {
    if config().by_tgid != 0 && unsafe { TRACED_TGIDS.get(&parent_tgid) }.is_some() {
        let _ = TRACED_TGIDS.insert(&child, &1, 0);
    }
}

#[inline(always)]
pub fn in_request(tid: u32) -> bool {
    unsafe { IN_REQUEST.get(&tid) }.is_some()
}
