//! Phase 1, the cost per lock call: an uncontended C loop of `fcntl(F_SETLKW)` lock + unlock on
//! a memfd (one process, no waiting, so every nanosecond it gains under a tracer is the
//! tracer's), untraced and under each tracer, interleaved; then one run per lockrace probe set
//! with BPF statistics on for each program's ns per run.
//!
//! Method: the loop runs pinned to the last CPU (`taskset`); it times itself (CLOCK_MONOTONIC for wall time, CLOCK_THREAD_CPUTIME_ID for
//! its own CPU time, which includes the programs the kernel runs in its context and excludes
//! time other processes took its CPU), so tracer start-up is outside the figures. lockrace
//! records to /dev/null (`lockrace record --events /dev/null -- LOOP`, the probe set chosen
//! with `--probes`); bpftrace and perf are started, waited for until
//! attached, and stopped after the loop, as in phase 2. The per-program table comes from
//! separate runs with `LOCKRACE_SELF_COST=1` (statistics cost two clock reads per program run,
//! so they stay off in the timed runs). Invariants: every repetition runs every configuration
//! once, in an order rotated by one; a failing run is recorded, never fatal; every tracer is
//! reaped.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

use super::{background::Background, machine, probe};
use crate::cmd::{self, Io};

/// The loop, compiled by the bench with `cc -O2` (the C toolchain CI installs).
pub const LOOP_C: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
static double ns(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  int fd = memfd_create("lockloop", 0);
  if (fd < 0) { perror("memfd_create"); return 1; }
  struct flock l = { .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
  double w0 = ns(CLOCK_MONOTONIC), c0 = ns(CLOCK_THREAD_CPUTIME_ID);
  for (long i = 0; i < n; i++) {
    l.l_type = F_WRLCK; if (fcntl(fd, F_SETLKW, &l)) { perror("lock"); return 1; }
    l.l_type = F_UNLCK; if (fcntl(fd, F_SETLKW, &l)) { perror("unlock"); return 1; }
  }
  double w1 = ns(CLOCK_MONOTONIC), c1 = ns(CLOCK_THREAD_CPUTIME_ID);
  printf("%.1f ns/call\n%.1f cpu-ns/call\n", (w1 - w0) / (2.0 * n), (c1 - c0) / (2.0 * n));
  return 0;
}
"#;

/// One way of running the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Untraced,
    /// `lockrace record --probes fast`: the fast probe set, the default.
    LockraceFast,
    /// `lockrace record --probes full`: the full classic set (syscall enter/exit included).
    LockraceFull,
    /// `lockrace record --probes lean`.
    LockraceLean,
    BpftraceCount,
    PerfRecord,
}

impl Config {
    pub const ALL: [Config; 6] = [
        Config::Untraced,
        Config::LockraceFast,
        Config::LockraceFull,
        Config::LockraceLean,
        Config::BpftraceCount,
        Config::PerfRecord,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::LockraceFast => "lockrace, fast probe set (the default)",
            Config::LockraceFull => "lockrace --probes full",
            Config::LockraceLean => "lockrace --probes lean",
            Config::BpftraceCount => "bpftrace, count() per probe",
            Config::PerfRecord => "perf record -a",
        }
    }

    /// The `--probes` value of a lockrace configuration.
    pub fn probes(self) -> Option<&'static str> {
        match self {
            Config::LockraceFast => Some("fast"),
            Config::LockraceFull => Some("full"),
            Config::LockraceLean => Some("lean"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub lockrace: PathBuf,
    /// The compiled loop.
    pub lockloop: PathBuf,
    /// Lock + unlock pairs per run (2 fcntl calls each).
    pub iterations: u64,
    pub reps: u32,
    pub work: PathBuf,
    pub configs: Vec<Config>,
    /// The CPU the loop runs on ([`loop_cpu`]).
    pub cpu: usize,
}

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    /// Wall-clock ns per fcntl call.
    pub wall_ns: f64,
    /// The loop's own CPU ns per call.
    pub cpu_ns: f64,
    /// lockrace: events recorded and dropped.
    pub events: Option<u64>,
    pub dropped: Option<u64>,
    pub other_cpu: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub config: Config,
    pub commands: Vec<String>,
    pub runs: Vec<Run>,
    pub errors: Vec<String>,
}

