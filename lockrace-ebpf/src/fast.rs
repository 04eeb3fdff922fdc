//! The fast probe set (`lockrace_common::FAST_PROBES`): the filelock decisions on classic
//! tracepoints with a lean body, the scheduler events of waiting tasks on BTF-typed
//! tracepoints (`tp_btf`) that read the kernel's own structs with direct loads.
//!
//! Filelock programs: the kernel's record (`filelock_lock`, the format pasted in
//! `filelock.rs`) is copied by direct context loads (`tp::Record`, offsets from tracefs), the
//! filter is a byte per tgid (`TGID_TRACED`, an array the verifier inlines) instead of a hash
//! lookup, the current task's ids and comm are read through its BTF pointer
//! (`bpf_get_current_task_btf`) instead of by two helpers, and the reader is woken from the
//! ring's producer position. Scheduler programs: a `tp_btf` program gets the tracepoint's C
//! arguments (TP_PROTO) instead of a record the kernel first builds in a perf buffer, the
//! verifier turns its loads through those pointers into plain loads with an exception-table
//! entry, and each program has its own recursion guard. Struct offsets are not compiled in:
//! the loader reads them from the running kernel's BTF (`FAST_OFFSETS`, a frozen read-only
//! global, so the verifier sees each offset as a constant and checks every load against the
//! struct's BTF).
//!
//! Prototypes (include/trace/events/sched.h; Linux 5.18 through 6.18):
//! ```text
//! sched_waking:        (struct task_struct *p)
//! sched_switch:        (bool preempt, struct task_struct *prev, struct task_struct *next,
//!                       unsigned int prev_state)        [before 5.18: no prev_state]
//! sched_process_fork:  (struct task_struct *parent, struct task_struct *child)
//! sched_process_exit:  (struct task_struct *p)          [6.16+: also bool group_dead]
//! ```
//! Invariants: every pointer is checked for NULL before it is followed (the verifier may mark
//! tracepoint arguments nullable); records are the same `LockEvent` / `SchedEvent` the classic
//! programs write, with the same field meanings (`sched_switch.prev_state` computed as the
//! classic tracepoint computes it); a task is marked waiting (`WAITING`) from a lock event
//! that returned FILE_LOCK_DEFERRED to its next lock decision or its exit, and only the sched
//! events of waiting tasks are shipped.
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel, generated,
    },
    macros::map,
    maps::{Array, ring_buf::RingBufEntry},
    programs::{BtfTracePointContext, TracePointContext},
};
use lockrace_common::{
    DIRECT_READ_LOCK, FastOffsets, Header, IDS_PER_ENTRY, Kind, LOCK_TP_FCNTL_SETLK, LockEvent,
    LockOffsets, SchedEvent, k, switch_state,
};

use crate::{
    emit, filelock, filter,
    tp::{self, Record},
};

#[unsafe(no_mangle)]
static FAST_OFFSETS: FastOffsets = FastOffsets {
    fl_blocker: 0,
    fl_owner: 0,
    fl_pid: 0,
    fl_flags: 0,
    fl_type: 0,
    fl_start: 0,
    fl_end: 0,
    fl_file: 0,
    i_ino: 0,
    i_sb: 0,
    s_dev: 0,
    f_op: 0,
    fop_lock: 0,
    t_pid: 0,
    t_tgid: 0,
    t_prio: 0,
    t_comm: 0,
    t_cpu: 0,
    t_state: 0,
    t_exit_state: 0,
    state_size: 0,
    switch_state_arg: 0,
    _pad: [0; 2],
};

/// tgid -> traced, one byte per tgid (`MAP_TGID_TRACED`); sized from pid_max by the loader.
#[map(name = "TGID_TRACED")]
pub static TGID_TRACED: Array<u64> = Array::with_max_entries(4096, 0);

/// tid -> waiting for a lock, one byte per tid (`MAP_WAITING`); sized like `TGID_TRACED`.
#[map(name = "WAITING")]
pub static WAITING: Array<u64> = Array::with_max_entries(4096, 0);

