//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and
//! tracepoint prototypes, for the typed (`tp_btf`) programs of `Probes::Fast`.
//!
//! aya 0.14 parses BTF but does not expose member offsets, so this module reads the format
//! itself (include/uapi/linux/btf.h): a header, a type section (one record per type, ids from
//! 1, 0 is `void`) and a string section. Only what the loader asks for is interpreted:
//! structs and unions with their members, pointers, ints, enums, arrays, typedefs and
//! qualifiers, function prototypes; every other kind is skipped by its documented length.
//!
//! Invariants: parsing never panics on any input (every length is checked, a bad blob is a
//! [`BtfError`]); a member path (`c.flc_flags`) names members through anonymous structs and
//! unions as the C compiler does, and offsets are bytes from the start of the outer struct;
//! bitfield members are refused (no program reads one).
use std::fmt;

const MAGIC: u16 = 0xeb9f;

/// (internal, for tests) read the kernel's BTF from this file instead of
/// /sys/kernel/btf/vmlinux; a file that does not exist is a kernel without BTF.
pub const BTF_ENV: &str = "LOCKRACE_BTF";

/// BTF kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtfError {
    /// Shorter than its header says, or a record runs past the type section.
    Truncated(&'static str),
    BadMagic(u16),
    UnknownKind {
        id: u32,
        kind: u8,
    },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Truncated(what) => write!(f, "BTF is cut short ({what})"),
            BtfError::BadMagic(m) => write!(f, "not BTF (magic {m:#06x})"),
            BtfError::UnknownKind { id, kind } => {
                write!(f, "BTF type {id} has unknown kind {kind}")
            }
        }
    }
}
impl std::error::Error for BtfError {}

/// A member of a struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    name: u32,
    ty: u32,
    /// Bits from the start of the enclosing type.
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Type {
    name: u32,
    kind: u8,
    /// INT, STRUCT, UNION, ENUM, ENUM64, FLOAT: size in bytes; PTR, TYPEDEF, qualifiers,
    /// FUNC: the referenced type; FUNC_PROTO: the return type.
    size_or_type: u32,
    /// ARRAY: element type; otherwise 0.
    elem: u32,
    /// ARRAY: elements.
    nelems: u32,
    /// Range in `members` (STRUCT, UNION) or `params` (FUNC_PROTO).
    first: u32,
    count: u32,
}

/// Where a member is, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Bytes from the start of the outer struct.
    pub offset: u32,
    /// Size in bytes of the member's type (pointers 8).
    pub size: u32,
    /// The member's type id (qualifiers and typedefs resolved).
    pub ty: u32,
}

