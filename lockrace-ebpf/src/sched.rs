//! sched:* tracepoints: who woke whom, when the wakee ran, where it ran.
//!
//! Only events that touch a task inside a lock request (`filter::IN_REQUEST`) are shipped: the
//! waker inside an unlock, a waiter being woken, a waiter switched out or in.
//!
//! Linux 6.18 formats (offsets come from the loader, `SCHED_OFFSETS`):
//! ```text
//! sched_waking / sched_wakeup:
//!   field:char comm[16];        offset:8;  size:16;
//!   field:pid_t pid;            offset:24; size:4;
//!   field:int prio;             offset:28; size:4;
//!   field:int target_cpu;       offset:32; size:4;
//! sched_switch:
//!   field:char prev_comm[16];   offset:8;  size:16;
//!   field:pid_t prev_pid;       offset:24; size:4;
//!   field:int prev_prio;        offset:28; size:4;
//!   field:long prev_state;      offset:32; size:8;
//!   field:char next_comm[16];   offset:40; size:16;
//!   field:pid_t next_pid;       offset:56; size:4;
//!   field:int next_prio;        offset:60; size:4;
//! sched_migrate_task:
//!   field:__data_loc char[] comm; offset:8; size:4;
//!   field:pid_t pid;            offset:12; size:4;
//!   field:int prio;             offset:16; size:4;
//!   field:int orig_cpu;         offset:20; size:4;
//!   field:int dest_cpu;         offset:24; size:4;
//! sched_process_fork:
//!   field:pid_t parent_pid;     offset:12; size:4;
//!   field:pid_t child_pid;      offset:20; size:4;
//! ```
//! (6.1 has the same fields; sched_migrate_task's comm there is `char comm[16]`, which moves
//! `pid` and the CPUs: hence offsets from the format file.)
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    programs::TracePointContext,
};
use lockrace_common::{
    DIRECT_READ_MIGRATE, DIRECT_READ_SWITCH, DIRECT_READ_WAKING, Kind, SchedEvent, SchedOffsets,
};

use crate::{
    emit, filter,
    tp::{self, Record},
};

#[unsafe(no_mangle)]
static SCHED_OFFSETS: SchedOffsets = SchedOffsets {
    wake_comm: 0,
    wake_pid: 0,
    wake_prio: 0,
    wake_target_cpu: 0,
    switch_prev_pid: 0,
    switch_prev_state: 0,
    switch_next_comm: 0,
    switch_next_pid: 0,
    switch_next_prio: 0,
    migrate_pid: 0,
    migrate_prio: 0,
    migrate_orig_cpu: 0,
    migrate_dest_cpu: 0,
    fork_parent_pid: 0,
    fork_child_pid: 0,
    _pad: 0,
};

#[inline(always)]
fn offsets() -> &'static SchedOffsets {
    &SCHED_OFFSETS
}

#[inline(always)]
fn read<T: Default>(ctx: &TracePointContext, off: u16) -> T {
    // SAFETY: `off` comes from the kernel's own format file for this tracepoint.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

/// sched_waking / sched_wakeup: shipped when the waker or the wakee is inside a lock request.
#[inline(always)]
pub fn waking(ctx: &TracePointContext, kind: Kind) -> u32 {
    let o = offsets();
    let r = Record::<5, DIRECT_READ_WAKING>::copy(ctx);
    let target: i32 = r.field(ctx, tp::off(&o.wake_pid));
    let target = target as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::in_request(pid_tgid as u32) && !filter::in_request(target) {
        return 0;
    }
    emit::record::<SchedEvent>(|e| {
        // SAFETY: `e` is the reserved record; every field is written.
        unsafe {
            emit::write_header(core::ptr::addr_of_mut!((*e).hdr), kind, pid_tgid);
            let b = core::ptr::addr_of_mut!((*e).body);
            (*b).target_tid = target;
            (*b).target_cpu = r.field(ctx, tp::off(&o.wake_target_cpu));
            (*b).orig_cpu = -1;
            (*b).prio = r.field(ctx, tp::off(&o.wake_prio));
            (*b).prev_state = 0;
            (*b).target_comm = r.field(ctx, tp::off(&o.wake_comm));
        }
    });
    0
}

/// sched_switch: shipped when the task switched out or in is inside a lock request. The current
/// task is `prev` (the tracepoint fires in __schedule before the switch, kernel/sched/core.c).
#[inline(always)]
pub fn switch(ctx: &TracePointContext) -> u32 {
    let o = offsets();
    let r = Record::<8, DIRECT_READ_SWITCH>::copy(ctx);
    let next: i32 = r.field(ctx, tp::off(&o.switch_next_pid));
    let next = next as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::in_request(pid_tgid as u32) && !filter::in_request(next) {
        return 0;
    }
    emit::record::<SchedEvent>(|e| {
        // SAFETY: `e` is the reserved record; every field is written.
        unsafe {
            emit::write_header(
                core::ptr::addr_of_mut!((*e).hdr),
                Kind::SchedSwitch,
                pid_tgid,
            );
            let b = core::ptr::addr_of_mut!((*e).body);
            (*b).target_tid = next;
            (*b).target_cpu = bpf_get_smp_processor_id() as i32;
            (*b).orig_cpu = -1;
            (*b).prio = r.field(ctx, tp::off(&o.switch_next_prio));
            (*b).prev_state = r.field(ctx, tp::off(&o.switch_prev_state));
            (*b).target_comm = r.field(ctx, tp::off(&o.switch_next_comm));
        }
    });
    0
}

/// sched_migrate_task: shipped for tasks inside a lock request.
#[inline(always)]
pub fn migrate(ctx: &TracePointContext) -> u32 {
    let o = offsets();
    // 6.18: pid .. dest_cpu at 12..28; 6.1 (inline comm) at 24..40, read by the fallback.
    let r = Record::<4, DIRECT_READ_MIGRATE>::copy(ctx);
    let pid: i32 = r.field(ctx, tp::off(&o.migrate_pid));
    let pid = pid as u32;
    if !filter::in_request(pid) {
        return 0;
    }
    emit::record::<SchedEvent>(|e| {
        // SAFETY: `e` is the reserved record; every field is written.
        unsafe {
            emit::write_header(
                core::ptr::addr_of_mut!((*e).hdr),
                Kind::SchedMigrateTask,
                bpf_get_current_pid_tgid(),
            );
            let b = core::ptr::addr_of_mut!((*e).body);
            (*b).target_tid = pid;
            (*b).target_cpu = r.field(ctx, tp::off(&o.migrate_dest_cpu));
            (*b).orig_cpu = r.field(ctx, tp::off(&o.migrate_orig_cpu));
            (*b).prio = r.field(ctx, tp::off(&o.migrate_prio));
            (*b).prev_state = 0;
            (*b).target_comm = [0; 16];
        }
    });
    0
}

/// sched_process_fork: children (and new threads) of traced processes are traced too.
#[inline(always)]
pub fn fork(ctx: &TracePointContext) -> u32 {
    let o = offsets();
    let child: i32 = read(ctx, tp::off(&o.fork_child_pid));
    // The forking task is current: its tgid is the parent process.
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    filter::adopt_child(parent_tgid, child as u32);
    0
}

/// sched_process_exit: a task killed inside a request never reaches sys_exit; forget it (and
/// an exiting thread's `TRACED_TGIDS` slot).
#[inline(always)]
pub fn exit() -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = filter::IN_REQUEST.remove(&(pid_tgid as u32));
    filter::forget_thread(pid_tgid as u32, (pid_tgid >> 32) as u32);
    0
}
