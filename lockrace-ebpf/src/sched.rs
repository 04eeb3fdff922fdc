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
use lockrace_common::{Kind, SchedBody, SchedEvent, SchedOffsets};

use crate::{emit, filter};

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
fn offsets() -> SchedOffsets {
    // SAFETY: read-only global written by the loader before load.
    unsafe { core::ptr::read_volatile(&SCHED_OFFSETS) }
}

#[inline(always)]
fn read<T: Default>(ctx: &TracePointContext, off: u16) -> T {
    // SAFETY: `off` comes from the kernel's own format file for this tracepoint.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// sched_waking / sched_wakeup: shipped when the waker or the wakee is inside a lock request.
#[inline(always)]
pub fn waking(ctx: &TracePointContext, kind: Kind) -> u32 {
    let o = offsets();
    let target: i32 = read(ctx, o.wake_pid);
    let target = target as u32;
    if !filter::in_request(current_tid()) && !filter::in_request(target) {
        return 0;
    }
    let body = SchedBody {
        target_tid: target,
        target_cpu: read(ctx, o.wake_target_cpu),
        orig_cpu: -1,
        prio: read(ctx, o.wake_prio),
        prev_state: 0,
        target_comm: read(ctx, o.wake_comm),
    };
    let hdr = emit::header(kind);
    emit::record::<SchedEvent>(|slot| *slot = SchedEvent { hdr, body });
    0
}

/// sched_switch: shipped when the task switched out or in is inside a lock request. The current
/// task is `prev` (the tracepoint fires in __schedule before the switch, kernel/sched/core.c).
#[inline(always)]
pub fn switch(ctx: &TracePointContext) -> u32 {
    let o = offsets();
    let next: i32 = read(ctx, o.switch_next_pid);
    let next = next as u32;
    if !filter::in_request(current_tid()) && !filter::in_request(next) {
        return 0;
    }
    let body = SchedBody {
        target_tid: next,
        // SAFETY: helper without preconditions.
        target_cpu: unsafe { bpf_get_smp_processor_id() } as i32,
        orig_cpu: -1,
        prio: read(ctx, o.switch_next_prio),
        prev_state: read(ctx, o.switch_prev_state),
        target_comm: read(ctx, o.switch_next_comm),
    };
    let hdr = emit::header(Kind::SchedSwitch);
    emit::record::<SchedEvent>(|slot| *slot = SchedEvent { hdr, body });
    0
}

/// sched_migrate_task: shipped for tasks inside a lock request.
#[inline(always)]
pub fn migrate(ctx: &TracePointContext) -> u32 {
    let o = offsets();
    let pid: i32 = read(ctx, o.migrate_pid);
    let pid = pid as u32;
    if !filter::in_request(pid) {
        return 0;
    }
    let body = SchedBody {
        target_tid: pid,
        target_cpu: read(ctx, o.migrate_dest_cpu),
        orig_cpu: read(ctx, o.migrate_orig_cpu),
        prio: read(ctx, o.migrate_prio),
        prev_state: 0,
        target_comm: [0; 16],
    };
    let hdr = emit::header(Kind::SchedMigrateTask);
    emit::record::<SchedEvent>(|slot| *slot = SchedEvent { hdr, body });
    0
}

/// sched_process_fork: children (and new threads) of traced processes are traced too.
#[inline(always)]
pub fn fork(ctx: &TracePointContext) -> u32 {
    let o = offsets();
    let child: i32 = read(ctx, o.fork_child_pid);
    // The forking task is current: its tgid is the parent process.
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    filter::adopt_child(parent_tgid, child as u32);
    0
}

/// sched_process_exit: a task killed inside a request never reaches sys_exit; forget it.
#[inline(always)]
pub fn exit() -> u32 {
    let _ = filter::IN_REQUEST.remove(&current_tid());
    0
}
