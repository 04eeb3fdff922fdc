//! `lockrace report EVENTS.jsonl`: re-analyse saved events without root.
//!
//! The file is read line by line (`jsonl::reader`) into the one pipeline (`pipeline`: the
//! streaming analyzer and the Perfetto writer), so memory does not grow with the file. Bad
//! input is the reader's policy (docs/EVENTS.md: a one-line error naming `FILE:LINE`, or a
//! skipped cut-off last line that marks the report incomplete); out-of-order events and
//! requests that never end are the analyzer's business (counted, reported as incomplete),
//! never an error. What the file's meta lines say (kernel, drops, a `run`'s workload) becomes
//! the document's facts, so the offline report equals the live one.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::args::HtmlArgs;
use crate::jsonl::reader::{FileMeta, ReadStats, each_event, open, read_meta};
use crate::pipeline::{PerfettoOut, Pipeline};
use crate::report::{
    self,
    build::{Facts, LossContext, Losses, loss_reasons},
    model::{CaptureInfo, Document},
};

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// A JSONL event file written by `--events`.
    #[arg(value_name = "EVENTS.jsonl")]
    pub events: PathBuf,
    /// Write the versioned JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Perfetto (Chrome JSON) trace to FILE.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    #[command(flatten)]
    pub html: HtmlArgs,
    /// Show the kernel's addresses of lock owners and blockers (when the events file has them)
    /// instead of `#N` labels.
    #[arg(long)]
    pub raw_pointers: bool,
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
    let mut pipeline = Pipeline::new(
        &input,
        perfetto.map(|path| PerfettoOut { path, raw_pointers }),
    )?;
    let stats = each_event(reader, path, |e| pipeline.push(e))?;
    pipeline.finish(|_| facts(path, &meta, &stats, raw_pointers))
}

/// What the file says about itself: its kernel, what its capture lost, a `run`'s workload.
fn facts(path: &Path, meta: &FileMeta, stats: &ReadStats, raw_pointers: bool) -> Facts {
    let mut facts = Facts {
        kernel_release: meta.header.as_ref().map_or_else(
            || "unknown (offline report)".to_string(),
            |h| h.kernel_release.clone(),
        ),
        raw_pointers,
        ..Facts::default()
    };
    let mut reasons = stats.incomplete_reasons(path);
    let (dropped, probes, programs) = match &meta.trailer {
        Some(t) => {
            facts.lock_field_names = t.lock_field_names.clone();
            facts.workload = t.workload.clone();
            reasons.extend(t.incomplete_reasons.iter().cloned());
            let losses = Losses {
                dropped: t.dropped,
                decode_errors: t.decode_errors,
                programs: &t.programs,
            };
            reasons.extend(loss_reasons(LossContext::Recording, losses, None));
            (t.dropped, t.probes.clone(), t.programs.clone())
        }
        None if meta.header.is_some() => {
            reasons.push(format!(
                "{} has no trailer line: the recording did not end cleanly (events may be missing at the end)",
                path.display()
            ));
            (0, None, Vec::new())
        }
        None => (0, None, Vec::new()),
    };
    facts.capture = Some(CaptureInfo {
        events: stats.events,
        dropped,
        complete: reasons.is_empty(),
        missed: (!programs.is_empty())
            .then(|| programs.iter().filter_map(|p| p.recursion_misses).sum()),
        probes,
        programs,
    });
    facts.incomplete = reasons;
    facts
}

pub fn main(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let doc = analyze_file_with(&args.events, args.perfetto.as_deref(), args.raw_pointers)?;
    print!("{}", report::terminal::render(&doc));
    if let Some(path) = &args.json {
        report::write_json(path, &doc)?;
    }
    args.html.write_if_asked(&doc)?;
    Ok(ExitCode::SUCCESS)
}
