//! The whole kernel/user contract of lockrace, in one place.
//!
//! Every record the eBPF programs write to the ring buffer is one of the `#[repr(C)]` structs
//! below: a [`Header`] followed by one payload per family ([`LockBody`], [`SchedBody`],
//! [`SyscallBody`]). The family is implied by [`Header::kind`] (see [`Kind::family`]).
//!
//! Invariants:
//! - explicit widths, no implicit padding (every pad byte is a named field), sizes asserted at
//!   compile time below, so the kernel and user side can never disagree on a layout;
//! - `ts_ns` is `bpf_ktime_get_ns()`, i.e. CLOCK_MONOTONIC nanoseconds, the same clock user space
//!   reads with `clock_gettime(CLOCK_MONOTONIC)`;
//! - the names of the globals the loader sets (`GLOBAL_*`) and of the maps (`MAP_*`) live here
//!   and nowhere else.
#![cfg_attr(not(test), no_std)]

/// Event kinds. The numbers are part of the recorded format: never renumber, only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PosixLockInode = 1,
    FlockLockInode = 2,
    FcntlSetlk = 3,
    LocksRemovePosix = 4,
    SchedWaking = 10,
    SchedWakeup = 11,
    SchedSwitch = 12,
    SchedMigrateTask = 13,
    SysEnterFcntl = 20,
    SysExitFcntl = 21,
    SysEnterFlock = 22,
    SysExitFlock = 23,
}

/// Which payload follows the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Lock,
    Sched,
    Syscall,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::PosixLockInode,
        Kind::FlockLockInode,
        Kind::FcntlSetlk,
        Kind::LocksRemovePosix,
        Kind::SchedWaking,
        Kind::SchedWakeup,
        Kind::SchedSwitch,
        Kind::SchedMigrateTask,
        Kind::SysEnterFcntl,
        Kind::SysExitFcntl,
        Kind::SysEnterFlock,
        Kind::SysExitFlock,
    ];

    pub const fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::PosixLockInode,
            2 => Kind::FlockLockInode,
            3 => Kind::FcntlSetlk,
            4 => Kind::LocksRemovePosix,
            10 => Kind::SchedWaking,
            11 => Kind::SchedWakeup,
            12 => Kind::SchedSwitch,
            13 => Kind::SchedMigrateTask,
            20 => Kind::SysEnterFcntl,
            21 => Kind::SysExitFcntl,
            22 => Kind::SysEnterFlock,
            23 => Kind::SysExitFlock,
            _ => return None,
        })
    }

    pub const fn family(self) -> Family {
        match self {
            Kind::PosixLockInode
            | Kind::FlockLockInode
            | Kind::FcntlSetlk
            | Kind::LocksRemovePosix => Family::Lock,
            Kind::SchedWaking | Kind::SchedWakeup | Kind::SchedSwitch | Kind::SchedMigrateTask => {
                Family::Sched
            }
            Kind::SysEnterFcntl | Kind::SysExitFcntl | Kind::SysEnterFlock | Kind::SysExitFlock => {
                Family::Syscall
            }
        }
    }

    /// The name used in JSONL files and reports (the tracepoint's own name).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::PosixLockInode => "posix_lock_inode",
            Kind::FlockLockInode => "flock_lock_inode",
            Kind::FcntlSetlk => "fcntl_setlk",
            Kind::LocksRemovePosix => "locks_remove_posix",
            Kind::SchedWaking => "sched_waking",
            Kind::SchedWakeup => "sched_wakeup",
            Kind::SchedSwitch => "sched_switch",
            Kind::SchedMigrateTask => "sched_migrate_task",
            Kind::SysEnterFcntl => "sys_enter_fcntl",
            Kind::SysExitFcntl => "sys_exit_fcntl",
            Kind::SysEnterFlock => "sys_enter_flock",
            Kind::SysExitFlock => "sys_exit_flock",
        }
    }

    /// The tracefs category of the tracepoint.
    pub const fn category(self) -> &'static str {
        match self.family() {
            Family::Lock => "filelock",
            Family::Sched => "sched",
            Family::Syscall => "syscalls",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Size in bytes of the whole record (header + payload) for this kind.
    pub const fn record_size(self) -> usize {
        match self.family() {
            Family::Lock => core::mem::size_of::<LockEvent>(),
            Family::Sched => core::mem::size_of::<SchedEvent>(),
            Family::Syscall => core::mem::size_of::<SyscallEvent>(),
        }
    }
}

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// bpf_ktime_get_ns(): CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Process id of the current task (the kernel's tgid).
    pub tgid: u32,
    /// Thread id of the current task (the kernel's pid).
    pub tid: u32,
    /// CPU the event fired on.
    pub cpu: u32,
    /// A [`Kind`] number.
    pub kind: u32,
    /// bpf_get_current_comm().
    pub comm: [u8; 16],
}

