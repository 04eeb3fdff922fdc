//! Ring-buffer output and drop accounting: the only place records are written.
//!
//! Invariants: every record is either submitted whole or counted in `DROPS` (per CPU, read by
//! user space at the end of a capture); records are written in place in the reserved slot,
//! every field (padding included) by the caller, so nothing of an earlier record shows through.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use lockrace_common::{DROPS_MAP_FULL, DROPS_RING_FULL, DROPS_SLOTS, Header, Kind};

/// Default 16 MiB; the loader may resize it (`--ring-buffer-mb`).
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Losses per CPU: records not written (ring buffer full), tasks not followed (a map full).
#[map(name = "DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROPS_SLOTS, 0);

/// Batching threshold (see `GLOBAL_WAKEUP_BYTES`): waking the reader for every record would put
/// a context switch on the traced workload's CPUs for every lock call (the probe effect).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 0;

/// The wakeup threshold (`GLOBAL_WAKEUP_BYTES`, a power of two, or 0: wake always).
#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    // SAFETY: read-only global set by the loader before load.
    unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) }
}

#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: read-only global set by the loader before load.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if threshold == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(p) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}

/// A record was not written: the ring buffer is full.
#[inline(always)]
pub fn count_drop() {
    count(DROPS_RING_FULL);
}

/// A task will not be followed: an insert into a filter map failed (the map is full).
#[inline(always)]
pub fn count_map_full() {
    count(DROPS_MAP_FULL);
}

/// Fill the common header of a reserved record in place (the comm is written straight into the
/// ring buffer by the helper: no stack copy). `pid_tgid` is the caller's
/// `bpf_get_current_pid_tgid()`: every program has fetched it already for its filter.
#[inline(always)]
pub fn write_header(h: *mut Header, kind: Kind, pid_tgid: u64) {
    // SAFETY: `h` points into a reserved ring-buffer record of at least size_of::<Header>();
    // every field is written; the helpers have no preconditions.
    unsafe {
        (*h).ts_ns = bpf_ktime_get_ns();
        (*h).tgid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).cpu = bpf_get_smp_processor_id();
        (*h).kind = kind as u32;
        let comm = core::ptr::addr_of_mut!((*h).comm);
        if generated::bpf_get_current_comm(comm.cast(), 16) != 0 {
            *comm = [0; 16];
        }
    }
}

/// Reserve a record of type `T`, let `fill` write every one of its fields through the pointer
/// (in place: no stack copy), submit it; count a drop if the ring is full.
#[inline(always)]
pub fn record<T: 'static>(fill: impl FnOnce(*mut T)) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            fill(entry.as_mut_ptr());
            entry.submit(submit_flags());
        }
        None => count_drop(),
    }
}
