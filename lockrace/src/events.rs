//! Decoded events: the one user-space representation of what the kernel recorded.
//!
//! Both live capture (raw ring-buffer records, [`decode`]) and saved files (JSONL, [`from_json`])
//! end up as [`Event`]s, so the analysis cannot tell them apart. An event's JSONL line is one
//! flat object ([`JsonEvent`], fields documented in docs/EVENTS.md); fields that do not apply to
//! an event's family are omitted. The rest of the file format (header, acquisitions, trailer,
//! the writer and the reader) is `crate::jsonl`.
//!
//! Invariants: decoding never panics on any input (truncated records, unknown kinds and bad JSON
//! are errors); `ts_ns` is CLOCK_MONOTONIC nanoseconds.
use std::fmt;

pub use lockrace_common::Kind;
use lockrace_common::{Family, Header, LockBody, SchedBody, SyscallBody};
use serde::{Deserialize, Serialize};

/// A task name as the kernel keeps it (16 bytes, NUL padded). Kept inline: no allocation.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.0[..end])
    }
    /// At most 15 bytes of `s`, cut at a character boundary.
    pub fn from_str_lossy(s: &str) -> Comm {
        let mut out = [0u8; 16];
        let n = floor_char_boundary(s, 15);
        out[..n].copy_from_slice(&s.as_bytes()[..n]);
        Comm(out)
    }

    /// The name as JSONL writes it: [`Comm::as_str`] cut to what [`Comm::from_str_lossy`] keeps
    /// (a name with bytes that are not UTF-8 grows when they become U+FFFD), so that reading a
    /// line back and writing it again gives the same line (found by fuzzing).
    pub fn to_json_string(&self) -> String {
        let mut s = self.as_str().into_owned();
        s.truncate(floor_char_boundary(&s, 15));
        s
    }
}

/// The largest character boundary of `s` at or below `max`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// filelock:* payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockData {
    pub dev: u32,
    pub ino: u64,
    pub owner: u64,
    pub fl: u64,
    pub blocker: u64,
    /// 0 read, 1 write, 2 unlock.
    pub lock_type: u8,
    pub flags: u32,
    pub ret: i32,
    pub start: i64,
    pub end: i64,
    pub fl_pid: u32,
}

/// sched:* payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedData {
    pub target_tid: u32,
    pub target_cpu: i32,
    pub orig_cpu: i32,
    pub prio: i32,
    pub prev_state: i64,
    pub target_comm: Comm,
}

/// syscalls:* payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallData {
    pub fd: u64,
    pub cmd: u64,
    pub ret: i64,
    /// The user's `struct flock` at fcntl entry, when it could be read.
    pub l_type: Option<i16>,
    pub l_whence: i16,
    pub l_start: i64,
    pub l_len: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    Lock(LockData),
    Sched(SchedData),
    Syscall(SyscallData),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub cpu: u32,
    pub tgid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub kind: Kind,
    pub data: Data,
}