/// Payload of the filelock:* tracepoints (posix_lock_inode, flock_lock_inode, fcntl_setlk,
/// locks_remove_posix). All four share the layout of fs/locks.c's `filelock_lock` class
/// (include/trace/events/filelock.h at v6.18).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockBody {
    /// `struct file_lock *` of the request (the kernel reuses addresses).
    pub fl: u64,
    pub ino: u64,
    /// The request or lock this request waits under (`fl_blocker`, 0 when not blocked).
    pub blocker: u64,
    /// `fl_owner`: the `files_struct` for POSIX locks, the `struct file` for OFD and flock locks.
    pub owner: u64,
    pub start: i64,
    pub end: i64,
    /// `s_dev` in the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    /// FL_* flags (FL_POSIX=1, FL_FLOCK=2, FL_SLEEP=128, FL_OFDLCK=1024, ...).
    pub flags: u32,
    /// `fl_pid` as recorded in the lock.
    pub fl_pid: u32,
    /// The function's return value (0, -errno, or FILE_LOCK_DEFERRED=1 when it blocked).
    pub ret: i32,
    /// F_RDLCK=0, F_WRLCK=1, F_UNLCK=2.
    pub lock_type: u8,
    pub _pad: [u8; 7],
}

/// Payload of the sched:* tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedBody {
    /// sched_waking/wakeup/migrate: the task acted on; sched_switch: `next_pid`.
    pub target_tid: u32,
    /// sched_waking/wakeup: `target_cpu`; sched_migrate_task: `dest_cpu`; switch: current CPU.
    pub target_cpu: i32,
    /// sched_migrate_task: `orig_cpu`; otherwise -1.
    pub orig_cpu: i32,
    pub prio: i32,
    /// sched_switch: `prev_state` of the task switched out (0 = runnable/preempted).
    pub prev_state: i64,
    /// Name of the task acted on (`comm` / `next_comm`).
    pub target_comm: [u8; 16],
}

/// Payload of the syscalls:sys_{enter,exit}_{fcntl,flock} tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallBody {
    /// enter: the fd argument; exit: 0.
    pub fd: u64,
    /// enter: the cmd argument (F_SETLKW, LOCK_EX, ...); exit: the cmd of the matching enter.
    pub cmd: u64,
    /// enter: the arg pointer (fcntl); exit: 0.
    pub arg: u64,
    /// exit: the return value; enter: 0.
    pub ret: i64,
    /// fcntl lock commands: the user's `struct flock` read at entry (else 0).
    pub l_start: i64,
    pub l_len: i64,
    pub l_type: i16,
    pub l_whence: i16,
    /// 1 when `l_*` were read from user memory.
    pub flock_valid: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockEvent {
    pub hdr: Header,
    pub body: LockBody,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedEvent {
    pub hdr: Header,
    pub body: SchedBody,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallEvent {
    pub hdr: Header,
    pub body: SyscallBody,
}

// Layouts are part of the contract: any change here is a format change.
const _: () = assert!(core::mem::size_of::<Header>() == 40);
const _: () = assert!(core::mem::size_of::<LockBody>() == 72);
const _: () = assert!(core::mem::size_of::<SchedBody>() == 40);
const _: () = assert!(core::mem::size_of::<SyscallBody>() == 56);
const _: () = assert!(core::mem::size_of::<LockEvent>() == 112);
const _: () = assert!(core::mem::size_of::<SchedEvent>() == 80);
const _: () = assert!(core::mem::size_of::<SyscallEvent>() == 96);

/// Offsets of the fields a filelock:* program reads, in bytes from the start of the tracepoint
/// record, as the kernel's `format` file gives them. `size_*` distinguishes 4/8-byte fields where
/// kernels differ. A field the kernel lacks is `u16::MAX`... but all of them are required.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockOffsets {
    pub fl: u16,
    pub ino: u16,
    pub dev: u16,
    pub blocker: u16,
    pub owner: u16,
    pub pid: u16,
    pub flags: u16,
    pub lock_type: u16,
    pub start: u16,
    pub end: u16,
    pub ret: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<LockOffsets>() == 24);

/// Offsets of the sched:* fields read by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedOffsets {
    /// sched_waking / sched_wakeup (same class `sched_wakeup_template`).
    pub wake_comm: u16,
    pub wake_pid: u16,
    pub wake_prio: u16,
    pub wake_target_cpu: u16,
    /// sched_switch.
    pub switch_prev_pid: u16,
    pub switch_prev_state: u16,
    pub switch_next_comm: u16,
    pub switch_next_pid: u16,
    pub switch_next_prio: u16,
    /// sched_migrate_task.
    pub migrate_pid: u16,
    pub migrate_prio: u16,
    pub migrate_orig_cpu: u16,
    pub migrate_dest_cpu: u16,
    /// sched_process_fork.
    pub fork_parent_pid: u16,
    pub fork_child_pid: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SchedOffsets>() == 32);

