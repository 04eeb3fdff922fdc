//! The traced `lockrace run`: an untraced baseline, then the same workload under the eBPF
//! capture, then the analysis that ties every whoops to its kernel cause.
//!
//! Invariants: the capture is attached before the children start and filters on this process's
//! tgid (the kernel adopts the children on fork), so every lock request of the run is seen; the
//! capture is stopped (programs detached, ring drained, drops counted) whatever the workload's
//! outcome; a report is always written when asked for, marked incomplete when anything is
//! missing (interrupted run, dead child, dropped events); SIGINT/SIGTERM during the analysis
//! stop it at the next chunk of events, and the report then says how many were analysed.
use std::process::ExitCode;

use anyhow::Context as _;

use super::run::{RunConfig, RunOutcome, execute, render_summary, write_document};
use super::trace_pass::traced_document;
use crate::{
    analysis::{self, AnalysisInput, RoleInput, WhoopsInput},
    capture::{Capture, Filter},
    cli::RunArgs,
    events, jsonl,
    jsonl::Collector,
    report::{self, model::ProbeEffect},
    signals,
};

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
    let dev = m.dev as u32;
    AnalysisInput {
        paths: vec![((dev, m.ino), "memfd:lockrace (the handoff)".to_string())],
        whoops: Some(WhoopsInput {
            dev,
            ino: m.ino,
            roles: outcome
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
                .collect(),
        }),
        reorder_window_ns: None,
    }
}

/// The cross-check line: kernel-seen grants per role vs the role's own acquisitions.
pub fn cross_check(doc: &report::model::Document) -> Option<String> {
    let w = doc.whoops.as_ref()?;
    let parts: Vec<String> = w
        .roles
        .iter()
        .map(|r| {
            let mark = if r.grants == r.acquisitions {
                "ok"
            } else {
                "MISMATCH"
            };
            format!(
                "{} {} kernel grants / {} acquisitions ({mark})",
                r.role, r.grants, r.acquisitions
            )
        })
        .collect();
    Some(format!("  cross-check: {}", parts.join("; ")))
}

/// The run's part of a JSONL file: each role's acquisitions, then the trailer (memfd, workload,
/// capture counts), so that `lockrace report FILE` can explain whoops offline.
pub(super) fn write_run_meta(
    sink: &mut Collector,
    stats: &crate::capture::CaptureStats,
    lock_field_names: &str,
    cfg: &RunConfig,
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
    let mut workload = outcome.workload_report(cfg);
    workload.probe_effect = effect;
    trailer.workload = Some(workload);
    metas.push(jsonl::Meta::LockraceTrailer(trailer));
    sink.write_meta(&metas)
        .context("cannot write the events file's trailer")
}

pub fn main(args: &RunArgs, cfg: &RunConfig) -> anyhow::Result<ExitCode> {
    // Checked before the baseline run, so a bad size costs nothing.
    let limits = args.capture.limits()?;
    signals::install()?;
    let baseline = if args.no_baseline {
        None
    } else {
        eprintln!("Baseline: the same run untraced...");
        let b = execute(cfg)?;
        if b.interrupted.is_some() || b.failure.is_some() {
            return super::run::finish(args, cfg, b, None);
        }
        Some(b)
    };

    let sink = Collector::new_with(true, args.events.as_deref(), args.capture.raw_pointers)?;
    let filter = Filter {
        tgids: vec![std::process::id()],
        inodes: vec![],
    };
    let probes = args.probes;
    let capture = Capture::start_probes(&filter, &limits, probes, sink)?;
    let lock_field_names = capture.offsets().lock_field_names;
    eprintln!(
        "Tracing the handoff ({} probes attached, {} field names)... Hit Ctrl-C to end.",
        crate::capture::loader::PROGRAMS
            .iter()
            .filter(|(_, name)| probes.attaches(name))
            .count(),
        capture.offsets().lock_field_names
    );
    let outcome = execute(cfg);
    eprint!("Detaching... ");
    let (mut sink, stats, offsets) = capture.stop_with_offsets()?;
    eprintln!("done");
    let outcome = outcome?;
    let effect = match (
        baseline.as_ref().and_then(whoops_per_handoff),
        whoops_per_handoff(&outcome),
    ) {
        (Some(u), Some(t)) => Some(probe_effect(u, t)),
        _ => None,
    };
    if args.events.is_some() {
        write_run_meta(
            &mut sink,
            &stats,
            offsets.lock_field_names,
            cfg,
            &outcome,
            effect,
        )?;
    }
    let events = sink.events.take().unwrap_or_default();

    let input = analysis_input(&outcome);
    // A signal of an interrupted run came before: its events are analysed whole.
    let stop_early = outcome.interrupted.is_none();
    let stop = || stop_early.then(signals::received).flatten();
    let perfetto = args
        .perfetto
        .as_deref()
        .map(|p| (p, args.capture.raw_pointers));
    let (analysis, cut) = analyze_interruptibly(&events, &input, perfetto, &stop)?;
    let mut doc = traced_document(cfg, &outcome, &stats, lock_field_names);
    if let Some((sig, done)) = cut {
        doc.mark_incomplete(analysis_cut_reason(sig, done, events.len()));
    }
    doc.raw_pointers = args.capture.raw_pointers;
    report::build(&mut doc, &analysis);
    if let Some(w) = doc.workload.as_mut() {
        w.probe_effect = effect;
    }

    if outcome.roles().iter().any(|r| r.report.is_some()) {
        if let Some(b) = &baseline {
            print!("{}", render_summary(cfg, b, false));
        }
        print!("{}", render_summary(cfg, &outcome, true));
        if let Some(line) = cross_check(&doc) {
            println!("{line}");
        }
        if let Some(e) = effect {
            println!(
                "  probe effect: whoops/handoff untraced {:.2}, traced {:.2}{}",
                e.untraced_whoops_per_handoff,
                e.traced_whoops_per_handoff,
                e.ratio
                    .map(|r| format!(" (ratio {r:.2})"))
                    .unwrap_or_default()
            );
        }
        println!();
    }
    print!("{}", report::terminal::render(&doc));
    if let Some(path) = &args.json {
        write_document(path, &doc)?;
    }
    report::html::write_if_asked(&args.html, &doc)?;
    let code = super::run::finish(args, cfg, outcome, Some(doc))?;
    match cut {
        Some((sig, done)) => {
            eprintln!("lockrace: {}", analysis_cut_reason(sig, done, events.len()));
            Ok(ExitCode::from(signals::exit_code(sig)))
        }
        None => Ok(code),
    }
}

