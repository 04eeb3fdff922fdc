//! The `lockrace` binary: parse flags, run one subcommand, print errors in one style.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = lockrace::cli::Cli::parse();
    lockrace::cli::init_logging(cli.verbose);
    match lockrace::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lockrace: {}", lockrace::error::render_error(&err));
            ExitCode::FAILURE
        }
    }
}
