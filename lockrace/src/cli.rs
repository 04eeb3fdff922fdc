//! Command-line surface: flags are parsed here (clap), then validated into typed configs by the
//! subcommand modules. Nothing in this file touches the system.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::workload::{LockKind, Scenario, Share, SyncKind};

const ABOUT: &str = "When a Linux file lock is released, who gets it next, and why?";

const EXAMPLES: &str = "\
Examples:
  sudo lockrace run                                   # the seed's experiment, traced
  sudo lockrace run --lock posix --share reopen --iterations 2000 --json out.json
  sudo lockrace run --lock posix --share reopen --html report.html   # open it in a browser
  lockrace run --no-trace --lock flock                # untraced, no root needed
  sudo lockrace record --events ev.jsonl -- sqlite3 db.sqlite 'insert ...'
  lockrace report ev.jsonl --json report.json";

#[derive(Parser, Debug)]
#[command(name = "lockrace", version, about = ABOUT, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// More output (-v: progress details, -vv: debug logs).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the memfd handoff (server + client as child processes) and report who got the lock.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// The seed's server role: receive the client's memfd, then take turns writing under a lock.
    #[command(after_help = SERVER_EXAMPLES)]
    Server(RoleArgs),
    /// The seed's client role: create and send a sealed memfd, then take turns reading under a lock.
    #[command(after_help = CLIENT_EXAMPLES)]
    Client(RoleArgs),
    /// Record the file-lock and scheduler events of a command (or of running processes) to JSONL.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Attach to processes, a command, or the files they lock, and diagnose lock fairness live.
    #[command(after_help = TRACE_EXAMPLES)]
    Trace(TraceArgs),
    /// Re-analyse a saved JSONL event file offline (no root needed).
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Compare two JSON reports side by side; exit 1 when a metric grew beyond a bound.
    #[command(after_help = crate::compare::HELP)]
    Compare(CompareArgs),
    /// Every way of handing the turn over (file locks, eventfd, futex) measured side by side.
    #[command(after_help = COMPARE_SYNC_EXAMPLES)]
    CompareSync(CompareSyncArgs),
    /// (internal) measurement helpers for `cargo xtask bench`.
    #[command(subcommand, hide = true, after_help = BENCH_EXAMPLES)]
    Bench(crate::bench::BenchCommand),
}

const BENCH_EXAMPLES: &str = "\
Examples:
  sudo lockrace bench storm --procs 2 --threads 2 --duration 2 --rate 250000 --capture count
  lockrace bench analyzer --events 10000000";

const COMPARE_SYNC_EXAMPLES: &str = "\
Examples:
  lockrace compare-sync --iterations 20000 --repeat 5
  sudo lockrace compare-sync --json sync.json           # plus self-barges, traced";

const RUN_EXAMPLES: &str = "\
Examples:
  sudo lockrace run                                    # the seed: OFD lock, one description
  sudo lockrace run --lock posix --share reopen        # real mutual exclusion, traced
  sudo lockrace run --lock posix --share reopen --iterations 2000 --html report.html
  lockrace run --no-trace --iterations 10000 --json run.json
  sudo lockrace run --probes lean --lock posix --share reopen  # fewer probes, less probe effect
  lockrace run --sync futex --iterations 20000         # the same turns handed over by a futex
  sudo lockrace run --scenario upgrade --lock flock    # is a flock upgrade atomic? (no)
  sudo lockrace run --scenario mixed --lock posix      # flock and fcntl locks ignore each other";
const SERVER_EXAMPLES: &str = "\
Examples:
  lockrace server --socket /tmp/lr.sock &
  lockrace client --socket /tmp/lr.sock";
const CLIENT_EXAMPLES: &str = "\
Examples:
  lockrace client --socket /tmp/lr.sock --iterations 1000 --json";