/// A parsed BTF blob.
pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id; entry 0 is `void`.
    types: Vec<Type>,
    members: Vec<Member>,
    /// FUNC_PROTO parameters: their types.
    params: Vec<u32>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    /// The running kernel's BTF, or None when it has none (CONFIG_DEBUG_INFO_BTF unset).
    /// [`BTF_ENV`] names another file (tests use it to exercise the fallback).
    pub fn from_sys() -> Result<Option<Btf>, String> {
        let path = std::env::var(BTF_ENV).unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
        match std::fs::read(&path) {
            Ok(b) => Btf::parse(&b).map(Some).map_err(|e| format!("{path}: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {path}: {e}")),
        }
    }

    /// Parse a little-endian BTF blob (the byte order of every kernel lockrace runs on).
    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        let magic = u16_at(b, 0).ok_or(BtfError::Truncated("header"))?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let h = |at| u32_at(b, at).ok_or(BtfError::Truncated("header"));
        let hdr_len = h(4)? as usize;
        let (type_off, type_len) = (h(8)? as usize, h(12)? as usize);
        let (str_off, str_len) = (h(16)? as usize, h(20)? as usize);
        let section = |off: usize, len: usize, what| {
            let start = hdr_len.checked_add(off).ok_or(BtfError::Truncated(what))?;
            let end = start.checked_add(len).ok_or(BtfError::Truncated(what))?;
            b.get(start..end).ok_or(BtfError::Truncated(what))
        };
        let tsec = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?.to_vec();
        let mut btf = Btf {
            strings,
            types: vec![Type {
                name: 0,
                kind: 0,
                size_or_type: 0,
                elem: 0,
                nelems: 0,
                first: 0,
                count: 0,
            }],
            members: Vec::new(),
            params: Vec::new(),
        };
        let mut at = 0usize;
        let cut = BtfError::Truncated("type record");
        while at < tsec.len() {
            let id = btf.types.len() as u32;
            let name = u32_at(tsec, at).ok_or(cut.clone())?;
            let info = u32_at(tsec, at + 4).ok_or(cut.clone())?;
            let size_or_type = u32_at(tsec, at + 8).ok_or(cut.clone())?;
            at += 12;
            let k = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut t = Type {
                name,
                kind: k,
                size_or_type,
                elem: 0,
                nelems: 0,
                first: 0,
                count: 0,
            };
            let need = |at: usize, n: usize| {
                at.checked_add(n)
                    .filter(|&e| e <= tsec.len())
                    .ok_or(BtfError::Truncated("type record"))
            };
            match k {
                kind::INT | kind::VAR | kind::DECL_TAG => at = need(at, 4)?,
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => {}
                kind::ARRAY => {
                    let end = need(at, 12)?;
                    t.elem = u32_at(tsec, at).ok_or(cut.clone())?;
                    t.nelems = u32_at(tsec, at + 8).ok_or(cut.clone())?;
                    at = end;
                }
                kind::STRUCT | kind::UNION => {
                    let end = need(at, vlen * 12)?;
                    t.first = btf.members.len() as u32;
                    t.count = vlen as u32;
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let off = u32_at(tsec, m + 8).ok_or(cut.clone())?;
                        let (bit_offset, bitfield) = if kind_flag {
                            (off & 0xff_ffff, off >> 24 != 0)
                        } else {
                            (off, false)
                        };
                        btf.members.push(Member {
                            name: u32_at(tsec, m).ok_or(cut.clone())?,
                            ty: u32_at(tsec, m + 4).ok_or(cut.clone())?,
                            bit_offset,
                            bitfield,
                        });
                    }
                    at = end;
                }
                kind::ENUM => at = need(at, vlen * 8)?,
                kind::ENUM64 | kind::DATASEC => at = need(at, vlen * 12)?,
                kind::FUNC_PROTO => {
                    let end = need(at, vlen * 8)?;
                    t.first = btf.params.len() as u32;
                    t.count = vlen as u32;
                    for i in 0..vlen {
                        btf.params
                            .push(u32_at(tsec, at + i * 8 + 4).ok_or(cut.clone())?);
                    }
                    at = end;
                }
                _ => return Err(BtfError::UnknownKind { id, kind: k }),
            }
            btf.types.push(t);
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// The id of the first type of `kind` named `name`.
    fn find(&self, k: u8, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == k && self.name(t.name) == name.as_bytes())
            .map(|i| i as u32)
    }

    /// Follow typedefs and qualifiers (bounded: a cycle in a bad blob ends the walk).
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id).map(|t| t.kind) {
                Some(
                    kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG,
                ) => id = self.ty(id).map_or(0, |t| t.size_or_type),
                _ => return id,
            }
        }
        id
    }

    /// Size in bytes of a type, None for void, functions and unsized kinds.
    fn size_of(&self, id: u32) -> Option<u32> {
        let id = self.resolve(id);
        let t = self.ty(id)?;
        match t.kind {
            kind::INT | kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::FLOAT => {
                Some(t.size_or_type)
            }
            kind::PTR => Some(8),
            kind::ARRAY => self.size_of(t.elem)?.checked_mul(t.nelems),
            _ => None,
        }
    }

    /// Member `name` of the struct/union `id`, searching anonymous members too: (bit offset
    /// from the start of `id`, member).
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, Member)> {
        let t = *self.ty(self.resolve(id))?;
        if !matches!(t.kind, kind::STRUCT | kind::UNION) || depth > 8 {
            return None;
        }
        let ms = self
            .members
            .get(t.first as usize..(t.first + t.count) as usize)?;
        for m in ms {
            if self.name(m.name) == name.as_bytes() {
                return Some((m.bit_offset, *m));
            }
        }
        for m in ms.iter().filter(|m| m.name == 0) {
            if let Some((off, found)) = self.member(m.ty, name, depth + 1) {
                return Some((m.bit_offset.checked_add(off)?, found));
            }
        }
        None
    }

    /// Where `path` (`c.flc_flags`: dot-separated member names) is in `struct NAME`.
    pub fn field(&self, struct_name: &str, path: &str) -> Option<Field> {
        let mut id = self.find(kind::STRUCT, struct_name)?;
        let mut bits = 0u32;
        let mut last = None;
        for part in path.split('.') {
            let (off, m) = self.member(id, part, 0)?;
            if m.bitfield {
                return None;
            }
            bits = bits.checked_add(off)?;
            id = m.ty;
            last = Some(m);
        }
        let m = last?;
        if !bits.is_multiple_of(8) {
            return None;
        }
        Some(Field {
            offset: bits / 8,
            size: self.size_of(m.ty)?,
            ty: self.resolve(m.ty),
        })
    }

    /// The first of `paths` that `struct NAME` has (kernels rename members).
    pub fn field_any(&self, struct_name: &str, paths: &[&str]) -> Option<(Field, usize)> {
        paths
            .iter()
            .enumerate()
            .find_map(|(i, p)| self.field(struct_name, p).map(|f| (f, i)))
    }

    /// The arguments of tracepoint `name` as the kernel passes them to a raw or BTF program
    /// (`btf_trace_NAME`, a pointer to a prototype whose first parameter is the hidden
    /// `void *__data`): one [`Arg`] per TP_PROTO parameter.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<Arg>> {
        let td = self.find(kind::TYPEDEF, &format!("btf_trace_{name}"))?;
        let ptr = self.ty(self.resolve(td))?;
        if ptr.kind != kind::PTR {
            return None;
        }
        let proto = self.ty(self.resolve(ptr.size_or_type))?;
        if proto.kind != kind::FUNC_PROTO || proto.count == 0 {
            return None;
        }
        let params = self
            .params
            .get(proto.first as usize + 1..(proto.first + proto.count) as usize)?;
        Some(params.iter().map(|&p| self.arg(p)).collect())
    }

    fn arg(&self, id: u32) -> Arg {
        let r = self.resolve(id);
        match self.ty(r) {
            Some(t) if t.kind == kind::PTR => {
                let to = self.resolve(t.size_or_type);
                match self.ty(to) {
                    Some(s) if matches!(s.kind, kind::STRUCT | kind::UNION | kind::FWD) => {
                        Arg::StructPtr(String::from_utf8_lossy(self.name(s.name)).into_owned())
                    }
                    _ => Arg::OtherPtr,
                }
            }
            Some(t) if matches!(t.kind, kind::INT | kind::ENUM | kind::ENUM64) => {
                Arg::Scalar(t.size_or_type)
            }
            _ => Arg::Other,
        }
    }
}

