//! The versioned report document: what `--json` writes, and what every other rendering is
//! built from. Schema documented in docs/REPORT-SCHEMA.md; bump [`SCHEMA_VERSION`] on any
//! incompatible change.
use serde::{Deserialize, Serialize};

use crate::workload::WorkloadReport;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct KernelInfo {
    pub release: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureInfo {
    /// Events decoded.
    pub events: u64,
    /// Records the kernel could not write (ring buffer full), summed over CPUs.
    pub dropped: u64,
    /// False when events were dropped or the capture was interrupted.
    pub complete: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Document {
    pub schema_version: u32,
    pub lockrace_version: String,
    /// False when anything is missing (interrupted run, dropped events, dead peer).
    pub complete: bool,
    /// Why the document is incomplete, one line each.
    #[serde(default)]
    pub incomplete_reasons: Vec<String>,
    pub kernel: KernelInfo,
    /// Null for untraced runs.
    pub capture: Option<CaptureInfo>,
    /// Null when the events were not produced by `lockrace run`.
    pub workload: Option<WorkloadReport>,
}

impl Document {
    pub fn new(kernel_release: String) -> Self {
        Document {
            schema_version: SCHEMA_VERSION,
            lockrace_version: env!("CARGO_PKG_VERSION").to_string(),
            complete: true,
            incomplete_reasons: Vec::new(),
            kernel: KernelInfo {
                release: kernel_release,
            },
            capture: None,
            workload: None,
        }
    }

    pub fn mark_incomplete(&mut self, why: impl Into<String>) {
        self.complete = false;
        self.incomplete_reasons.push(why.into());
    }
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}
