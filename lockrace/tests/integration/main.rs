//! The no-root integration tests, one binary with a module per area (they link lockrace once).
//! Nothing here needs root or a kernel capture: recorded and hand-written events, the real
//! binary on its CLI, the untraced workload, the HTML report in a headless browser, and the
//! layering of lockrace/src. The root-only tests are the `root` binary (tests/root/), run by
//! `cargo xtask test` serially as root; `hardening_peers` and `fuzz_decoders` are binaries of
//! their own (one counts its process's descriptors, the other is long-running on demand).
//!
//! Invariant: tests that run a workload (two roles handing a lock back and forth) hold
//! [`workload_support::serial`], so two never share the CPUs.
#[path = "../support/html.rs"]
mod html_support;
#[path = "../support/workload.rs"]
mod workload_support;

mod analysis_classes;
mod analysis_fixtures;
mod analysis_perfetto;
mod analysis_report_cli;
mod analysis_streaming;
mod compare_cli;
mod html_browser;
mod html_cli;
mod layering;
mod redaction;
mod remedies;
mod trace_analysis;
mod trace_cli;
mod workload_faults;
mod workload_interop;
mod workload_run;
