//! tracefs: find it, parse tracepoint `format` files, and resolve the field offsets the eBPF
//! programs read (handed to them as globals).
//!
//! Invariants: offsets are never hard-coded for the filelock and sched tracepoints; each field is
//! found by name, trying the known aliases (5.0-6.8 `fl_type, fl_blocker, fl_owner, fl_pid,
//! fl_flags`; 6.9+ `type, blocker, owner, pid, flags`), and its size is checked against what the
//! program reads. A missing tracepoint or field is an error that names it.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use lockrace_common::{
    DIRECT_READ_LOCK, DIRECT_READ_MIGRATE, DIRECT_READ_SWITCH, DIRECT_READ_WAKING, Kind,
    LOCK_TP_COUNT, LockOffsets, SchedOffsets,
};

/// One `field:` line of a format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ctype: String,
    pub offset: usize,
    pub size: usize,
}

/// A parsed `format` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: Option<u32>,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// A line that looks like a field but does not parse.
    BadLine { line: usize, text: String },
    /// The tracepoint exists but lacks a field lockrace needs.
    MissingField { event: String, field: &'static str },
    /// The field has a size the programs do not read.
    BadSize {
        event: String,
        field: String,
        size: usize,
        expected: usize,
    },
    /// The tracepoint does not exist on this kernel.
    MissingEvent { event: String },
    /// The format file could not be read (other than not existing).
    Io { path: String, error: String },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::BadLine { line, text } => {
                write!(f, "format line {line} does not parse: {text:?}")
            }
            FormatError::MissingField { event, field } => {
                write!(
                    f,
                    "tracepoint {event} has no field `{field}` (nor any known alias)"
                )
            }
            FormatError::BadSize {
                event,
                field,
                size,
                expected,
            } => write!(
                f,
                "tracepoint {event} field `{field}` is {size} bytes, lockrace reads {expected}"
            ),
            FormatError::MissingEvent { event } => {
                write!(f, "this kernel has no tracepoint {event}")
            }
            FormatError::Io { path, error } => write!(f, "cannot read {path}: {error}"),
        }
    }
}
impl std::error::Error for FormatError {}

/// Parse the text of a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<Format, FormatError> {
    let mut out = Format::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("name:") {
            out.name = name.trim().to_string();
        } else if let Some(id) = line.strip_prefix("ID:") {
            out.id = id.trim().parse().ok();
        } else if line.starts_with("field:") {
            out.fields
                .push(parse_field(line).ok_or_else(|| FormatError::BadLine {
                    line: i + 1,
                    text: raw.to_string(),
                })?);
        }
    }
    Ok(out)
}

/// `field:unsigned char type;<TAB>offset:56;<TAB>size:1;<TAB>signed:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse().ok();
        }
    }
    let decl = decl?;
    // The name is the last identifier of the declaration once array brackets are removed
    // (`char comm[16]`, `__data_loc char[] comm`).
    let mut without_array = String::with_capacity(decl.len());
    let mut depth = 0usize;
    for c in decl.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => without_array.push(c),
            _ => {}
        }
    }
    let without_array = without_array.trim_end();
    // The separator may be any character, also a multi-byte one (found by fuzzing).
    let (split, sep) = without_array
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))?;
    let name = &without_array[split + sep.len_utf8()..];
    if name.is_empty() {
        return None;
    }
    Some(Field {
        name: name.to_string(),
        ctype: decl.to_string(),
        offset: offset?,
        size: size?,
    })
}