/// Filter settings, written by the loader before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// 1: only tasks whose tgid is in `MAP_TRACED_TGIDS` (extended on fork); 0: every task.
    pub by_tgid: u32,
    /// 1: only lock events on an inode in `MAP_TRACED_INODES`; tasks that lock one are then
    /// added to the traced tgids.
    pub by_inode: u32,
    /// 1: the lean probe set ([`LEAN_PROBES`]): no syscall programs, so the lock programs keep
    /// `MAP_IN_REQUEST` instead, marking a task from the first lock event that blocked it
    /// (FILE_LOCK_DEFERRED) until it exits; 0: the syscall programs keep it.
    pub lean: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FilterConfig>() == 16);

/// The programs a lean capture attaches (`lockrace run --probes lean`): the lock decisions,
/// the wakeups and switches of blocked waiters, and fork/exit bookkeeping; not the syscall
/// enter/exit pairs, fcntl_setlk, sched_wakeup or sched_migrate_task (four fewer events per
/// uncontended fcntl lock call: one instead of four).
pub const LEAN_PROBES: [&str; 7] = [
    "posix_lock_inode",
    "flock_lock_inode",
    "locks_remove_posix",
    "sched_waking",
    "sched_switch",
    "sched_process_fork",
    "sched_process_exit",
];

/// How a fast program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A classic tracepoint of this tracefs category (the record the kernel builds).
    Tracepoint(&'static str),
    /// A BTF-typed tracepoint (`tp_btf`): the tracepoint's C arguments.
    BtfTracepoint,
}

/// One program of the fast probe set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastProbe {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    pub tracepoint: &'static str,
    pub attach: Attach,
}

const fn classic(program: &'static str, tracepoint: &'static str) -> FastProbe {
    FastProbe {
        program,
        tracepoint,
        attach: Attach::Tracepoint("filelock"),
    }
}

const fn btf(program: &'static str, tracepoint: &'static str) -> FastProbe {
    FastProbe {
        program,
        tracepoint,
        attach: Attach::BtfTracepoint,
    }
}