const RECORD_EXAMPLES: &str = "\
Examples:
  sudo lockrace record --events ev.jsonl -- flock /tmp/f -c 'sleep 0.1'
  sudo lockrace record --events ev.jsonl --pid 1234 --duration 10";
const TRACE_EXAMPLES: &str = "\
Examples:
  sudo lockrace trace --path /var/lib/app/db.sqlite --interval 1   # whoever locks that file
  sudo lockrace trace --pid 1234 --duration 30 --json report.json
  sudo lockrace trace --duration 10 --html locks.html -- make -j8   # a page with timelines
  sudo lockrace trace --json r.json -- sh -c 'flock /tmp/f -c true & flock /tmp/f -c true'
  sudo lockrace trace                                  # every file lock on the machine";
const REPORT_EXAMPLES: &str = "\
Examples:
  lockrace report ev.jsonl
  lockrace report ev.jsonl --json report.json --perfetto trace.json
  lockrace report ev.jsonl --html report.html --html-handoffs 8";

#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Lock flavour.
    #[arg(long, value_enum, default_value_t = LockKind::Ofd)]
    pub lock: LockKind,
    /// Share mode of the memfd between the two roles.
    #[arg(long, value_enum, default_value_t = Share::Same)]
    pub share: Share,
    /// Turns each role completes (whoops are retried and do not count).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    /// Give up when the other side makes no progress for this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Hand the turn over with a file lock (`fcntl`: --lock/--share), or with eventfd or futex.
    #[arg(long, value_enum, default_value_t = SyncKind::Fcntl)]
    pub sync: SyncKind,
    /// Run a scenario instead of the turn loop (`--iterations` rounds; see docs/WORKLOAD.md).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
}

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
    /// Which probes a traced run attaches (lean: lock decisions and blocked waiters only, one
    /// event per uncontended lock call instead of four, so the race moves less).
    #[arg(long, value_enum, default_value_t = crate::capture::Probes::Full)]
    pub probes: crate::capture::Probes,
    /// (internal, for tests) create the run's private temp dir under DIR instead of $TMPDIR.
    #[arg(long, value_name = "DIR", hide = true)]
    pub tmpdir_parent: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct RoleArgs {
    /// Unix datagram socket path (the server binds it, the client sends to it).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Print one JSON object instead of the one-line summary.
    #[arg(long)]
    pub json: bool,
    /// (internal, used by `run`) write one line per acquisition to FILE.
    #[arg(long, value_name = "FILE", hide = true)]
    pub acquisition_log: Option<PathBuf>,
}

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

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// A JSONL event file written by `--events`.
    #[arg(value_name = "EVENTS.jsonl")]
    pub events: PathBuf,
    /// Write the versioned JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a Perfetto (Chrome JSON) trace to FILE.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    #[command(flatten)]
    pub html: HtmlArgs,
    /// Show the kernel's addresses of lock owners and blockers (when the events file has them)
    /// instead of `#N` labels.
    #[arg(long)]
    pub raw_pointers: bool,
}

/// The kernel-side sizes and output choice of every capturing command (run, record, trace).
#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Ring-buffer size in MiB (power of two).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_buffer_mb: u32,
    /// Processes the in-kernel filter can follow (tasks inside lock calls at once: 4 times as
    /// many), from 64 to 262144.
    #[arg(long, value_name = "N", default_value_t = crate::capture::loader::TASKS_DEFAULT)]
    pub max_tasks: u32,
    /// Write the kernel's addresses (lock owners, file_lock pointers) to the events, report and
    /// trace files instead of per-run ids (for kernel developers; they reveal the KASLR layout).
    #[arg(long)]
    pub raw_pointers: bool,
}

impl CaptureArgs {
    /// `--ring-buffer-mb` and `--max-tasks`, checked (one line naming the bad flag).
    pub fn limits(&self) -> anyhow::Result<crate::capture::Limits> {
        crate::capture::Limits::from_flags(self.ring_buffer_mb, self.max_tasks)
    }
}