/// Events analysed between two looks at the signal flag.
const ANALYSIS_CHUNK: usize = 1 << 16;

/// Analyse `events` (writing the Perfetto trace when asked), stopping at the first chunk
/// boundary where `stop` names a signal: then also the signal and how many events were
/// analysed. What was analysed is finished into a valid (partial) analysis.
pub fn analyze_interruptibly(
    events: &[events::Event],
    input: &AnalysisInput,
    perfetto: Option<(&std::path::Path, bool)>,
    stop: &dyn Fn() -> Option<nix::sys::signal::Signal>,
) -> anyhow::Result<(
    analysis::Analysis,
    Option<(nix::sys::signal::Signal, usize)>,
)> {
    let mut writer = perfetto
        .map(|(p, raw)| report::perfetto::PerfettoWriter::create(p).map(|w| w.raw_pointers(raw)))
        .transpose()?;
    let mut cut = None;
    let analysis = {
        let mut a = match writer.as_mut() {
            Some(w) => analysis::Analyzer::with_observer(input, w),
            None => analysis::Analyzer::new(input),
        };
        let mut done = 0;
        for chunk in events.chunks(ANALYSIS_CHUNK) {
            if let Some(sig) = stop() {
                cut = Some((sig, done));
                break;
            }
            a.extend(chunk);
            done += chunk.len();
        }
        a.finish()
    };
    if let (Some(w), Some((p, _))) = (writer, perfetto) {
        w.finish()
            .with_context(|| format!("cannot write the trace {}", p.display()))?;
    }
    Ok((analysis, cut))
}

/// "analysis interrupted by SIGINT after 65536 of 200000 events".
pub fn analysis_cut_reason(sig: nix::sys::signal::Signal, done: usize, total: usize) -> String {
    format!(
        "analysis interrupted by {} after {done} of {total} events",
        sig.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_during_the_analysis_cuts_it_at_a_chunk_boundary() {
        use crate::analysis::synth;
        let events = synth::handoff_stream(200_000, 7);
        assert!(events.len() > 2 * ANALYSIS_CHUNK, "{}", events.len());
        let input = AnalysisInput::default();
        let (whole, cut) = analyze_interruptibly(&events, &input, None, &|| None).unwrap();
        assert_eq!(cut, None);
        assert_eq!(whole.stats.events, events.len() as u64);
        let calls = std::cell::Cell::new(0);
        let after_one = || {
            calls.set(calls.get() + 1);
            (calls.get() > 1).then_some(nix::sys::signal::Signal::SIGINT)
        };
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.json");
        let (part, cut) =
            analyze_interruptibly(&events, &input, Some((&trace, false)), &after_one).unwrap();
        assert_eq!(
            cut,
            Some((nix::sys::signal::Signal::SIGINT, ANALYSIS_CHUNK))
        );
        assert_eq!(part.stats.events, ANALYSIS_CHUNK as u64);
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
        assert!(t["traceEvents"].is_array());
        assert_eq!(
            analysis_cut_reason(nix::sys::signal::Signal::SIGTERM, 65536, 200000),
            "analysis interrupted by SIGTERM after 65536 of 200000 events"
        );
    }

    #[test]
    fn probe_effect_ratio() {
        let e = probe_effect(10.0, 9.0);
        assert_eq!(e.ratio, Some(0.9));
        assert_eq!(probe_effect(0.0, 3.0).ratio, None);
    }
}
