//! Phases 3 and 4: the analyzer over 1M and 10M synthetic events, each in its own process
//! (`lockrace bench analyzer`: events/s and the process's peak RSS), and criterion's
//! micro-benchmarks (`cargo bench -p lockrace`: the raw-record decoder, the JSONL reader and
//! writer, the whoops correlator, the analyzer), read back from criterion's own JSON files.
//!
//! Invariant: a criterion figure is only reported when its files were written by this run
//! (modified after it started), so a stale result from an earlier run never shows up.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use crate::{
    cmd::{self, Io},
    workspace,
};

/// One analyzer run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalyzerRun {
    pub events: u64,
    pub events_per_s: f64,
    pub peak_rss_kib: u64,
    pub start_rss_kib: u64,
}

pub fn analyzer_command(lockrace: &Path, events: u64) -> Command {
    let mut c = Command::new(lockrace);
    c.args(["bench", "analyzer", "--events", &events.to_string()]);
    c
}

pub fn parse_analyzer(stdout: &str) -> Result<AnalyzerRun> {
    let v: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .ok_or_else(|| anyhow!("the analyzer benchmark printed no result line"))?;
    let u = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| anyhow!("no `{k}` in its result"))
    };
    Ok(AnalyzerRun {
        events: u("events")?,
        events_per_s: v["events_per_s"]
            .as_f64()
            .ok_or_else(|| anyhow!("no `events_per_s` in its result"))?,
        peak_rss_kib: u("peak_rss_kib")?,
        start_rss_kib: u("start_rss_kib")?,
    })
}

pub fn analyzer_run(lockrace: &Path, events: u64) -> Result<AnalyzerRun> {
    let out = cmd::stdout_of(&mut analyzer_command(lockrace, events))?;
    parse_analyzer(&out)
}

/// One criterion benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Micro {
    pub id: String,
    /// Median time per iteration, ns, with criterion's 95% interval.
    pub median_ns: f64,
    pub lower_ns: f64,
    pub upper_ns: f64,
    /// Elements (events, lines, acquisitions) per iteration, when the benchmark declares it.
    pub elements: Option<u64>,
}

impl Micro {
    pub fn per_element_ns(&self) -> Option<f64> {
        self.elements
            .filter(|&n| n > 0)
            .map(|n| self.median_ns / n as f64)
    }
}

/// The bench targets of lockrace that `cargo xtask bench` runs.
pub const CRITERION_BENCHES: [&str; 3] = ["events", "whoops", "analyzer"];

pub fn criterion_command(quick: bool) -> Command {
    let mut c = workspace::cargo();
    c.args(["bench", "-p", "lockrace"]);
    for b in CRITERION_BENCHES {
        c.args(["--bench", b]);
    }
    c.arg("--");
    if quick {
        c.args(["--warm-up-time", "0.3", "--measurement-time", "1"]);
    } else {
        c.args(["--warm-up-time", "0.5", "--measurement-time", "2"]);
    }
    c
}

/// Parse one benchmark's `benchmark.json` and `estimates.json`.
pub fn parse_criterion(benchmark: &str, estimates: &str) -> Result<Micro> {
    let b: Value = serde_json::from_str(benchmark).context("benchmark.json is not JSON")?;
    let e: Value = serde_json::from_str(estimates).context("estimates.json is not JSON")?;
    let id = b["full_id"]
        .as_str()
        .ok_or_else(|| anyhow!("benchmark.json has no full_id"))?
        .to_string();
    let m = &e["median"];
    let f = |v: &Value| {
        v.as_f64()
            .ok_or_else(|| anyhow!("estimates.json of {id} has no median"))
    };
    Ok(Micro {
        median_ns: f(&m["point_estimate"])?,
        lower_ns: f(&m["confidence_interval"]["lower_bound"])?,
        upper_ns: f(&m["confidence_interval"]["upper_bound"])?,
        elements: b["throughput"]["Elements"]
            .as_u64()
            .or_else(|| b["throughput"]["Bytes"].as_u64()),
        id,
    })
}

fn find_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                out.push(p);
            } else {
                find_new_dirs(&p, out);
            }
        }
    }
}

/// Every benchmark criterion wrote under `criterion_dir` since `since`, sorted by id.
pub fn read_criterion(criterion_dir: &Path, since: SystemTime) -> Vec<Micro> {
    let mut dirs = Vec::new();
    find_new_dirs(criterion_dir, &mut dirs);
    let mut out: Vec<Micro> = dirs
        .iter()
        .filter(|d| {
            std::fs::metadata(d.join("estimates.json"))
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .filter_map(|d| {
            let b = std::fs::read_to_string(d.join("benchmark.json")).ok()?;
            let e = std::fs::read_to_string(d.join("estimates.json")).ok()?;
            parse_criterion(&b, &e).ok()
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Phase 4: run the criterion benches, then read what they wrote.
pub fn criterion(target_dir: &Path, quick: bool) -> Result<(String, Vec<Micro>)> {
    let since = SystemTime::now();
    let mut c = criterion_command(quick);
    let shown = cmd::display(&c);
    println!("xtask bench: {shown}");
    cmd::run(&mut c, Io::Inherit)?;
    let found = read_criterion(&target_dir.join("criterion"), since);
    if found.is_empty() {
        return Err(anyhow!(
            "`{shown}` wrote no results under {}",
            target_dir.join("criterion").display()
        ));
    }
    Ok((shown, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analyzer_lines_are_parsed() {
        let r = parse_analyzer(
            "{\"events\":1000000,\"analyze_ns\":1,\"generate_ns\":1,\"events_per_s\":7.5e6,\
             \"peak_rss_kib\":13000,\"start_rss_kib\":12000,\"handoffs\":5}\n",
        )
        .unwrap();
        assert_eq!(r.events, 1_000_000);
        assert_eq!(r.events_per_s, 7.5e6);
        assert_eq!((r.peak_rss_kib, r.start_rss_kib), (13000, 12000));
        assert!(parse_analyzer("").is_err());
    }

    #[test]
    fn criterion_files_are_parsed() {
        let b = r#"{"group_id":"analyzer","function_id":"push_1m_events","value_str":null,"throughput":{"Elements":1000006},"full_id":"analyzer/push_1m_events"}"#;
        let e = r#"{"mean":{"point_estimate":1.0},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":60.0,"upper_bound":70.0},"point_estimate":66.0}}"#;
        let m = parse_criterion(b, e).unwrap();
        assert_eq!(m.id, "analyzer/push_1m_events");
        assert_eq!((m.median_ns, m.lower_ns, m.upper_ns), (66.0, 60.0, 70.0));
        assert_eq!(m.elements, Some(1000006));
        assert!(m.per_element_ns().unwrap() < 0.001);
        assert!(parse_criterion("{}", e).is_err());
    }

    #[test]
    fn only_fresh_criterion_results_are_read() {
        let dir = std::env::temp_dir().join(format!("xtask-crit-{}", std::process::id()));
        let new = dir.join("g/f/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"full_id":"g/f","throughput":null}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"median":{"point_estimate":5.0,"confidence_interval":{"lower_bound":4.0,"upper_bound":6.0}}}"#,
        )
        .unwrap();
        let past = SystemTime::UNIX_EPOCH;
        let found = read_criterion(&dir, past);
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        let stale = read_criterion(&dir, future);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].elements, None);
        assert!(stale.is_empty());
    }
}
