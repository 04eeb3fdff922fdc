//! The meta lines of a lockrace JSONL file (docs/EVENTS.md): the header first, then the events
//! (one [`crate::events::JsonEvent`] a line), then after the capture each `run` role's
//! acquisitions and the trailer with what the capture lost. [`Meta`] is one such line.
//!
//! Invariants: a meta line starts with `{"lockrace_` and no event line does
//! ([`is_meta_line`]); bump [`FILE_FORMAT_VERSION`] on an incompatible change; a file without
//! its trailer did not end cleanly (the reader says so).
use serde::{Deserialize, Serialize};

use crate::events::JsonError;
use crate::report::model::{ProgramReport, WorkloadReport};

/// Version of the JSONL file format (the meta lines below and the event fields).
pub const FILE_FORMAT_VERSION: u32 = 1;

/// First line of a JSONL file lockrace writes: `{"lockrace_header": {...}}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileHeader {
    pub format: u32,
    pub lockrace_version: String,
    pub kernel_release: String,
    /// What was recorded: `run ...`, `record -- CMD`, `trace ...`.
    #[serde(default)]
    pub command: String,
    /// True when `owner`, `fl` and `blocker` are the kernel's addresses (`--raw-pointers`);
    /// absent (false): they are per-run ids (docs/EVENTS.md, "Kernel addresses").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_pointers: bool,
}

impl FileHeader {
    pub fn new(command: impl Into<String>) -> FileHeader {
        FileHeader {
            format: FILE_FORMAT_VERSION,
            lockrace_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: crate::host::kernel_release(),
            command: command.into(),
            raw_pointers: false,
        }
    }
}

/// Up to [`ACQUISITIONS_PER_LINE`] acquisitions of one `run` role, after the events:
/// `{"lockrace_acquisitions": {...}}`. `whoops` has one character per acquisition (`w` whoops,
/// `t` turn), in the same order as `ts_ns`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcquisitionChunk {
    pub role: String,
    pub tgid: u32,
    pub ts_ns: Vec<u64>,
    pub whoops: String,
}

pub const ACQUISITIONS_PER_LINE: usize = 4096;

/// Last line: `{"lockrace_trailer": {...}}`. Its absence means the writer did not end cleanly.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileTrailer {
    /// Events written to the file.
    pub events: u64,
    /// Records the kernel could not write (ring buffer full), all CPUs.
    pub dropped: u64,
    pub decode_errors: u64,
    /// Why the capture is incomplete (interrupted, dead child, ...), one line each.
    #[serde(default)]
    pub incomplete_reasons: Vec<String>,
    /// The tracefs field naming the probes resolved ("type (6.9+ names)", ...).
    #[serde(default)]
    pub lock_field_names: String,
    /// `run` only: the memfd (dev in s_dev encoding, ino) and the workload's own account.
    #[serde(default)]
    pub memfd: Option<(u32, u64)>,
    #[serde(default)]
    pub workload: Option<WorkloadReport>,
    /// The probe set attached (`full`, `lean`, `fast`); absent in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<String>,
    /// Every attached program's runs, recursion misses and ns per run at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramReport>,
}

/// A non-event line of a JSONL file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[allow(
    clippy::large_enum_variant,
    reason = "a file holds one header and one trailer; boxing them saves nothing worth the noise"
)]
pub enum Meta {
    LockraceHeader(FileHeader),
    LockraceAcquisitions(AcquisitionChunk),
    LockraceTrailer(FileTrailer),
}

/// True for lines that carry a [`Meta`] object rather than an event.
pub fn is_meta_line(line: &str) -> bool {
    line.trim_start().starts_with("{\"lockrace_")
}

/// Parse a meta line.
pub fn meta_from_json(line: &str) -> Result<Meta, JsonError> {
    serde_json::from_str(line).map_err(JsonError::Syntax)
}

pub fn meta_to_json(m: &Meta) -> String {
    serde_json::to_string(m).expect("Meta always serializes")
}

/// Split one role's acquisitions into meta lines.
pub fn acquisition_chunks(role: &str, tgid: u32, acqs: &[(u64, bool)]) -> Vec<Meta> {
    acqs.chunks(ACQUISITIONS_PER_LINE)
        .map(|c| {
            Meta::LockraceAcquisitions(AcquisitionChunk {
                role: role.to_string(),
                tgid,
                ts_ns: c.iter().map(|a| a.0).collect(),
                whoops: c.iter().map(|a| if a.1 { 'w' } else { 't' }).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_lines_round_trip_and_are_recognised() {
        let h = Meta::LockraceHeader(FileHeader::new("run --lock posix"));
        let line = meta_to_json(&h);
        assert!(line.starts_with("{\"lockrace_header\":"), "{line}");
        assert!(is_meta_line(&line));
        assert_eq!(meta_from_json(&line).unwrap(), h);
        let acqs: Vec<(u64, bool)> = (0..5000).map(|i| (i * 10, i % 3 == 0)).collect();
        let chunks = acquisition_chunks("server", 7, &acqs);
        assert_eq!(chunks.len(), 2);
        match &chunks[1] {
            Meta::LockraceAcquisitions(c) => {
                assert_eq!(c.ts_ns.len(), 5000 - ACQUISITIONS_PER_LINE);
                assert_eq!(c.whoops.len(), c.ts_ns.len());
            }
            other => panic!("{other:?}"),
        }
        let t = Meta::LockraceTrailer(FileTrailer {
            events: 3,
            dropped: 1,
            decode_errors: 0,
            incomplete_reasons: vec!["x".into()],
            lock_field_names: "type".into(),
            memfd: Some((1, 2)),
            workload: None,
            probes: Some("fast".into()),
            programs: vec![ProgramReport {
                name: "fast_posix_lock".into(),
                runs: None,
                recursion_misses: Some(0),
                ns_per_run: None,
            }],
        });
        assert_eq!(meta_from_json(&meta_to_json(&t)).unwrap(), t);
        let ev = r#"{"ts_ns":1,"cpu":0,"tgid":1,"tid":1,"comm":"x","kind":"sys_exit_fcntl","cmd":7,"ret":0}"#;
        assert!(!is_meta_line(ev));
    }
}
