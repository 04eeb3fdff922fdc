//! `cargo xtask bench [--quick]`: measure lockrace's costs side by side with bpftrace and perf
//! and write docs/BENCHMARKS.md (as root; bpftrace and linux-perf are installed when missing).
//!
//! Phases, in order: (1) the cost per lock call of each tracer on an uncontended fcntl loop,
//! with each lockrace program's ns per run ([`cost`]), (2) the probe effect on the
//! native-speed handoff ([`probe`]), (3) capture throughput under a lock storm ([`storm`]),
//! (4) the analyzer over 1M and 10M synthetic events in child processes, (5) criterion
//! micro-benchmarks ([`micro`]); then the document
//! ([`render`]). Each phase first waits (bounded) for the machine's load average to drop, and
//! the document states the load it ran under and how much CPU other processes took per run.
//!
//! Invariants: the bench is bounded (18.1 minutes in full on a 2-core machine, much of it
//! bpftrace printing every event; `--quick` runs fewer repetitions; a phase never
//! retries); one failing run is recorded in the document, not fatal; `--quick` never overwrites
//! docs/BENCHMARKS.md unless `--out` says so; the hand-written history section of the previous
//! document is kept. Not part of `cargo xtask test`: benchmarks are not timed tests.
use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{
    cmd::{self, Io},
    setup, workspace,
};

mod background;
mod cost;
mod machine;
mod micro;
mod probe;
mod render;
mod storm;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// A short version (3 repetitions, 5,000 handoffs, 1 s storms, 1M-event analyzer runs, short
    /// criterion runs) written to target/bench/BENCHMARKS.quick.md unless --out is given.
    #[arg(long)]
    pub quick: bool,
    /// Where to write the document (default docs/BENCHMARKS.md; with --quick
    /// target/bench/BENCHMARKS.quick.md).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Repetitions of each probe-effect and cost-per-call configuration (default 9 and 7; 3 with
    /// --quick; the cost phase runs at least 5 without --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reps: Option<u32>,
    /// Run only these phases (repeatable; default all); the document shows only them.
    #[arg(long, value_enum, value_name = "PHASE")]
    pub only: Vec<Phase>,
    /// Seconds to wait at most, before each phase, for the 1-minute load average to drop below
    /// 1 (other users' builds distort timings).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub max_wait: u64,
}

/// The bench's phases, for `--only`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Cost,
    Probe,
    Storm,
    Analyzer,
    Micro,
}

impl BenchArgs {
    fn runs(&self, p: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&p)
    }
}

/// The cost phase as measured.
#[derive(Debug, Clone)]
pub struct CostPhase {
    pub iterations: u64,
    pub reps: u32,
    pub load: [f64; 3],
    pub series: Vec<cost::Series>,
    pub programs: Vec<cost::ProgramSet>,
    /// Why the phase did not run (the loop did not compile).
    pub error: Option<String>,
}

/// The probe-effect phase as measured.
#[derive(Debug, Clone)]
pub struct ProbePhase {
    pub iterations: u64,
    pub reps: u32,
    pub load: [f64; 3],
    pub series: Vec<probe::Series>,
}

/// The storm phase as measured.
#[derive(Debug, Clone)]
pub struct StormPhase {
    pub procs: u32,
    pub threads: u32,
    pub duration_s: f64,
    pub reps: u32,
    pub load: [f64; 3],
    pub commands: Vec<String>,
    pub cells: Vec<storm::Cell>,
}

/// The analyzer phase, one size.
#[derive(Debug, Clone)]
pub struct AnalyzerSeries {
    pub events: u64,
    pub command: String,
    pub runs: Vec<micro::AnalyzerRun>,
    pub errors: Vec<String>,
}

