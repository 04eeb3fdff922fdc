//! syscalls:sys_{enter,exit}_{fcntl,flock}: bracket each lock request (start, end, result).
//!
//! While a task is between enter and exit of a lock command it is in `IN_REQUEST`, which is what
//! lets the sched programs ship only the wakeups and switches that matter. The wakeups an unlock
//! issues happen inside its fcntl() call, before its posix_lock_inode event.
//!
//! The syscall records have had one layout since syscall tracepoints exist
//! (kernel/trace/trace_syscalls.c, `struct syscall_trace_enter { struct trace_entry ent; int nr;
//! unsigned long args[]; }` and `struct syscall_trace_exit { ...; int nr; long ret; }`); the loader
//! checks the format files agree before loading:
//! ```text
//! sys_enter_fcntl: fd offset:16 size:8; cmd offset:24 size:8; arg offset:32 size:8
//! sys_enter_flock: fd offset:16 size:8; cmd offset:24 size:8
//! sys_exit_*:      ret offset:16 size:8
//! ```
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    programs::TracePointContext,
};
use lockrace_common::{Kind, SyscallBody, SyscallEvent, k};

use crate::{emit, filter};

pub const ARG0: usize = 16;
pub const ARG1: usize = 24;
pub const ARG2: usize = 32;
pub const RET: usize = 16;

/// `struct flock` on 64-bit Linux (include/uapi/asm-generic/fcntl.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct UserFlock {
    l_type: i16,
    l_whence: i16,
    _pad: u32,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
    _pad2: u32,
}

#[inline(always)]
fn read_u64(ctx: &TracePointContext, off: usize) -> u64 {
    // SAFETY: fixed syscall record layout, checked by the loader against the format file.
    unsafe { ctx.read_at::<u64>(off) }.unwrap_or_default()
}

#[inline(always)]
pub fn enter(ctx: &TracePointContext, kind: Kind) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::tgid_traced((pid_tgid >> 32) as u32) {
        return 0;
    }
    let cmd = read_u64(ctx, ARG1);
    let is_fcntl = matches!(kind, Kind::SysEnterFcntl);
    if is_fcntl && !k::is_lock_cmd(cmd) {
        return 0;
    }
    let mut body = SyscallBody {
        fd: read_u64(ctx, ARG0),
        cmd,
        ..SyscallBody::default()
    };
    if is_fcntl {
        body.arg = read_u64(ctx, ARG2);
        // SAFETY: a user pointer; the helper fails cleanly if it is not readable.
        if let Ok(fl) = unsafe { bpf_probe_read_user(body.arg as *const UserFlock) } {
            body.l_type = fl.l_type;
            body.l_whence = fl.l_whence;
            body.l_start = fl.l_start;
            body.l_len = fl.l_len;
            body.flock_valid = 1;
        }
    }
    let tid = pid_tgid as u32;
    let _ = filter::IN_REQUEST.insert(&tid, &cmd, 0);
    let hdr = emit::header(kind);
    emit::record::<SyscallEvent>(|slot| *slot = SyscallEvent { hdr, body });
    0
}

#[inline(always)]
pub fn exit(ctx: &TracePointContext, kind: Kind) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: value copied out before the entry is removed.
    let cmd = match unsafe { filter::IN_REQUEST.get(&tid) } {
        Some(cmd) => *cmd,
        None => return 0,
    };
    let _ = filter::IN_REQUEST.remove(&tid);
    let body = SyscallBody {
        cmd,
        ret: read_u64(ctx, RET) as i64,
        ..SyscallBody::default()
    };
    let hdr = emit::header(kind);
    emit::record::<SyscallEvent>(|slot| *slot = SyscallEvent { hdr, body });
    0
}