impl Format {
    /// Offset of the first of `names` present, checking its size.
    fn offset(&self, names: &[&'static str], sizes: &[usize]) -> Result<u16, FormatError> {
        let field = names
            .iter()
            .find_map(|n| self.fields.iter().find(|f| f.name == *n))
            .ok_or_else(|| FormatError::MissingField {
                event: self.name.clone(),
                field: names[0],
            })?;
        if !sizes.contains(&field.size) {
            return Err(FormatError::BadSize {
                event: self.name.clone(),
                field: field.name.clone(),
                size: field.size,
                expected: sizes[0],
            });
        }
        u16::try_from(field.offset).map_err(|_| FormatError::BadLine {
            line: 0,
            text: format!("{} offset {}", field.name, field.offset),
        })
    }
}

/// Resolve the filelock offsets from one filelock tracepoint's format.
pub fn lock_offsets(f: &Format) -> Result<LockOffsets, FormatError> {
    Ok(LockOffsets {
        fl: f.offset(&["fl"], &[8])?,
        ino: f.offset(&["i_ino"], &[8])?,
        dev: f.offset(&["s_dev"], &[4])?,
        blocker: f.offset(&["blocker", "fl_blocker"], &[8])?,
        owner: f.offset(&["owner", "fl_owner"], &[8])?,
        pid: f.offset(&["pid", "fl_pid"], &[4])?,
        flags: f.offset(&["flags", "fl_flags"], &[4])?,
        lock_type: f.offset(&["type", "fl_type"], &[1])?,
        start: f.offset(&["fl_start"], &[8])?,
        end: f.offset(&["fl_end"], &[8])?,
        ret: f.offset(&["ret"], &[4])?,
        _pad: 0,
    })
}

/// Which naming generation the filelock fields use (for the report and the VM checks).
pub fn lock_field_names(f: &Format) -> &'static str {
    if f.fields.iter().any(|x| x.name == "fl_type") {
        "fl_type (5.0-6.8 names)"
    } else {
        "type (6.9+ names)"
    }
}

/// Resolve the sched offsets from the formats of sched_waking, sched_switch,
/// sched_migrate_task and sched_process_fork.
pub fn sched_offsets(
    waking: &Format,
    switch: &Format,
    migrate: &Format,
    fork: &Format,
) -> Result<SchedOffsets, FormatError> {
    let comm = waking.fields.iter().find(|x| x.name == "comm");
    if comm.is_some_and(|c| c.size != 16) {
        return Err(FormatError::BadSize {
            event: waking.name.clone(),
            field: "comm".into(),
            size: comm.map_or(0, |c| c.size),
            expected: 16,
        });
    }
    Ok(SchedOffsets {
        wake_comm: waking.offset(&["comm"], &[16])?,
        wake_pid: waking.offset(&["pid"], &[4])?,
        wake_prio: waking.offset(&["prio"], &[4])?,
        wake_target_cpu: waking.offset(&["target_cpu"], &[4])?,
        switch_prev_pid: switch.offset(&["prev_pid"], &[4])?,
        switch_prev_state: switch.offset(&["prev_state"], &[8])?,
        switch_next_comm: switch.offset(&["next_comm"], &[16])?,
        switch_next_pid: switch.offset(&["next_pid"], &[4])?,
        switch_next_prio: switch.offset(&["next_prio"], &[4])?,
        migrate_pid: migrate.offset(&["pid"], &[4])?,
        migrate_prio: migrate.offset(&["prio"], &[4])?,
        migrate_orig_cpu: migrate.offset(&["orig_cpu"], &[4])?,
        migrate_dest_cpu: migrate.offset(&["dest_cpu"], &[4])?,
        fork_parent_pid: fork.offset(&["parent_pid"], &[4])?,
        fork_child_pid: fork.offset(&["child_pid"], &[4])?,
        _pad: 0,
    })
}

/// The syscall programs read fixed offsets (args at 16 + 8*i, ret at 16); check this kernel
/// agrees before loading them.
pub fn check_syscall_layout(
    enter: &Format,
    exit: &Format,
    nargs: usize,
) -> Result<(), FormatError> {
    let args: Vec<&Field> = enter
        .fields
        .iter()
        .filter(|f| !f.name.starts_with("common_"))
        .collect();
    for (i, f) in args
        .iter()
        .filter(|f| f.name != "__syscall_nr")
        .take(nargs)
        .enumerate()
    {
        if f.offset != 16 + 8 * i || f.size != 8 {
            return Err(FormatError::BadSize {
                event: enter.name.clone(),
                field: format!("{} (offset {})", f.name, f.offset),
                size: f.size,
                expected: 8,
            });
        }
    }
    let ret = exit.offset(&["ret"], &[8])?;
    if ret != 16 {
        return Err(FormatError::BadSize {
            event: exit.name.clone(),
            field: format!("ret (offset {ret})"),
            size: 8,
            expected: 8,
        });
    }
    Ok(())
}

