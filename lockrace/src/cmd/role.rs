//! `lockrace server` and `lockrace client`: the seed's two roles as commands (what `run`
//! starts as its children, and what a seed-style peer talks to). The flags are checked into a
//! `workload::role::RoleConfig`, the role runs (`workload::role::run`), then prints its
//! one-line summary, or one JSON object with `--json`, and writes its acquisition log.
//!
//! Invariants: SIGINT/SIGTERM end a role with 130/143 and a line naming the signal; a role's
//! report is printed only when its loop completed.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::args::WorkloadArgs;
use crate::report::model::RoleReport;
use crate::workload::role::{self, RoleConfig, effective_lock};
use crate::workload::{Role, SyncKind, format_acquisition_log, lock_name, share_name};

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

/// The role's flags, checked.
pub fn config(role: Role, args: &RoleArgs) -> anyhow::Result<RoleConfig> {
    let w = &args.workload;
    if w.iterations == 0 {
        anyhow::bail!("--iterations must be at least 1");
    }
    let (lock, share) = effective_lock(role, w.lock, w.share, w.sync, w.scenario)?;
    Ok(RoleConfig {
        role,
        socket: args.socket.clone(),
        lock,
        share,
        sync: w.sync,
        scenario: w.scenario,
        iterations: w.iterations,
        stall: Duration::from_secs(args.workload.stall_timeout.max(1)),
        json: args.json,
        acquisition_log: args.acquisition_log.clone(),
    })
}

pub fn server_main(args: RoleArgs) -> anyhow::Result<ExitCode> {
    role_main(Role::Server, &args)
}

pub fn client_main(args: RoleArgs) -> anyhow::Result<ExitCode> {
    role_main(Role::Client, &args)
}

fn role_main(role: Role, args: &RoleArgs) -> anyhow::Result<ExitCode> {
    crate::signals::install()?;
    let cfg = config(role, args)?;
    let result = role::run(&cfg);
    if let Some(sig) = crate::signals::received() {
        eprintln!("lockrace: the {role} was interrupted by {}", sig.as_str());
        return Ok(ExitCode::from(crate::signals::exit_code(sig)));
    }
    let done = result?;
    if let Some(path) = &cfg.acquisition_log {
        std::fs::write(path, format_acquisition_log(&done.log))
            .with_context(|| format!("cannot write the acquisition log {}", path.display()))?;
    }
    if cfg.json {
        println!("{}", serde_json::to_string(&done.report)?);
    } else {
        println!("{}", summary_line(&done.report, &mode_label(&cfg)));
    }
    Ok(ExitCode::SUCCESS)
}

/// `server: 100 turns, 412 whoops (4.12 per turn), 0 overlaps, 3.21 ms (ofd lock, share same)`.
pub fn summary_line(r: &RoleReport, mode: &str) -> String {
    let per_turn = r.whoops as f64 / r.iterations.max(1) as f64;
    format!(
        "{}: {} turns, {} whoops ({per_turn:.2} per turn), {} overlaps, {:.2} ms ({mode})",
        r.role,
        r.iterations,
        r.whoops,
        r.overlaps,
        r.elapsed_ns as f64 / 1e6,
    )
}

/// How a role's mode reads in its summary line: `ofd lock, share same`, `eventfd sync`, ...
pub fn mode_label(cfg: &RoleConfig) -> String {
    match (cfg.scenario, cfg.sync) {
        (Some(s), _) => format!(
            "{} scenario, {} lock",
            crate::workload::scenario::scenario_name(s),
            lock_name(cfg.lock)
        ),
        (None, SyncKind::Fcntl) => {
            format!(
                "{} lock, share {}",
                lock_name(cfg.lock),
                share_name(cfg.share)
            )
        }
        (None, sync) => format!("{} sync", crate::workload::sync::sync_name(sync)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{LockKind, Scenario, Share};

    #[test]
    fn summary_line_reads_well() {
        let r = RoleReport {
            role: "server".into(),
            pid: 1,
            iterations: 100,
            acquisitions: 512,
            whoops: 412,
            overlaps: 0,
            elapsed_ns: 3_210_000,
            memfd_dev: 1,
            memfd_ino: 2,
            handoff_latency: None,
            upgrade: None,
        };
        let mut cfg = RoleConfig {
            role: Role::Server,
            socket: PathBuf::from("/s"),
            lock: LockKind::Ofd,
            share: Share::Same,
            sync: SyncKind::Fcntl,
            scenario: None,
            iterations: 100,
            stall: Duration::from_secs(1),
            json: false,
            acquisition_log: None,
        };
        assert_eq!(
            summary_line(&r, &mode_label(&cfg)),
            "server: 100 turns, 412 whoops (4.12 per turn), 0 overlaps, 3.21 ms (ofd lock, share same)"
        );
        cfg.sync = SyncKind::Futex;
        assert_eq!(mode_label(&cfg), "futex sync");
        cfg.scenario = Some(Scenario::Upgrade);
        cfg.lock = LockKind::Flock;
        assert_eq!(mode_label(&cfg), "upgrade scenario, flock lock");
    }
}
