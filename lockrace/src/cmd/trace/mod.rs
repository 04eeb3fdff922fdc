//! `lockrace trace`: attach to any program and diagnose its file-lock fairness live.
//!
//! What is traced: the given processes (`--pid`, all threads, and what they fork after the
//! trace starts), a command lockrace starts itself (`-- CMD ARGS`, traced from its first
//! instruction), every process that locks the given files (`--path`, resolved to the kernel's
//! (dev, ino) and filtered in the kernel; a process is followed from its first lock on them),
//! or, with none of these, every file lock on the machine.
//!
//! Invariants:
//! - events are analysed on the capture's reader thread as they arrive and then dropped
//!   ([`sink::TraceSink`] feeds the one pipeline, `crate::pipeline::Pipeline`); `--perfetto` is
//!   streamed by the analyzer's observer and `--events` by the JSONL writer, so memory stays
//!   flat however long the trace runs; the document is made from [`facts`] when it ends;
//! - the programs are attached before the command starts and before the "Tracing" line is
//!   printed, so whatever happens after that line is seen;
//! - a trace always ends with a report: at the command's exit (its exit status is ours; 127
//!   when it cannot be found), when the traced processes are gone, after `--duration`, or at
//!   Ctrl-C/SIGTERM (130/143). The report says how the trace ended; requests cut by its end are
//!   counted, not treated as lost, so `complete` stays true unless data was lost;
//! - lock names come from `/proc/PID/fd` of the processes that locked them ([`names`]), never
//!   from `/proc/locks`.
pub mod interval;
pub mod names;
pub mod sink;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use clap::Args;

use self::{names::Names, sink::TraceSink};
use super::args::{CaptureArgs, HtmlArgs};
use super::record::{self, RecordConfig, Stop};
use crate::{
    analysis::{Analysis, AnalysisInput},
    capture::{Capture, CaptureStats, Filter},
    error::hinted,
    jsonl::Collector,
    pipeline::{PerfettoOut, Pipeline},
    report::{
        self,
        build::{
            Facts, LossContext, capture_info, capture_loss_reasons, document as build_document,
        },
        model::{Document, TraceInfo},
    },
    signals,
};

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Trace this process (all its threads and what it forks from now on). Repeatable.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Trace every process that locks FILE (followed from its first lock on it). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub path: Vec<PathBuf>,
    /// Stop after this many seconds (default: when CMD or the pids exit, or at Ctrl-C).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Print a per-lock summary every S seconds while tracing.
    #[arg(long, value_name = "S")]
    pub interval: Option<f64>,
    /// Write the versioned JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Perfetto (Chrome JSON) trace to FILE (streamed while tracing).
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Write every decoded event to FILE as JSON lines (streamed while tracing).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    #[command(flatten)]
    pub html: HtmlArgs,
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// The command to start and trace (its exit status becomes lockrace's).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// A file given with `--path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedPath {
    /// As the user wrote it.
    pub given: PathBuf,
    /// Canonical form (what the report shows).
    pub canonical: String,
    pub dev: u32,
    pub ino: u64,
}

/// Validated `trace` arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    pub pids: Vec<u32>,
    pub paths: Vec<TracedPath>,
    pub cmd: Vec<String>,
    pub duration: Option<Duration>,
    pub interval: Option<Duration>,
    pub limits: crate::capture::Limits,
    /// `--probes`, `--self-cost`.
    pub options: crate::capture::CaptureOptions,
    /// `--raw-pointers`: kernel addresses in the report (else `#N` labels).
    pub raw_pointers: bool,
}