/// `--html FILE` and how much of the report it draws (run, report, trace; compare has its own).
#[derive(Args, Debug, Clone)]
pub struct HtmlArgs {
    /// Write a self-contained HTML report to FILE (inline CSS and SVG timelines; fetches nothing).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Worst handoffs drawn as timelines in the HTML report (the report keeps at most 8).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub html_handoffs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The baseline report (`lockrace run --json`), e.g. from a known-good kernel.
    #[arg(value_name = "A.json")]
    pub a: PathBuf,
    /// The report to check against A.
    #[arg(value_name = "B.json")]
    pub b: PathBuf,
    /// A metric to bound (see the list below); repeatable, each with one --max-increase.
    #[arg(long, value_name = "NAME")]
    pub metric: Vec<String>,
    /// The largest increase of B over A, in percent, for the --metric at the same position.
    #[arg(long, value_name = "PCT")]
    pub max_increase: Vec<f64>,
    /// Also write both reports side by side, with a chart of whoops per handoff, to FILE (HTML).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Worst handoffs drawn per report in the HTML comparison.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub html_handoffs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct CompareSyncArgs {
    /// Turns each role completes in every run.
    #[arg(long, default_value_t = 20000, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    /// Runs per primitive, interleaved (all primitives once, then again); medians are shown.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub repeat: u64,
    /// Write the table as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Do not trace the file-lock rows, even as root (no self-barge columns).
    #[arg(long)]
    pub no_trace: bool,
    /// Give up on a run whose other side makes no progress for this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Ring-buffer size in MiB for the traced pass (power of two).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_buffer_mb: u32,
    /// (internal, for tests) create the runs' private temp dirs under DIR instead of $TMPDIR.
    #[arg(long, value_name = "DIR", hide = true)]
    pub tmpdir_parent: Option<PathBuf>,
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .try_init();
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => crate::workload::run::main(args, cli.verbose),
        Command::Server(args) => crate::workload::role::server_main(args),
        Command::Client(args) => crate::workload::role::client_main(args),
        Command::Record(args) => crate::capture::record::main(args),
        Command::Trace(args) => crate::trace::main(args),
        Command::Report(args) => crate::report::offline::main(args),
        Command::Compare(args) => crate::compare::main(args),
        Command::CompareSync(args) => crate::workload::compare_sync::main(args),
        Command::Bench(cmd) => crate::bench::main(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_must_be_positive_numbers() {
        for bad in ["0", "-1", "ten"] {
            let r = Cli::try_parse_from(["lockrace", "run", "--iterations", bad]);
            assert!(r.is_err(), "--iterations {bad} was accepted");
        }
        let ok =
            Cli::try_parse_from(["lockrace", "run", "--iterations", "5", "--no-trace"]).unwrap();
        match ok.command {
            Command::Run(r) => {
                assert_eq!(r.workload.iterations, 5);
                assert!(r.no_trace);
                assert_eq!(r.workload.lock, LockKind::Ofd);
                assert_eq!(r.workload.share, Share::Same);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn every_help_ends_with_examples() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let mut pages = vec![("lockrace".to_string(), cli.render_long_help().to_string())];
        for sub in cli.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let name = sub.get_name().to_string();
            pages.push((name, sub.render_long_help().to_string()));
        }
        assert!(pages.len() > 5);
        for (name, help) in pages {
            let tail = help.split("\nExamples:\n").nth(1);
            let Some(tail) = tail else {
                panic!("`{name} --help` has no Examples section")
            };
            // The examples are the end of the help, and each one is a command line.
            for line in tail.lines().filter(|l| !l.trim().is_empty()) {
                let cmd = line.trim_start();
                assert!(
                    cmd.starts_with("lockrace ")
                        || cmd.starts_with("sudo lockrace ")
                        || cmd.starts_with("--"),
                    "`{name} --help`: not an example after Examples: {line:?}"
                );
            }
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