const EAGAIN: i32 = 11;

/// The current task, read once per program: its pointer (for the comm) and ids.
struct Current {
    task: *const u8,
    tid: u32,
    tgid: u32,
}

impl Current {
    /// `bpf_get_current_task_btf()` and its pid and tgid (direct loads, no helper each).
    #[inline(always)]
    fn get() -> Option<Current> {
        // SAFETY: no preconditions; the result is a trusted BTF pointer or NULL.
        let task = unsafe { generated::bpf_get_current_task_btf() } as *const u8;
        if task.is_null() {
            return None;
        }
        // SAFETY: non-NULL task pointer.
        Some(unsafe { Current::of(task) })
    }

    /// The task at `task` (non-NULL, the one running this program).
    #[inline(always)]
    unsafe fn of(task: *const u8) -> Current {
        let o = offsets();
        // SAFETY: the caller's non-NULL task pointer.
        unsafe {
            Current {
                task,
                tid: field(task, &o.t_pid),
                tgid: field(task, &o.t_tgid),
            }
        }
    }

    /// Fill a record's header in place (the same fields `emit::write_header` writes, the comm
    /// read from the task instead of by `bpf_get_current_comm`); returns the CPU.
    #[inline(always)]
    unsafe fn header(&self, h: *mut Header, kind: Kind) -> u32 {
        // SAFETY: `h` points into a reserved record; every field is written.
        unsafe {
            let cpu = bpf_get_smp_processor_id();
            (*h).ts_ns = bpf_ktime_get_ns();
            (*h).tgid = self.tgid;
            (*h).tid = self.tid;
            (*h).cpu = cpu;
            (*h).kind = kind as u32;
            (*h).comm = task_comm(self.task);
            cpu
        }
    }
}

/// Reserve a record; a full ring is counted.
#[inline(always)]
fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = emit::EVENTS.reserve::<T>(0);
    if entry.is_none() {
        emit::count_drop();
    }
    entry
}

/// Submit a record, waking the reader when this record took the ring's producer position
/// across a multiple of the wakeup threshold (`GLOBAL_WAKEUP_BYTES`, a power of two): one
/// wakeup per threshold's worth of records, as the classic programs do, but decided from the
/// producer position (a cache line this CPU has just written) instead of the data available
/// (which reads the consumer position, a line the reader on another CPU keeps writing: that
/// read cost the classic programs ~45 ns per record here).
#[inline(always)]
fn submit<T: 'static>(entry: RingBufEntry<T>) {
    let threshold = emit::wakeup_bytes();
    let flags = if threshold == 0 {
        0
    } else {
        // The record and its 8-byte ring header, rounded to 8 as the kernel reserves it.
        let len = (core::mem::size_of::<T>() as u64 + 8 + 7) & !7;
        let pos = emit::EVENTS.query(BPF_RB_PROD_POS as u64);
        if pos & (threshold - 1) < len {
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            BPF_RB_NO_WAKEUP as u64
        }
    };
    entry.submit(flags);
}

/// The byte of `id` in a byte map; None past its end (pid_max raised after load).
#[inline(always)]
fn byte(map: &Array<u64>, id: u32) -> Option<*mut u8> {
    let entry = map.get_ptr_mut(id / IDS_PER_ENTRY)?;
    // SAFETY: `id % 8` is inside the 8-byte value.
    Some(unsafe { (entry as *mut u8).add((id % IDS_PER_ENTRY) as usize) })
}

#[inline(always)]
fn is_set(map: &Array<u64>, id: u32) -> bool {
    // SAFETY: a byte of a map value; a concurrent writer stores a whole byte.
    byte(map, id).is_some_and(|p| unsafe { core::ptr::read_volatile(p) } != 0)
}

