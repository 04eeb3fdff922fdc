//! `lockrace record`: record the file-lock and related scheduler events of a command (and every
//! process it forks), or of running processes, to JSONL. Its supervision of a command or of
//! pids ([`supervise`], [`Stop`]) and its flag checks are shared with `lockrace trace`.
//!
//! Invariants: the programs are attached before the command starts (our own pid is in the
//! filter and the kernel adopts what we fork), so its first lock request is seen; the command is
//! always reaped, also on Ctrl-C/SIGTERM (it gets SIGTERM, then SIGKILL after a grace period);
//! the exit status is the command's (128+N when a signal killed it, 127 when it was not found).
use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{sys::signal, unistd::Pid};

use clap::Args;

use super::args::CaptureArgs;
use crate::capture::{Capture, CaptureOptions, CaptureStats, Filter, Limits};
use crate::{
    error::hinted,
    jsonl::{Collector, Meta},
    signals,
};

#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// Write every decoded event to FILE as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// Trace this process (all its threads and the children it forks). Repeatable.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Stop after this many seconds (default: when CMD exits, or at Ctrl-C).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// The command to start and trace.
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// How long a command gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(20);

/// Validated `record` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    pub pids: Vec<u32>,
    pub cmd: Vec<String>,
    pub duration: Option<Duration>,
    pub limits: Limits,
    /// `--probes`, `--self-cost`.
    pub options: CaptureOptions,
}

impl RecordConfig {
    pub fn from_args(args: &RecordArgs) -> anyhow::Result<RecordConfig> {
        if args.cmd.is_empty() && args.pid.is_empty() {
            return Err(hinted(
                "nothing to record",
                "give a command after `--` or one or more --pid",
            ));
        }
        check_pids(&args.pid)?;
        Ok(RecordConfig {
            pids: args.pid.clone(),
            cmd: args.cmd.clone(),
            duration: seconds("--duration", args.duration)?,
            limits: args.capture.limits()?,
            options: args.capture.options(),
        })
    }
}

/// Every pid names a live process (a zombie has exited: nothing of it is left to trace).
pub fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    for &pid in pids {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(hinted(
                format!("no process with pid {pid}"),
                "check the pid with `ps -p PID`",
            ));
        }
        if !process_alive(pid) {
            return Err(hinted(
                format!("process {pid} has already exited"),
                "trace a running process, or give the command after `--`",
            ));
        }
    }
    Ok(())
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || signal::kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    // /proc/PID/stat: "PID (COMM) STATE ..."; COMM may contain anything, so look after the
    // last ')'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A positive number of seconds from a flag (`flag` names it in the error).
pub fn seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(hinted(
            format!("{flag} {s} is not a positive number of seconds"),
            format!("e.g. {flag} 10"),
        )),
    }
}

/// Why recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    CommandExited(ExitStatus),
    CommandNotFound,
    ProcessesGone,
    Duration,
    Signal(signal::Signal),
}

/// Wait for the first stop condition. Reaps the command in every case. Without a command and
/// without pids (`trace --path`, or the whole machine) only a signal or the duration stops it.
pub fn supervise(cfg: &RecordConfig, mut child: Option<Child>) -> anyhow::Result<Stop> {
    let started = Instant::now();
    loop {
        if let Some(c) = &mut child
            && let Some(st) = c.try_wait()?
        {
            return Ok(Stop::CommandExited(st));
        }
        if child.is_none() && !cfg.pids.is_empty() && cfg.pids.iter().all(|&p| !process_alive(p)) {
            return Ok(Stop::ProcessesGone);
        }
        let why = if let Some(sig) = signals::received() {
            Some(Stop::Signal(sig))
        } else if cfg.duration.is_some_and(|d| started.elapsed() >= d) {
            Some(Stop::Duration)
        } else {
            None
        };
        if let Some(why) = why {
            if let Some(c) = child.take() {
                end_child(c);
            }
            return Ok(why);
        }
        std::thread::sleep(POLL);
    }
}

