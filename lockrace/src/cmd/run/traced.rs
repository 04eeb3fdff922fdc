//! The traced `lockrace run`: an untraced baseline, then the same workload under the eBPF
//! capture ([`super::trace_pass::traced_execute`]), then both summaries, the cross-check of
//! kernel grants against the roles' acquisitions, the probe effect, and the report.
//!
//! Invariants: the baseline runs before anything is attached and is the same workload; a
//! baseline that fails or is interrupted ends the run with its own (untraced) report; a report
//! is always written when asked for, marked incomplete when anything is missing (interrupted
//! run, dead child, dropped events, an analysis cut short by a signal, whose exit code is then
//! the signal's).
use std::process::ExitCode;

use super::summary::{cross_check, render_summary};
use super::trace_pass::{TraceOptions, traced_execute, whoops_per_handoff};
use super::{Mode, RunConfig};
use crate::pipeline::analysis_cut_reason;
use crate::workload::execute::execute;
use crate::{report, signals};

pub fn main(cfg: &RunConfig) -> anyhow::Result<ExitCode> {
    let Mode::Traced {
        limits,
        capture,
        baseline,
    } = cfg.mode
    else {
        anyhow::bail!("not a traced run");
    };
    let w = &cfg.workload;
    let baseline = if !baseline {
        None
    } else {
        eprintln!("Baseline: the same run untraced...");
        let b = execute(w)?;
        if b.interrupted.is_some() || b.failure.is_some() {
            return super::finish(cfg, b, false);
        }
        Some(b)
    };
    let t = traced_execute(
        w,
        &TraceOptions {
            limits,
            capture,
            raw_pointers: cfg.outputs.raw_pointers,
            events_jsonl: cfg.outputs.events.as_deref(),
            perfetto: cfg.outputs.perfetto.as_deref(),
            announce: Some("Tracing the handoff"),
            interruptible: true,
            baseline: baseline.as_ref().and_then(whoops_per_handoff),
        },
    )?;
    let doc = &t.doc;
    if t.outcome.roles().iter().any(|r| r.report.is_some()) {
        if let Some(b) = &baseline {
            print!("{}", render_summary(w, b, false));
        }
        print!("{}", render_summary(w, &t.outcome, true));
        if let Some(line) = cross_check(doc) {
            println!("{line}");
        }
        if let Some(e) = t.effect {
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
    print!("{}", report::terminal::render(doc));
    if let Some(path) = &cfg.outputs.json {
        report::write_json(path, doc)?;
    }
    cfg.outputs.html.write_if_asked(doc)?;
    let code = super::finish(cfg, t.outcome, true)?;
    match t.cut {
        Some((sig, done)) => {
            eprintln!(
                "lockrace: {}",
                analysis_cut_reason(sig, done, t.events.len())
            );
            Ok(ExitCode::from(signals::exit_code(sig)))
        }
        None => Ok(code),
    }
}
