//! Subcommand dispatch and the one error style: `lockrace: <what went wrong>` lowercase, then a
//! hint when we know what the user can do about it.
use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// An error with a hint for the user ("run it as root", "mount tracefs", ...).
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (hint: {})", self.message, self.hint)
    }
}
impl std::error::Error for Hinted {}

/// Appended to `command not found: CMD` (record and trace exit 127 with it, like a shell).
pub const COMMAND_NOT_FOUND_HINT: &str =
    " (hint: the command after `--` is looked up in PATH; check its name or give its path)";

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// One line: the error and its causes joined with ": ".
pub fn render_error(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
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
