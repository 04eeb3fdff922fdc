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
    helpers::{bpf_get_current_pid_tgid, generated},
    programs::TracePointContext,
};
use lockrace_common::{Kind, SyscallEvent, k};

use crate::{emit, filter, tp};

pub const ARG0: usize = 16;
pub const ARG1: usize = 24;
pub const ARG2: usize = 32;
pub const RET: usize = 16;

/// `struct flock` on 64-bit Linux (include/uapi/asm-generic/fcntl.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
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
pub fn enter(ctx: &TracePointContext, kind: Kind) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::tgid_traced((pid_tgid >> 32) as u32) {
        return 0;
    }
    let cmd = tp::word::<ARG1>(ctx);
    let is_fcntl = matches!(kind, Kind::SysEnterFcntl);
    if is_fcntl && !k::is_lock_cmd(cmd) {
        return 0;
    }
    let fd = tp::word::<ARG0>(ctx);
    let arg = if is_fcntl { tp::word::<ARG2>(ctx) } else { 0 };
    // Read into a zeroed struct (the helper zeroes it again on failure) and copy every field
    // whether or not the read worked: with `Option<UserFlock>` LLVM may load the fields before
    // testing the discriminant, and 6.1's verifier refuses reading stack it never saw written
    // ("invalid read from stack"; newer kernels allow it for privileged programs).
    let mut fl = UserFlock::default();
    let flock_valid = is_fcntl && {
        // SAFETY: `fl` is a writable stack buffer of the size given; `arg` is a user pointer and
        // the helper fails cleanly if it is not readable.
        unsafe {
            generated::bpf_probe_read_user(
                core::ptr::addr_of_mut!(fl).cast(),
                core::mem::size_of::<UserFlock>() as u32,
                arg as *const core::ffi::c_void,
            ) == 0
        }
    };
    filter::enter_request(pid_tgid as u32, cmd);
    emit::record::<SyscallEvent>(|e| {
        // SAFETY: `e` is the reserved record; every field is written.
        unsafe {
            emit::write_header(core::ptr::addr_of_mut!((*e).hdr), kind, pid_tgid);
            let b = core::ptr::addr_of_mut!((*e).body);
            (*b).fd = fd;
            (*b).cmd = cmd;
            (*b).arg = arg;
            (*b).ret = 0;
            (*b).l_start = fl.l_start;
            (*b).l_len = fl.l_len;
            (*b).l_type = fl.l_type;
            (*b).l_whence = fl.l_whence;
            (*b).flock_valid = u8::from(flock_valid);
            (*b)._pad = [0; 3];
        }
    });
    0
}

#[inline(always)]
pub fn exit(ctx: &TracePointContext, kind: Kind) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(cmd) = filter::leave_request(pid_tgid as u32) else {
        return 0;
    };
    let ret = tp::word::<RET>(ctx) as i64;
    emit::record::<SyscallEvent>(|e| {
        // SAFETY: `e` is the reserved record; every field is written.
        unsafe {
            emit::write_header(core::ptr::addr_of_mut!((*e).hdr), kind, pid_tgid);
            let b = core::ptr::addr_of_mut!((*e).body);
            (*b).fd = 0;
            (*b).cmd = cmd;
            (*b).arg = 0;
            (*b).ret = ret;
            (*b).l_start = 0;
            (*b).l_len = 0;
            (*b).l_type = 0;
            (*b).l_whence = 0;
            (*b).flock_valid = 0;
            (*b)._pad = [0; 3];
        }
    });
    0
}
