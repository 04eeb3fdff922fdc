//! The subcommands, one module each, on the top floor below `cli`: each owns its `Args` (the
//! flags), checks them into its typed config, and runs the command with the floors below
//! (`workload` for the experiment, `capture` for the kernel side, `pipeline` for the analysis,
//! `report` for the renderings, `jsonl` for the event file). [`args`] holds the flag groups
//! several commands share.
//!
//! Invariant: nothing below `cmd` knows about flags; a command's config is validated before
//! anything is loaded, started or written, so a bad flag costs nothing.
pub mod args;
pub mod bench;
pub mod compare;
pub mod compare_sync;
pub mod record;
pub mod report;
pub mod role;
pub mod run;
pub mod trace;