/// SIGTERM, a grace period, SIGKILL; always reaped.
pub fn end_child(mut c: Child) {
    let pid = Pid::from_raw(c.id() as i32);
    let _ = signal::kill(pid, signal::Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// The shell's exit code for a child's status (128+N when signal N killed it).
pub fn exit_code_of(st: ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        _ => 1,
    }
}

pub fn summary_line(path: &Path, stats: &CaptureStats) -> String {
    let mut s = format!(
        "lockrace: recorded {} events to {}",
        stats.events,
        path.display()
    );
    if stats.dropped > 0 {
        s.push_str(&format!(
            "; {} events DROPPED (ring buffer full): the recording is incomplete, try a larger --ring-buffer-mb",
            stats.dropped
        ));
    }
    if stats.decode_errors > 0 {
        s.push_str(&format!("; {} undecodable records", stats.decode_errors));
    }
    if stats.untracked_tasks > 0 {
        s.push_str(&format!(
            "; {} times a task was NOT FOLLOWED (task map full): the recording is incomplete, \
             raise --max-tasks",
            stats.untracked_tasks
        ));
    }
    s
}

pub fn main(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let cfg = RecordConfig::from_args(&args)?;
    signals::install()?;
    let mut tgids = cfg.pids.clone();
    if !cfg.cmd.is_empty() {
        // What we fork is adopted in the kernel (sched_process_fork), so the command is traced
        // from its first instruction.
        tgids.push(std::process::id());
    }
    let sink = Collector::new_with(false, Some(&args.events), args.capture.raw_pointers)?;
    let filter = Filter {
        tgids,
        inodes: vec![],
    };
    let capture = Capture::start_options(&filter, &cfg.limits, cfg.options, sink)?;
    let what = if cfg.cmd.is_empty() {
        format!(
            "pid {}",
            cfg.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("`{}`", cfg.cmd.join(" "))
    };
    eprintln!("Tracing file locks of {what}... Hit Ctrl-C to end.");

    let child = if cfg.cmd.is_empty() {
        None
    } else {
        match Command::new(&cfg.cmd[0]).args(&cfg.cmd[1..]).spawn() {
            Ok(c) => Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (_, stats) = capture.stop()?;
                log::debug!("{}", summary_line(&args.events, &stats));
                eprintln!(
                    "lockrace: command not found: {}{}",
                    cfg.cmd[0],
                    crate::error::COMMAND_NOT_FOUND_HINT
                );
                return Ok(ExitCode::from(127));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot start {}", cfg.cmd[0])),
        }
    };
    let stop = supervise(&cfg, child);
    eprint!("Detaching... ");
    let (mut sink, stats, offsets) = capture.stop_with_offsets()?;
    eprintln!("done");
    let mut incomplete = Vec::new();
    if let Ok(Stop::Signal(sig)) = &stop {
        incomplete.push(format!("recording interrupted by {}", sig.as_str()));
    }
    let trailer = sink.trailer(&stats, offsets.lock_field_names, incomplete);
    sink.write_meta(&[Meta::LockraceTrailer(trailer)])
        .with_context(|| format!("cannot write {}", args.events.display()))?;
    eprintln!("{}", summary_line(&args.events, &stats));
    for line in crate::capture::progstats::summary_lines(&stats.programs) {
        eprintln!("{line}");
    }
    Ok(match stop? {
        Stop::CommandExited(st) => ExitCode::from(exit_code_of(st)),
        Stop::CommandNotFound => ExitCode::from(127),
        Stop::ProcessesGone | Stop::Duration => ExitCode::SUCCESS,
        Stop::Signal(sig) => ExitCode::from(signals::exit_code(sig)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> anyhow::Result<RecordConfig> {
        let cli = crate::cli::Cli::try_parse_from(args)?;
        match cli.command {
            crate::cli::Command::Record(r) => RecordConfig::from_args(&r),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn needs_a_command_or_a_pid() {
        let e = parse(&["lockrace", "record", "--events", "x.jsonl"]).unwrap_err();
        assert!(e.to_string().contains("nothing to record"));
        let c = parse(&[
            "lockrace", "record", "--events", "x.jsonl", "--", "true", "-x",
        ])
        .unwrap();
        assert_eq!(c.cmd, vec!["true", "-x"]);
    }

    #[test]
    fn missing_pid_and_bad_duration_are_refused() {
        let e = parse(&["lockrace", "record", "--events", "x", "--pid", "999999999"]).unwrap_err();
        assert!(
            e.to_string().contains("no process with pid 999999999"),
            "{e}"
        );
        let me = std::process::id().to_string();
        let e = parse(&[
            "lockrace",
            "record",
            "--events",
            "x",
            "--pid",
            &me,
            "--duration",
            "-1",
        ]);
        assert!(e.is_err());
        let c = parse(&[
            "lockrace",
            "record",
            "--events",
            "x",
            "--pid",
            &me,
            "--duration",
            "0.5",
        ])
        .unwrap();
        assert_eq!(c.duration, Some(Duration::from_millis(500)));
    }

    #[test]
    fn exit_codes_follow_the_command() {
        assert_eq!(exit_code_of(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137);
    }
}
