//! lockrace: when a Linux file lock is released, who gets it next, and why?
//!
//! Data flow (docs/ARCHITECTURE.md): workload or any program -> kernel tracepoints ->
//! `capture` (loader, tracefs offsets, ring-buffer reader) -> `events::Event` -> `pipeline`
//! (`analysis`, pure functions, then `report::build::document`) -> `report` (terminal, JSON,
//! HTML, Perfetto). Saved JSONL events (`jsonl`) re-enter at `events`, so offline and live
//! reports are the same code.
//!
//! The modules stand on floors and import only downwards (checked by
//! tests/integration/layering.rs): `cli` -> `cmd` -> `workload` -> `pipeline`, `jsonl` ->
//! `report` -> `analysis`, `capture`, `redact` -> `events`, `progress` -> `signals` -> `error`,
//! `host`.
pub mod analysis;
pub mod capture;
pub mod cli;
pub mod cmd;
pub mod error;
pub mod events;
pub mod host;
pub mod jsonl;
pub mod pipeline;
pub mod progress;
pub mod redact;
pub mod report;
pub mod signals;
pub mod workload;
