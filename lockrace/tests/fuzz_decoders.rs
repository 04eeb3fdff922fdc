//! Property-based fuzzing (proptest) of every decoder that reads outside input: the raw
//! ring-buffer record decoder (`events::decode`), the tracefs `format` parser
//! (`capture::tracefs::parse_format`, the offset resolvers and `resolve`), and the JSONL readers
//! (`events::from_json`, `jsonl::file::meta_from_json`, `cmd::report::analyze_file`).
//!
//! Properties: nothing panics on any input (arbitrary bytes, and valid inputs mutated byte- and
//! line-wise); valid inputs round-trip (a kernel-shaped record decodes to the event it encodes
//! and survives JSON; a rendered format file parses back to the fields it was rendered from; a
//! parsed JSONL line serialises back to an equal event or meta line).
//!
//! Case counts are small by default so `cargo test` stays fast: 64 cases per property. For a
//! long run set `PROPTEST_CASES` (cases per batch) and `LOCKRACE_FUZZ_SECS` (keep running
//! batches until that many seconds have passed), e.g.
//! `PROPTEST_CASES=5000 LOCKRACE_FUZZ_SECS=300 cargo test -p lockrace --release --test
//! fuzz_decoders -- --nocapture --test-threads 1`; each property prints how many cases it ran.
//! Crashes found become the `regression_*` tests at the end.
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lockrace::capture::tracefs;
use lockrace::events::{self, Comm, Data, Event, Kind, LockData, SchedData, SyscallData};
use lockrace::jsonl::file as jfile;
use lockrace_common::{
    Header, LockBody, LockEvent, SchedBody, SchedEvent, SyscallBody, SyscallEvent,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Run `test` on `strategy`: one batch of `PROPTEST_CASES` (default 64) cases, or batches until
/// `LOCKRACE_FUZZ_SECS` have passed. Panics with the shrunk input on the first failure.
fn fuzz<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("PROPTEST_CASES").unwrap_or(64).max(1) as u32;
    let secs = env("LOCKRACE_FUZZ_SECS").unwrap_or(0);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz {name}: {e}");
        }
        total += u64::from(cases);
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!(
        "fuzz {name}: {total} cases in {:.1} s without a failure",
        t0.elapsed().as_secs_f64()
    );
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the lockrace-common records are repr(C) plain old data.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// Byte-level mutations: (position, new byte) pairs, then an optional truncation or extension.
#[derive(Clone, Debug)]
struct Mutation {
    writes: Vec<(usize, u8)>,
    cut: Option<usize>,
    extend: Vec<u8>,
}

fn mutation(max_writes: usize) -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..=max_writes),
        prop::option::of(any::<usize>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(writes, cut, extend)| Mutation {
            writes,
            cut,
            extend,
        })
}

fn apply(m: &Mutation, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    if !out.is_empty() {
        for &(pos, b) in &m.writes {
            let n = out.len();
            out[pos % n] = b;
        }
    }
    if let Some(cut) = m.cut {
        out.truncate(cut % (out.len() + 1));
    }
    out.extend_from_slice(&m.extend);
    out
}