/// The programs of the fast probe set (`capture::Probes::Fast`). What they ship:
/// - every filelock decision (posix_lock_inode, flock_lock_inode, locks_remove_posix), of
///   traced tasks and files, exactly as the classic programs do;
/// - fcntl_setlk only when it says something posix_lock_inode did not: an error other than
///   EAGAIN (a wait ended by a signal: -ERESTARTSYS/-EINTR, ENOLCK, ...), or EAGAIN from a
///   file whose filesystem decides locks itself (`f_op->lock`, e.g. NFS);
/// - sched_waking of a task waiting for a lock ([`MAP_WAITING`]: from its block,
///   FILE_LOCK_DEFERRED, to its next decision), and sched_switch when the task switched out or
///   in is waiting; no sched_wakeup, no sched_migrate_task, no syscall enter/exit;
/// - fork and exit bookkeeping.
///
/// The filelock programs run on the classic tracepoints (measured on Linux 6.18, programs that
/// return at once: a classic tracepoint program's dispatch costs ~13 ns per hit, a `tp_btf`
/// one's ~45; with the bodies, the same body on the classic tracepoint came out 8-12 ns per
/// lock call cheaper in two interleaved series), with a body cheaper than the classic set's (a per-pid byte map instead of a hash lookup, the task's ids
/// and comm read through BTF instead of by helpers, no ring-buffer query of the reader's
/// position). Nothing runs them nested (lock events are never raised inside a BPF program or
/// an interrupt), so the classic programs' shared per-CPU recursion guard costs them nothing.
/// The scheduler programs, which run on every context switch and wakeup of the machine (also
/// inside interrupts and inside other programs' ring-buffer wakeups), are `tp_btf`: each has
/// its own recursion guard, where the classic ones lost hundreds of events per capture.
pub const FAST_PROBES: [FastProbe; 8] = [
    classic("fast_posix_lock", "posix_lock_inode"),
    classic("fast_flock_lock", "flock_lock_inode"),
    classic("fast_setlk", "fcntl_setlk"),
    classic("fast_rm_posix", "locks_remove_posix"),
    btf("fast_waking", "sched_waking"),
    btf("fast_switch", "sched_switch"),
    btf("fast_fork", "sched_process_fork"),
    btf("fast_exit", "sched_process_exit"),
];

/// Byte offsets into kernel structs for the fast programs, from the running kernel's BTF.
/// 6.9 moved the generic fields of `struct file_lock` into `struct file_lock_core c` (names
/// `flc_*`); the loader resolves either layout to these offsets from `struct file_lock`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastOffsets {
    /// struct file_lock: `fl_blocker`/`c.flc_blocker` (pointer), `fl_owner`/`c.flc_owner`
    /// (pointer), `fl_pid`/`c.flc_pid` (4), `fl_flags`/`c.flc_flags` (4), `fl_type`/`c.flc_type`
    /// (1), `fl_start`, `fl_end` (8), `fl_file`/`c.flc_file` (pointer).
    pub fl_blocker: u16,
    pub fl_owner: u16,
    pub fl_pid: u16,
    pub fl_flags: u16,
    pub fl_type: u16,
    pub fl_start: u16,
    pub fl_end: u16,
    pub fl_file: u16,
    /// struct inode: `i_ino` (8), `i_sb` (pointer); struct super_block: `s_dev` (4).
    pub i_ino: u16,
    pub i_sb: u16,
    pub s_dev: u16,
    /// struct file: `f_op` (pointer); struct file_operations: `lock` (pointer).
    pub f_op: u16,
    pub fop_lock: u16,
    /// struct task_struct: `pid` (4), `tgid` (4), `prio` (4), `comm` (16), the CPU
    /// (`thread_info.cpu` or `cpu`, 4), `__state`/`state` (4 or 8: `state_size`), `exit_state`
    /// (4).
    pub t_pid: u16,
    pub t_tgid: u16,
    pub t_prio: u16,
    pub t_comm: u16,
    pub t_cpu: u16,
    pub t_state: u16,
    pub t_exit_state: u16,
    pub state_size: u16,
    /// 1 when sched_switch passes `prev_state` as its 4th argument (5.18+); 0: read
    /// `prev->__state`.
    pub switch_state_arg: u16,
    pub _pad: [u16; 2],
}
const _: () = assert!(core::mem::size_of::<FastOffsets>() == 48);