/// One program's line of a `LOCKRACE_SELF_COST=1` run.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: String,
    pub runs: u64,
    pub ns_per_run: Option<f64>,
    pub recursion_misses: Option<u64>,
}

/// The per-program table of one probe set.
#[derive(Debug, Clone)]
pub struct ProgramSet {
    pub config: Config,
    pub command: String,
    pub programs: Vec<Program>,
    pub error: Option<String>,
}

/// Write and compile the loop into `work`; the path of the binary.
pub fn build_loop(work: &Path) -> Result<PathBuf> {
    let src = work.join("lockloop.c");
    let bin = work.join("lockloop");
    std::fs::write(&src, LOOP_C).with_context(|| format!("cannot write {}", src.display()))?;
    let mut cc = Command::new("cc");
    cc.args(["-O2", "-o"]).arg(&bin).arg(&src);
    cmd::run(&mut cc, Io::Capture)?;
    Ok(bin)
}

/// `X ns/call` and `Y cpu-ns/call` of the loop's output.
pub fn loop_figures(stdout: &str) -> Option<(f64, f64)> {
    let grab = |suffix: &str| {
        stdout.lines().find_map(|l| {
            let v = l.trim().strip_suffix(suffix)?;
            v.trim().parse::<f64>().ok()
        })
    };
    Some((grab(" ns/call")?, grab(" cpu-ns/call")?))
}

/// `lockrace: recorded N events to FILE[; M events DROPPED ...]` of `lockrace record`.
pub fn record_figures(stderr: &str) -> (Option<u64>, Option<u64>) {
    let Some(line) = stderr
        .lines()
        .find(|l| l.starts_with("lockrace: recorded "))
    else {
        return (None, None);
    };
    let events = line
        .strip_prefix("lockrace: recorded ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let dropped = match line.find("; ") {
        Some(i) if line[i..].contains("DROPPED") => line[i + 2..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok()),
        _ => Some(0),
    };
    (events, dropped)
}

/// The `lockrace: program NAME: N runs, X ns/run, M recursion misses` lines of a
/// `LOCKRACE_SELF_COST=1` record.
pub fn program_lines(stderr: &str) -> Vec<Program> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("lockrace: program ")?;
            let (name, figures) = rest.split_once(": ")?;
            let mut p = Program {
                name: name.to_string(),
                runs: 0,
                ns_per_run: None,
                recursion_misses: None,
            };
            for part in figures.split(", ") {
                let mut w = part.split_whitespace();
                let (v, what) = (w.next()?, w.next().unwrap_or(""));
                match what {
                    "runs" => p.runs = v.parse().ok()?,
                    "ns/run" => p.ns_per_run = v.parse().ok(),
                    "recursion" => p.recursion_misses = v.parse().ok(),
                    _ => {}
                }
            }
            Some(p)
        })
        .collect()
}

/// The CPU the loop is pinned to (the last one): runs of one configuration then differ less
/// (the two vCPUs of a VM need not be equally loaded by the host), and lockrace's reader and
/// the tracers' consumers run on the others.
pub fn loop_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) - 1
}

/// The pinned loop's arguments: `taskset -c CPU LOOP N` (taskset execs the loop: same pid).
fn loop_args(opts: &Options) -> Vec<String> {
    vec![
        "-c".into(),
        opts.cpu.to_string(),
        opts.lockloop.display().to_string(),
        opts.iterations.to_string(),
    ]
}

fn record(opts: &Options, probes: &str, self_cost: bool) -> Command {
    let mut c = Command::new(&opts.lockrace);
    c.args(["record", "--probes", probes]);
    if self_cost {
        c.arg("--self-cost");
    }
    c.args(["--events", "/dev/null", "--", "taskset"])
        .args(loop_args(opts));
    c
}

