//! One traced execution of the experiment: attach the capture, run both roles, detach, write
//! the run's part of the JSONL file, analyse through the one pipeline, and return the report
//! document with the events. The traced `run` ([`super::traced`], after its untraced baseline),
//! `run --scenario` (which needs the events for `evidence`) and `compare-sync`'s traced pass
//! (which needs the document's whoops causes) all use [`traced_execute`].
//!
//! Invariants: the capture filters on this process's tgid and is attached before the children
//! start (the kernel adopts them on fork), so every lock request of the run is seen; it is
//! stopped (programs detached, ring drained, drops counted) whatever the workload's outcome;
//! the document is made once, from the run's facts (its workload with the probe effect, what
//! the capture lost, a cut analysis) and the analysis; with `interruptible`, SIGINT/SIGTERM
//! during the analysis stop it at the next chunk of events and the document says how many were
//! analysed (a signal that interrupted the run itself came before: its events are analysed
//! whole).
use std::path::Path;

use anyhow::Context as _;

use crate::analysis::{self, AnalysisInput, RoleInput};
use crate::capture::{Capture, CaptureOptions, CaptureStats, Filter, Limits};
use crate::events::Event;
use crate::jsonl::{self, Collector};
use crate::pipeline::{self, Cut, PerfettoOut};
use crate::report::build::{Facts, LossContext, capture_info, capture_loss_reasons};
use crate::report::model::{Document, ProbeEffect};
use crate::signals;
use crate::workload::execute::{Workload, execute};
use crate::workload::outcome::RunOutcome;

/// How to trace one run.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions<'a> {
    /// Ring buffer and task-map sizes (checked by whoever built them).
    pub limits: Limits,
    /// The programs attached and BPF statistics (`--probes`, `--self-cost`).
    pub capture: CaptureOptions,
    /// The kernel's addresses in the events file, the report and the trace (`--raw-pointers`).
    pub raw_pointers: bool,
    /// Also write every event as JSONL here.
    pub events_jsonl: Option<&'a Path>,
    /// Also write a Perfetto trace here.
    pub perfetto: Option<&'a Path>,
    /// Print `WHAT (N probes attached, ...)... Hit Ctrl-C to end.` and "Detaching... done" on
    /// stderr, with this for WHAT.
    pub announce: Option<&'a str>,
    /// A signal during the analysis cuts it short (the traced `run`).
    pub interruptible: bool,
    /// Whoops per handoff of the untraced baseline: the probe effect is measured against it.
    pub baseline: Option<f64>,
}

/// What one traced run produced.
pub struct TracedRun {
    pub outcome: RunOutcome,
    /// The report document: workload, capture info, analysis.
    pub doc: Document,
    /// Every event the capture decoded, in arrival order.
    pub events: Vec<Event>,
    pub stats: CaptureStats,
    /// Untraced vs traced whoops per handoff (with a baseline whose roles both reported).
    pub effect: Option<ProbeEffect>,
    /// Where a signal cut the analysis short.
    pub cut: Option<Cut>,
}

/// Run `w` once under the capture. Errors are setup failures (eBPF, temp dir, spawn); what
/// happened to the children is in `outcome`.
pub fn traced_execute(w: &Workload, opts: &TraceOptions<'_>) -> anyhow::Result<TracedRun> {
    let sink = Collector::new_with(true, opts.events_jsonl, opts.raw_pointers)?;
    let filter = Filter {
        tgids: vec![std::process::id()],
        inodes: vec![],
    };
    let capture = Capture::start_options(&filter, &opts.limits, opts.capture, sink)?;
    let lock_field_names = capture.offsets().lock_field_names;
    if let Some(what) = opts.announce {
        eprintln!(
            "{what} ({} probes attached, {lock_field_names} field names)... Hit Ctrl-C to end.",
            capture.probes().1.len(),
        );
    }
    let outcome = execute(w);
    if opts.announce.is_some() {
        eprint!("Detaching... ");
    }
    let (mut sink, stats) = capture.stop()?;
    if opts.announce.is_some() {
        eprintln!("done");
    }
    let outcome = outcome?;
    let effect = match (opts.baseline, whoops_per_handoff(&outcome)) {
        (Some(u), Some(t)) => Some(probe_effect(u, t)),
        _ => None,
    };
    // The acquisitions and the trailer, so `lockrace report FILE` reads the file as complete
    // and can explain its whoops offline.
    write_run_meta(&mut sink, &stats, lock_field_names, w, &outcome, effect)?;
    let events = sink.events.take().unwrap_or_default();

    let input = analysis_input(&outcome);
    // A signal of an interrupted run came before: its events are analysed whole.
    let stop_early = opts.interruptible && outcome.interrupted.is_none();
    let stop = || stop_early.then(signals::received).flatten();
    let perfetto = opts.perfetto.map(|path| PerfettoOut {
        path,
        raw_pointers: opts.raw_pointers,
    });
    let facts = facts(
        w,
        &outcome,
        &stats,
        lock_field_names,
        opts.raw_pointers,
        effect,
    );
    let (doc, cut) = pipeline::analyze(&events, &input, perfetto, &stop, facts)?;
    Ok(TracedRun {
        outcome,
        doc,
        events,
        stats,
        effect,
        cut,
    })
}