/// `prev_state` of a `sched_switch` record, computed from the raw task state exactly as the
/// classic tracepoint does (include/trace/events/sched.h `__trace_sched_switch_state`): a
/// preempted task reports `TASK_REPORT_MAX` (0x100), otherwise the single highest reportable
/// state bit (idle tasks 0x80, rt-lock waiters and frozen tasks as uninterruptible), 0 for
/// a task that is still running.
pub const fn switch_state(preempt: bool, state: u32, exit_state: u32) -> i64 {
    const TASK_REPORT: u32 = 0x7f;
    const TASK_UNINTERRUPTIBLE: u32 = 0x2;
    const TASK_IDLE: u32 = 0x2 | 0x400;
    const TASK_RTLOCK_WAIT: u32 = 0x1000;
    const TASK_FROZEN: u32 = 0x8000;
    const TASK_REPORT_IDLE: u32 = TASK_REPORT + 1;
    const TASK_REPORT_MAX: i64 = (TASK_REPORT_IDLE as i64) << 1;
    if preempt {
        return TASK_REPORT_MAX;
    }
    let mut s = (state | exit_state) & TASK_REPORT;
    if state & TASK_IDLE == TASK_IDLE {
        s = TASK_REPORT_IDLE;
    }
    if state & TASK_RTLOCK_WAIT != 0 || state & TASK_FROZEN != 0 {
        s = TASK_UNINTERRUPTIBLE;
    }
    if s == 0 {
        0
    } else {
        // 1 << (fls(s) - 1): the highest set bit.
        1i64 << (31 - s.leading_zeros())
    }
}

/// Ids (tgids, tids) per entry of the byte maps [`MAP_TGID_TRACED`] and [`MAP_WAITING`]: each
/// entry is a u64 holding one byte per id, so that two CPUs marking neighbouring ids never
/// overwrite each other (byte stores) and a lookup is an array access the verifier inlines.
pub const IDS_PER_ENTRY: u32 = 8;

/// Key of `MAP_TRACED_INODES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

pub const GLOBAL_LOCK_OFFSETS: &str = "LOCK_OFFSETS";
pub const GLOBAL_SCHED_OFFSETS: &str = "SCHED_OFFSETS";
pub const GLOBAL_FILTER: &str = "FILTER";
/// u64: ring-buffer fill level (bytes) above which a submit wakes the reader; below it records
/// are submitted without a wakeup and the reader polls on a timer (batching). 0: wake always.
pub const GLOBAL_WAKEUP_BYTES: &str = "WAKEUP_BYTES";

pub const MAP_EVENTS: &str = "EVENTS";
/// Per-CPU loss counters, one slot each: [`DROPS_RING_FULL`], [`DROPS_MAP_FULL`].
pub const MAP_DROPS: &str = "DROPS";
/// `DROPS` slot: records not written because the ring buffer was full.
pub const DROPS_RING_FULL: u32 = 0;
/// `DROPS` slot: tasks not followed because `TRACED_TGIDS` or `IN_REQUEST` was full (a new
/// child of a traced process, or a task's first lock request): their later events are missing.
pub const DROPS_MAP_FULL: u32 = 1;
/// Slots of `DROPS`.
pub const DROPS_SLOTS: u32 = 2;
pub const MAP_TRACED_TGIDS: &str = "TRACED_TGIDS";
pub const MAP_TRACED_INODES: &str = "TRACED_INODES";
/// Fast probe set: tgid -> traced (one byte per tgid, [`IDS_PER_ENTRY`] per entry), sized from
/// /proc/sys/kernel/pid_max at load; filled by user space, extended on fork.
pub const MAP_TGID_TRACED: &str = "TGID_TRACED";
/// Fast probe set: tid -> waiting for a lock (one byte per tid): set when a lock event of the
/// task returns FILE_LOCK_DEFERRED, cleared at its next decision or exit. Its sched events are
/// shipped while it is set.
pub const MAP_WAITING: &str = "WAITING";
pub const GLOBAL_FAST_OFFSETS: &str = "FAST_OFFSETS";
/// tid -> the fcntl cmd or flock operation of the lock request the task is inside, or
/// [`IN_REQUEST_IDLE`] between requests: sys_exit writes the sentinel in place instead of
/// deleting the entry, so a task's next request is a lookup and a store rather than a hash
/// insert (and its exit a store rather than a delete); sched_process_exit deletes the entry.
pub const MAP_IN_REQUEST: &str = "IN_REQUEST";
/// `IN_REQUEST` value of a task that is not inside a request (syscall arguments are at most
/// 32-bit values for the commands traced, so no cmd equals it).
pub const IN_REQUEST_IDLE: u64 = u64::MAX;