fn workload(opts: &Options, config: Config) -> Command {
    match config.probes() {
        Some(p) => record(opts, p, false),
        None => {
            let mut c = Command::new("taskset");
            c.args(loop_args(opts));
            c
        }
    }
}

fn tracer(config: Config, work: &Path) -> Option<(Command, Option<&'static str>, Duration)> {
    match config {
        Config::BpftraceCount => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", probe::BPFTRACE_COUNT]);
            Some((c, Some("Attaching"), Duration::from_secs(1)))
        }
        Config::PerfRecord => {
            let mut c = Command::new("perf");
            c.arg("record");
            for tp in probe::TRACEPOINTS {
                c.args(["-e", tp]);
            }
            c.arg("-a").arg("-o").arg(work.join("perf-cost.data"));
            Some((c, None, Duration::from_millis(1500)))
        }
        _ => None,
    }
}

/// The commands of a configuration as the document shows them.
pub fn commands(opts: &Options, config: Config) -> Vec<String> {
    let root = format!("{}/", crate::workspace::root().display());
    let rel = |s: String| s.replace(&root, "");
    let mut out = Vec::new();
    if let Some((c, _, _)) = tracer(config, &opts.work) {
        out.push(format!("{} &", rel(cmd::display(&c))));
    }
    out.push(rel(cmd::display(&workload(opts, config))));
    if tracer(config, &opts.work).is_some() {
        out.push("kill -INT %1".to_string());
    }
    out
}

fn one_run(opts: &Options, config: Config) -> Result<Run> {
    let contention = machine::Contention::start();
    let bg = match tracer(config, &opts.work) {
        Some((c, marker, settle)) => Some(Background::start(
            c,
            marker,
            settle,
            Duration::from_secs(60),
        )?),
        None => None,
    };
    let mut w = workload(opts, config);
    let ran = cmd::exec(&mut w, Io::Capture);
    if let Some(bg) = bg {
        bg.stop();
    }
    let other_cpu = contention.other_percent();
    let _ = std::fs::remove_file(opts.work.join("perf-cost.data"));
    let ran = ran?;
    if !ran.status.success() {
        return Err(cmd::failure(&cmd::display(&w), ran.status, &ran.stderr));
    }
    let (wall_ns, cpu_ns) = loop_figures(&ran.stdout)
        .ok_or_else(|| anyhow!("the loop printed no figures: {:?}", ran.stdout))?;
    let (events, dropped) = if config.probes().is_some() {
        record_figures(&ran.stderr)
    } else {
        (None, None)
    };
    Ok(Run {
        wall_ns,
        cpu_ns,
        events,
        dropped,
        other_cpu,
    })
}

/// Every configuration `reps` times, interleaved.
pub fn measure(opts: &Options) -> Vec<Series> {
    let mut series: Vec<Series> = opts
        .configs
        .iter()
        .map(|&config| Series {
            config,
            commands: commands(opts, config),
            runs: Vec::new(),
            errors: Vec::new(),
        })
        .collect();
    let n = series.len();
    for rep in 0..opts.reps as usize {
        for k in 0..n {
            let i = (rep + k) % n;
            let config = series[i].config;
            let t = Instant::now();
            match one_run(opts, config) {
                Ok(r) => {
                    println!(
                        "xtask bench: cost per lock call {}/{} {:<38} {:>7.1} ns/call, {:>7.1} \
                         CPU ns/call ({:.1} s, other CPU {})",
                        rep + 1,
                        opts.reps,
                        config.label(),
                        r.wall_ns,
                        r.cpu_ns,
                        t.elapsed().as_secs_f64(),
                        r.other_cpu.map_or("?".into(), |p| format!("{p:.0}%")),
                    );
                    series[i].runs.push(r);
                }
                Err(e) => {
                    println!(
                        "xtask bench: cost per lock call {}/{} {} failed: {e}",
                        rep + 1,
                        opts.reps,
                        config.label()
                    );
                    series[i].errors.push(e.to_string());
                }
            }
        }
    }
    series
}

