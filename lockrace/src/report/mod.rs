//! Reports: one model ([`model::Document`]), several renderings (terminal, JSON, HTML,
//! Perfetto).
//!
//! Entry points: [`build`] fills a document from an [`crate::analysis::Analysis`];
//! [`terminal::render`] prints it; `serde_json` writes it (`--json`); [`html`] renders it as one
//! self-contained page (`--html`); [`perfetto`] writes the trace; [`offline`] is
//! `lockrace report EVENTS.jsonl`.
pub mod build;
pub mod contention;
pub mod html;
pub mod model;
pub mod offline;
pub mod perfetto;
pub mod spans;
pub mod terminal;

pub use build::build;