impl Event {
    pub fn lock(&self) -> Option<&LockData> {
        match &self.data {
            Data::Lock(l) => Some(l),
            _ => None,
        }
    }
    pub fn sched(&self) -> Option<&SchedData> {
        match &self.data {
            Data::Sched(s) => Some(s),
            _ => None,
        }
    }
    pub fn syscall(&self) -> Option<&SyscallData> {
        match &self.data {
            Data::Syscall(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short { len: usize, need: usize },
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { len, need } => {
                write!(f, "truncated record: {len} bytes, need {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown event kind {k}"),
        }
    }
}
impl std::error::Error for DecodeError {}

/// Read a `repr(C)` plain-old-data value from the front of `buf`.
fn read_pod<T: Copy>(buf: &[u8]) -> Option<T> {
    if buf.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is one of lockrace-common's POD records (any bit pattern valid);
    // read_unaligned copes with any alignment of the ring-buffer slice.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Decode one raw ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let hdr: Header = read_pod(buf).ok_or(DecodeError::Short {
        len: buf.len(),
        need: size_of::<Header>(),
    })?;
    let kind = Kind::from_u32(hdr.kind).ok_or(DecodeError::UnknownKind(hdr.kind))?;
    let need = kind.record_size();
    if buf.len() < need {
        return Err(DecodeError::Short {
            len: buf.len(),
            need,
        });
    }
    let body = &buf[size_of::<Header>()..];
    let data = match kind.family() {
        Family::Lock => {
            let b: LockBody = read_pod(body).expect("length checked");
            Data::Lock(LockData {
                dev: b.dev,
                ino: b.ino,
                owner: b.owner,
                fl: b.fl,
                blocker: b.blocker,
                lock_type: b.lock_type,
                flags: b.flags,
                ret: b.ret,
                start: b.start,
                end: b.end,
                fl_pid: b.fl_pid,
            })
        }
        Family::Sched => {
            let b: SchedBody = read_pod(body).expect("length checked");
            Data::Sched(SchedData {
                target_tid: b.target_tid,
                target_cpu: b.target_cpu,
                orig_cpu: b.orig_cpu,
                prio: b.prio,
                prev_state: b.prev_state,
                target_comm: Comm(b.target_comm),
            })
        }
        Family::Syscall => {
            let b: SyscallBody = read_pod(body).expect("length checked");
            Data::Syscall(SyscallData {
                fd: b.fd,
                cmd: b.cmd,
                ret: b.ret,
                l_type: (b.flock_valid != 0).then_some(b.l_type),
                l_whence: b.l_whence,
                l_start: b.l_start,
                l_len: b.l_len,
            })
        }
    };
    Ok(Event {
        ts_ns: hdr.ts_ns,
        cpu: hdr.cpu,
        tgid: hdr.tgid,
        tid: hdr.tid,
        comm: Comm(hdr.comm),
        kind,
        data,
    })
}

/// The flat JSONL form of an [`Event`] (docs/EVENTS.md).
#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct JsonEvent {
    pub ts_ns: u64,
    pub cpu: u32,
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dev: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ino: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub blocker: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lock_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub flags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ret: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fl_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_cpu: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub orig_cpu: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prio: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prev_state: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target_comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cmd: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub l_type: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub l_whence: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub l_start: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub l_len: Option<i64>,
}

impl From<&Event> for JsonEvent {
    fn from(e: &Event) -> Self {
        let mut j = JsonEvent {
            ts_ns: e.ts_ns,
            cpu: e.cpu,
            tgid: e.tgid,
            tid: e.tid,
            comm: e.comm.to_json_string(),
            kind: e.kind.name().to_string(),
            ..Default::default()
        };
        match &e.data {
            Data::Lock(l) => {
                j.dev = Some(l.dev);
                j.ino = Some(l.ino);
                j.owner = Some(l.owner);
                j.fl = Some(l.fl);
                j.blocker = Some(l.blocker);
                j.lock_type = Some(l.lock_type);
                j.flags = Some(l.flags);
                j.ret = Some(l.ret as i64);
                j.start = Some(l.start);
                j.end = Some(l.end);
                j.fl_pid = Some(l.fl_pid);
            }
            Data::Sched(s) => {
                j.target_tid = Some(s.target_tid);
                j.target_cpu = Some(s.target_cpu);
                if s.orig_cpu >= 0 {
                    j.orig_cpu = Some(s.orig_cpu);
                }
                j.prio = Some(s.prio);
                if e.kind == Kind::SchedSwitch {
                    j.prev_state = Some(s.prev_state);
                }
                j.target_comm = Some(s.target_comm.to_json_string());
            }
            Data::Syscall(s) => {
                j.cmd = Some(s.cmd);
                if matches!(e.kind, Kind::SysEnterFcntl | Kind::SysEnterFlock) {
                    j.fd = Some(s.fd);
                } else {
                    j.ret = Some(s.ret);
                }
                if let Some(t) = s.l_type {
                    j.l_type = Some(t);
                    j.l_whence = Some(s.l_whence);
                    j.l_start = Some(s.l_start);
                    j.l_len = Some(s.l_len);
                }
            }
        }
        j
    }
}

