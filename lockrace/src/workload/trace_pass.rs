//! One traced `execute()`: attach the capture, run both roles, detach, analyse, and return the
//! report document with the events. Used by `run --scenario` (which needs the events for
//! `evidence`) and by `compare-sync`'s traced pass (which needs the document's whoops causes
//! and handoff counts); `traced::main` does the same plus the untraced baseline and printing.
//!
//! Invariants (the same as `traced`): the capture filters on this process's tgid and is attached
//! before the children start, so every lock request of the run is seen; it is stopped whatever
//! the workload's outcome; the document is marked incomplete when events were dropped or did
//! not decode.
use std::path::Path;

use super::run::{RunConfig, RunOutcome, document, execute};
use super::traced::analysis_input;
use crate::analysis;
use crate::capture::{Capture, CaptureStats, Filter, Limits};
use crate::events::Event;
use crate::jsonl::Collector;
use crate::report::{self, model::CaptureInfo, model::Document};

/// How to trace one run.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions<'a> {
    /// Ring buffer and task-map sizes (checked by whoever built them).
    pub limits: Limits,
    /// Also write every event as JSONL here.
    pub events_jsonl: Option<&'a Path>,
    /// Also write a Perfetto trace here.
    pub perfetto: Option<&'a Path>,
    /// Print the "Tracing..." / "Detaching..." progress lines on stderr.
    pub announce: bool,
}

/// What one traced run produced.
pub struct TracedRun {
    pub outcome: RunOutcome,
    /// The report document: workload, capture info, analysis (`report::build`).
    pub doc: Document,
    /// Every event the capture decoded, in arrival order.
    pub events: Vec<Event>,
    pub stats: CaptureStats,
}

/// Run `cfg` once under the capture. Errors are setup failures (eBPF, temp dir, spawn); what
/// happened to the children is in `outcome`.
/// The report document of a traced run before analysis: the workload's account, the kernel's
/// field naming, what the capture saw and lost (each loss an incomplete reason).
pub fn traced_document(
    cfg: &RunConfig,
    outcome: &RunOutcome,
    stats: &CaptureStats,
    lock_field_names: &str,
) -> Document {
    let mut doc = document(cfg, outcome);
    doc.kernel.lock_field_names = lock_field_names.to_string();
    doc.capture = Some(CaptureInfo {
        events: stats.events,
        dropped: stats.dropped,
        complete: stats.complete(),
    });
    if stats.dropped > 0 {
        doc.mark_incomplete(format!(
            "{} events dropped (ring buffer full; try --ring-buffer-mb)",
            stats.dropped
        ));
    }
    if stats.decode_errors > 0 {
        doc.mark_incomplete(format!("{} records did not decode", stats.decode_errors));
    }
    if let Some(why) = stats.untracked_reason() {
        doc.mark_incomplete(why);
    }
    doc
}

pub fn traced_execute(cfg: &RunConfig, opts: &TraceOptions<'_>) -> anyhow::Result<TracedRun> {
    let sink = Collector::new(true, opts.events_jsonl)?;
    let filter = Filter {
        tgids: vec![std::process::id()],
        inodes: vec![],
    };
    let capture = Capture::start_with(&filter, &opts.limits, sink)?;
    let lock_field_names = capture.offsets().lock_field_names;
    if opts.announce {
        eprintln!(
            "Tracing ({} probes attached, {} field names)... Hit Ctrl-C to end.",
            crate::capture::loader::PROGRAMS.len(),
            lock_field_names
        );
    }
    let outcome = execute(cfg);
    if opts.announce {
        eprint!("Detaching... ");
    }
    let (mut sink, stats) = capture.stop()?;
    if opts.announce {
        eprintln!("done");
    }
    let outcome = outcome?;
    // The same acquisitions and trailer as a traced `run`, so `lockrace report FILE` reads a
    // scenario's events file as complete and can explain its whoops offline.
    super::traced::write_run_meta(&mut sink, &stats, lock_field_names, cfg, &outcome, None)?;
    let events = sink.events.unwrap_or_default();
    let input = analysis_input(&outcome);
    let analysis = match opts.perfetto {
        Some(p) => report::perfetto::write(p, &events, &input)?,
        None => analysis::analyze(&events, &input),
    };
    let mut doc = traced_document(cfg, &outcome, &stats, lock_field_names);
    report::build(&mut doc, &analysis);
    Ok(TracedRun {
        outcome,
        doc,
        events,
        stats,
    })
}