/// One tracepoint argument's type, as far as the loader checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A pointer to `struct NAME` (or union).
    StructPtr(String),
    OtherPtr,
    /// An integer (or bool, enum) of this many bytes.
    Scalar(u32),
    Other,
}

impl Arg {
    pub fn is_ptr_to(&self, name: &str) -> bool {
        matches!(self, Arg::StructPtr(n) if n == name)
    }
}

/// Why the fast programs cannot use this kernel's BTF (the loader then falls back to the
/// classic tracepoints, saying this).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// A struct member the programs read is missing or has another size.
    Field {
        what: &'static str,
        size: Option<u32>,
    },
    /// A tracepoint's prototype is not the one the programs were written for.
    Prototype { tracepoint: &'static str },
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Field { what, size: None } => write!(f, "the kernel's BTF has no {what}"),
            Unusable::Field {
                what,
                size: Some(n),
            } => write!(f, "{what} is {n} bytes in the kernel's BTF"),
            Unusable::Prototype { tracepoint } => {
                write!(f, "tracepoint {tracepoint} has an unexpected prototype")
            }
        }
    }
}

/// The offsets the fast programs read, from this kernel's BTF; checks every tracepoint
/// prototype they rely on (`lockrace-ebpf/src/fast.rs`).
pub fn fast_offsets(btf: &Btf) -> Result<lockrace_common::FastOffsets, Unusable> {
    let get = |st: &'static str, paths: &[&str], sizes: &[u32], what: &'static str| {
        let (f, _) = btf
            .field_any(st, paths)
            .ok_or(Unusable::Field { what, size: None })?;
        if !sizes.contains(&f.size) {
            return Err(Unusable::Field {
                what,
                size: Some(f.size),
            });
        }
        let off = u16::try_from(f.offset).map_err(|_| Unusable::Field { what, size: None })?;
        Ok((off, f.size))
    };
    let fl = |paths: &[&str], size: u32, what| get("file_lock", paths, &[size], what).map(|f| f.0);
    let task =
        |paths: &[&str], size: u32, what| get("task_struct", paths, &[size], what).map(|f| f.0);
    for tp in [
        "posix_lock_inode",
        "flock_lock_inode",
        "fcntl_setlk",
        "locks_remove_posix",
    ] {
        let ok = btf.tracepoint_args(tp).is_some_and(|a| {
            a.len() == 3
                && a[0].is_ptr_to("inode")
                && a[1].is_ptr_to("file_lock")
                && a[2] == Arg::Scalar(4)
        });
        if !ok {
            return Err(Unusable::Prototype { tracepoint: tp });
        }
    }
    let task_arg = |tp: &'static str, i: usize| {
        btf.tracepoint_args(tp)
            .is_some_and(|a| a.get(i).is_some_and(|x| x.is_ptr_to("task_struct")))
            .then_some(())
            .ok_or(Unusable::Prototype { tracepoint: tp })
    };
    task_arg("sched_waking", 0)?;
    task_arg("sched_process_fork", 1)?;
    task_arg("sched_process_exit", 0)?;
    task_arg("sched_switch", 1)?;
    task_arg("sched_switch", 2)?;
    let switch = btf.tracepoint_args("sched_switch").unwrap_or_default();
    let switch_state_arg = match switch.len() {
        4 if switch[3] == Arg::Scalar(4) => 1,
        3 => 0,
        _ => {
            return Err(Unusable::Prototype {
                tracepoint: "sched_switch",
            });
        }
    };
    let (t_state, state_size) = get(
        "task_struct",
        &["__state", "state"],
        &[4, 8],
        "task_struct.__state",
    )?;
    Ok(lockrace_common::FastOffsets {
        fl_blocker: fl(&["c.flc_blocker", "fl_blocker"], 8, "file_lock.fl_blocker")?,
        fl_owner: fl(&["c.flc_owner", "fl_owner"], 8, "file_lock.fl_owner")?,
        fl_pid: fl(&["c.flc_pid", "fl_pid"], 4, "file_lock.fl_pid")?,
        fl_flags: fl(&["c.flc_flags", "fl_flags"], 4, "file_lock.fl_flags")?,
        fl_type: fl(&["c.flc_type", "fl_type"], 1, "file_lock.fl_type")?,
        fl_start: fl(&["fl_start"], 8, "file_lock.fl_start")?,
        fl_end: fl(&["fl_end"], 8, "file_lock.fl_end")?,
        fl_file: fl(&["c.flc_file", "fl_file"], 8, "file_lock.fl_file")?,
        i_ino: get("inode", &["i_ino"], &[8], "inode.i_ino")?.0,
        i_sb: get("inode", &["i_sb"], &[8], "inode.i_sb")?.0,
        s_dev: get("super_block", &["s_dev"], &[4], "super_block.s_dev")?.0,
        f_op: get("file", &["f_op"], &[8], "file.f_op")?.0,
        fop_lock: get("file_operations", &["lock"], &[8], "file_operations.lock")?.0,
        t_pid: task(&["pid"], 4, "task_struct.pid")?,
        t_tgid: task(&["tgid"], 4, "task_struct.tgid")?,
        t_prio: task(&["prio"], 4, "task_struct.prio")?,
        t_comm: task(&["comm"], 16, "task_struct.comm")?,
        t_cpu: task(&["thread_info.cpu", "cpu"], 4, "task_struct.cpu")?,
        t_state,
        t_exit_state: task(&["exit_state"], 4, "task_struct.exit_state")?,
        state_size: state_size as u16,
        switch_state_arg,
        _pad: [0; 2],
    })
}

#[cfg(test)]
pub mod build;

#[cfg(test)]
mod tests;