/// A JSON round trip is a fixed point: whatever decoded serialises to a line that parses back
/// to an event with the same line.
fn json_fixed_point(e: &Event) -> Result<(), TestCaseError> {
    let line = events::to_json(e);
    let back = events::from_json(&line)
        .map_err(|err| TestCaseError::fail(format!("{line} does not parse back: {err}")))?;
    prop_assert_eq!(events::to_json(&back), line);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// events::decode

fn comm() -> impl Strategy<Value = [u8; 16]> {
    prop::collection::vec(prop::char::range('!', '~'), 0..=15).prop_map(|cs| {
        let mut out = [0u8; 16];
        for (i, c) in cs.into_iter().enumerate() {
            out[i] = c as u8;
        }
        out
    })
}

/// A record as the kernel writes it (fields that do not apply to the kind hold what the
/// programs write: -1 for a missing CPU, 0 elsewhere), and the event it must decode to.
fn kernel_record() -> impl Strategy<Value = (Vec<u8>, Event)> {
    (
        prop::sample::select(Kind::ALL.to_vec()),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            comm(),
        ),
        prop::array::uniform8(any::<u64>()),
        (any::<i32>(), any::<u8>(), any::<bool>(), comm()),
    )
        .prop_map(
            |(kind, (ts, tgid, tid, cpu, comm), w, (ret, lt, valid, tcomm))| {
                let hdr = Header {
                    ts_ns: ts,
                    tgid,
                    tid,
                    cpu,
                    kind: kind as u32,
                    comm,
                };
                let base = Event {
                    ts_ns: ts,
                    cpu,
                    tgid,
                    tid,
                    comm: Comm(hdr.comm),
                    kind,
                    data: Data::Lock(LockData::default()),
                };
                match kind.family() {
                    lockrace_common::Family::Lock => {
                        let body = LockBody {
                            fl: w[0],
                            ino: w[1],
                            blocker: w[2],
                            owner: w[3],
                            start: w[4] as i64,
                            end: w[5] as i64,
                            dev: w[6] as u32,
                            flags: (w[6] >> 32) as u32,
                            fl_pid: w[7] as u32,
                            ret,
                            lock_type: lt,
                            _pad: [0; 7],
                        };
                        let data = Data::Lock(LockData {
                            dev: body.dev,
                            ino: body.ino,
                            owner: body.owner,
                            fl: body.fl,
                            blocker: body.blocker,
                            lock_type: lt,
                            flags: body.flags,
                            ret,
                            start: body.start,
                            end: body.end,
                            fl_pid: body.fl_pid,
                        });
                        (bytes_of(&LockEvent { hdr, body }), Event { data, ..base })
                    }
                    lockrace_common::Family::Sched => {
                        let orig_cpu = if kind == Kind::SchedMigrateTask {
                            (w[2] as i32).max(-1)
                        } else {
                            -1
                        };
                        let prev_state = if kind == Kind::SchedSwitch {
                            w[3] as i64
                        } else {
                            0
                        };
                        let body = SchedBody {
                            target_tid: w[0] as u32,
                            target_cpu: w[1] as i32,
                            orig_cpu,
                            prio: ret,
                            prev_state,
                            target_comm: tcomm,
                        };
                        let data = Data::Sched(SchedData {
                            target_tid: body.target_tid,
                            target_cpu: body.target_cpu,
                            orig_cpu,
                            prio: ret,
                            prev_state,
                            target_comm: Comm(tcomm),
                        });
                        (bytes_of(&SchedEvent { hdr, body }), Event { data, ..base })
                    }
                    lockrace_common::Family::Syscall => {
                        let enter = matches!(kind, Kind::SysEnterFcntl | Kind::SysEnterFlock);
                        let body = SyscallBody {
                            fd: if enter { w[0] } else { 0 },
                            cmd: w[1],
                            arg: w[2],
                            ret: if enter { 0 } else { w[3] as i64 },
                            l_start: if valid { w[4] as i64 } else { 0 },
                            l_len: if valid { w[5] as i64 } else { 0 },
                            l_type: if valid { w[6] as i16 } else { 0 },
                            l_whence: if valid { (w[6] >> 16) as i16 } else { 0 },
                            flock_valid: u8::from(valid),
                            _pad: [0; 3],
                        };
                        let data = Data::Syscall(SyscallData {
                            fd: body.fd,
                            cmd: body.cmd,
                            ret: body.ret,
                            l_type: valid.then_some(body.l_type),
                            l_whence: body.l_whence,
                            l_start: body.l_start,
                            l_len: body.l_len,
                        });
                        (
                            bytes_of(&SyscallEvent { hdr, body }),
                            Event { data, ..base },
                        )
                    }
                }
            },
        )
}

#[test]
fn decode_never_panics_on_arbitrary_bytes() {
    fuzz(
        "decode(arbitrary bytes)",
        prop::collection::vec(any::<u8>(), 0..300),
        |raw| {
            if let Ok(e) = events::decode(&raw) {
                json_fixed_point(&e)?;
            }
            Ok(())
        },
    );
}