/// Everything the document shows.
#[derive(Debug, Clone)]
pub struct Results {
    pub invocation: String,
    pub date: String,
    pub quick: bool,
    pub wall_s: f64,
    pub machine: machine::Machine,
    pub load_start: [f64; 3],
    pub load_end: [f64; 3],
    pub cost: Option<CostPhase>,
    pub probe: Option<ProbePhase>,
    pub storm: Option<StormPhase>,
    pub analyzer: Vec<AnalyzerSeries>,
    pub micro: Result<(String, Vec<micro::Micro>), String>,
}

/// bpftrace and perf (Debian's `bpftrace` and `linux-perf`), installed when missing.
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    (
        "bpftrace",
        "cargo xtask bench compares lockrace with bpftrace",
    ),
    (
        "linux-perf",
        "cargo xtask bench compares lockrace with perf record",
    ),
];

/// A path as the document shows it: relative to the workspace root.
fn rel(p: &std::path::Path) -> String {
    let root = workspace::root();
    p.strip_prefix(&root)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

fn invocation(args: &BenchArgs) -> String {
    let mut s = "cargo xtask bench".to_string();
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(r) = args.reps {
        s.push_str(&format!(" --reps {r}"));
    }
    for p in &args.only {
        if let Some(v) = clap::ValueEnum::to_possible_value(p) {
            s.push_str(&format!(" --only {}", v.get_name()));
        }
    }
    s
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "the bench attaches eBPF programs, bpftrace and perf: it needs root (hint: run `sudo \
             -E cargo xtask bench`)"
        );
    }
    setup::setup()?;
    setup::install_packages("bench packages", BENCH_PACKAGES)?;
    let mut build = workspace::cargo();
    build.args(["build", "--release", "-p", "lockrace"]);
    println!("xtask bench: {}", cmd::display(&build));
    cmd::run(&mut build, Io::Inherit)?;
    let meta = workspace::metadata()?;
    let lockrace = meta.target_dir.join("release/lockrace");
    let work = meta.target_dir.join("bench");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            work.join("BENCHMARKS.quick.md")
        } else {
            workspace::root().join("docs/BENCHMARKS.md")
        }
    });

    let started = Instant::now();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let max_wait = Duration::from_secs(args.max_wait);
    let load_start = machine::loadavg();
    let machine = machine::Machine::read();
    let quick = args.quick;
    println!(
        "xtask bench: {} ({} cores), kernel {}, load average {}",
        machine.cpu_model,
        machine.cores,
        machine.kernel,
        machine::fmt_load(load_start)
    );

    // Phase 1.
    let cost = args.runs(Phase::Cost).then(|| {
        let load = machine::wait_for_quiet(1.0, max_wait);
        let iterations = 1_000_000;
        let creps = args
            .reps
            .unwrap_or(if quick { 3 } else { 7 })
            .max(if quick { 1 } else { 5 });
        match cost::build_loop(&work) {
            Ok(lockloop) => {
                let copts = cost::Options {
                    lockrace: lockrace.clone(),
                    lockloop,
                    iterations,
                    reps: creps,
                    work: work.clone(),
                    configs: cost::Config::ALL.to_vec(),
                    cpu: cost::loop_cpu(),
                };
                let series = cost::measure(&copts);
                let programs = cost::programs(&copts);
                CostPhase {
                    iterations,
                    reps: creps,
                    load,
                    series,
                    programs,
                    error: None,
                }
            }
            Err(e) => {
                println!("xtask bench: cost per lock call skipped: {e}");
                CostPhase {
                    iterations,
                    reps: creps,
                    load,
                    series: Vec::new(),
                    programs: Vec::new(),
                    error: Some(e.to_string()),
                }
            }
        }
    });

    // Phase 2.
    let probe = args.runs(Phase::Probe).then(|| {
        let load = machine::wait_for_quiet(1.0, max_wait);
        let popts = probe::Options {
            lockrace: lockrace.clone(),
            iterations: if quick { 5_000 } else { 20_000 },
            reps: args.reps.unwrap_or(if quick { 3 } else { 9 }),
            work: work.clone(),
            configs: probe::Config::ALL.to_vec(),
        };
        let series = probe::measure(&popts);
        ProbePhase {
            iterations: popts.iterations,
            reps: popts.reps,
            load,
            series,
        }
    });

    // Phase 3.
    let storm = args.runs(Phase::Storm).then(|| {
        let load = machine::wait_for_quiet(1.0, max_wait);
        let sopts = storm::Options {
            lockrace: lockrace.clone(),
            procs: 2,
            threads: 2,
            duration_s: if quick { 1.0 } else { 2.0 },
            reps: if quick { 1 } else { 2 },
            rates: if quick {
                vec![5e5, 1e6, 2e6, 0.0]
            } else {
                vec![5e5, 1e6, 1.5e6, 2e6, 3e6, 0.0]
            },
        };
        let cells = storm::measure(&sopts);
        let commands = [
            (storm::Mode::Untraced, 0.0),
            (storm::Mode::Count, 1e6),
            (storm::Mode::Record, 1e6),
        ]
        .iter()
        .map(|&(m, r)| {
            cmd::display(&storm::command(&sopts, m, r))
                .replace(&lockrace.display().to_string(), &rel(&lockrace))
        })
        .collect();
        StormPhase {
            procs: sopts.procs,
            threads: sopts.threads,
            duration_s: sopts.duration_s,
            reps: sopts.reps,
            load,
            commands,
            cells,
        }
    });

    // Phase 4.
    let sizes: &[u64] = if args.runs(Phase::Analyzer) {
        machine::wait_for_quiet(1.0, max_wait);
        &[1_000_000, 10_000_000]
    } else {
        &[]
    };
    let areps = if quick { 1 } else { 3 };
    let mut analyzer: Vec<AnalyzerSeries> = sizes
        .iter()
        .map(|&events| AnalyzerSeries {
            events,
            command: cmd::display(&micro::analyzer_command(&lockrace, events))
                .replace(&lockrace.display().to_string(), &rel(&lockrace)),
            runs: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    for rep in 0..areps {
        for a in analyzer.iter_mut() {
            match micro::analyzer_run(&lockrace, a.events) {
                Ok(r) => {
                    println!(
                        "xtask bench: analyzer {}/{areps} {} events: {:.2}M events/s, peak RSS \
                         {:.1} MiB",
                        rep + 1,
                        a.events,
                        r.events_per_s / 1e6,
                        r.peak_rss_kib as f64 / 1024.0
                    );
                    a.runs.push(r);
                }
                Err(e) => a.errors.push(e.to_string()),
            }
        }
    }

    // Phase 5.
    let micro = if args.runs(Phase::Micro) {
        machine::wait_for_quiet(1.0, max_wait);
        micro::criterion(&meta.target_dir, quick).map_err(|e| e.to_string())
    } else {
        Err("skipped (--only)".to_string())
    };

    let results = Results {
        invocation: invocation(args),
        date: render::utc(now),
        quick,
        wall_s: started.elapsed().as_secs_f64(),
        machine,
        load_start,
        load_end: machine::loadavg(),
        cost,
        probe,
        storm,
        analyzer,
        micro,
    };
    let previous = std::fs::read_to_string(&out).unwrap_or_default();
    let doc = render::render(&results, &previous);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&out, doc).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "xtask bench: wrote {} ({:.1} minutes)",
        out.display(),
        results.wall_s / 60.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_names_the_options_that_change_figures() {
        let mut a = BenchArgs {
            quick: false,
            out: None,
            reps: None,
            only: vec![],
            max_wait: 60,
        };
        assert_eq!(invocation(&a), "cargo xtask bench");
        assert!(a.runs(Phase::Micro));
        a.quick = true;
        a.reps = Some(5);
        assert_eq!(invocation(&a), "cargo xtask bench --quick --reps 5");
        a.only = vec![Phase::Cost];
        assert_eq!(
            invocation(&a),
            "cargo xtask bench --quick --reps 5 --only cost"
        );
        assert!(a.runs(Phase::Cost) && !a.runs(Phase::Probe));
    }
}
