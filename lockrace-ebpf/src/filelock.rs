//! filelock:* tracepoints: every lock, unlock, block and grant the kernel decides.
//!
//! The four tracepoints share one record layout. Linux 6.18
//! (/sys/kernel/tracing/events/filelock/posix_lock_inode/format):
//! ```text
//! field:struct file_lock * fl;                 offset:8;  size:8; signed:0;
//! field:unsigned long i_ino;                   offset:16; size:8; signed:0;
//! field:dev_t s_dev;                           offset:24; size:4; signed:0;
//! field:struct file_lock_core * blocker;       offset:32; size:8; signed:0;
//! field:fl_owner_t owner;                      offset:40; size:8; signed:0;
//! field:unsigned int pid;                      offset:48; size:4; signed:0;
//! field:unsigned int flags;                    offset:52; size:4; signed:0;
//! field:unsigned char type;                    offset:56; size:1; signed:0;
//! field:loff_t fl_start;                       offset:64; size:8; signed:1;
//! field:loff_t fl_end;                         offset:72; size:8; signed:1;
//! field:int ret;                               offset:80; size:4; signed:1;
//! ```
//! Linux 5.0-6.8 name five of them `fl_blocker, fl_owner, fl_pid, fl_flags, fl_type`. The loader
//! resolves either spelling to offsets (`LOCK_OFFSETS`), so nothing here depends on a kernel.
use aya_ebpf::programs::TracePointContext;
use lockrace_common::{Kind, LOCK_TP_COUNT, LockBody, LockEvent, LockOffsets};

use crate::{emit, filter};

#[unsafe(no_mangle)]
static LOCK_OFFSETS: [LockOffsets; LOCK_TP_COUNT] = [LockOffsets {
    fl: 0,
    ino: 0,
    dev: 0,
    blocker: 0,
    owner: 0,
    pid: 0,
    flags: 0,
    lock_type: 0,
    start: 0,
    end: 0,
    ret: 0,
    _pad: 0,
}; LOCK_TP_COUNT];

#[inline(always)]
fn read<T: Default>(ctx: &TracePointContext, off: u16) -> T {
    // SAFETY: `off` comes from the kernel's own format file for this tracepoint.
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

/// Emit one lock event if the task and the inode pass the filter.
#[inline(always)]
pub fn lock_event(ctx: &TracePointContext, kind: Kind, tp: usize) -> u32 {
    if tp >= LOCK_TP_COUNT {
        return 0;
    }
    // SAFETY: read-only global written by the loader before load.
    let o = unsafe { core::ptr::read_volatile(&LOCK_OFFSETS[tp]) };
    let hdr = emit::header(kind);
    let dev: u32 = read(ctx, o.dev);
    let ino: u64 = read(ctx, o.ino);
    if !filter::lock_traced(hdr.tgid, dev, ino) {
        return 0;
    }
    let body = LockBody {
        fl: read(ctx, o.fl),
        ino,
        blocker: read(ctx, o.blocker),
        owner: read(ctx, o.owner),
        start: read(ctx, o.start),
        end: read(ctx, o.end),
        dev,
        flags: read(ctx, o.flags),
        fl_pid: read(ctx, o.pid),
        ret: read(ctx, o.ret),
        lock_type: read(ctx, o.lock_type),
        _pad: [0; 7],
    };
    emit::record::<LockEvent>(|slot| *slot = LockEvent { hdr, body });
    0
}