impl TraceConfig {
    pub fn from_args(args: &TraceArgs) -> anyhow::Result<TraceConfig> {
        record::check_pids(&args.pid)?;
        let mut paths: Vec<TracedPath> = Vec::new();
        for p in &args.path {
            let t = traced_path(p)?;
            if !paths.iter().any(|q| (q.dev, q.ino) == (t.dev, t.ino)) {
                paths.push(t);
            }
        }
        if paths.len() > 1024 {
            anyhow::bail!("at most 1024 --path files can be traced at once");
        }
        Ok(TraceConfig {
            pids: args.pid.clone(),
            paths,
            cmd: args.cmd.clone(),
            duration: record::seconds("--duration", args.duration)?,
            interval: record::seconds("--interval", args.interval)?,
            limits: args.capture.limits()?,
            options: args.capture.options(),
            raw_pointers: args.capture.raw_pointers,
        })
    }

    /// Neither pids, nor paths, nor a command: the whole machine.
    pub fn machine_wide(&self) -> bool {
        self.pids.is_empty() && self.paths.is_empty() && self.cmd.is_empty()
    }

    /// What is traced, for the start line and the report.
    pub fn target(&self) -> String {
        let mut parts = Vec::new();
        if !self.cmd.is_empty() {
            parts.push(format!("`{}`", self.cmd.join(" ")));
        }
        if !self.pids.is_empty() {
            let pids: Vec<String> = self.pids.iter().map(u32::to_string).collect();
            parts.push(format!(
                "pid{} {}",
                if pids.len() > 1 { "s" } else { "" },
                pids.join(", ")
            ));
        }
        if !self.paths.is_empty() {
            let files: Vec<&str> = self.paths.iter().map(|p| p.canonical.as_str()).collect();
            parts.push(format!("processes locking {}", files.join(", ")));
        }
        if parts.is_empty() {
            "every process on this machine".to_string()
        } else {
            parts.join(" and ")
        }
    }

    /// The in-kernel filter: our own pid when we start the command (the kernel adopts what we
    /// fork), the given pids, the given files.
    pub fn filter(&self, me: u32) -> Filter {
        let mut tgids = self.pids.clone();
        if !self.cmd.is_empty() {
            tgids.push(me);
        }
        Filter {
            tgids,
            inodes: self.paths.iter().map(|p| (p.dev, p.ino)).collect(),
        }
    }

    fn supervision(&self) -> RecordConfig {
        RecordConfig {
            pids: self.pids.clone(),
            cmd: self.cmd.clone(),
            duration: self.duration,
            limits: self.limits,
            options: self.options,
        }
    }
}

fn traced_path(p: &Path) -> anyhow::Result<TracedPath> {
    let (dev, ino) = names::inode_of(p).map_err(|e| {
        hinted(
            format!("cannot trace {}: {e}", p.display()),
            "--path takes an existing file; create it first, or trace the program with --pid or `-- CMD`",
        )
    })?;
    let canonical = std::fs::canonicalize(p)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_string_lossy().into_owned());
    Ok(TracedPath {
        given: p.to_path_buf(),
        canonical,
        dev,
        ino,
    })
}

/// How the trace ended, as the report says it.
pub fn ended_by(stop: &Stop) -> &'static str {
    match stop {
        Stop::CommandExited(_) | Stop::CommandNotFound => "command_exited",
        Stop::ProcessesGone => "processes_exited",
        Stop::Duration => "duration",
        Stop::Signal(nix::sys::signal::Signal::SIGINT) => "interrupted",
        Stop::Signal(_) => "terminated",
    }
}

/// Our exit code: the command's, or 128+N for a signal, else success.
pub fn exit_code(stop: &Stop) -> u8 {
    match stop {
        Stop::CommandExited(st) => record::exit_code_of(*st),
        Stop::CommandNotFound => 127,
        Stop::ProcessesGone | Stop::Duration => 0,
        Stop::Signal(sig) => signals::exit_code(*sig),
    }
}

/// Requests cut by the end of the trace are not lost data: take that reason out of the
/// analysis' incomplete list (it is reported as `trace.open_requests_at_end`).
pub fn drop_cut_requests(a: &mut Analysis) -> u64 {
    let open = a.stats.unfinished_requests;
    if open > 0 {
        a.incomplete
            .retain(|r| !r.contains("had not ended when the events stopped"));
    }
    open
}

