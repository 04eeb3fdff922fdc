//! `lockrace run`: both roles as child processes, then the report.
use std::process::ExitCode;

use crate::cli::RunArgs;

pub fn main(_args: RunArgs, _verbose: u8) -> anyhow::Result<ExitCode> {
    anyhow::bail!("run is not built yet")
}
