//! `lockrace run`: the seed's experiment, both roles as child processes, then the side-by-side
//! summary; as root, traced (an untraced baseline first, then the same run under the capture,
//! then the analysis that ties every whoops to its kernel cause).
//!
//! The flags ([`RunArgs`]) are checked into a [`RunConfig`] before anything runs: the
//! experiment (`workload::Workload`), the mode (untraced, traced, a scenario) and the outputs.
//! Then [`main`] runs the mode: untraced here, [`traced`] (the baseline and the traced run),
//! [`scenario`] (`--scenario upgrade|mixed`), all through one traced execution
//! ([`trace_pass::traced_execute`], also `compare-sync`'s) and one summary ([`summary`]).
//!
//! Invariants: a bad flag or combination is refused before the baseline runs (so it costs
//! nothing); a report is always written when asked for, marked incomplete when anything is
//! missing; SIGINT/SIGTERM end the run with 130/143 after the report.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::args::{CaptureArgs, HtmlArgs, WorkloadArgs};
use crate::capture::{CaptureOptions, Limits};
use crate::error::hinted;
use crate::report::{
    self,
    build::{Facts, document as build_document},
    model::Document,
};
use crate::workload::execute::{Workload, execute};
use crate::workload::outcome::RunOutcome;
use crate::workload::{Role, Scenario, SyncKind, role::effective_lock, sync::sync_name};

pub mod scenario;
pub mod summary;
pub mod trace_pass;
pub mod traced;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Do not attach eBPF programs (no root needed).
    #[arg(long)]
    pub no_trace: bool,
    /// Skip the untraced baseline run that a traced run starts with.
    #[arg(long)]
    pub no_baseline: bool,
    /// Write the versioned JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every decoded kernel event to FILE as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Write a Perfetto (Chrome JSON) trace to FILE.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    #[command(flatten)]
    pub html: HtmlArgs,
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// (internal, for tests) create the run's private temp dir under DIR instead of $TMPDIR.
    #[arg(long, value_name = "DIR", hide = true)]
    pub tmpdir_parent: Option<PathBuf>,
}

/// A validated `run`: what runs, how it is traced, what it writes.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub workload: Workload,
    pub mode: Mode,
    pub outputs: Outputs,
    /// Said on stderr before the run: why it is untraced when tracing was not refused.
    pub notice: Option<String>,
}

/// How the run is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No kernel tracing: the summary and the workload's own account.
    Untraced,
    /// As root: the untraced baseline (unless `--no-baseline`), then the run under the capture.
    Traced {
        limits: Limits,
        capture: CaptureOptions,
        baseline: bool,
    },
    /// `--scenario`: its own summary and document; traced (with `limits`) as root.
    Scenario {
        scenario: Scenario,
        trace: Option<Limits>,
        capture: CaptureOptions,
    },
}

/// What the run writes besides the summary.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub perfetto: Option<PathBuf>,
    pub html: HtmlArgs,
    pub raw_pointers: bool,
}

