//! Phase 2, capture throughput: a lock storm (`lockrace bench storm`: processes x threads
//! taking and releasing uncontended POSIX locks) at increasing rates, captured two ways:
//! in-process by the real loader and ring-buffer reader into a counting sink (the capture's own
//! cost), and by `lockrace record --events /dev/null` (the same, plus JSONL formatting).
//!
//! Invariant: the storm's figures come from its own JSON line (worker loop times, calls) and
//! the capture's counters (events decoded, records the kernel dropped because the ring was
//! full); nothing is estimated.
use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use crate::cmd::{self, Io};

/// How the storm is captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not at all: the storm's own speed.
    Untraced,
    /// In-process capture, every record decoded and counted.
    Count,
    /// `lockrace record --events /dev/null -- lockrace bench storm ...`.
    Record,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Count => "capture, counting sink",
            Mode::Record => "lockrace record, JSONL to /dev/null",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub lockrace: PathBuf,
    pub procs: u32,
    pub threads: u32,
    pub duration_s: f64,
    pub reps: u32,
    /// Target event rates (events/s); 0 = unpaced.
    pub rates: Vec<f64>,
}

/// Events per fcntl lock call: sys_enter_fcntl, posix_lock_inode, fcntl_setlk, sys_exit_fcntl.
pub const EVENTS_PER_CALL: f64 = 4.0;

/// One storm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub calls_per_s: f64,
    pub events: u64,
    pub dropped: u64,
    /// Captured events per second of the storm.
    pub events_per_s: f64,
    /// Captured + dropped per second.
    pub offered_per_s: f64,
    /// In-process capture only: the reader's CPU time per event, ns.
    pub reader_ns_per_event: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Cell {
    pub mode: Mode,
    /// Target events/s (0 = unpaced).
    pub rate: f64,
    pub runs: Vec<Run>,
    pub errors: Vec<String>,
}

fn storm_args(opts: &Options, rate: f64, capture: &str) -> Vec<String> {
    vec![
        "bench".into(),
        "storm".into(),
        "--procs".into(),
        opts.procs.to_string(),
        "--threads".into(),
        opts.threads.to_string(),
        "--duration".into(),
        opts.duration_s.to_string(),
        "--rate".into(),
        format!("{:.0}", rate / EVENTS_PER_CALL),
        "--capture".into(),
        capture.into(),
    ]
}

pub fn command(opts: &Options, mode: Mode, rate: f64) -> Command {
    match mode {
        Mode::Untraced | Mode::Count => {
            let mut c = Command::new(&opts.lockrace);
            c.args(storm_args(
                opts,
                rate,
                if mode == Mode::Count { "count" } else { "none" },
            ));
            c
        }
        Mode::Record => {
            let mut c = Command::new(&opts.lockrace);
            c.args(["record", "--events", "/dev/null", "--"])
                .arg(&opts.lockrace)
                .args(storm_args(opts, rate, "none"));
            c
        }
    }
}

/// `lockrace: recorded N events to FILE[; M events DROPPED ...]` from record's stderr.
pub fn record_summary(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("lockrace: recorded "))?;
    let events = line
        .strip_prefix("lockrace: recorded ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let dropped = line
        .split("; ")
        .find_map(|p| p.split_once(" events DROPPED").map(|(n, _)| n))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Some((events, dropped))
}

/// The storm's JSON line among `stdout`'s lines.
pub fn storm_line(stdout: &str) -> Result<Value> {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(|v| v["calls"].is_u64())
        })
        .ok_or_else(|| anyhow!("the storm printed no result line"))
}

