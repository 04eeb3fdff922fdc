//! Analysis: pure functions over decoded events (no I/O, no root), so that live captures and
//! saved JSONL files give the same answers and most logic is tested on recorded fixtures.
//!
//! Entry points: [`analyze`] over a slice, or [`Analyzer`] fed event by event (the live reader
//! uses that, so no event needs to be kept). The result, [`Analysis`], is bounded in size
//! whatever the number of events; `report::build::document` turns it into the report document.
pub mod analyzer;
pub mod contention;
mod fasthash;
pub mod hist;
pub mod observer;
pub mod reorder;
pub mod synth;
pub mod types;
pub mod whoops;

pub use analyzer::{Analyzer, Footprint};
pub use types::*;
pub use whoops::{Acquisition, PeerState, RoleInput, WhoopsCause, WhoopsInput, WhoopsResult};

use crate::events::Event;

/// How the report names a `run`'s memfd.
pub const MEMFD_NAME: &str = "memfd:lockrace (the handoff)";

/// What the analysis knows besides the events.
#[derive(Clone, Debug, Default)]
pub struct AnalysisInput {
    /// Paths of (dev, ino) pairs, for the report (the memfd's name in `run`).
    pub paths: Vec<((u32, u64), String)>,
    /// `run` only: the memfd and the roles' acquisition logs.
    pub whoops: Option<WhoopsInput>,
    /// Reorder window (default [`reorder::DEFAULT_WINDOW_NS`]; 0 disables reordering).
    pub reorder_window_ns: Option<u64>,
}

impl AnalysisInput {
    /// The input of a `run`'s events: the memfd `(dev, ino)`, named for the report, and the
    /// roles' acquisition logs (no whoops correlation without roles).
    pub fn run(dev: u32, ino: u64, roles: Vec<RoleInput>) -> AnalysisInput {
        AnalysisInput {
            paths: vec![((dev, ino), MEMFD_NAME.to_string())],
            whoops: (!roles.is_empty()).then_some(WhoopsInput { dev, ino, roles }),
            reorder_window_ns: None,
        }
    }

    pub fn path_of(&self, dev: u32, ino: u64) -> Option<&str> {
        self.paths
            .iter()
            .find(|(k, _)| *k == (dev, ino))
            .map(|(_, p)| p.as_str())
    }
}

/// Analyse a whole slice of events.
pub fn analyze(events: &[Event], input: &AnalysisInput) -> Analysis {
    let mut a = Analyzer::new(input);
    a.extend(events);
    a.finish()
}