/// One `LOCKRACE_SELF_COST=1` run per lockrace probe set: each program's runs and ns per run.
pub fn programs(opts: &Options) -> Vec<ProgramSet> {
    let root = format!("{}/", crate::workspace::root().display());
    [
        Config::LockraceFast,
        Config::LockraceLean,
        Config::LockraceFull,
    ]
    .into_iter()
    .filter(|c| opts.configs.contains(c))
    .map(|config| {
        let mut c = record(opts, config.probes().unwrap_or("full"), true);
        let command = cmd::display(&c).replace(&root, "");
        let ran = cmd::exec(&mut c, Io::Capture);
        let (programs, error) = match ran {
            Ok(r) if r.status.success() => (program_lines(&r.stderr), None),
            Ok(r) => (
                Vec::new(),
                Some(cmd::failure(&command, r.status, &r.stderr).to_string()),
            ),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        println!(
            "xtask bench: program costs of {}: {} programs",
            config.label(),
            programs.len()
        );
        ProgramSet {
            config,
            command,
            programs,
            error,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loops_and_records_outputs_are_parsed() {
        assert_eq!(
            loop_figures("183.2 ns/call\n179.9 cpu-ns/call\n"),
            Some((183.2, 179.9))
        );
        assert_eq!(loop_figures("183.2 ns/call\n"), None);
        assert_eq!(
            record_figures(
                "Tracing...\nDetaching... done\nlockrace: recorded 2000000 events to /dev/null\n"
            ),
            (Some(2_000_000), Some(0))
        );
        assert_eq!(
            record_figures(
                "lockrace: recorded 1773528 events to /dev/null; 226472 events DROPPED (ring \
                 buffer full): the recording is incomplete, try a larger --ring-buffer-mb"
            ),
            (Some(1_773_528), Some(226_472))
        );
        assert_eq!(record_figures("nothing"), (None, None));
        let progs = program_lines(
            "lockrace: recorded 2 events to /dev/null\n\
             lockrace: program fast_posix_lock: 2000000 runs, 82.3 ns/run, 0 recursion misses\n\
             lockrace: program fast_flock_lock: 0 runs, - ns/run, 0 recursion misses\n\
             lockrace: program sched_waking: 390 recursion misses\n",
        );
        assert_eq!(progs.len(), 3);
        assert_eq!(
            progs[0],
            Program {
                name: "fast_posix_lock".into(),
                runs: 2_000_000,
                ns_per_run: Some(82.3),
                recursion_misses: Some(0),
            }
        );
        assert_eq!((progs[1].runs, progs[1].ns_per_run), (0, None));
        assert_eq!((progs[2].runs, progs[2].recursion_misses), (0, Some(390)));
    }

    #[test]
    fn commands_name_the_probe_set_and_the_tracer() {
        let opts = Options {
            lockrace: "target/release/lockrace".into(),
            lockloop: "target/bench/lockloop".into(),
            iterations: 1_000_000,
            reps: 5,
            work: "target/bench".into(),
            configs: Config::ALL.to_vec(),
            cpu: 1,
        };
        assert_eq!(
            commands(&opts, Config::Untraced),
            ["taskset -c 1 target/bench/lockloop 1000000"]
        );
        assert_eq!(
            commands(&opts, Config::LockraceFast),
            [
                "target/release/lockrace record --probes fast --events /dev/null -- \
              taskset -c 1 target/bench/lockloop 1000000"
            ]
        );
        assert!(commands(&opts, Config::LockraceFull)[0].starts_with("target/release/lockrace"));
        let bt = commands(&opts, Config::BpftraceCount);
        assert_eq!(bt.len(), 3);
        assert!(bt[0].starts_with("bpftrace -e") && bt[2] == "kill -INT %1");
    }
}
