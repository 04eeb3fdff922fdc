//! What one execution of both roles produced ([`RunOutcome`]): each child's end, report and
//! acquisition log, the memfd they locked, and why it is incomplete, if it is; and the
//! `workload` object of the report made from it.
//!
//! Invariant: an outcome whose children both reported and neither failed nor was interrupted
//! is complete ([`RunOutcome::is_complete`]); every other outcome says why, one line each.
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

use super::execute::Workload;
use super::{Acquisition, Role, SyncKind, lock_name, share_name};
use crate::report::model::{RoleReport, WorkloadReport};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

impl ChildExit {
    pub(super) fn from_status(st: ExitStatus) -> ChildExit {
        match (st.code(), st.signal()) {
            (Some(c), _) => ChildExit::Code(c),
            (None, Some(s)) => ChildExit::Signal(s),
            (None, None) => ChildExit::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == ChildExit::Code(0)
    }

    /// "exited with status 1" / "was killed by SIGKILL".
    pub fn describe(self) -> String {
        match self {
            ChildExit::Code(c) => format!("exited with status {c}"),
            ChildExit::Signal(s) => match Signal::try_from(s) {
                Ok(sig) => format!("was killed by {}", sig.as_str()),
                Err(_) => format!("was killed by signal {s}"),
            },
        }
    }
}

/// One child's side of the run.
#[derive(Debug, Clone)]
pub struct RoleRun {
    pub role: Role,
    pub pid: u32,
    pub exit: Option<ChildExit>,
    /// Its `--json` report (None when it did not finish).
    pub report: Option<RoleReport>,
    /// Its lock grants in order (the k-th line is its k-th grant).
    pub acquisitions: Vec<Acquisition>,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// The memfd both roles locked, as the kernel names it in filelock events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemfdId {
    /// `(major << 20) | minor`.
    pub dev: u64,
    pub ino: u64,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub server: RoleRun,
    pub client: RoleRun,
    pub memfd: Option<MemfdId>,
    /// The signal that stopped the run, if any.
    pub interrupted: Option<Signal>,
    /// Why the run failed (a child died or failed), one line.
    pub failure: Option<String>,
    /// CLOCK_MONOTONIC just before the first child was started and after the last was reaped.
    pub started_ns: u64,
    pub ended_ns: u64,
}

impl RunOutcome {
    pub fn roles(&self) -> [&RoleRun; 2] {
        [&self.server, &self.client]
    }

    pub fn child_pids(&self) -> [u32; 2] {
        [self.server.pid, self.client.pid]
    }

    /// Why the outcome is incomplete, one line each (empty when complete).
    pub fn incomplete_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(sig) = self.interrupted {
            out.push(format!("run interrupted by {}", sig.as_str()));
        }
        if let Some(f) = &self.failure {
            out.push(f.clone());
        }
        out
    }

    pub fn is_complete(&self) -> bool {
        self.incomplete_reasons().is_empty()
    }

    /// The `workload` object of the report: the roles that reported, server first.
    pub fn workload_report(&self, cfg: &Workload) -> WorkloadReport {
        let file_lock = cfg.sync == SyncKind::Fcntl;
        WorkloadReport {
            lock: if file_lock {
                lock_name(cfg.lock)
            } else {
                "none"
            }
            .to_string(),
            share: if file_lock {
                share_name(cfg.share)
            } else {
                "none"
            }
            .to_string(),
            iterations: cfg.iterations,
            roles: self
                .roles()
                .iter()
                .filter_map(|r| r.report.clone())
                .collect(),
            probe_effect: None,
            sync: (!file_lock).then(|| super::sync::sync_name(cfg.sync).to_string()),
            scenario: cfg
                .scenario
                .map(|s| super::scenario::scenario_name(s).to_string()),
        }
    }
}
