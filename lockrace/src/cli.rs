//! The command line, the top floor of the library: [`Cli`] and its [`Command`]s (each
//! subcommand's flags are its own `Args`, in `cmd`), their help examples, and [`dispatch`] to
//! the subcommand's `main`. Flags are parsed here (clap), then validated into typed configs by
//! the subcommand modules. Nothing in this file touches the system.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::{
    self, compare::CompareArgs, compare_sync::CompareSyncArgs, record::RecordArgs,
    report::ReportArgs, role::RoleArgs, run::RunArgs, trace::TraceArgs,
};

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
    #[command(after_help = crate::report::compare::HELP)]
    Compare(CompareArgs),
    /// Every way of handing the turn over (file locks, eventfd, futex) measured side by side.
    #[command(after_help = COMPARE_SYNC_EXAMPLES)]
    CompareSync(CompareSyncArgs),
    /// (internal) measurement helpers for `cargo xtask bench`.
    #[command(subcommand, hide = true, after_help = BENCH_EXAMPLES)]
    Bench(cmd::bench::BenchCommand),
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
  sudo lockrace run --probes full --lock posix --share reopen  # plus syscall entry/exit
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

/// Run the subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => cmd::run::main(args),
        Command::Server(args) => cmd::role::server_main(args),
        Command::Client(args) => cmd::role::client_main(args),
        Command::Record(args) => cmd::record::main(args),
        Command::Trace(args) => cmd::trace::main(args),
        Command::Report(args) => cmd::report::main(args),
        Command::Compare(args) => cmd::compare::main(args),
        Command::CompareSync(args) => cmd::compare_sync::main(args),
        Command::Bench(command) => cmd::bench::main(command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{LockKind, Share};

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
