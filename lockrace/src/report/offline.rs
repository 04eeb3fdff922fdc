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
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use super::model::{CaptureInfo, Document};
use super::perfetto::PerfettoWriter;
use crate::analysis::Analyzer;
use crate::cli::ReportArgs;
use crate::jsonl::reader::{each_event, open, read_meta};

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