/// Why a JSONL line could not become an [`Event`].
#[derive(Debug)]
pub enum JsonError {
    Syntax(serde_json::Error),
    UnknownKind(String),
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    OutOfRange {
        field: &'static str,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(e) => write!(f, "not a lockrace event: {e}"),
            JsonError::UnknownKind(k) => write!(f, "unknown event kind {k:?}"),
            JsonError::Missing { kind, field } => write!(f, "{kind} event without field `{field}`"),
            JsonError::OutOfRange { field } => write!(f, "field `{field}` out of range"),
        }
    }
}
impl std::error::Error for JsonError {}

impl TryFrom<JsonEvent> for Event {
    type Error = JsonError;
    fn try_from(j: JsonEvent) -> Result<Self, JsonError> {
        let kind =
            Kind::from_name(&j.kind).ok_or_else(|| JsonError::UnknownKind(j.kind.clone()))?;
        let name = kind.name();
        macro_rules! need {
            ($f:ident) => {
                j.$f.ok_or(JsonError::Missing {
                    kind: name,
                    field: stringify!($f),
                })?
            };
        }
        let data = match kind.family() {
            Family::Lock => Data::Lock(LockData {
                dev: need!(dev),
                ino: need!(ino),
                owner: need!(owner),
                fl: need!(fl),
                blocker: need!(blocker),
                lock_type: need!(lock_type),
                flags: need!(flags),
                ret: i32::try_from(need!(ret))
                    .map_err(|_| JsonError::OutOfRange { field: "ret" })?,
                start: need!(start),
                end: need!(end),
                fl_pid: j.fl_pid.unwrap_or(0),
            }),
            Family::Sched => Data::Sched(SchedData {
                target_tid: need!(target_tid),
                target_cpu: need!(target_cpu),
                orig_cpu: j.orig_cpu.unwrap_or(-1),
                prio: j.prio.unwrap_or(0),
                prev_state: j.prev_state.unwrap_or(0),
                target_comm: Comm::from_str_lossy(j.target_comm.as_deref().unwrap_or("")),
            }),
            Family::Syscall => Data::Syscall(SyscallData {
                fd: j.fd.unwrap_or(0),
                cmd: need!(cmd),
                ret: j.ret.unwrap_or(0),
                l_type: j.l_type,
                l_whence: j.l_whence.unwrap_or(0),
                l_start: j.l_start.unwrap_or(0),
                l_len: j.l_len.unwrap_or(0),
            }),
        };
        Ok(Event {
            ts_ns: j.ts_ns,
            cpu: j.cpu,
            tgid: j.tgid,
            tid: j.tid,
            comm: Comm::from_str_lossy(&j.comm),
            kind,
            data,
        })
    }
}

/// Parse one JSONL line.
pub fn from_json(line: &str) -> Result<Event, JsonError> {
    let j: JsonEvent = serde_json::from_str(line).map_err(JsonError::Syntax)?;
    Event::try_from(j)
}

/// Serialize one event as a JSONL line (without the newline).
pub fn to_json(e: &Event) -> String {
    serde_json::to_string(&JsonEvent::from(e)).expect("JsonEvent always serializes")
}

