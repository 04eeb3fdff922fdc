//! lockrace's kernel side: tracepoint programs as thin stubs over a few verbs.
//!
//! Every program follows one shape: filter in the kernel ([`filter`]), then emit one record
//! ([`emit`]) whose layout is defined in `lockrace-common`. Field offsets of the tracepoint
//! records are not compiled in: the loader reads them from tracefs `format` files and hands them
//! over as read-only globals, so one object runs on 5.0 through 6.18 (field names differ there).
//! Nothing is dropped silently: a failed ring-buffer reserve increments `DROPS`.
#![no_std]
#![no_main]

mod emit;
mod fast;
mod filelock;
mod filter;
mod sched;
mod syscalls;
mod tp;

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use lockrace_common::{
    Kind, LOCK_TP_FCNTL_SETLK, LOCK_TP_FLOCK, LOCK_TP_POSIX, LOCK_TP_REMOVE_POSIX,
};

#[tracepoint]
pub fn posix_lock_inode(ctx: TracePointContext) -> u32 {
    filelock::lock_event(&ctx, Kind::PosixLockInode, LOCK_TP_POSIX)
}

#[tracepoint]
pub fn flock_lock_inode(ctx: TracePointContext) -> u32 {
    filelock::lock_event(&ctx, Kind::FlockLockInode, LOCK_TP_FLOCK)
}

#[tracepoint]
pub fn fcntl_setlk(ctx: TracePointContext) -> u32 {
    filelock::lock_event(&ctx, Kind::FcntlSetlk, LOCK_TP_FCNTL_SETLK)
}

#[tracepoint]
pub fn locks_remove_posix(ctx: TracePointContext) -> u32 {
    filelock::lock_event(&ctx, Kind::LocksRemovePosix, LOCK_TP_REMOVE_POSIX)
}

#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    sched::waking(&ctx, Kind::SchedWaking)
}

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    sched::waking(&ctx, Kind::SchedWakeup)
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    sched::switch(&ctx)
}

#[tracepoint]
pub fn sched_migrate_task(ctx: TracePointContext) -> u32 {
    sched::migrate(&ctx)
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    sched::fork(&ctx)
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    sched::exit()
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    syscalls::enter(&ctx, Kind::SysEnterFcntl)
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    syscalls::exit(&ctx, Kind::SysExitFcntl)
}

#[tracepoint]
pub fn sys_enter_flock(ctx: TracePointContext) -> u32 {
    syscalls::enter(&ctx, Kind::SysEnterFlock)
}

#[tracepoint]
pub fn sys_exit_flock(ctx: TracePointContext) -> u32 {
    syscalls::exit(&ctx, Kind::SysExitFlock)
}

// The fast probe set (`FAST_PROBES`), see `fast`: filelock on classic tracepoints, the
// scheduler through BTF-typed ones.

#[tracepoint]
pub fn fast_posix_lock(ctx: TracePointContext) -> u32 {
    fast::lock(&ctx, Kind::PosixLockInode, LOCK_TP_POSIX)
}

#[tracepoint]
pub fn fast_flock_lock(ctx: TracePointContext) -> u32 {
    fast::lock(&ctx, Kind::FlockLockInode, LOCK_TP_FLOCK)
}

#[tracepoint]
pub fn fast_setlk(ctx: TracePointContext) -> u32 {
    fast::setlk(&ctx)
}

#[tracepoint]
pub fn fast_rm_posix(ctx: TracePointContext) -> u32 {
    fast::lock(&ctx, Kind::LocksRemovePosix, LOCK_TP_REMOVE_POSIX)
}

#[btf_tracepoint(function = "sched_waking")]
pub fn fast_waking(ctx: BtfTracePointContext) -> i32 {
    fast::waking(&ctx)
}

#[btf_tracepoint(function = "sched_switch")]
pub fn fast_switch(ctx: BtfTracePointContext) -> i32 {
    fast::switch(&ctx)
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn fast_fork(ctx: BtfTracePointContext) -> i32 {
    fast::fork(&ctx)
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn fast_exit(_ctx: BtfTracePointContext) -> i32 {
    fast::exit()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
