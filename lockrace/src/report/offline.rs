//! `lockrace report EVENTS.jsonl`: re-analyse saved events without root.
//!
//! The file is read line by line into the streaming analyzer (and the Perfetto writer), so
//! memory does not grow with the file. Bad input policy (docs/EVENTS.md):
//! - a missing or unreadable file, an empty file, or a line that is not a lockrace event is a
//!   one-line error naming `FILE:LINE`;
//! - a last line without its newline that does not parse is a file cut mid-write: it is skipped
//!   and the report is marked incomplete;
//! - a well-formed event of an unknown kind (a newer lockrace) is counted, skipped and reported;
//! - out-of-order events and requests that never end are the analyzer's business (counted,
//!   reported as incomplete), never an error.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::model::{CaptureInfo, Document};
use super::perfetto::PerfettoWriter;
use crate::analysis::{AnalysisInput, Analyzer};
use crate::cli::ReportArgs;
use crate::error::hinted;
use crate::events::{self, Event, JsonError};

/// Longest line accepted (a lockrace event is ~400 bytes).
const MAX_LINE: u64 = 1 << 20;

/// What reading a JSONL file found besides the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub lines: u64,
    pub events: u64,
    /// Events of kinds this lockrace does not know: (count, first kind and its line).
    pub unknown_kinds: u64,
    pub first_unknown: Option<(u64, String)>,
    /// The last line was cut short (no newline, not parseable) and skipped.
    pub truncated_line: Option<u64>,
    /// Header, acquisition and trailer lines.
    pub meta_lines: u64,
}

impl ReadStats {
    /// Why the events are incomplete, one line each (empty when they are complete).
    pub fn incomplete_reasons(&self, path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.truncated_line {
            out.push(format!(
                "{}:{n}: the last line is cut short (file still being written, or copied \
                 partially); it was skipped",
                path.display()
            ));
        }
        if let Some((n, kind)) = &self.first_unknown {
            out.push(format!(
                "{} events of unknown kinds were skipped (first: {kind:?} at line {n}; written \
                 by a newer lockrace?)",
                self.unknown_kinds
            ));
        }
        out
    }
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    let file = File::open(path).map_err(|e| {
        hinted(
            format!("cannot read {}: {e}", path.display()),
            "write one with `lockrace run --events FILE` or `lockrace record --events FILE`",
        )
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        anyhow::bail!("{} is a directory, not an events file", path.display());
    }
    Ok(BufReader::with_capacity(1 << 16, file))
}

/// Call `f` with every event of a JSONL file, in file order.
pub fn for_each_event(path: &Path, f: impl FnMut(&Event)) -> anyhow::Result<ReadStats> {
    each_event(open(path)?, path, f)
}

fn each_event(r: BufReader<File>, path: &Path, f: impl FnMut(&Event)) -> anyhow::Result<ReadStats> {
    each_line(r, path, f, |_| {}, false)
}

/// Every line of a JSONL file: events to `f`, meta lines (header, acquisitions, trailer) to
/// `on_meta`. With `meta_only`, event lines are skipped unparsed (the cheap first pass).
fn each_line(
    mut r: BufReader<File>,
    path: &Path,
    mut f: impl FnMut(&Event),
    mut on_meta: impl FnMut(events::Meta),
    meta_only: bool,
) -> anyhow::Result<ReadStats> {
    let mut st = ReadStats::default();
    let mut buf = Vec::with_capacity(512);
    let name = path.display();
    loop {
        buf.clear();
        let n = r
            .by_ref()
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {name}"))?;
        if n == 0 {
            break;
        }
        st.lines += 1;
        let line_no = st.lines;
        let has_newline = buf.last() == Some(&b'\n');
        if !has_newline && n as u64 > MAX_LINE {
            anyhow::bail!(
                "{name}:{line_no}: not a lockrace event: line longer than {} KiB",
                MAX_LINE / 1024
            );
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim(),
            Err(_) if !has_newline => {
                st.truncated_line = Some(line_no);
                break;
            }
            Err(_) => anyhow::bail!("{name}:{line_no}: not a lockrace event: not UTF-8 text"),
        };
        if text.is_empty() {
            continue;
        }
        if events::is_meta_line(text) {
            match events::meta_from_json(text) {
                Ok(m) => {
                    st.meta_lines += 1;
                    on_meta(m);
                }
                Err(_) if !has_newline => {
                    st.truncated_line = Some(line_no);
                    break;
                }
                Err(e) => anyhow::bail!("{name}:{line_no}: bad lockrace meta line: {e}"),
            }
            continue;
        }
        if meta_only {
            continue;
        }
        match events::from_json(text) {
            Ok(e) => {
                st.events += 1;
                f(&e);
            }
            Err(JsonError::UnknownKind(k)) => {
                st.unknown_kinds += 1;
                if st.first_unknown.is_none() {
                    st.first_unknown = Some((line_no, k));
                }
            }
            Err(_) if !has_newline && st.events > 0 => {
                st.truncated_line = Some(line_no);
                break;
            }
            Err(e) => anyhow::bail!("{name}:{line_no}: {e}"),
        }
    }
    if meta_only {
        return Ok(st);
    }
    if st.events == 0 {
        let why = if st.lines == 0 {
            "empty file, no events".to_string()
        } else if st.unknown_kinds > 0 {
            format!(
                "no event lockrace knows ({} of unknown kinds)",
                st.unknown_kinds
            )
        } else {
            "no events".to_string()
        };
        return Err(hinted(
            format!("{name}: {why}"),
            "record events with `lockrace run --events FILE` or `lockrace record --events FILE`",
        ));
    }
    Ok(st)
}

/// Read a whole JSONL file (tests and small files; `report` itself streams).
pub fn read_events(path: &Path) -> anyhow::Result<(Vec<Event>, ReadStats)> {
    let mut v = Vec::new();
    let st = for_each_event(path, |e| v.push(*e))?;
    Ok((v, st))
}

/// What the meta lines of a JSONL file say (all optional: files from `record` have no
/// acquisitions, files cut short have no trailer, old files have none at all).
#[derive(Debug, Default)]
pub struct FileMeta {
    pub header: Option<events::FileHeader>,
    pub trailer: Option<events::FileTrailer>,
    /// Per role (in order of first appearance): name, tgid, acquisitions.
    pub roles: Vec<(String, u32, Vec<crate::analysis::Acquisition>)>,
}

impl FileMeta {
    fn add(&mut self, m: events::Meta) {
        match m {
            events::Meta::LockraceHeader(h) => self.header = Some(h),
            events::Meta::LockraceTrailer(t) => self.trailer = Some(t),
            events::Meta::LockraceAcquisitions(c) => {
                let pos = match self
                    .roles
                    .iter()
                    .position(|r| r.0 == c.role && r.1 == c.tgid)
                {
                    Some(p) => p,
                    None => {
                        self.roles.push((c.role.clone(), c.tgid, Vec::new()));
                        self.roles.len() - 1
                    }
                };
                let acqs = &mut self.roles[pos].2;
                acqs.extend(c.ts_ns.iter().zip(c.whoops.chars()).map(|(&ts_ns, w)| {
                    crate::analysis::Acquisition {
                        ts_ns,
                        whoops: w == 'w',
                    }
                }));
            }
        }
    }