/// [`to_json`] without serde or allocation: appends the same bytes (a test checks it) to `out`.
/// The JSONL writer's per-event path (`--events FILE`, `lockrace record`), about 5x faster.
pub fn push_json(out: &mut Vec<u8>, e: &Event) {
    out.extend_from_slice(b"{\"ts_ns\":");
    push_u64(out, e.ts_ns);
    push_field_u(out, b"cpu", e.cpu.into());
    push_field_u(out, b"tgid", e.tgid.into());
    push_field_u(out, b"tid", e.tid.into());
    out.extend_from_slice(b",\"comm\":");
    push_comm(out, &e.comm);
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(e.kind.name().as_bytes());
    out.push(b'"');
    match &e.data {
        Data::Lock(l) => {
            push_field_u(out, b"dev", l.dev.into());
            push_field_u(out, b"ino", l.ino);
            push_field_u(out, b"owner", l.owner);
            push_field_u(out, b"fl", l.fl);
            push_field_u(out, b"blocker", l.blocker);
            push_field_u(out, b"lock_type", l.lock_type.into());
            push_field_u(out, b"flags", l.flags.into());
            push_field_i(out, b"ret", l.ret.into());
            push_field_i(out, b"start", l.start);
            push_field_i(out, b"end", l.end);
            push_field_u(out, b"fl_pid", l.fl_pid.into());
        }
        Data::Sched(s) => {
            push_field_u(out, b"target_tid", s.target_tid.into());
            push_field_i(out, b"target_cpu", s.target_cpu.into());
            if s.orig_cpu >= 0 {
                push_field_i(out, b"orig_cpu", s.orig_cpu.into());
            }
            push_field_i(out, b"prio", s.prio.into());
            if e.kind == Kind::SchedSwitch {
                push_field_i(out, b"prev_state", s.prev_state);
            }
            out.extend_from_slice(b",\"target_comm\":");
            push_comm(out, &s.target_comm);
        }
        Data::Syscall(s) => {
            if matches!(e.kind, Kind::SysEnterFcntl | Kind::SysEnterFlock) {
                push_field_u(out, b"fd", s.fd);
                push_field_u(out, b"cmd", s.cmd);
            } else {
                push_field_i(out, b"ret", s.ret);
                push_field_u(out, b"cmd", s.cmd);
            }
            if let Some(t) = s.l_type {
                push_field_i(out, b"l_type", t.into());
                push_field_i(out, b"l_whence", s.l_whence.into());
                push_field_i(out, b"l_start", s.l_start);
                push_field_i(out, b"l_len", s.l_len);
            }
        }
    }
    out.push(b'}');
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_field_u(out: &mut Vec<u8>, name: &[u8], v: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    push_u64(out, v);
}

fn push_field_i(out: &mut Vec<u8>, name: &[u8], v: i64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name);
    out.extend_from_slice(b"\":");
    push_i64(out, v);
}

