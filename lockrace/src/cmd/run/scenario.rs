//! The command side of `lockrace run --scenario upgrade|mixed` (the roles' side is
//! `workload::scenario`): run it, traced as root ([`super::trace_pass::traced_execute`]), read
//! what the kernel events prove (`workload::evidence`), print the summary with the scenario's
//! lines, and write the scenario's own JSON document.
//!
//! Invariant: the scenario's JSON (`--json`) is its own document, `"report":
//! "lockrace-scenario"`, holding the workload and the kernel evidence; it says incomplete
//! exactly when the run's report document would.
use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::summary::render_summary;
use super::trace_pass::{TraceOptions, traced_execute};
use super::{Mode, RunConfig};
use crate::capture::Probes;
use crate::host::kernel_release;
use crate::report::model::{CaptureInfo, WorkloadReport};
use crate::workload::evidence::{self, CallPath, Independence, UpgradeSummary};
use crate::workload::execute::{Workload, execute};
use crate::workload::outcome::RunOutcome;
use crate::workload::scenario::scenario_name;
use crate::workload::{Scenario, lock_name};

/// What the kernel events of a traced scenario show.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ScenarioKernel {
    pub capture: CaptureInfo,
    /// `upgrade`: the server's upgrade windows, counted, and what they mean.
    #[serde(default)]
    pub upgrade: Option<UpgradeSummary>,
    #[serde(default)]
    pub upgrade_verdict: Option<String>,
    /// `mixed`: flock and fcntl grants on the memfd.
    #[serde(default)]
    pub independence: Option<Independence>,
    /// The syscalls and kernel paths of each role's requests.
    pub server_path: CallPath,
    pub client_path: CallPath,
}

/// The `--json` document of a scenario run.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ScenarioReport {
    /// Always `lockrace-scenario`.
    pub report: String,
    pub lockrace_version: String,
    pub kernel_release: String,
    pub scenario: String,
    pub complete: bool,
    #[serde(default)]
    pub incomplete_reasons: Vec<String>,
    pub workload: WorkloadReport,
    /// Null when untraced.
    pub kernel: Option<ScenarioKernel>,
}

/// The evidence in the events of one traced scenario run.
pub fn kernel_evidence(
    scenario: Scenario,
    outcome: &RunOutcome,
    events: &[crate::events::Event],
    capture: CaptureInfo,
) -> Option<ScenarioKernel> {
    let m = outcome.memfd?;
    let dev = m.dev as u32;
    let (server, client) = (outcome.server.pid, outcome.client.pid);
    let mut k = ScenarioKernel {
        capture,
        server_path: evidence::call_path(events, &[server], dev, m.ino),
        client_path: evidence::call_path(events, &[client], dev, m.ino),
        ..Default::default()
    };
    match scenario {
        Scenario::Upgrade => {
            let s = UpgradeSummary::of(&evidence::upgrade_windows(events, server, dev, m.ino));
            k.upgrade_verdict = Some(s.verdict());
            k.upgrade = Some(s);
        }
        Scenario::Mixed => k.independence = Some(evidence::independence(events, dev, m.ino)),
    }
    Some(k)
}

/// The scenario's lines under the run summary.
pub fn render(cfg: &Workload, outcome: &RunOutcome, kernel: Option<&ScenarioKernel>) -> String {
    let mut out = String::new();
    let what = lock_name(cfg.lock);
    if cfg.scenario == Some(Scenario::Upgrade) {
        let seen: Vec<String> = outcome
            .roles()
            .iter()
            .filter_map(|r| {
                let u = r.report.as_ref()?.upgrade.as_ref()?;
                Some(format!("{} {}", r.role, u.stolen))
            })
            .collect();
        let refused: u64 = outcome
            .client
            .report
            .as_ref()
            .and_then(|r| r.upgrade.as_ref())
            .map_or(0, |u| u.refused);
        out.push_str(&format!(
            "  upgrades: {} rounds of {what} shared -> exclusive by the server while the client \
             held a shared lock and then tried, without waiting, to upgrade its own; stolen (the \
             client got the exclusive lock first), as each role saw it: {}; the client's try was \
             refused in {refused}\n",
            cfg.iterations,
            if seen.is_empty() {
                "-".to_string()
            } else {
                seen.join(", ")
            }
        ));
    }
    let Some(k) = kernel else {
        return out;
    };
    if let Some(u) = &k.upgrade {
        out.push_str(&format!(
            "  kernel: {} upgrades, {} waited, {} stolen, {} with the other's exclusive request \
             refused and {} with it blocked inside, {} explicit unlocks\n  verdict: {what} \
             upgrade {}\n",
            u.upgrades,
            u.waited,
            u.stolen,
            u.others_refused,
            u.others_blocked,
            u.explicit_unlocks,
            u.verdict()
        ));
    }
    if let Some(i) = &k.independence {
        out.push_str(&format!(
            "  kernel: {} flock grants (server), {} {what} grants (client) on the memfd, {} \
             blocked requests, {} grants while the other kind was held\n",
            i.flock_grants, i.posix_grants, i.blocks, i.concurrent_grants
        ));
        out.push_str(if i.proves_independence() {
            "  verdict: flock and fcntl locks on one file do not see each other (no request ever \
             waited for the other kind)\n"
        } else {
            "  verdict: the events do not show independence (see the counts)\n"
        });
    }
    out.push_str(&format!(
        "  paths: server {}; client {}\n",
        k.server_path.describe(),
        k.client_path.describe()
    ));
    out
}

/// The probe set a scenario takes unless `--probes` says otherwise: `upgrade` measures its
/// windows from a request's syscall entry to its exit, which only the full set records;
/// `mixed` needs only the lock decisions.
pub fn probes_needed(scenario: Scenario) -> Probes {
    match scenario {
        Scenario::Upgrade => Probes::Full,
        Scenario::Mixed => Probes::Fast,
    }
}

pub fn main(cfg: &RunConfig) -> anyhow::Result<ExitCode> {
    let Mode::Scenario {
        scenario,
        trace,
        capture,
    } = cfg.mode
    else {
        anyhow::bail!("not a scenario run");
    };
    let w = &cfg.workload;
    let traced = trace.is_some();
    let (outcome, kernel, doc) = match trace {
        Some(limits) => {
            let t = traced_execute(
                w,
                &TraceOptions {
                    limits,
                    capture,
                    events_jsonl: cfg.outputs.events.as_deref(),
                    perfetto: cfg.outputs.perfetto.as_deref(),
                    announce: Some("Tracing"),
                    ..Default::default()
                },
            )?;
            let capture = t.doc.capture.clone().unwrap_or_default();
            let kernel = kernel_evidence(scenario, &t.outcome, &t.events, capture);
            (t.outcome, kernel, t.doc)
        }
        None => {
            let o = execute(w)?;
            let doc = super::document(w, &o);
            (o, None, doc)
        }
    };
    if outcome.roles().iter().any(|r| r.report.is_some()) {
        print!("{}", render_summary(w, &outcome, traced));
        print!("{}", render(w, &outcome, kernel.as_ref()));
    }
    if let Some(path) = &cfg.outputs.json {
        let report = ScenarioReport {
            report: "lockrace-scenario".to_string(),
            lockrace_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: kernel_release(),
            scenario: scenario_name(scenario).to_string(),
            complete: doc.complete,
            incomplete_reasons: doc.incomplete_reasons,
            workload: outcome.workload_report(w),
            kernel,
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    // The scenario wrote its own document: `finish` writes no other.
    super::finish(cfg, outcome, true)
}
