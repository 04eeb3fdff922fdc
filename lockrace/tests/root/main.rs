//! The root-only integration tests, one binary with a module per area: real eBPF programs on
//! the real kernel, real events. `cargo xtask test` builds this binary as the current user and
//! runs it as root, one test at a time (`--test-threads=1`: the tests attach programs and time
//! lock handoffs, so they must not overlap), with `LOCKRACE_REQUIRE_ROOT_TESTS=1`. They FAIL,
//! never skip, when eBPF cannot load. As root, one area by hand: `cargo test -p lockrace --test
//! root hardening:: -- --test-threads=1`.
use std::path::Path;
use std::process::Command;

#[path = "../support/html.rs"]
mod html_support;

mod bench;
mod capture;
mod fast;
mod hardening;
mod html;
mod remedies;
mod run;
mod trace;
mod vm;

/// The lockrace binary under test.
fn lockrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockrace"))
}

/// A JSON report a command wrote.
fn read_json(p: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("no report at {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}
