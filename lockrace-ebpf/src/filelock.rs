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
//! The record is copied once into the stack (`tp::Record`) and the fields are picked from the
//! copy: one helper call per field made this program cost ~300 ns per event.
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::TracePointContext};
use lockrace_common::{DIRECT_READ_LOCK, Kind, LOCK_TP_COUNT, LockEvent, LockOffsets, k};

use crate::{
    emit, filter,
    tp::{self, Record},
};

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

/// The offsets of filelock tracepoint `tp` (an index into `LOCK_OFFSETS`).
#[inline(always)]
pub fn offsets(tp: usize) -> Option<&'static LockOffsets> {
    LOCK_OFFSETS.get(tp)
}

/// The record's bytes 8..84, up to and including `ret`, in 11 words (`DIRECT_READ_LOCK`).
type LockRecord = Record<11, DIRECT_READ_LOCK>;

/// Emit one lock event if the task and the inode pass the filter.
#[inline(always)]
pub fn lock_event(ctx: &TracePointContext, kind: Kind, tp: usize) -> u32 {
    if tp >= LOCK_TP_COUNT {
        return 0;
    }
    let o = &LOCK_OFFSETS[tp];
    let r = LockRecord::copy(ctx);
    let dev: u32 = r.field(ctx, tp::off(&o.dev));
    let ino: u64 = r.field(ctx, tp::off(&o.ino));
    let pid_tgid = bpf_get_current_pid_tgid();
    if !filter::lock_traced((pid_tgid >> 32) as u32, dev, ino) {
        return 0;
    }
    emit::record::<LockEvent>(|e| {
        // SAFETY: `e` is the reserved record; every field is written.
        unsafe {
            emit::write_header(core::ptr::addr_of_mut!((*e).hdr), kind, pid_tgid);
            let b = core::ptr::addr_of_mut!((*e).body);
            (*b).fl = r.field(ctx, tp::off(&o.fl));
            (*b).ino = ino;
            (*b).blocker = r.field(ctx, tp::off(&o.blocker));
            (*b).owner = r.field(ctx, tp::off(&o.owner));
            (*b).start = r.field(ctx, tp::off(&o.start));
            (*b).end = r.field(ctx, tp::off(&o.end));
            (*b).dev = dev;
            (*b).flags = r.field(ctx, tp::off(&o.flags));
            (*b).fl_pid = r.field(ctx, tp::off(&o.pid));
            (*b).ret = r.field(ctx, tp::off(&o.ret));
            (*b).lock_type = r.field(ctx, tp::off(&o.lock_type));
            (*b)._pad = [0; 7];
        }
    });
    if filter::lean() {
        // No syscall programs: a task is "in a request" (its wakeups and switches shipped)
        // from the first lock event that blocked it until it exits. Never clearing the mark
        // keeps the uncontended lock calls (a barging releaser's) free of map operations.
        let ret: i32 = r.field(ctx, tp::off(&o.ret));
        if ret == k::FILE_LOCK_DEFERRED {
            filter::enter_request(pid_tgid as u32, 0);
        }
    }
    0
}
