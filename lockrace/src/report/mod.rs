//! Reports: one model ([`model::Document`], the whole schema), several renderings (terminal,
//! JSON, HTML, Perfetto).
//!
//! Entry points: [`build::document`] makes the document from its facts and an
//! [`crate::analysis::Analysis`] (the one constructor); [`terminal::render`] prints it;
//! [`write_json`] writes it (`--json`); [`html`] renders it as one self-contained page
//! (`--html`, and `compare --html` side by side); [`perfetto`] streams the trace as the
//! analyzer completes records; [`compare`] reads the figures two JSON reports are compared by.
//!
//! Invariant: everything here is a pure function of the document (or of the analyzer's
//! records, for Perfetto), apart from the writers that put a rendering in a file.
use std::path::Path;

use anyhow::Context as _;

pub mod build;
pub mod capture;
pub mod compare;
pub mod contention;
pub mod html;
pub mod model;
pub mod perfetto;
pub mod spans;
pub mod terminal;

/// `--json FILE`: the document, pretty-printed, with a final newline.
pub fn write_json(path: &Path, doc: &model::Document) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the report {}", path.display()))
}
