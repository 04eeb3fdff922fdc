//! The one pipeline from events to a report document: create the analyzer, add the optional
//! Perfetto observer, push the events, finish both, build the [`Document`]. Every command that
//! reports on events goes through it: the traced `run` ([`analyze`], interruptible), its
//! scenario and `compare-sync` passes ([`analyze`]), `trace` (a [`Pipeline`] fed live on the
//! capture's reader thread) and `report` (a [`Pipeline`] fed from the JSONL reader).
//!
//! Invariants: the Perfetto trace is complete (written and closed) before the document exists,
//! and the document is made once, by [`crate::report::build::document`], from the facts the
//! caller gives and the finished analysis (nothing patches it afterwards); a signal seen by
//! `stop` cuts [`analyze`] at a chunk boundary, what was analysed is finished into a valid
//! partial analysis, and the document says how much.
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use nix::sys::signal::Signal;

use crate::analysis::observer::{HoldRecord, Observer, ReleaseRecord, RequestRecord};
use crate::analysis::{Analysis, AnalysisInput, Analyzer, Stats};
use crate::events::Event;
use crate::report::build::{Facts, document};
use crate::report::model::Document;
use crate::report::perfetto::PerfettoWriter;

/// Events analysed between two looks at the signal flag.
pub const ANALYSIS_CHUNK: usize = 1 << 16;

/// `--perfetto FILE`: where the trace goes, and whether it shows the kernel's addresses.
#[derive(Clone, Copy, Debug)]
pub struct PerfettoOut<'a> {
    pub path: &'a Path,
    pub raw_pointers: bool,
}

type Trace = Arc<Mutex<PerfettoWriter<BufWriter<File>>>>;

/// The Perfetto writer seen by the analyzer, which owns one handle; [`Pipeline::finish`]
/// takes it back to close the file.
struct Shared(Trace);

impl Observer for Shared {
    fn on_task(&mut self, tid: u32, tgid: u32, comm: &str) {
        if let Ok(mut o) = self.0.lock() {
            o.on_task(tid, tgid, comm);
        }
    }
    fn on_request(&mut self, r: &RequestRecord) {
        if let Ok(mut o) = self.0.lock() {
            o.on_request(r);
        }
    }
    fn on_hold(&mut self, h: &HoldRecord) {
        if let Ok(mut o) = self.0.lock() {
            o.on_hold(h);
        }
    }
    fn on_release(&mut self, r: &ReleaseRecord) {
        if let Ok(mut o) = self.0.lock() {
            o.on_release(r);
        }
    }
}

/// An analysis in progress: events go in one at a time, a document comes out.
pub struct Pipeline {
    analyzer: Analyzer<'static>,
    perfetto: Option<(Trace, PathBuf)>,
}

impl Pipeline {
    /// The analyzer for `input`, streaming Perfetto records into `perfetto` (the file is
    /// created now: a bad path fails before any event is analysed).
    pub fn new(input: &AnalysisInput, perfetto: Option<PerfettoOut<'_>>) -> anyhow::Result<Self> {
        let perfetto = match perfetto {
            Some(p) => {
                let w = PerfettoWriter::create(p.path)?.raw_pointers(p.raw_pointers);
                Some((Arc::new(Mutex::new(w)), p.path.to_path_buf()))
            }
            None => None,
        };
        let analyzer = match &perfetto {
            Some((w, _)) => Analyzer::with_owned_observer(input, Box::new(Shared(Arc::clone(w)))),
            None => Analyzer::new(input),
        };
        Ok(Pipeline { analyzer, perfetto })
    }

    pub fn push(&mut self, e: &Event) {
        self.analyzer.push(e);
    }

    pub fn extend<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        self.analyzer.extend(events);
    }

    /// The analyzer while it runs (`trace --interval` reads its live summaries, and the live
    /// sink advances its clock and forgets idle tasks).
    pub fn analyzer(&mut self) -> &mut Analyzer<'static> {
        &mut self.analyzer
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.analyzer.stats()
    }

    /// Finish the analysis and the Perfetto trace, then build the document from what `facts`
    /// makes of the finished analysis (it may name locks or take out what it reports itself).
    pub fn finish(self, facts: impl FnOnce(&mut Analysis) -> Facts) -> anyhow::Result<Document> {
        let mut analysis = self.analyzer.finish();
        if let Some((w, path)) = self.perfetto {
            let w = Arc::try_unwrap(w)
                .map_err(|_| anyhow::anyhow!("the Perfetto writer is still in use"))?
                .into_inner()
                .map_err(|_| anyhow::anyhow!("the Perfetto writer panicked"))?;
            w.finish()
                .with_context(|| format!("cannot write the trace {}", path.display()))?;
        }
        let facts = facts(&mut analysis);
        Ok(document(facts, Some(&analysis)))
    }
}

/// Where [`analyze`] stopped early: the signal, and how many events were analysed.
pub type Cut = (Signal, usize);

/// "analysis interrupted by SIGINT after 65536 of 200000 events".
pub fn analysis_cut_reason(sig: Signal, done: usize, total: usize) -> String {
    format!(
        "analysis interrupted by {} after {done} of {total} events",
        sig.as_str()
    )
}

/// Analyse `events` in chunks (writing the Perfetto trace when asked), stopping at the first
/// chunk boundary where `stop` names a signal, into a document made from `facts`; a cut adds
/// its reason after theirs. Also returns the cut.
pub fn analyze(
    events: &[Event],
    input: &AnalysisInput,
    perfetto: Option<PerfettoOut<'_>>,
    stop: &dyn Fn() -> Option<Signal>,
    facts: Facts,
) -> anyhow::Result<(Document, Option<Cut>)> {
    let mut p = Pipeline::new(input, perfetto)?;
    let mut cut = None;
    let mut done = 0;
    for chunk in events.chunks(ANALYSIS_CHUNK) {
        if let Some(sig) = stop() {
            cut = Some((sig, done));
            break;
        }
        p.extend(chunk);
        done += chunk.len();
    }
    let doc = p.finish(|_| {
        let mut facts = facts;
        if let Some((sig, done)) = cut {
            facts
                .incomplete
                .push(analysis_cut_reason(sig, done, events.len()));
        }
        facts
    })?;
    Ok((doc, cut))
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
        let (whole, cut) = analyze(&events, &input, None, &|| None, Facts::default()).unwrap();
        assert_eq!(cut, None);
        assert_eq!(whole.analysis.as_ref().unwrap().events, events.len() as u64);
        let calls = std::cell::Cell::new(0);
        let after_one = || {
            calls.set(calls.get() + 1);
            (calls.get() > 1).then_some(Signal::SIGINT)
        };
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.json");
        let out = PerfettoOut {
            path: &trace,
            raw_pointers: false,
        };
        let (part, cut) =
            analyze(&events, &input, Some(out), &after_one, Facts::default()).unwrap();
        assert_eq!(cut, Some((Signal::SIGINT, ANALYSIS_CHUNK)));
        assert_eq!(
            part.analysis.as_ref().unwrap().events,
            ANALYSIS_CHUNK as u64
        );
        assert!(
            part.incomplete_reasons.contains(&analysis_cut_reason(
                Signal::SIGINT,
                ANALYSIS_CHUNK,
                events.len()
            )),
            "{:?}",
            part.incomplete_reasons
        );
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
        assert!(t["traceEvents"].is_array());
        assert_eq!(
            analysis_cut_reason(Signal::SIGTERM, 65536, 200000),
            "analysis interrupted by SIGTERM after 65536 of 200000 events"
        );
    }
}