const NEEDS_ROOT: (&str, &str) = (
    "--events and --perfetto need kernel tracing, which needs root",
    "run it with sudo (and without --no-trace)",
);

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> anyhow::Result<RunConfig> {
        let workload = workload(args)?;
        let outputs = Outputs {
            json: args.json.clone(),
            events: args.events.clone(),
            perfetto: args.perfetto.clone(),
            html: args.html.clone(),
            raw_pointers: args.capture.raw_pointers,
        };
        let wants_trace = !args.no_trace;
        let root = nix::unistd::geteuid().is_root();
        let files = args.events.is_some() || args.perfetto.is_some();
        let config = |mode, notice: Option<String>| RunConfig {
            workload: workload.clone(),
            mode,
            outputs: outputs.clone(),
            notice,
        };
        if let Some(scenario) = workload.scenario {
            if args.html.html.is_some() {
                return Err(hinted(
                    "--html draws the turn loop's report; a scenario writes its own",
                    "drop --html and use --json FILE",
                ));
            }
            // Checked before anything runs, so a bad size costs nothing.
            let limits = args.capture.limits()?;
            let trace = wants_trace && root;
            if !trace && files {
                return Err(hinted(NEEDS_ROOT.0, NEEDS_ROOT.1));
            }
            let notice = (wants_trace && !root).then(|| {
                "lockrace: not root, so the scenario is untraced (run it with sudo to see the \
                 kernel's side)"
                    .to_string()
            });
            let mode = Mode::Scenario {
                scenario,
                trace: trace.then_some(limits),
                capture: args.capture.options_or(scenario::probes_needed(scenario)),
            };
            return Ok(config(mode, notice));
        }
        if workload.sync != SyncKind::Fcntl && wants_trace {
            let sync = sync_name(workload.sync);
            if files {
                return Err(hinted(
                    format!(
                        "--sync {sync} takes no file lock, so there are no lock events to write"
                    ),
                    "drop --events/--perfetto",
                ));
            }
            let notice = format!("lockrace: --sync {sync} takes no file lock; running untraced");
            return Ok(config(Mode::Untraced, Some(notice)));
        }
        if wants_trace && root {
            // Checked before the baseline run, so a bad size costs nothing.
            let mode = Mode::Traced {
                limits: args.capture.limits()?,
                capture: args.capture.options(),
                baseline: !args.no_baseline,
            };
            return Ok(config(mode, None));
        }
        if files {
            return Err(hinted(NEEDS_ROOT.0, NEEDS_ROOT.1));
        }
        let notice = wants_trace.then(|| {
            "lockrace: not root, so the run is untraced (run it with sudo to see the kernel's \
             side)"
                .to_string()
        });
        Ok(config(Mode::Untraced, notice))
    }
}

/// The experiment of `args`: the workload flags, checked.
fn workload(args: &RunArgs) -> anyhow::Result<Workload> {
    let w = &args.workload;
    if w.iterations == 0 {
        anyhow::bail!("--iterations must be at least 1");
    }
    let tmpdir_parent = super::args::tmpdir_parent(&args.tmpdir_parent)?;
    // Both roles' view of the combination must be valid (the server's and the client's lock
    // differ in `mixed`); the run keeps the client's, i.e. the `--lock` flavour.
    effective_lock(Role::Server, w.lock, w.share, w.sync, w.scenario)?;
    let (lock, share) = effective_lock(Role::Client, w.lock, w.share, w.sync, w.scenario)?;
    Ok(Workload {
        lock,
        share,
        sync: w.sync,
        scenario: w.scenario,
        iterations: w.iterations,
        stall_timeout: Duration::from_secs(w.stall_timeout.max(1)),
        exe: PathBuf::from("/proc/self/exe"),
        tmpdir_parent,
        progress: true,
    })
}

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::from_args(&args)?;
    if let Some(notice) = &cfg.notice {
        eprintln!("{notice}");
    }
    crate::signals::install()?;
    match cfg.mode {
        Mode::Scenario { .. } => scenario::main(&cfg),
        Mode::Traced { .. } => traced::main(&cfg),
        Mode::Untraced => {
            let outcome = execute(&cfg.workload)?;
            if outcome.roles().iter().any(|r| r.report.is_some()) {
                print!(
                    "{}",
                    summary::render_summary(&cfg.workload, &outcome, false)
                );
            }
            finish(&cfg, outcome, false)
        }
    }
}

/// The versioned JSON document of an untraced run (`capture` is null).
pub fn document(w: &Workload, outcome: &RunOutcome) -> Document {
    let facts = Facts {
        workload: Some(outcome.workload_report(w)),
        incomplete: outcome.incomplete_reasons(),
        ..Facts::here()
    };
    build_document(facts, None)
}

