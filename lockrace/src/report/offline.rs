//! `lockrace report EVENTS.jsonl`: re-analyse saved events without root.
use std::process::ExitCode;

use crate::cli::ReportArgs;

pub fn main(args: ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("report is not built yet ({})", args.events.display())
}