/// Where the programs' direct loads of a tracepoint record end (bytes from its start): each
/// program copies bytes 8..END of its record with plain loads (cheaper than one
/// `bpf_probe_read_kernel` per field) and picks the fields at the loader's offsets from the copy.
/// The kernel refuses to attach a program that may load past the record's last field, so the
/// loader checks every record is at least this long. Unchanged since 5.0: filelock_lock ends
/// with `int ret` at 80, sched_wakeup_template with `int target_cpu` at 32, sched_switch with
/// `int next_prio` at 60, sched_migrate_task (6.18, `__data_loc` comm) with `int dest_cpu` at 24.
pub const DIRECT_READ_LOCK: usize = 84;
pub const DIRECT_READ_WAKING: usize = 36;
pub const DIRECT_READ_SWITCH: usize = 64;
pub const DIRECT_READ_MIGRATE: usize = 28;

/// Index into `LOCK_OFFSETS` (one entry per filelock tracepoint).
pub const LOCK_TP_POSIX: usize = 0;
pub const LOCK_TP_FLOCK: usize = 1;
pub const LOCK_TP_FCNTL_SETLK: usize = 2;
pub const LOCK_TP_REMOVE_POSIX: usize = 3;
pub const LOCK_TP_COUNT: usize = 4;

/// Kernel constants used on both sides (include/uapi/asm-generic/fcntl.h, include/linux/filelock.h).
pub mod k {
    pub const F_GETLK: u64 = 5;
    pub const F_SETLK: u64 = 6;
    pub const F_SETLKW: u64 = 7;
    pub const F_OFD_GETLK: u64 = 36;
    pub const F_OFD_SETLK: u64 = 37;
    pub const F_OFD_SETLKW: u64 = 38;
    pub const F_RDLCK: u8 = 0;
    pub const F_WRLCK: u8 = 1;
    pub const F_UNLCK: u8 = 2;
    pub const FL_POSIX: u32 = 1;
    pub const FL_FLOCK: u32 = 2;
    pub const FL_SLEEP: u32 = 128;
    pub const FL_OFDLCK: u32 = 1024;
    /// posix_lock_inode / flock_lock_inode return value when the request blocked.
    pub const FILE_LOCK_DEFERRED: i32 = 1;
    pub const LOCK_SH: u64 = 1;
    pub const LOCK_EX: u64 = 2;
    pub const LOCK_NB: u64 = 4;
    pub const LOCK_UN: u64 = 8;

    /// True for the fcntl commands that take or test a lock.
    pub const fn is_lock_cmd(cmd: u64) -> bool {
        matches!(
            cmd,
            F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW
        )
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, repr(C), no padding (asserted above).
    unsafe impl aya::Pod for LockOffsets {}
    unsafe impl aya::Pod for SchedOffsets {}
    unsafe impl aya::Pod for FilterConfig {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for FastOffsets {}
}

#[cfg(test)]
mod tests {
    use super::switch_state;

    #[test]
    fn switch_state_matches_the_classic_tracepoint() {
        // Preempted: TASK_REPORT_MAX whatever the state.
        assert_eq!(switch_state(true, 0x1, 0), 0x100);
        // Running, sleeping (interruptible), uninterruptible, stopped.
        assert_eq!(switch_state(false, 0, 0), 0);
        assert_eq!(switch_state(false, 0x1, 0), 0x1);
        assert_eq!(switch_state(false, 0x2, 0), 0x2);
        assert_eq!(switch_state(false, 0x4, 0), 0x4);
        // TASK_IDLE (uninterruptible | noload) reports as idle; a dead task as EXIT_DEAD.
        assert_eq!(switch_state(false, 0x402, 0), 0x80);
        assert_eq!(switch_state(false, 0, 0x10), 0x10);
        // Freezing and rt-lock waits report as uninterruptible.
        assert_eq!(switch_state(false, 0x8000 | 0x1, 0), 0x2);
        assert_eq!(switch_state(false, 0x1000, 0), 0x2);
        // Non-reportable bits alone (TASK_WAKEKILL) are "running".
        assert_eq!(switch_state(false, 0x100, 0), 0);
    }
}