/// A task name as a JSON string, as [`JsonEvent`] writes it: the name up to its NUL, lossy
/// UTF-8, cut to at most 15 bytes at a character boundary, escaped like serde_json does.
fn push_comm(out: &mut Vec<u8>, c: &Comm) {
    let s = c.as_str();
    let mut n = s.len().min(15);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.push(b'"');
    for &b in &s.as_bytes()[..n] {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockrace_common::{LockEvent, SchedEvent, SyscallEvent};

    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: POD test records.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn hdr(kind: Kind) -> Header {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"test");
        Header {
            ts_ns: 42,
            tgid: 7,
            tid: 8,
            cpu: 1,
            kind: kind as u32,
            comm,
        }
    }

    #[test]
    fn decodes_each_family_and_round_trips_json() {
        let lock = LockEvent {
            hdr: hdr(Kind::PosixLockInode),
            body: LockBody {
                fl: 0xffff_8880_0000_1000,
                ino: 99,
                blocker: 0,
                owner: 0xffff_8880_0000_2000,
                start: 0,
                end: i64::MAX,
                dev: 0x0000_0001,
                flags: 129,
                fl_pid: 7,
                ret: 1,
                lock_type: 1,
                _pad: [0; 7],
            },
        };
        let sched = SchedEvent {
            hdr: hdr(Kind::SchedSwitch),
            body: SchedBody {
                target_tid: 9,
                target_cpu: 0,
                orig_cpu: -1,
                prio: 120,
                prev_state: 1,
                target_comm: *b"peer\0\0\0\0\0\0\0\0\0\0\0\0",
            },
        };
        let sys = SyscallEvent {
            hdr: hdr(Kind::SysEnterFcntl),
            body: SyscallBody {
                fd: 3,
                cmd: 7,
                arg: 0x7ffd_0000,
                ret: 0,
                l_start: 0,
                l_len: 0,
                l_type: 1,
                l_whence: 0,
                flock_valid: 1,
                _pad: [0; 3],
            },
        };
        for raw in [bytes(&lock), bytes(&sched), bytes(&sys)] {
            let e = decode(&raw).unwrap();
            assert_eq!(e.ts_ns, 42);
            assert_eq!(e.comm.as_str(), "test");
            let back = from_json(&to_json(&e)).unwrap();
            assert_eq!(back, e);
        }
        let e = decode(&bytes(&lock)).unwrap();
        let l = e.lock().unwrap();
        assert_eq!((l.ino, l.ret, l.lock_type, l.flags), (99, 1, 1, 129));
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        let lock = LockEvent {
            hdr: hdr(Kind::PosixLockInode),
            body: LockBody::default(),
        };
        let raw = bytes(&lock);
        assert!(matches!(decode(&raw[..10]), Err(DecodeError::Short { .. })));
        assert!(matches!(
            decode(&raw[..60]),
            Err(DecodeError::Short { need: 112, .. })
        ));
        let mut bad = raw.clone();
        bad[20..24].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(999)));
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn json_errors_are_specific() {
        assert!(matches!(from_json("{"), Err(JsonError::Syntax(_))));
        let e = from_json(r#"{"ts_ns":1,"cpu":0,"tgid":1,"tid":1,"comm":"x","kind":"bogus"}"#);
        assert!(matches!(e, Err(JsonError::UnknownKind(_))));
        let e = from_json(
            r#"{"ts_ns":1,"cpu":0,"tgid":1,"tid":1,"comm":"x","kind":"posix_lock_inode"}"#,
        );
        assert!(matches!(e, Err(JsonError::Missing { field: "dev", .. })));
    }

    #[test]
    fn push_json_writes_exactly_what_serde_writes() {
        let mut events = crate::analysis::synth::handoff_stream(3_000, 5);
        let odd_names: [&[u8]; 7] = [
            b"a\"b\\c\n\r\t\x08\x0c\x01\x1f\x7f",
            b"exactly15bytes!",
            b"sixteen-bytes-xx",
            b"\xff\xfe broken",
            b"caf\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
            b"",
            b"with\0nul",
        ];
        for (i, name) in odd_names.iter().enumerate() {
            let mut c = [0u8; 16];
            c[..name.len()].copy_from_slice(name);
            let mut e = events[i];
            e.comm = Comm(c);
            if let Data::Sched(s) = &mut e.data {
                s.target_comm = Comm(c);
            }
            events.push(e);
        }
        events.push(Event {
            ts_ns: u64::MAX,
            cpu: u32::MAX,
            tgid: 0,
            tid: 1,
            comm: Comm::from_str_lossy("x"),
            kind: Kind::SysExitFcntl,
            data: Data::Syscall(SyscallData {
                ret: i64::MIN,
                cmd: u64::MAX,
                ..Default::default()
            }),
        });
        events.push(Event {
            ts_ns: 0,
            cpu: 0,
            tgid: 0,
            tid: 0,
            comm: Comm::default(),
            kind: Kind::SchedMigrateTask,
            data: Data::Sched(SchedData {
                orig_cpu: 3,
                prev_state: -1,
                ..Default::default()
            }),
        });
        let mut out = Vec::new();
        for e in &events {
            out.clear();
            push_json(&mut out, e);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), to_json(e), "{e:?}");
        }
    }
}