/// Set or clear `id`'s byte; an id past the map's end is counted (a task not followed).
#[inline(always)]
fn set(map: &Array<u64>, id: u32, on: bool) {
    match byte(map, id) {
        // SAFETY: as in `is_set`.
        Some(p) => unsafe { core::ptr::write_volatile(p, u8::from(on)) },
        None => emit::count_map_full(),
    }
}

/// A field of type T at `off` bytes into the kernel object at `base` (a BTF pointer: the
/// verifier checks the access against the object's type and makes it fault-safe).
#[inline(always)]
unsafe fn field<T: Copy>(base: *const u8, off: &u16) -> T {
    // SAFETY: the caller's `base` is a non-NULL BTF pointer; `off` is a member offset the
    // loader read from this kernel's BTF for that type.
    unsafe { core::ptr::read_volatile(base.add(tp::off(off) as usize) as *const T) }
}

#[inline(always)]
fn offsets() -> &'static FastOffsets {
    &FAST_OFFSETS
}

/// Whether a lock event of `tgid` on (dev, ino) passes the filter; with `--path`, a task that
/// locks a traced file is followed from then on.
#[inline(always)]
fn lock_traced(tgid: u32, dev: u32, ino: u64) -> bool {
    let cfg = filter::config();
    if cfg.by_inode != 0 {
        if !filter::inode_traced(dev, ino) {
            return false;
        }
        if !is_set(&TGID_TRACED, tgid) {
            set(&TGID_TRACED, tgid, true);
        }
        return true;
    }
    cfg.by_tgid == 0 || is_set(&TGID_TRACED, tgid)
}

/// The filelock record's bytes 8..84, up to and including `ret` (`DIRECT_READ_LOCK`).
type LockRecord = Record<11, DIRECT_READ_LOCK>;

