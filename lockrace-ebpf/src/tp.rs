//! Reading the tracepoint record: one copy of its first bytes into the stack, then fields at
//! the loader's offsets from that copy, instead of one `bpf_probe_read_kernel` call per field.
//!
//! A tracepoint program may load its context directly, but only at offsets the verifier sees as
//! constants (a context pointer moved by a value read from a global is refused), and the field
//! offsets are deliberately not constants: they come from the running kernel's `format` files
//! (read-only globals). So [`Record::copy`] loads the first `N` 8-byte words with constant
//! offsets (plain loads, no helper call), and [`Record::field`] reads a field from the stack
//! copy at its offset. Invariants: word 0 (the common fields, which programs may not read) is
//! never loaded; a field outside the copy, or not aligned to its size, is read with
//! `bpf_probe_read_kernel` as before (0 when that fails), so any offset the loader hands over
//! still gives the kernel's value; the verifier checks every access (constant offsets from
//! frozen read-only globals make the fallback branch dead code on every kernel seen so far).
use aya_ebpf::{EbpfContext, programs::TracePointContext};

/// Bytes 8..END of a tracepoint record, in `N` 8-byte words (`END <= N * 8`).
pub struct Record<const N: usize, const END: usize> {
    words: [u64; N],
}

impl<const N: usize, const END: usize> Record<N, END> {
    /// Copy bytes 8..END of the record: 8-byte loads, then one 4-byte load when END is not a
    /// multiple of 8 (a program that loads past the record's last field is refused at attach
    /// time with EACCES, so END is exactly where the last field ends).
    #[inline(always)]
    pub fn copy(ctx: &TracePointContext) -> Record<N, END> {
        const {
            assert!(END >= 8 && END <= N * 8 && END % 4 == 0);
        };
        let base = ctx.as_ptr() as *const u8;
        let mut words = [0u64; N];
        let mut i = 1;
        while (i + 1) * 8 <= END {
            // SAFETY: constant, aligned offset >= 8 inside the record (END is checked against
            // the kernel's format file by the loader).
            words[i] = unsafe { core::ptr::read_volatile(base.add(i * 8) as *const u64) };
            i += 1;
        }
        if END % 8 == 4 {
            // SAFETY: as above, the last 4 bytes.
            words[i] =
                u64::from(unsafe { core::ptr::read_volatile(base.add(i * 8) as *const u32) });
        }
        Record { words }
    }

    /// The field of type `T` at byte offset `off` of the record.
    #[inline(always)]
    pub fn field<T: Copy + Default>(&self, ctx: &TracePointContext, off: u16) -> T {
        let size = core::mem::size_of::<T>();
        let align = core::mem::align_of::<T>();
        let off = off as usize;
        if off >= 8 && off + size <= END && off % align == 0 {
            // Masking keeps the alignment visible to the verifier even were `off` not a
            // constant to it; it changes nothing for an aligned offset.
            let off = off & !(align - 1);
            // SAFETY: in bounds of `words` (checked above) and aligned for T; T is a plain
            // integer or byte array; little-endian, so the 4-byte tail sits at its offset.
            unsafe { core::ptr::read((self.words.as_ptr() as *const u8).add(off) as *const T) }
        } else {
            // SAFETY: `off` comes from the kernel's own format file for this tracepoint.
            unsafe { ctx.read_at::<T>(off) }.unwrap_or_default()
        }
    }
}

/// A word of the record at a constant offset (syscall records have one fixed layout).
#[inline(always)]
pub fn word<const OFF: usize>(ctx: &TracePointContext) -> u64 {
    const { assert!(OFF >= 8 && OFF % 8 == 0) };
    // SAFETY: constant, aligned offset inside the syscall record (checked by the loader
    // against the format file).
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(OFF) as *const u64) }
}

/// One offset from a read-only global, read as its own 2-byte load so that the verifier knows
/// its value (it tracks loads from frozen read-only maps as constants, but not a field picked
/// out of a larger copy of the global on the stack).
#[inline(always)]
pub fn off(field: &u16) -> u16 {
    // SAFETY: a field of a read-only global set by the loader before load; volatile so the
    // compiler does not fold the compiled-in default.
    unsafe { core::ptr::read_volatile(field) }
}
