//! The memfd handoff workload: the seed's server and client roles and `lockrace run`.
use serde::{Deserialize, Serialize};

pub mod role;
pub mod run;

/// One role's own account of a run (what it printed with `--json`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoleReport {
    pub role: String,
    pub pid: u32,
    pub iterations: u64,
    /// Lock grants the role received (turns + whoops).
    pub acquisitions: u64,
    pub whoops: u64,
    /// Times the role entered the critical section while the other side was inside.
    pub overlaps: u64,
    pub elapsed_ns: u64,
}

/// The `workload` object of the JSON report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WorkloadReport {
    pub lock: String,
    pub share: String,
    pub iterations: u64,
    pub roles: Vec<RoleReport>,
}
