//! The JSONL event file, in one place (docs/EVENTS.md): [`file`](mod@file) the meta lines
//! (header, acquisitions, trailer), [`writer`] the capture sink that writes a file, [`reader`]
//! the streaming reader `lockrace report` and the tests use. An event's own line is
//! [`crate::events::JsonEvent`].
//!
//! Invariant: a file written by any capturing command reads back into the same analysis input
//! and document facts (kernel, drops, a `run`'s acquisitions), so an offline report equals the
//! live one.
pub mod file;
pub mod reader;
pub mod writer;

pub use file::{FileHeader, FileTrailer, Meta};
pub use writer::Collector;