/// What the document of a traced run says besides the analysis: the workload's account (with
/// the probe effect), the kernel's field naming, what the capture saw and lost.
fn facts(
    w: &Workload,
    outcome: &RunOutcome,
    stats: &CaptureStats,
    lock_field_names: &str,
    raw_pointers: bool,
    effect: Option<ProbeEffect>,
) -> Facts {
    let mut workload = outcome.workload_report(w);
    workload.probe_effect = effect;
    let mut incomplete = outcome.incomplete_reasons();
    incomplete.extend(capture_loss_reasons(LossContext::Run, stats));
    Facts {
        lock_field_names: lock_field_names.to_string(),
        raw_pointers,
        capture: Some(capture_info(stats)),
        workload: Some(workload),
        incomplete,
        ..Facts::here()
    }
}

/// Whoops per handoff of a whole run: all whoops over all completed turns.
pub fn whoops_per_handoff(outcome: &RunOutcome) -> Option<f64> {
    let reports: Vec<_> = outcome
        .roles()
        .iter()
        .filter_map(|r| r.report.clone())
        .collect();
    if reports.len() != 2 {
        return None;
    }
    let whoops: u64 = reports.iter().map(|r| r.whoops).sum();
    let turns: u64 = reports.iter().map(|r| r.iterations).sum();
    (turns > 0).then(|| whoops as f64 / turns as f64)
}

pub fn probe_effect(untraced: f64, traced: f64) -> ProbeEffect {
    ProbeEffect {
        untraced_whoops_per_handoff: untraced,
        traced_whoops_per_handoff: traced,
        ratio: (untraced > 0.0).then(|| traced / untraced),
    }
}

/// What the analysis needs besides the events: the memfd and the roles' acquisition logs.
pub fn analysis_input(outcome: &RunOutcome) -> AnalysisInput {
    let Some(m) = outcome.memfd else {
        return AnalysisInput::default();
    };
    let roles = outcome
        .roles()
        .iter()
        .map(|r| RoleInput {
            name: r.role.as_str().to_string(),
            tgid: r.pid,
            acquisitions: r
                .acquisitions
                .iter()
                .map(|a| analysis::Acquisition {
                    ts_ns: a.ts_ns,
                    whoops: a.whoops,
                })
                .collect(),
        })
        .collect();
    AnalysisInput::run(m.dev as u32, m.ino, roles)
}

/// The run's part of a JSONL file: each role's acquisitions, then the trailer (memfd, workload,
/// capture counts). Nothing without a file.
fn write_run_meta(
    sink: &mut Collector,
    stats: &CaptureStats,
    lock_field_names: &str,
    w: &Workload,
    outcome: &RunOutcome,
    effect: Option<ProbeEffect>,
) -> anyhow::Result<()> {
    let mut metas = Vec::new();
    for r in outcome.roles() {
        let acqs: Vec<(u64, bool)> = r.acquisitions.iter().map(|a| (a.ts_ns, a.whoops)).collect();
        metas.extend(jsonl::file::acquisition_chunks(
            r.role.as_str(),
            r.pid,
            &acqs,
        ));
    }
    let mut trailer = sink.trailer(stats, lock_field_names, outcome.incomplete_reasons());
    trailer.memfd = outcome.memfd.map(|m| (m.dev as u32, m.ino));
    let mut workload = outcome.workload_report(w);
    workload.probe_effect = effect;
    trailer.workload = Some(workload);
    metas.push(jsonl::Meta::LockraceTrailer(trailer));
    sink.write_meta(&metas)
        .context("cannot write the events file's trailer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_effect_ratio() {
        let e = probe_effect(10.0, 9.0);
        assert_eq!(e.ratio, Some(0.9));
        assert_eq!(probe_effect(0.0, 3.0).ratio, None);
    }
}