pub fn one_run(opts: &Options, mode: Mode, rate: f64) -> Result<Run> {
    let mut c = command(opts, mode, rate);
    let ran = cmd::run(&mut c, Io::Capture)?;
    let v = storm_line(&ran.stdout)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let loop_s = f("loop_ns") / 1e9;
    if loop_s <= 0.0 {
        return Err(anyhow!("the storm ran for no time"));
    }
    let (events, dropped) = match mode {
        Mode::Record => {
            record_summary(&ran.stderr).context("lockrace record printed no summary line")?
        }
        _ => (
            v["events"].as_u64().unwrap_or(0),
            v["dropped"].as_u64().unwrap_or(0),
        ),
    };
    Ok(Run {
        calls_per_s: f("calls_per_s"),
        events,
        dropped,
        events_per_s: events as f64 / loop_s,
        offered_per_s: (events + dropped) as f64 / loop_s,
        reader_ns_per_event: (mode == Mode::Count && events > 0)
            .then(|| f("reader_cpu_ns") / events as f64),
    })
}

/// Phase 2: the untraced storm, then each rate with both captures, `reps` times, interleaved.
pub fn measure(opts: &Options) -> Vec<Cell> {
    let mut cells = vec![Cell {
        mode: Mode::Untraced,
        rate: 0.0,
        runs: Vec::new(),
        errors: Vec::new(),
    }];
    for &rate in &opts.rates {
        for mode in [Mode::Count, Mode::Record] {
            cells.push(Cell {
                mode,
                rate,
                runs: Vec::new(),
                errors: Vec::new(),
            });
        }
    }
    for rep in 0..opts.reps {
        for cell in cells.iter_mut() {
            match one_run(opts, cell.mode, cell.rate) {
                Ok(r) => {
                    println!(
                        "xtask bench: storm {}/{} {:<36} target {:>9}  calls/s {:>9.0}  \
                         events/s {:>9.0}  dropped {}",
                        rep + 1,
                        opts.reps,
                        cell.mode.label(),
                        fmt_rate(cell.rate),
                        r.calls_per_s,
                        r.events_per_s,
                        r.dropped
                    );
                    cell.runs.push(r);
                }
                Err(e) => {
                    println!(
                        "xtask bench: storm {}/{} {} failed: {e}",
                        rep + 1,
                        opts.reps,
                        cell.mode.label()
                    );
                    cell.errors.push(e.to_string());
                }
            }
        }
    }
    cells
}

/// "1.5M", "250k", "unpaced".
pub fn fmt_rate(rate: f64) -> String {
    if rate <= 0.0 {
        "unpaced".to_string()
    } else if rate >= 1e6 {
        format!("{}M", trim(rate / 1e6))
    } else {
        format!("{}k", trim(rate / 1e3))
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_summaries_are_parsed_with_and_without_drops() {
        assert_eq!(
            record_summary(
                "Tracing...\nDetaching... done\nlockrace: recorded 640686 events to /dev/null\n"
            ),
            Some((640686, 0))
        );
        assert_eq!(
            record_summary(
                "lockrace: recorded 10 events to /dev/null; 5 events DROPPED (ring buffer full): \
                 the recording is incomplete, try a larger --ring-buffer-mb\n"
            ),
            Some((10, 5))
        );
        assert_eq!(record_summary("nothing"), None);
    }

    #[test]
    fn storm_commands_and_rates() {
        let opts = Options {
            lockrace: "lockrace".into(),
            procs: 2,
            threads: 2,
            duration_s: 2.0,
            reps: 3,
            rates: vec![1e6],
        };
        assert_eq!(
            cmd::display(&command(&opts, Mode::Record, 1e6)),
            "lockrace record --events /dev/null -- lockrace bench storm --procs 2 --threads 2 \
             --duration 2 --rate 250000 --capture none"
        );
        assert!(
            cmd::display(&command(&opts, Mode::Count, 0.0)).ends_with("--rate 0 --capture count")
        );
        assert_eq!(fmt_rate(1.5e6), "1.5M");
        assert_eq!(fmt_rate(250e3), "250k");
        assert_eq!(fmt_rate(0.0), "unpaced");
        let v = storm_line("noise\n{\"calls\": 5, \"loop_ns\": 1}\n").unwrap();
        assert_eq!(v["calls"], 5);
        assert!(storm_line("{}\n").is_err());
    }
}