/// One filelock record from the kernel's, field for field as the classic program writes it.
#[inline(always)]
fn ship_lock(ctx: &TracePointContext, kind: Kind, cur: &Current, r: &LockRecord, o: &LockOffsets) {
    let Some(mut entry) = reserve::<LockEvent>() else {
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; every field is written.
    unsafe {
        cur.header(core::ptr::addr_of_mut!((*e).hdr), kind);
        let b = core::ptr::addr_of_mut!((*e).body);
        (*b).fl = r.field(ctx, tp::off(&o.fl));
        (*b).ino = r.field(ctx, tp::off(&o.ino));
        (*b).blocker = r.field(ctx, tp::off(&o.blocker));
        (*b).owner = r.field(ctx, tp::off(&o.owner));
        (*b).start = r.field(ctx, tp::off(&o.start));
        (*b).end = r.field(ctx, tp::off(&o.end));
        (*b).dev = r.field(ctx, tp::off(&o.dev));
        (*b).flags = r.field(ctx, tp::off(&o.flags));
        (*b).fl_pid = r.field(ctx, tp::off(&o.pid));
        (*b).ret = r.field(ctx, tp::off(&o.ret));
        (*b).lock_type = r.field(ctx, tp::off(&o.lock_type));
        (*b)._pad = [0; 7];
    }
    submit(entry);
}

/// The record of filelock tracepoint `tpi`, its offsets, and the current task when the event
/// passes the filter.
#[inline(always)]
fn traced_lock(
    ctx: &TracePointContext,
    tpi: usize,
) -> Option<(LockRecord, &'static LockOffsets, Current)> {
    let o = filelock::offsets(tpi)?;
    let r = LockRecord::copy(ctx);
    let dev: u32 = r.field(ctx, tp::off(&o.dev));
    let ino: u64 = r.field(ctx, tp::off(&o.ino));
    let cur = Current::get()?;
    lock_traced(cur.tgid, dev, ino).then_some((r, o, cur))
}

/// posix_lock_inode, flock_lock_inode, locks_remove_posix: every decision of a traced task;
/// a FILE_LOCK_DEFERRED marks the task waiting, any other result ends its wait.
#[inline(always)]
pub fn lock(ctx: &TracePointContext, kind: Kind, tpi: usize) -> u32 {
    let Some((r, o, cur)) = traced_lock(ctx, tpi) else {
        return 0;
    };
    ship_lock(ctx, kind, &cur, &r, o);
    let ret: i32 = r.field(ctx, tp::off(&o.ret));
    if ret == k::FILE_LOCK_DEFERRED {
        set(&WAITING, cur.tid, true);
    } else if is_set(&WAITING, cur.tid) {
        set(&WAITING, cur.tid, false);
    }
    0
}

/// fcntl_setlk fires once per fcntl() lock call, after all waiting, with the call's result.
/// posix_lock_inode has said everything except: a wait that ended without a decision
/// (ERESTARTSYS/EINTR from a signal), errors before or after it (ENOLCK, EBADF, ...), and the
/// answers of filesystems that decide locks themselves (`f_op->lock`: posix_lock_inode may
/// not run there). Only those are shipped; 0 and a local EAGAIN return at once.
#[inline(always)]
pub fn setlk(ctx: &TracePointContext) -> u32 {
    let Some(o) = filelock::offsets(LOCK_TP_FCNTL_SETLK) else {
        return 0;
    };
    let r = LockRecord::copy(ctx);
    let ret: i32 = r.field(ctx, tp::off(&o.ret));
    if ret == 0 || (ret == -EAGAIN && !own_lock(r.field(ctx, tp::off(&o.fl)))) {
        return 0;
    }
    let Some((r, o, cur)) = traced_lock(ctx, LOCK_TP_FCNTL_SETLK) else {
        return 0;
    };
    ship_lock(ctx, Kind::FcntlSetlk, &cur, &r, o);
    if is_set(&WAITING, cur.tid) {
        set(&WAITING, cur.tid, false);
    }
    0
}

/// Whether the lock's file has its own `->lock` (NFS, CIFS, FUSE with locks, ...): the
/// record's `fl` is a plain number here, so each pointer is read with bpf_probe_read_kernel
/// (only on this rare path: a refused non-blocking attempt).
#[inline(always)]
fn own_lock(fl: u64) -> bool {
    let o = offsets();
    let read = |base: u64, off: &u16| -> u64 {
        if base == 0 {
            return 0;
        }
        let at = (base + u64::from(tp::off(off))) as *const u64;
        // SAFETY: a kernel address; the helper fails cleanly (0) when it is not readable.
        unsafe { bpf_probe_read_kernel(at) }.unwrap_or(0)
    };
    let file = read(fl, &o.fl_file);
    let fop = read(file, &o.f_op);
    read(fop, &o.fop_lock) != 0
}

/// The target task's (tid, prio, cpu, comm).
#[inline(always)]
unsafe fn task_fields(p: *const u8) -> (i32, i32, [u8; 16]) {
    let o = offsets();
    // SAFETY: `p` is a non-NULL `struct task_struct *`.
    unsafe {
        let prio: i32 = field(p, &o.t_prio);
        let cpu: i32 = field(p, &o.t_cpu);
        (prio, cpu, task_comm(p))
    }
}

/// The comm of a task: two 8-byte loads (a 16-byte copy would be split into byte loads).
#[inline(always)]
unsafe fn task_comm(p: *const u8) -> [u8; 16] {
    let o = offsets();
    // SAFETY: `p` is a non-NULL task pointer; comm is 16 bytes (checked by the loader).
    unsafe {
        let lo: u64 = field(p, &o.t_comm);
        let hi: u64 = field(p.add(8), &o.t_comm);
        core::mem::transmute::<[u64; 2], [u8; 16]>([lo, hi])
    }
}

/// sched_waking(p): shipped when `p` waits for a lock (whoever wakes it: the releaser's
/// unlock, a granted waiter waking its children, a signal).
#[inline(always)]
pub fn waking(ctx: &BtfTracePointContext) -> i32 {
    let p: *const u8 = ctx.arg(0);
    if p.is_null() {
        return 0;
    }
    // SAFETY: non-NULL task pointer.
    let tid: u32 = unsafe { field(p, &offsets().t_pid) };
    if !is_set(&WAITING, tid) {
        return 0;
    }
    let Some(cur) = Current::get() else {
        return 0;
    };
    let Some(mut entry) = reserve::<SchedEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; every field is written; `p` is non-NULL.
    unsafe {
        cur.header(core::ptr::addr_of_mut!((*e).hdr), Kind::SchedWaking);
        let (prio, cpu, comm) = task_fields(p);
        let b = core::ptr::addr_of_mut!((*e).body);
        (*b).target_tid = tid;
        (*b).target_cpu = cpu;
        (*b).orig_cpu = -1;
        (*b).prio = prio;
        (*b).prev_state = 0;
        (*b).target_comm = comm;
    }
    submit(entry);
    0
}

/// sched_switch(preempt, prev, next, prev_state): shipped when `prev` (the current task) or
/// `next` waits for a lock.
#[inline(always)]
pub fn switch(ctx: &BtfTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    if prev.is_null() || next.is_null() {
        return 0;
    }
    let o = offsets();
    // `prev` is the current task (the tracepoint fires in __schedule before the switch).
    // SAFETY: non-NULL task pointers.
    let (prev_tid, next_tid): (u32, u32) =
        unsafe { (field(prev, &o.t_pid), field(next, &o.t_pid)) };
    if !is_set(&WAITING, prev_tid) && !is_set(&WAITING, next_tid) {
        return 0;
    }
    let preempt: u64 = ctx.arg(0);
    // SAFETY: as above; `prev` is non-NULL.
    let (state, exit_state) = unsafe {
        let state: u32 = if tp::off(&o.switch_state_arg) != 0 {
            ctx.arg::<u64>(3) as u32
        } else if tp::off(&o.state_size) == 8 {
            field::<u64>(prev, &o.t_state) as u32
        } else {
            field::<u32>(prev, &o.t_state)
        };
        (state, field::<u32>(prev, &o.t_exit_state))
    };
    // SAFETY: `prev` is a non-NULL task pointer.
    let cur = unsafe { Current::of(prev) };
    let Some(mut entry) = reserve::<SchedEvent>() else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; every field is written; `next` is non-NULL.
    unsafe {
        let cpu = cur.header(core::ptr::addr_of_mut!((*e).hdr), Kind::SchedSwitch);
        let (prio, _, comm) = task_fields(next);
        let b = core::ptr::addr_of_mut!((*e).body);
        (*b).target_tid = next_tid;
        (*b).target_cpu = cpu as i32;
        (*b).orig_cpu = -1;
        (*b).prio = prio;
        (*b).prev_state = switch_state(preempt & 1 != 0, state, exit_state);
        (*b).target_comm = comm;
    }
    submit(entry);
    0
}

/// sched_process_fork(parent, child): children and new threads of traced processes are
/// traced too (the forking task is current: its tgid is the parent process).
#[inline(always)]
pub fn fork(ctx: &BtfTracePointContext) -> i32 {
    let child: *const u8 = ctx.arg(1);
    if child.is_null() || filter::config().by_tgid == 0 {
        return 0;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_set(&TGID_TRACED, parent_tgid) {
        // SAFETY: non-NULL task pointer.
        let pid: u32 = unsafe { field(child, &offsets().t_pid) };
        set(&TGID_TRACED, pid, true);
    }
    0
}

/// sched_process_exit: the exiting task (current) waits for nothing any more; an exiting
/// thread's tgid-map byte is cleared (a group leader's stays: its threads may still run).
#[inline(always)]
pub fn exit() -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if is_set(&WAITING, tid) {
        set(&WAITING, tid, false);
    }
    if tid != tgid && filter::config().by_tgid != 0 && is_set(&TGID_TRACED, tid) {
        set(&TGID_TRACED, tid, false);
    }
    0
}