    /// The analysis input these lines describe (the memfd's name and the whoops input).
    pub fn analysis_input(&self) -> AnalysisInput {
        let mut input = AnalysisInput::default();
        if let Some((dev, ino)) = self.trailer.as_ref().and_then(|t| t.memfd) {
            input
                .paths
                .push(((dev, ino), "memfd:lockrace (the handoff)".to_string()));
            if !self.roles.is_empty() {
                input.whoops = Some(crate::analysis::WhoopsInput {
                    dev,
                    ino,
                    roles: self
                        .roles
                        .iter()
                        .map(|(name, tgid, acqs)| crate::analysis::RoleInput {
                            name: name.clone(),
                            tgid: *tgid,
                            acquisitions: acqs.clone(),
                        })
                        .collect(),
                });
            }
        }
        input
    }
}

/// The cheap first pass: only the meta lines.
pub fn read_meta(path: &Path) -> anyhow::Result<FileMeta> {
    let mut meta = FileMeta::default();
    each_line(open(path)?, path, |_| {}, |m| meta.add(m), true)?;
    Ok(meta)
}

/// Analyse a JSONL file into a report document, optionally writing the Perfetto trace.
/// Files written by lockrace carry their kernel, drop counts and (for `run`) the roles'
/// acquisitions, so the offline report equals the live one.
pub fn analyze_file(path: &Path, perfetto: Option<&Path>) -> anyhow::Result<Document> {
    analyze_file_with(path, perfetto, false)
}

/// [`analyze_file`]; `raw_pointers` shows the file's pointers as they are (kernel addresses
/// when it was recorded with `--raw-pointers`) instead of `#N` labels.
pub fn analyze_file_with(
    path: &Path,
    perfetto: Option<&Path>,
    raw_pointers: bool,
) -> anyhow::Result<Document> {
    // Open the events first: a missing file must not leave an empty trace behind.
    let reader = open(path)?;
    let meta = read_meta(path)?;
    let input = meta.analysis_input();
    let mut writer = perfetto
        .map(|p| PerfettoWriter::create(p).map(|w| w.raw_pointers(raw_pointers)))
        .transpose()?;
    let (analysis, stats) = {
        let mut analyzer = match writer.as_mut() {
            Some(w) => Analyzer::with_observer(&input, w),
            None => Analyzer::new(&input),
        };
        let stats = each_event(reader, path, |e| analyzer.push(e))?;
        (analyzer.finish(), stats)
    };
    if let (Some(w), Some(p)) = (writer, perfetto) {
        w.finish()
            .with_context(|| format!("cannot write the trace {}", p.display()))?;
    }
    let release = meta.header.as_ref().map_or_else(
        || "unknown (offline report)".to_string(),
        |h| h.kernel_release.clone(),
    );
    let mut doc = Document::new(release);
    doc.raw_pointers = raw_pointers;
    let mut reasons = stats.incomplete_reasons(path);
    let dropped = match &meta.trailer {
        Some(t) => {
            doc.kernel.lock_field_names = t.lock_field_names.clone();
            doc.workload = t.workload.clone();
            reasons.extend(t.incomplete_reasons.iter().cloned());
            if t.dropped > 0 {
                reasons.push(format!(
                    "{} events dropped (ring buffer full) while recording",
                    t.dropped
                ));
            }
            if t.decode_errors > 0 {
                reasons.push(format!(
                    "{} records did not decode while recording",
                    t.decode_errors
                ));
            }
            t.dropped
        }
        None if meta.header.is_some() => {
            reasons.push(format!(
                "{} has no trailer line: the recording did not end cleanly (events may be missing at the end)",
                path.display()
            ));
            0
        }
        None => 0,
    };
    doc.capture = Some(CaptureInfo {
        events: stats.events,
        dropped,
        complete: reasons.is_empty(),
    });
    for r in reasons {
        doc.mark_incomplete(r);
    }
    super::build(&mut doc, &analysis);
    Ok(doc)
}

pub fn main(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let doc = analyze_file_with(&args.events, args.perfetto.as_deref(), args.raw_pointers)?;
    print!("{}", super::terminal::render(&doc));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&doc)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    super::html::write_if_asked(&args.html, &doc)?;
    Ok(ExitCode::SUCCESS)
}
