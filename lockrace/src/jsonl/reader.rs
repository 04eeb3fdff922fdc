//! The JSONL reader: every line of a file lockrace wrote (or a file cut short, or a hostile
//! one), events to a callback and meta lines to [`FileMeta`], without holding the events.
//!
//! Bad input policy (docs/EVENTS.md):
//! - a missing or unreadable file, an empty file, or a line that is not a lockrace event is a
//!   one-line error naming `FILE:LINE`;
//! - a last line without its newline that does not parse is a file cut mid-write: it is skipped
//!   and [`ReadStats::incomplete_reasons`] says so;
//! - a well-formed event of an unknown kind (a newer lockrace) is counted, skipped and reported.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Context;

use super::file::{FileHeader, FileTrailer, Meta, is_meta_line, meta_from_json};
use crate::analysis::AnalysisInput;
use crate::error::hinted;
use crate::events::{Event, JsonError, from_json};

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

pub fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
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

pub fn each_event(
    r: BufReader<File>,
    path: &Path,
    f: impl FnMut(&Event),
) -> anyhow::Result<ReadStats> {
    each_line(r, path, f, |_| {}, false)
}

/// Every line of a JSONL file: events to `f`, meta lines (header, acquisitions, trailer) to
/// `on_meta`. With `meta_only`, event lines are skipped unparsed (the cheap first pass).
fn each_line(
    mut r: BufReader<File>,
    path: &Path,
    mut f: impl FnMut(&Event),
    mut on_meta: impl FnMut(Meta),
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
        if is_meta_line(text) {
            match meta_from_json(text) {
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
        match from_json(text) {
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
    pub header: Option<FileHeader>,
    pub trailer: Option<FileTrailer>,
    /// Per role (in order of first appearance): name, tgid, acquisitions.
    pub roles: Vec<(String, u32, Vec<crate::analysis::Acquisition>)>,
}

impl FileMeta {
    fn add(&mut self, m: Meta) {
        match m {
            Meta::LockraceHeader(h) => self.header = Some(h),
            Meta::LockraceTrailer(t) => self.trailer = Some(t),
            Meta::LockraceAcquisitions(c) => {
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
        match self.trailer.as_ref().and_then(|t| t.memfd) {
            Some((dev, ino)) => AnalysisInput::run(
                dev,
                ino,
                self.roles
                    .iter()
                    .map(|(name, tgid, acqs)| crate::analysis::RoleInput {
                        name: name.clone(),
                        tgid: *tgid,
                        acquisitions: acqs.clone(),
                    })
                    .collect(),
            ),
            None => AnalysisInput::default(),
        }
    }
}

/// The cheap first pass: only the meta lines.
pub fn read_meta(path: &Path) -> anyhow::Result<FileMeta> {
    let mut meta = FileMeta::default();
    each_line(open(path)?, path, |_| {}, |m| meta.add(m), true)?;
    Ok(meta)
}
