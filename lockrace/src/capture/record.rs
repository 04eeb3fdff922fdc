//! `lockrace record`: record the lock events of a command or of running processes to JSONL.
use std::process::ExitCode;

use crate::cli::RecordArgs;

pub fn main(args: RecordArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("record is not built yet ({})", args.events.display())
}