/// Where tracefs is mounted, if it is.
pub fn find_root() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Read and parse `<root>/events/<category>/<name>/format`.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Format, FormatError> {
    let path = root.join("events").join(category).join(name).join("format");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut f = parse_format(&text)?;
            if f.name.is_empty() {
                f.name = name.to_string();
            }
            f.name = format!("{category}:{}", f.name);
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FormatError::MissingEvent {
            event: format!("{category}:{name}"),
        }),
        Err(e) => Err(FormatError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        }),
    }
}

/// The record is at least `needed` bytes long: the programs load its bytes 8..`needed`
/// directly (`lockrace_common::DIRECT_READ_*`), and the kernel refuses to attach a program that
/// may load past the last field.
pub fn check_record_len(f: &Format, needed: usize) -> Result<(), FormatError> {
    let end = f
        .fields
        .iter()
        .map(|x| x.offset + x.size)
        .max()
        .unwrap_or(0);
    if end < needed {
        return Err(FormatError::BadSize {
            event: f.name.clone(),
            field: "(the whole record)".into(),
            size: end,
            expected: needed,
        });
    }
    Ok(())
}

/// Everything the loader hands the programs, resolved from one kernel's tracefs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub lock: [LockOffsets; LOCK_TP_COUNT],
    pub sched: SchedOffsets,
    /// "fl_type (5.0-6.8 names)" or "type (6.9+ names)".
    pub lock_field_names: &'static str,
}

/// The filelock tracepoints, in `LOCK_OFFSETS` index order.
pub const LOCK_TPS: [Kind; LOCK_TP_COUNT] = [
    Kind::PosixLockInode,
    Kind::FlockLockInode,
    Kind::FcntlSetlk,
    Kind::LocksRemovePosix,
];