/// What the document of a finished trace says besides the analysis (whose requests cut by the
/// end of the trace are taken out of its incomplete list: `trace.open_requests_at_end` counts
/// them).
pub fn facts(
    cfg: &TraceConfig,
    analysis: &mut Analysis,
    stats: &CaptureStats,
    lock_field_names: &str,
    stop: &Stop,
    traced: Duration,
) -> Facts {
    let open = drop_cut_requests(analysis);
    Facts {
        lock_field_names: lock_field_names.to_string(),
        raw_pointers: cfg.raw_pointers,
        capture: Some(capture_info(stats)),
        trace: Some(TraceInfo {
            target: cfg.target(),
            ended_by: ended_by(stop).to_string(),
            command_exit_code: match stop {
                Stop::CommandExited(_) => Some(i32::from(exit_code(stop))),
                _ => None,
            },
            traced_ns: u64::try_from(traced.as_nanos()).unwrap_or(u64::MAX),
            open_requests_at_end: open,
        }),
        incomplete: capture_loss_reasons(LossContext::Trace, stats),
        ..Facts::here()
    }
}

/// The report document of a finished trace (what [`main`] makes through the pipeline).
pub fn document(
    cfg: &TraceConfig,
    mut analysis: Analysis,
    stats: &CaptureStats,
    lock_field_names: &str,
    stop: &Stop,
    traced: Duration,
) -> Document {
    let facts = facts(cfg, &mut analysis, stats, lock_field_names, stop, traced);
    build_document(facts, Some(&analysis))
}

/// Whether `name` can be started: a path that exists, or a file in a `$PATH` directory.
/// Checked before anything is attached, so a typo costs no eBPF load (and needs no root).
pub fn command_exists(name: &str, path_var: Option<&std::ffi::OsStr>) -> bool {
    if name.contains('/') {
        return Path::new(name).exists();
    }
    path_var.is_some_and(|p| std::env::split_paths(p).any(|dir| dir.join(name).is_file()))
}

