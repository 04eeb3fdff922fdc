//! xtask: the project's own commands (`cargo xtask ...`, see .cargo/config.toml).
//!
//! `setup` makes a fresh Debian machine able to do one of them, `run` runs the default
//! experiment as root, `test` runs every check CI runs, `screenshot` regenerates the README's
//! tour (terminal report and HTML screenshot), `bench` measures costs into docs/BENCHMARKS.md.
//! Only the subcommand enum lives here; each subcommand is a module, and every external program
//! is run through [`cmd`].
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backports;
mod bench;
mod cmd;
mod run;
mod screenshot;
mod setup;
mod test;
mod vm;
mod workspace;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "lockrace's development commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what is missing for one command (by default `run`: LLVM 22 for bpf-linker, the
    /// pinned eBPF nightly, bpf-linker, tracefs; `test` adds QEMU, Chromium and the programs the
    /// tests run). Never removes a package; fast when everything is there.
    Setup {
        /// What to prepare for: each xtask command calls setup with its own profile.
        #[arg(
            long = "for",
            value_enum,
            value_name = "COMMAND",
            default_value = "run"
        )]
        profile: setup::Profile,
        /// Print the plan (what is missing, the exact commands that would install it) and change
        /// nothing; needs no root.
        #[arg(long)]
        dry_run: bool,
    },
    /// Setup for `run`, build lockrace in release, and run `lockrace run ARGS` as root.
    Run {
        /// Arguments for `lockrace run` (e.g. `-- --lock posix --share reopen`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Setup for `test`, then rustfmt, clippy, all tests, and the root-only eBPF tests (serially,
    /// as root).
    Test {
        /// Skip clippy and the root-only tests (no root needed).
        #[arg(long)]
        quick: bool,
    },
    /// Regenerate the README's tour: setup, build, run the traced `lockrace run ARGS` as root
    /// with --html (default ARGS: --lock posix --share reopen --iterations 2000), keep its
    /// terminal report in target/screenshot/terminal.txt, and screenshot the HTML report with
    /// headless Chromium into docs/img/report.png.
    Screenshot {
        /// Arguments for `lockrace run` (e.g. `-- --lock ofd --iterations 500`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Boot other kernels in QEMU (TCG), run the traced `lockrace run ARGS` in each, and compare
    /// them in one table. Exit 0 when every kernel produced a report, 125 (bisect "skip") when
    /// one could not be tested. Example: `cargo xtask vm --debian 6.1.0-54 --host -- --lock posix`.
    Vm(vm::VmArgs),
    /// As root: measure the probe effect (lockrace vs bpftrace and perf), capture throughput,
    /// the analyzer and criterion micro-benchmarks, and write docs/BENCHMARKS.md (about 15
    /// minutes; `--quick` about 4).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { profile, dry_run } => {
            setup::setup_command(profile, dry_run).map(|()| ExitCode::SUCCESS)
        }
        Command::Run { args } => run::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Test { quick } => test::test(quick),
        Command::Screenshot { args } => screenshot::screenshot(&args).map(|()| ExitCode::SUCCESS),
        Command::Vm(args) => Ok(vm::vm(&args)),
        Command::Bench(args) => bench::bench(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let msg: Vec<String> = err.chain().map(|c| c.to_string()).collect();
            eprintln!("xtask: {}", msg.join(": ").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> Vec<String> {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run { args } => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn run_passes_everything_after_it_to_lockrace() {
        assert_eq!(
            run_args(&["xtask", "run", "--", "--lock", "posix", "--share", "reopen"]),
            ["--lock", "posix", "--share", "reopen"]
        );
        assert_eq!(
            run_args(&["xtask", "run", "--iterations", "5"]),
            ["--iterations", "5"]
        );
        assert!(run_args(&["xtask", "run"]).is_empty());
    }

    #[test]
    fn test_takes_quick_and_nothing_else() {
        let cli = Cli::try_parse_from(["xtask", "test", "--quick"]).unwrap();
        assert!(matches!(cli.command, Command::Test { quick: true }));
        assert!(Cli::try_parse_from(["xtask", "test", "--slow"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "bench", "--slow"]).is_err());
    }

    #[test]
    fn setup_defaults_to_run_and_takes_a_profile_and_dry_run() {
        use setup::Profile;
        let parse = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Setup { profile, dry_run } => (profile, dry_run),
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(parse(&["xtask", "setup"]), (Profile::Run, false));
        assert_eq!(
            parse(&["xtask", "setup", "--for", "test", "--dry-run"]),
            (Profile::Test, true)
        );
        assert_eq!(
            parse(&["xtask", "setup", "--for", "bench"]).0,
            Profile::Bench
        );
        assert_eq!(parse(&["xtask", "setup", "--for", "vm"]).0, Profile::Vm);
        assert!(Cli::try_parse_from(["xtask", "setup", "--for", "everything"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