/// Write the untraced document (unless the run already wrote its report) and turn the outcome
/// into the exit code: 130/143 when interrupted, an error naming the failure, else success.
pub fn finish(
    cfg: &RunConfig,
    outcome: RunOutcome,
    report_written: bool,
) -> anyhow::Result<ExitCode> {
    if !report_written {
        let untraced = document(&cfg.workload, &outcome);
        if let Some(path) = &cfg.outputs.json {
            report::write_json(path, &untraced)?;
        }
        cfg.outputs.html.write_if_asked(&untraced)?;
    }
    if let Some(sig) = outcome.interrupted {
        eprintln!(
            "lockrace: interrupted by {}; stopped the server (pid {}) and the client (pid {})",
            sig.as_str(),
            outcome.server.pid,
            outcome.client.pid
        );
        return Ok(ExitCode::from(crate::signals::exit_code(sig)));
    }
    if let Some(f) = outcome.failure {
        anyhow::bail!(f);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::summary::{fmt_latency, latency_cell, render_summary};
    use super::*;
    use crate::report::model::{HandoffLatency, RoleReport};
    use crate::workload::execute::{describe_failure, role_args};
    use crate::workload::outcome::{ChildExit, MemfdId, RoleRun};
    use crate::workload::{LockKind, Role, Share};
    use nix::sys::signal::Signal;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    fn cfg() -> Workload {
        Workload {
            lock: LockKind::Ofd,
            share: Share::Same,
            sync: SyncKind::Fcntl,
            scenario: None,
            iterations: 100,
            stall_timeout: Duration::from_secs(10),
            exe: PathBuf::from("/proc/self/exe"),
            tmpdir_parent: std::env::temp_dir(),
            progress: false,
        }
    }

    fn report(role: &str, whoops: u64, overlaps: u64) -> RoleReport {
        RoleReport {
            role: role.into(),
            pid: 7,
            iterations: 100,
            acquisitions: 100 + whoops,
            whoops,
            overlaps,
            elapsed_ns: 2_000_000,
            memfd_dev: 45,
            memfd_ino: 99,
            handoff_latency: None,
            upgrade: None,
        }
    }

    fn outcome(server: Option<RoleReport>, client: Option<RoleReport>) -> RunOutcome {
        let run = |role, report| RoleRun {
            role,
            pid: if role == Role::Server { 10 } else { 11 },
            exit: Some(ChildExit::Code(0)),
            report,
            acquisitions: vec![],
            stderr: String::new(),
        };
        RunOutcome {
            server: run(Role::Server, server),
            client: run(Role::Client, client),
            memfd: Some(MemfdId { dev: 45, ino: 99 }),
            interrupted: None,
            failure: None,
            started_ns: 1,
            ended_ns: 2,
        }
    }

    #[test]
    fn summary_is_side_by_side() {
        let o = outcome(
            Some(report("server", 412, 3)),
            Some(report("client", 380, 0)),
        );
        let s = render_summary(&cfg(), &o, false);
        assert!(s.starts_with("lockrace run: ofd lock, share same, 100 iterations, untraced\n"));
        let line = |name: &str| {
            s.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap()
                .split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("whoops/handoff"), ["4.12", "3.80"]);
        assert_eq!(line("whoops "), ["412", "380"]);
        assert_eq!(line("overlaps "), ["3", "0"]);
        assert_eq!(line("handoffs/s"), ["50000", "50000"]);
        assert_eq!(line("pid"), ["10", "11"]);
        assert!(s.contains("memfd dev 0:45 ino 99"), "{s}");
        assert!(s.contains("did not exclude"), "{s}");
    }

    #[test]
    fn a_missing_report_shows_dashes_and_no_overlap_note() {
        let o = outcome(Some(report("server", 1, 0)), None);
        let s = render_summary(&cfg(), &o, true);
        assert!(s.contains("traced\n"));
        let turns = s.lines().find(|l| l.contains("turns")).unwrap();
        assert!(turns.trim_end().ends_with('-'), "{turns}");
        assert!(!s.contains("did not exclude"));
    }

    #[test]
    fn document_carries_the_workload_and_why_it_is_incomplete() {
        let mut o = outcome(Some(report("server", 1, 0)), Some(report("client", 2, 0)));
        let doc = document(&cfg(), &o);
        assert!(doc.complete);
        let w = doc.workload.unwrap();
        assert_eq!((w.lock.as_str(), w.share.as_str()), ("ofd", "same"));
        assert_eq!(w.roles.len(), 2);
        assert_eq!(w.roles[0].role, "server");
        o.interrupted = Some(Signal::SIGTERM);
        o.failure = Some("the client (pid 11) was killed by SIGKILL".into());
        o.client.report = None;
        let doc = document(&cfg(), &o);
        assert!(!doc.complete);
        assert_eq!(
            doc.incomplete_reasons,
            [
                "run interrupted by SIGTERM",
                "the client (pid 11) was killed by SIGKILL"
            ]
        );
        assert_eq!(doc.workload.unwrap().roles.len(), 1);
        assert!(!o.is_complete());
        assert_eq!(o.child_pids(), [10, 11]);
    }

    #[test]
    fn failures_name_the_child_and_its_end() {
        assert_eq!(
            describe_failure(Role::Client, 12, ChildExit::Signal(9), "", Some(11)),
            "the client (pid 12) was killed by SIGKILL; stopped the server (pid 11)"
        );
        assert_eq!(
            describe_failure(
                Role::Server,
                11,
                ChildExit::Code(1),
                "lockrace: the datagram carried no file descriptor\n\n",
                None
            ),
            "the server (pid 11) exited with status 1: the datagram carried no file descriptor"
        );
        assert!(ChildExit::Code(0).success());
        assert!(!ChildExit::Signal(15).success());
        assert_eq!(ChildExit::Signal(15).describe(), "was killed by SIGTERM");
    }

    #[test]
    fn role_command_lines_carry_the_workload() {
        let a = role_args(
            &cfg(),
            Role::Client,
            Path::new("/t/sock"),
            Path::new("/t/c.acq"),
        );
        assert_eq!(
            a.join(" "),
            "client --socket /t/sock --lock ofd --share same --iterations 100 \
             --stall-timeout 10 --json --acquisition-log /t/c.acq"
        );
        // And clap accepts exactly that.
        let mut argv = vec!["lockrace".to_string()];
        argv.extend(a);
        assert!(<crate::cli::Cli as clap::Parser>::try_parse_from(argv).is_ok());
        let mut c = cfg();
        c.sync = SyncKind::Futex;
        let a = role_args(&c, Role::Server, Path::new("/s"), Path::new("/a"));
        assert!(
            a.join(" ").ends_with("--acquisition-log /a --sync futex"),
            "{a:?}"
        );
        c.sync = SyncKind::Fcntl;
        c.scenario = Some(Scenario::Upgrade);
        let a = role_args(&c, Role::Server, Path::new("/s"), Path::new("/a"));
        assert!(a.join(" ").ends_with("--scenario upgrade"), "{a:?}");
        let mut argv = vec!["lockrace".to_string()];
        argv.extend(a);
        assert!(<crate::cli::Cli as clap::Parser>::try_parse_from(argv).is_ok());
    }

    #[test]
    fn labels_and_latency_cells() {
        let mut c = cfg();
        assert_eq!(c.label(), "ofd lock, share same");
        c.sync = SyncKind::Eventfd;
        assert_eq!(c.label(), "eventfd sync");
        let o = outcome(Some(report("server", 0, 0)), Some(report("client", 0, 0)));
        assert_eq!(o.workload_report(&c).sync.as_deref(), Some("eventfd"));
        assert_eq!(o.workload_report(&c).lock, "none");
        c.sync = SyncKind::Fcntl;
        c.scenario = Some(Scenario::Mixed);
        c.lock = LockKind::Posix;
        assert_eq!(c.label(), "mixed scenario, flock vs posix");
        assert_eq!(fmt_latency(850), "850 ns");
        assert_eq!(fmt_latency(12_340), "12.3 us");
        assert_eq!(fmt_latency(4_560_000), "4.56 ms");
        let mut r = report("server", 0, 0);
        assert_eq!(latency_cell(&r, |l| l.p50_ns), "-");
        r.handoff_latency = Some(HandoffLatency {
            samples: 1,
            p50_ns: Some(2_000),
            ..Default::default()
        });
        assert_eq!(latency_cell(&r, |l| l.p50_ns), "2.0 us");
    }
}