/// Resolve all offsets from the tracefs (or a saved copy of its `events/` tree) at `root`.
pub fn resolve(root: &Path) -> Result<Offsets, FormatError> {
    let mut lock = [LockOffsets::default(); LOCK_TP_COUNT];
    let mut names = "";
    for (i, kind) in LOCK_TPS.iter().enumerate() {
        let f = read_format(root, "filelock", kind.name())?;
        lock[i] = lock_offsets(&f)?;
        names = lock_field_names(&f);
        check_record_len(&f, DIRECT_READ_LOCK)?;
    }
    let waking = read_format(root, "sched", "sched_waking")?;
    let switch = read_format(root, "sched", "sched_switch")?;
    let migrate = read_format(root, "sched", "sched_migrate_task")?;
    check_record_len(&waking, DIRECT_READ_WAKING)?;
    check_record_len(&switch, DIRECT_READ_SWITCH)?;
    check_record_len(&migrate, DIRECT_READ_MIGRATE)?;
    let sched = sched_offsets(
        &waking,
        &switch,
        &migrate,
        &read_format(root, "sched", "sched_process_fork")?,
    )?;
    // sched_wakeup shares sched_waking's class (sched_wakeup_template); check rather than assume.
    let wakeup = read_format(root, "sched", "sched_wakeup")?;
    check_record_len(&wakeup, DIRECT_READ_WAKING)?;
    if wakeup.offset(&["pid"], &[4])? != sched.wake_pid
        || wakeup.offset(&["target_cpu"], &[4])? != sched.wake_target_cpu
    {
        return Err(FormatError::BadSize {
            event: wakeup.name.clone(),
            field: "pid/target_cpu (layout differs from sched_waking)".into(),
            size: 0,
            expected: 0,
        });
    }
    check_syscall_layout(
        &read_format(root, "syscalls", "sys_enter_fcntl")?,
        &read_format(root, "syscalls", "sys_exit_fcntl")?,
        3,
    )?;
    check_syscall_layout(
        &read_format(root, "syscalls", "sys_enter_flock")?,
        &read_format(root, "syscalls", "sys_exit_flock")?,
        2,
    )?;
    Ok(Offsets {
        lock,
        sched,
        lock_field_names: names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures(release: &str) -> PathBuf {
        // The saved trees hold `<category>/<event>/format`; resolve() expects `<root>/events/...`,
        // so the fixture directory itself is laid out with an `events` level.
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tracefs")
            .join(release)
    }

    #[test]
    fn parses_field_lines() {
        let f = parse_field("field:unsigned char type;\toffset:56;\tsize:1;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.offset, f.size), ("type", 56, 1));
        let f = parse_field("field:char comm[16];\toffset:8;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.offset, f.size), ("comm", 8, 16));
        let f =
            parse_field("field:__data_loc char[] comm;\toffset:8;\tsize:4;\tsigned:0;").unwrap();
        assert_eq!((f.name.as_str(), f.size), ("comm", 4));
        assert!(parse_field("field:;offset:x;size:1;").is_none());
        assert!(matches!(
            parse_format("field: oops"),
            Err(FormatError::BadLine { line: 1, .. })
        ));
    }

    #[test]
    fn resolves_6_18_names() {
        let o = resolve(&fixtures("6.18.44-fc-v657")).unwrap();
        assert_eq!(o.lock_field_names, "type (6.9+ names)");
        for l in o.lock {
            assert_eq!(
                (
                    l.fl,
                    l.ino,
                    l.dev,
                    l.blocker,
                    l.owner,
                    l.pid,
                    l.flags,
                    l.lock_type,
                    l.start,
                    l.end,
                    l.ret
                ),
                (8, 16, 24, 32, 40, 48, 52, 56, 64, 72, 80)
            );
        }
        assert_eq!(
            (
                o.sched.migrate_pid,
                o.sched.migrate_orig_cpu,
                o.sched.migrate_dest_cpu
            ),
            (12, 20, 24)
        );
        assert_eq!(
            (o.sched.switch_prev_state, o.sched.switch_next_pid),
            (32, 56)
        );
    }

    #[test]
    fn resolves_6_1_names() {
        let o = resolve(&fixtures("6.1.0-54-cloud-amd64")).unwrap();
        assert_eq!(o.lock_field_names, "fl_type (5.0-6.8 names)");
        assert_eq!(
            (o.lock[0].lock_type, o.lock[0].ret, o.lock[0].blocker),
            (56, 80, 32)
        );
        // 6.1's sched_migrate_task has `char comm[16]`, which moves pid and the CPUs.
        assert_eq!(
            (
                o.sched.migrate_pid,
                o.sched.migrate_orig_cpu,
                o.sched.migrate_dest_cpu
            ),
            (24, 32, 36)
        );
    }

    #[test]
    fn missing_field_and_event_are_named() {
        let text = "name: posix_lock_inode\nformat:\n\tfield:struct file_lock * fl;\toffset:8;\tsize:8;\tsigned:0;\n";
        let mut f = parse_format(text).unwrap();
        f.name = "filelock:posix_lock_inode".into();
        let e = lock_offsets(&f).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tracepoint filelock:posix_lock_inode has no field `i_ino` (nor any known alias)"
        );
        let e = read_format(Path::new("/nonexistent"), "filelock", "posix_lock_inode").unwrap_err();
        assert_eq!(
            e.to_string(),
            "this kernel has no tracepoint filelock:posix_lock_inode"
        );
    }

    #[test]
    fn wrong_size_is_refused() {
        let text = "name: x\n\tfield:int type;\toffset:56;\tsize:4;\tsigned:0;\n";
        let f = parse_format(text).unwrap();
        assert!(matches!(
            f.offset(&["type"], &[1]),
            Err(FormatError::BadSize { size: 4, .. })
        ));
    }

    #[test]
    fn a_record_shorter_than_the_direct_loads_is_refused() {
        let text = "name: sched_switch\n\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n";
        let f = parse_format(text).unwrap();
        let err = check_record_len(&f, DIRECT_READ_SWITCH).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::BadSize {
                    size: 60,
                    expected: 64,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(check_record_len(&f, 60).is_ok());
    }
}