#[test]
fn kernel_records_decode_exactly_and_survive_json() {
    fuzz("decode(kernel record)", kernel_record(), |(raw, want)| {
        let got = events::decode(&raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, want);
        let back = events::from_json(&events::to_json(&got))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, got);
        Ok(())
    });
}

#[test]
fn decode_never_panics_on_mutated_records() {
    fuzz(
        "decode(mutated record)",
        (kernel_record(), mutation(8)),
        |((raw, _), m)| {
            let bad = apply(&m, &raw);
            match events::decode(&bad) {
                Ok(e) => json_fixed_point(&e)?,
                Err(err) => prop_assert!(!err.to_string().is_empty()),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// tracefs format files

fn tracefs_fixture(kernel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tracefs")
        .join(kernel)
}

const KERNELS: [&str; 2] = ["6.1.0-54-cloud-amd64", "6.18.44-fc-v657"];

/// Every format file of both fixture kernels: (category, tracepoint, text).
fn format_files() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for k in KERNELS {
        let events = tracefs_fixture(k).join("events");
        for cat in std::fs::read_dir(&events).unwrap() {
            let cat = cat.unwrap().path();
            for tp in std::fs::read_dir(&cat).unwrap() {
                let tp = tp.unwrap().path();
                let text = std::fs::read_to_string(tp.join("format")).unwrap();
                out.push((
                    cat.file_name().unwrap().to_string_lossy().into_owned(),
                    tp.file_name().unwrap().to_string_lossy().into_owned(),
                    text,
                ));
            }
        }
    }
    out.sort();
    out
}

/// Text-level mutations that keep the text UTF-8: byte writes (lossily re-decoded), line
/// deletions and duplications, and digit changes (offsets and sizes).
#[derive(Clone, Debug)]
struct TextMutation {
    bytes: Mutation,
    drop_lines: Vec<usize>,
    dup_lines: Vec<usize>,
    digits: Vec<(usize, char)>,
}

fn text_mutation() -> impl Strategy<Value = TextMutation> {
    (
        mutation(3),
        prop::collection::vec(any::<usize>(), 0..3),
        prop::collection::vec(any::<usize>(), 0..2),
        prop::collection::vec((any::<usize>(), prop::char::range('0', '9')), 0..4),
    )
        .prop_map(|(bytes, drop_lines, dup_lines, digits)| TextMutation {
            bytes,
            drop_lines,
            dup_lines,
            digits,
        })
}

fn mutate_text(m: &TextMutation, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for &i in &m.dup_lines {
        if !lines.is_empty() {
            let i = i % lines.len();
            let l = lines[i].clone();
            lines.insert(i, l);
        }
    }
    for &i in &m.drop_lines {
        if !lines.is_empty() {
            let i = i % lines.len();
            lines.remove(i);
        }
    }
    let mut chars: Vec<char> = lines.join("\n").chars().collect();
    let digit_at: Vec<usize> = (0..chars.len())
        .filter(|&i| chars[i].is_ascii_digit())
        .collect();
    for &(i, d) in &m.digits {
        if !digit_at.is_empty() {
            chars[digit_at[i % digit_at.len()]] = d;
        }
    }
    let s: String = chars.into_iter().collect();
    String::from_utf8_lossy(&apply(&m.bytes, s.as_bytes())).into_owned()
}

/// Whatever the resolvers make of a parsed format, they answer with a value or an error.
fn exercise_format(f: &tracefs::Format) {
    let _ = tracefs::lock_offsets(f);
    let _ = tracefs::lock_field_names(f);
    let _ = tracefs::sched_offsets(f, f, f, f);
}

#[test]
fn parse_format_never_panics_on_mutated_fixtures() {
    let files = format_files();
    assert!(files.len() >= 28, "{} format files", files.len());
    fuzz(
        "parse_format(mutated fixture)",
        (0..files.len(), text_mutation()),
        |(i, m)| {
            let text = mutate_text(&m, &files[i].2);
            match tracefs::parse_format(&text) {
                Ok(f) => exercise_format(&f),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        },
    );
}

#[test]
fn parse_format_never_panics_on_arbitrary_text() {
    fuzz(
        "parse_format(arbitrary text)",
        prop::collection::vec(
            prop::sample::select(vec![
                "field:",
                "offset:",
                "size:",
                "signed:",
                ";",
                "\t",
                "\n",
                "[",
                "]",
                "name:",
                "ID:",
                " ",
                "int x",
                "char c[16]",
                "__data_loc char[] s",
                "9",
                "-1",
                "é",
                "18446744073709551616",
                "99999",
            ]),
            0..40,
        ),
        |parts| {
            let text: String = parts.concat();
            if let Ok(f) = tracefs::parse_format(&text) {
                exercise_format(&f);
            }
            Ok(())
        },
    );
}

#[derive(Clone, Debug)]
struct GenField {
    ty: &'static str,
    name: String,
    array: Option<u8>,
    offset: usize,
    size: usize,
}

#[test]
fn rendered_formats_parse_back_to_their_fields() {
    let field = (
        prop::sample::select(vec![
            "int",
            "unsigned long",
            "struct file_lock *",
            "fl_owner_t",
            "char",
            "__data_loc char[]",
        ]),
        "[a-z_][a-z0-9_]{0,12}",
        prop::option::of(1u8..64),
        0usize..100_000,
        0usize..4096,
    )
        .prop_map(|(ty, name, array, offset, size)| GenField {
            ty,
            name,
            array,
            offset,
            size,
        });
    fuzz(
        "parse_format(rendered)",
        (
            "[a-z_]{1,20}",
            prop::option::of(any::<u32>()),
            prop::collection::vec(field, 0..20),
        ),
        |(name, id, fields)| {
            let mut text = format!("name: {name}\n");
            if let Some(id) = id {
                text.push_str(&format!("ID: {id}\n"));
            }
            text.push_str("format:\n");
            for f in &fields {
                let arr = f.array.map(|n| format!("[{n}]")).unwrap_or_default();
                text.push_str(&format!(
                    "\tfield:{} {}{arr};\toffset:{};\tsize:{};\tsigned:0;\n",
                    f.ty, f.name, f.offset, f.size
                ));
            }
            text.push_str("\nprint fmt: \"field:%d\", REC->x\n");
            let parsed =
                tracefs::parse_format(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&parsed.name, &name);
            prop_assert_eq!(parsed.id, id);
            prop_assert_eq!(parsed.fields.len(), fields.len());
            for (p, f) in parsed.fields.iter().zip(&fields) {
                prop_assert_eq!(&p.name, &f.name);
                prop_assert_eq!((p.offset, p.size), (f.offset, f.size));
            }
            Ok(())
        },
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn resolve_never_panics_on_a_tree_with_a_mutated_format() {
    let files = format_files();
    let trees = tempfile::tempdir().unwrap();
    for k in KERNELS {
        copy_tree(&tracefs_fixture(k), &trees.path().join(k));
        // The pristine trees resolve.
        tracefs::resolve(&tracefs_fixture(k)).unwrap();
    }
    let half = files.len() / KERNELS.len();
    fuzz(
        "resolve(tree with a mutated format)",
        (0..files.len(), text_mutation()),
        |(i, m)| {
            let (cat, tp, text) = &files[i];
            let kernel = KERNELS[(i / half).min(KERNELS.len() - 1)];
            let root = trees.path().join(kernel);
            let path = root.join("events").join(cat).join(tp).join("format");
            let pristine = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, mutate_text(&m, text)).unwrap();
            let result = tracefs::resolve(&root);
            std::fs::write(&path, pristine).unwrap();
            if let Err(e) = result {
                prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// JSONL

fn event_fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events")
            .join(name),
    )
    .unwrap()
}

fn meta_lines() -> Vec<String> {
    use jfile::{FileHeader, FileTrailer, Meta};
    let mut out = vec![jfile::meta_to_json(&Meta::LockraceHeader(FileHeader::new(
        "run --lock posix --share reopen",
    )))];
    for m in jfile::acquisition_chunks("server", 16637, &[(1, false), (2, true), (3, false)]) {
        out.push(jfile::meta_to_json(&m));
    }
    let workload: lockrace::report::model::WorkloadReport =
        serde_json::from_value(serde_json::json!({
            "lock": "posix", "share": "reopen", "iterations": 3,
            "roles": [{"role": "server", "pid": 16637, "iterations": 3, "acquisitions": 3,
                       "whoops": 1, "overlaps": 0, "elapsed_ns": 1000, "memfd_dev": 1,
                       "memfd_ino": 1176}]
        }))
        .unwrap();
    out.push(jfile::meta_to_json(&Meta::LockraceTrailer(FileTrailer {
        events: 200,
        dropped: 0,
        decode_errors: 0,
        incomplete_reasons: vec![],
        lock_field_names: "type (6.9+ names)".into(),
        memfd: Some((1, 1176)),
        workload: Some(workload),
        probes: Some("full".into()),
        programs: vec![],
    })));
    out
}

/// Lines of every fixture (events and meta) to mutate.
fn jsonl_lines() -> Vec<String> {
    let mut lines: Vec<String> = ["ground-truth.jsonl", "ofd-same.jsonl"]
        .iter()
        .flat_map(|f| {
            event_fixture(f)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.extend(meta_lines());
    lines
}

#[test]
fn json_lines_never_panic_and_round_trip() {
    let lines = jsonl_lines();
    fuzz(
        "from_json/meta_from_json(mutated line)",
        (0..lines.len(), mutation(4)),
        |(i, m)| {
            let line = String::from_utf8_lossy(&apply(&m, lines[i].as_bytes())).into_owned();
            if let Ok(e) = events::from_json(&line) {
                let back = events::from_json(&events::to_json(&e))
                    .map_err(|err| TestCaseError::fail(err.to_string()))?;
                prop_assert_eq!(back, e);
            }
            if let Ok(meta) = jfile::meta_from_json(&line) {
                let back = jfile::meta_from_json(&jfile::meta_to_json(&meta))
                    .map_err(|err| TestCaseError::fail(err.to_string()))?;
                prop_assert_eq!(back, meta);
            }
            let _ = jfile::is_meta_line(&line);
            Ok(())
        },
    );
}

#[test]
fn json_lines_never_panic_on_arbitrary_text() {
    fuzz(
        "from_json/meta_from_json(arbitrary text)",
        prop::collection::vec(
            prop::sample::select(vec![
                "{",
                "}",
                "\"",
                ":",
                ",",
                "\"kind\"",
                "\"posix_lock_inode\"",
                "\"ts_ns\"",
                "\"lockrace_trailer\"",
                "\"lockrace_header\"",
                "\"lockrace_acquisitions\"",
                "18446744073709551615",
                "-1",
                "1e999",
                "null",
                "[",
                "]",
                "\\u0000",
                "\"ret\"",
                "9223372036854775808",
                "true",
            ]),
            0..30,
        ),
        |parts| {
            let line: String = parts.concat();
            let _ = events::from_json(&line);
            let _ = jfile::meta_from_json(&line);
            Ok(())
        },
    );
}

/// Line-level edits of a whole file.
#[derive(Clone, Debug)]
enum FileEdit {
    Drop(usize),
    Dup(usize),
    Swap(usize, usize),
    Mutate(usize, Mutation),
    Cut(usize),
}

fn file_edit() -> impl Strategy<Value = FileEdit> {
    prop_oneof![
        any::<usize>().prop_map(FileEdit::Drop),
        any::<usize>().prop_map(FileEdit::Dup),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| FileEdit::Swap(a, b)),
        (any::<usize>(), mutation(3)).prop_map(|(a, m)| FileEdit::Mutate(a, m)),
        any::<usize>().prop_map(FileEdit::Cut),
    ]
}

fn edit_file(base: &[String], edits: &[FileEdit]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = base.iter().map(|l| l.as_bytes().to_vec()).collect();
    let mut cut = None;
    for e in edits {
        let n = lines.len();
        if n == 0 {
            break;
        }
        match e {
            FileEdit::Drop(i) => {
                lines.remove(i % n);
            }
            FileEdit::Dup(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            FileEdit::Swap(a, b) => lines.swap(a % n, b % n),
            FileEdit::Mutate(i, m) => lines[i % n] = apply(m, &lines[i % n]),
            FileEdit::Cut(k) => cut = Some(*k),
        }
    }
    let mut out = lines.join(&b'\n');
    out.push(b'\n');
    if let Some(k) = cut {
        out.truncate(k % (out.len() + 1));
    }
    out
}

#[test]
fn analyze_file_never_panics_on_mutated_files() {
    let metas = meta_lines();
    let mut base = vec![metas[0].clone()];
    base.extend(
        event_fixture("posix-reopen.jsonl")
            .lines()
            .take(200)
            .map(str::to_string),
    );
    base.extend(metas[1..].iter().cloned());
    let dir = tempfile::tempdir().unwrap();
    let (file, trace) = (dir.path().join("f.jsonl"), dir.path().join("t.json"));
    // The pristine file analyses.
    std::fs::write(&file, base.join("\n") + "\n").unwrap();
    lockrace::cmd::report::analyze_file(&file, None).unwrap();
    fuzz(
        "analyze_file(mutated file)",
        prop::collection::vec(file_edit(), 1..6),
        |edits| {
            std::fs::write(&file, edit_file(&base, &edits)).unwrap();
            match lockrace::cmd::report::analyze_file(&file, Some(&trace)) {
                Ok(doc) => {
                    let _ = lockrace::report::terminal::render(&doc);
                    let json = serde_json::to_string(&doc)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(json.starts_with('\u{7b}'), "not an object");
                    let t = std::fs::read_to_string(&trace).unwrap_or_default();
                    prop_assert!(
                        serde_json::from_str::<serde_json::Value>(&t).is_ok(),
                        "the Perfetto trace is not JSON"
                    );
                }
                Err(e) => prop_assert!(!lockrace::error::render_error(&e).is_empty()),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Crashes and failures the fuzzers found, kept as regression tests.

/// A format line whose type ends in a multi-byte character sliced the name mid-character.
#[test]
fn regression_format_field_with_a_multibyte_separator() {
    for line in [
        "\tfield:unsig\u{fffd}x;\toffset:8;\tsize:4;\tsigned:0;",
        "\tfield:int \u{1F600}name[4];\toffset:0;\tsize:4;",
    ] {
        let f = tracefs::parse_format(line).unwrap();
        assert_eq!(f.fields.len(), 1, "{line}");
    }
    assert_eq!(
        tracefs::parse_format("field:char\u{e9}comm;offset:1;size:1;")
            .unwrap()
            .fields[0]
            .name,
        "comm"
    );
    // Only a separator, no name: an error, not a panic.
    assert!(tracefs::parse_format("field:\u{e9}\u{e9};offset:1;size:1;").is_err());
    assert!(tracefs::parse_format("\tfield:\u{e9};\toffset:8;\tsize:4;").is_err());
}

/// A task name with bytes that are not UTF-8 grows past 15 bytes as text; reading its JSON
/// back cut it mid-character, so a second round trip changed it again.
#[test]
fn regression_non_utf8_comm_round_trips_through_json() {
    let mut raw = [0u8; 16];
    raw[..15].copy_from_slice(b"Q8K&c/!\"\xff[\"\xfex\xfe\xfe");
    let e = Event {
        ts_ns: 0,
        cpu: 0,
        tgid: 1,
        tid: 1,
        comm: Comm(raw),
        kind: Kind::SchedWaking,
        data: Data::Sched(SchedData {
            target_comm: Comm(raw),
            ..Default::default()
        }),
    };
    json_fixed_point(&e).unwrap();
    let line = events::to_json(&e);
    let back = events::from_json(&line).unwrap();
    assert!(back.comm.as_str().len() <= 15);
    assert_eq!(events::to_json(&back), line);
}