fn start_command(cmd: &[String]) -> Result<std::process::Child, (u8, String)> {
    match Command::new(&cmd[0]).args(&cmd[1..]).spawn() {
        Ok(c) => Ok(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            127,
            format!(
                "command not found: {}{}",
                cmd[0],
                crate::error::COMMAND_NOT_FOUND_HINT
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err((126, format!("cannot run {}: {e}", cmd[0])))
        }
        Err(e) => Err((126, format!("cannot start {}: {e}", cmd[0]))),
    }
}

pub fn main(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let cfg = TraceConfig::from_args(&args)?;
    if let Some(name) = cfg.cmd.first()
        && !command_exists(name, std::env::var_os("PATH").as_deref())
    {
        eprintln!(
            "lockrace: command not found: {name}{}",
            crate::error::COMMAND_NOT_FOUND_HINT
        );
        return Ok(ExitCode::from(127));
    }
    signals::install()?;
    if cfg.machine_wide() {
        eprintln!(
            "lockrace: warning: no --pid, --path or command: tracing every file lock on this \
             machine (a busy machine produces many events; narrow it with --path or --pid)"
        );
    }

    // Outputs first: a bad path must fail before anything is attached.
    let input = AnalysisInput::default();
    let perfetto = args.perfetto.as_deref().map(|path| PerfettoOut {
        path,
        raw_pointers: args.capture.raw_pointers,
    });
    let pipeline = Pipeline::new(&input, perfetto)?;
    let jsonl = match &args.events {
        Some(p) => Some(Collector::new_with(
            false,
            Some(p),
            args.capture.raw_pointers,
        )?),
        None => None,
    };
    let mut names = Names::new();
    for p in &cfg.paths {
        names.insert(p.dev, p.ino, p.canonical.clone());
    }
    let interval = cfg.interval.map(|d| {
        (
            d,
            Box::new(std::io::stdout()) as Box<dyn std::io::Write + Send>,
        )
    });
    let sink = TraceSink::new(pipeline, jsonl, names, interval);

    let capture = Capture::start_options(
        &cfg.filter(std::process::id()),
        &cfg.limits,
        cfg.options,
        sink,
    )?;
    let lock_field_names = capture.offsets().lock_field_names;
    if let Some(&gone) = cfg.pids.iter().find(|&&p| !record::process_alive(p)) {
        drop(capture.stop());
        return Err(hinted(
            format!("process {gone} exited before tracing started"),
            "trace a running process, or give the command after `--`",
        ));
    }
    eprintln!(
        "Tracing file locks of {}... Hit Ctrl-C to end.",
        cfg.target()
    );
    let started = Instant::now();

    let child = if cfg.cmd.is_empty() {
        None
    } else {
        match start_command(&cfg.cmd) {
            Ok(c) => Some(c),
            Err((code, msg)) => {
                drop(capture.stop());
                eprintln!("lockrace: {msg}");
                return Ok(ExitCode::from(code));
            }
        }
    };
    // Elapsed and remaining time on a terminal (not with --interval: its tables show time).
    let ticker = match (cfg.duration, cfg.interval) {
        (Some(total), None) => crate::progress::Ticker::start(move |elapsed| {
            Some(crate::progress::duration_line("tracing", elapsed, total))
        }),
        _ => None,
    };
    let stop = record::supervise(&cfg.supervision(), child);
    drop(ticker);
    let traced = started.elapsed();
    eprint!("Detaching... ");
    let (sink, stats) = capture.stop()?;
    eprintln!("done");
    let stop = stop?;

    let (pipeline, names, jsonl) = sink.into_parts();
    if let (Some(mut c), Some(p)) = (jsonl, &args.events) {
        // The trailer makes `lockrace report FILE` state the drops this trace had.
        let trailer = c.trailer(&stats, lock_field_names, Vec::new());
        c.write_meta(&[crate::jsonl::Meta::LockraceTrailer(trailer)])
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let doc = pipeline.finish(|analysis| {
        names.name_locks(analysis);
        facts(&cfg, analysis, &stats, lock_field_names, &stop, traced)
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(report::terminal::render(&doc).as_bytes())?;
    out.flush()?;
    if let Some(path) = &args.json {
        report::write_json(path, &doc)?;
    }
    args.html.write_if_asked(&doc)?;
    Ok(ExitCode::from(exit_code(&stop)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::process::ExitStatusExt;

    fn parse(args: &[&str]) -> anyhow::Result<TraceConfig> {
        let cli = crate::cli::Cli::try_parse_from(args)?;
        match cli.command {
            crate::cli::Command::Trace(t) => TraceConfig::from_args(&t),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn targets_and_filters() {
        let c = parse(&["lockrace", "trace"]).unwrap();
        assert!(c.machine_wide());
        assert_eq!(c.target(), "every process on this machine");
        assert_eq!(c.filter(9), Filter::default());

        let c = parse(&["lockrace", "trace", "--", "sqlite3", "db"]).unwrap();
        assert_eq!(c.target(), "`sqlite3 db`");
        assert_eq!(c.filter(9).tgids, vec![9]);

        let me = std::process::id().to_string();
        let c = parse(&["lockrace", "trace", "--pid", &me, "--interval", "0.5"]).unwrap();
        assert_eq!(c.target(), format!("pid {me}"));
        assert_eq!(c.interval, Some(Duration::from_millis(500)));
        assert_eq!(c.filter(9).tgids, vec![std::process::id()]);
    }

    #[test]
    fn paths_resolve_to_kernel_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("db");
        std::fs::write(&f, b"").unwrap();
        let fs = f.to_str().unwrap();
        let c = parse(&["lockrace", "trace", "--path", fs, "--path", fs]).unwrap();
        assert_eq!(c.paths.len(), 1, "the same file twice is one inode");
        let (dev, ino) = names::inode_of(&f).unwrap();
        assert_eq!(c.filter(1).inodes, vec![(dev, ino)]);
        assert!(c.filter(1).tgids.is_empty());
        assert!(c.target().starts_with("processes locking /"));

        let e = parse(&["lockrace", "trace", "--path", "/nonexistent/db"]).unwrap_err();
        assert!(
            e.to_string().contains("cannot trace /nonexistent/db"),
            "{e}"
        );
    }

    #[test]
    fn bad_pids_and_numbers_are_refused() {
        let e = parse(&["lockrace", "trace", "--pid", "999999999"]).unwrap_err();
        assert!(
            e.to_string().contains("no process with pid 999999999"),
            "{e}"
        );
        assert!(parse(&["lockrace", "trace", "--interval", "0"]).is_err());
        assert!(parse(&["lockrace", "trace", "--duration", "nan"]).is_err());
    }

    #[test]
    fn endings_and_exit_codes() {
        use nix::sys::signal::Signal;
        let exited = Stop::CommandExited(std::process::ExitStatus::from_raw(3 << 8));
        assert_eq!(
            (ended_by(&exited), exit_code(&exited)),
            ("command_exited", 3)
        );
        let int = Stop::Signal(Signal::SIGINT);
        assert_eq!((ended_by(&int), exit_code(&int)), ("interrupted", 130));
        let term = Stop::Signal(Signal::SIGTERM);
        assert_eq!((ended_by(&term), exit_code(&term)), ("terminated", 143));
        assert_eq!(exit_code(&Stop::Duration), 0);
        assert_eq!(ended_by(&Stop::ProcessesGone), "processes_exited");
    }

    #[test]
    fn requests_cut_by_the_end_of_the_trace_are_not_lost_data() {
        use crate::analysis::synth::{Actor, Flavor, Script};
        use lockrace_common::k;
        let mut s = Script::new();
        let a = Actor::new(1, 1, 0, "a", 0xa0, Flavor::Posix);
        let b = Actor::new(2, 2, 1, "b", 0xb0, Flavor::Posix);
        s.lock_now(&a, k::F_WRLCK);
        s.lock_block(&b, k::F_WRLCK, a.held); // still waiting at Ctrl-C
        let cfg = parse(&["lockrace", "trace"]).unwrap();
        let analysis = || crate::analysis::analyze(&s.events, &AnalysisInput::default());
        let int = Stop::Signal(nix::sys::signal::Signal::SIGINT);
        let stats = CaptureStats {
            events: s.events.len() as u64,
            ..CaptureStats::default()
        };
        let doc = document(&cfg, analysis(), &stats, "x", &int, Duration::from_secs(1));
        assert!(doc.complete, "{:?}", doc.incomplete_reasons);
        let t = doc.trace.as_ref().unwrap();
        assert_eq!(
            (t.ended_by.as_str(), t.open_requests_at_end),
            ("interrupted", 1)
        );
        assert_eq!(t.command_exit_code, None);

        let lossy = CaptureStats {
            dropped: 7,
            ..stats.clone()
        };
        let doc = document(&cfg, analysis(), &lossy, "x", &int, Duration::from_secs(1));
        assert!(!doc.complete);
        assert!(doc.incomplete_reasons[0].contains("7 events were dropped"));
        assert!(doc.diagnosis.iter().any(|d| d.code == "events-dropped"));
    }

    #[test]
    fn commands_are_looked_up_in_path() {
        let path = std::ffi::OsString::from("/nonexistent:/bin:/usr/bin");
        assert!(command_exists("sh", Some(&path)));
        assert!(command_exists("/bin/sh", None));
        assert!(!command_exists("lockrace-no-such-command", Some(&path)));
        assert!(!command_exists("sh", None));
        assert!(!command_exists("./no/such/file", Some(&path)));
    }

    #[test]
    fn a_missing_command_is_127() {
        let e = start_command(&["/nonexistent/lockrace-cmd".to_string()]).unwrap_err();
        assert_eq!(e.0, 127);
        assert!(e.1.contains("command not found"));
    }
}
