//! Phase 1, the probe effect: the native-speed handoff (`lockrace run --lock posix --share
//! reopen`) untraced, under lockrace's own capture, and under bpftrace and perf on the same
//! tracepoints, interleaved, with whoops per handoff and handoffs/s per run.
//!
//! Method: every repetition runs every configuration once, in an order rotated by one per
//! repetition (no configuration always follows the same one); a tracer is started and waits
//! until it is attached before the workload starts, and is stopped (SIGINT) after it ends. The
//! workload's own figures come from its `--json` report (the roles time their own loops, so
//! tracer start-up and lockrace's analysis after the run are not in them). Invariant: a run
//! that fails is recorded with its error and the bench goes on; every tracer is reaped.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use super::{
    background::{Background, Stopped},
    machine::{self, Contention},
};
use crate::cmd::{self, Io};

/// One way of running the handoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Untraced,
    /// `lockrace run --probes full` (every event of every probe to user space, analysed).
    Lockrace,
    /// `lockrace run --probes lean` (lock decisions and blocked waiters only).
    LockraceLean,
    /// `lockrace run` (the fast probe set, the default).
    LockraceFast,
    BpftraceCount,
    BpftracePrint,
    PerfRecord,
}

impl Config {
    pub const ALL: [Config; 7] = [
        Config::Untraced,
        Config::Lockrace,
        Config::LockraceLean,
        Config::LockraceFast,
        Config::BpftraceCount,
        Config::BpftracePrint,
        Config::PerfRecord,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Lockrace => "lockrace --probes full",
            Config::LockraceLean => "lockrace --probes lean",
            Config::LockraceFast => "lockrace, fast probe set (the default)",
            Config::BpftraceCount => "bpftrace, count() per probe",
            Config::BpftracePrint => "bpftrace, printf every event",
            Config::PerfRecord => "perf record -a",
        }
    }
}

/// The three tracepoints bpftrace and perf trace (lockrace attaches its own 14 programs).
pub const TRACEPOINTS: [&str; 3] = [
    "filelock:posix_lock_inode",
    "sched:sched_waking",
    "sched:sched_switch",
];

pub const BPFTRACE_COUNT: &str = "tracepoint:filelock:posix_lock_inode { @lock = count(); } \
tracepoint:sched:sched_waking { @waking = count(); } \
tracepoint:sched:sched_switch { @switch = count(); }";

/// Fields every kernel since 5.0 names the same way (6.9 renamed fl_blocker, fl_type, ...).
pub const BPFTRACE_PRINT: &str = r#"tracepoint:filelock:posix_lock_inode { printf("%llu %d %d %s posix_lock_inode ino=%lu start=%lld end=%lld ret=%d\n", nsecs, cpu, tid, comm, args->i_ino, args->fl_start, args->fl_end, args->ret); } tracepoint:sched:sched_waking { printf("%llu %d %d %s sched_waking pid=%d target_cpu=%d\n", nsecs, cpu, tid, comm, args->pid, args->target_cpu); } tracepoint:sched:sched_switch { printf("%llu %d %d %s sched_switch prev=%d state=%lld next=%d\n", nsecs, cpu, tid, comm, args->prev_pid, args->prev_state, args->next_pid); }"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub lockrace: PathBuf,
    pub iterations: u64,
    pub reps: u32,
    /// Scratch directory (reports, perf.data).
    pub work: PathBuf,
    pub configs: Vec<Config>,
}

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub whoops_per_handoff: f64,
    pub handoffs_per_s: f64,
    /// Events the tracer recorded (lockrace: decoded events; bpftrace: counts or printed lines;
    /// perf: samples).
    pub events: Option<u64>,
    /// Events the tracer says it lost.
    pub lost: Option<u64>,
    /// Share of the machine other processes used meanwhile, percent.
    pub other_cpu: Option<f64>,
    /// CPU seconds of the external tracer's own process (bpftrace, perf).
    pub tracer_cpu_s: Option<f64>,
}

/// Everything measured for one configuration.
#[derive(Debug, Clone)]
pub struct Series {
    pub config: Config,
    /// The exact command lines (workload, tracer).
    pub commands: Vec<String>,
    pub runs: Vec<Run>,
    pub errors: Vec<String>,
}

/// The workload's figures from its JSON report: (whoops/handoff, handoffs/s, captured events,
/// dropped events). A handoff is one completed turn of either role; handoffs/s divides all
/// turns by the longer role's loop time (as `lockrace compare-sync` does).
pub fn report_figures(json: &str) -> Result<(f64, f64, Option<u64>, Option<u64>)> {
    let v: Value = serde_json::from_str(json).context("the run's --json report is not JSON")?;
    let roles = v["workload"]["roles"]
        .as_array()
        .filter(|r| r.len() == 2)
        .ok_or_else(|| anyhow!("the run's report has no two roles"))?;
    let sum = |k: &str| roles.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    let turns = sum("iterations");
    let whoops = sum("whoops");
    let elapsed = roles
        .iter()
        .filter_map(|r| r["elapsed_ns"].as_u64())
        .max()
        .unwrap_or(0);
    if turns == 0 || elapsed == 0 {
        return Err(anyhow!("the run's report has no turns"));
    }
    Ok((
        whoops as f64 / turns as f64,
        turns as f64 * 1e9 / elapsed as f64,
        v["capture"]["events"].as_u64(),
        v["capture"]["dropped"].as_u64(),
    ))
}

/// `@name: N` lines of bpftrace's exit output, summed.
pub fn bpftrace_counts(tail: &[String]) -> Option<u64> {
    let mut total = None;
    for l in tail {
        if let Some((k, v)) = l.split_once(':')
            && k.starts_with('@')
            && let Ok(n) = v.trim().parse::<u64>()
        {
            *total.get_or_insert(0) += n;
        }
    }
    total
}

/// bpftrace's `Lost N events` warnings, summed.
pub fn bpftrace_lost(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("Lost ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// perf's `[ perf record: Captured and wrote X MB FILE (N samples) ]` and `lost N chunks`.
pub fn perf_samples(stderr: &str) -> (Option<u64>, Option<u64>) {
    let samples = stderr.lines().find_map(|l| {
        let i = l.rfind(" samples)")?;
        let open = l[..i].rfind('(')?;
        l[open + 1..i].trim().parse::<u64>().ok()
    });
    let lost = stderr.lines().find_map(|l| {
        let i = l.find("lost ")?;
        l[i + 5..].split_whitespace().next()?.parse::<u64>().ok()
    });
    (samples, lost)
}

fn workload(opts: &Options, config: Config, report: &Path) -> Command {
    let mut c = Command::new(&opts.lockrace);
    c.arg("run");
    match config {
        Config::Lockrace => {
            c.args(["--no-baseline", "--probes", "full"]);
        }
        Config::LockraceLean => {
            c.args(["--no-baseline", "--probes", "lean"]);
        }
        Config::LockraceFast => {
            c.args(["--no-baseline", "--probes", "fast"]);
        }
        _ => {
            c.arg("--no-trace");
        }
    }
    c.args(["--lock", "posix", "--share", "reopen", "--iterations"])
        .arg(opts.iterations.to_string())
        .arg("--json")
        .arg(report);
    c
}

fn tracer(config: Config, work: &Path) -> Option<(Command, Option<&'static str>, Duration)> {
    match config {
        Config::Untraced | Config::Lockrace | Config::LockraceLean | Config::LockraceFast => None,
        Config::BpftraceCount => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE_COUNT]);
            Some((c, Some("Attaching"), Duration::from_secs(1)))
        }
        Config::BpftracePrint => {
            let mut c = Command::new("bpftrace");
            c.args(["-e", BPFTRACE_PRINT]);
            Some((c, Some("Attaching"), Duration::from_secs(1)))
        }
        Config::PerfRecord => {
            let mut c = Command::new("perf");
            c.arg("record");
            for tp in TRACEPOINTS {
                c.args(["-e", tp]);
            }
            c.arg("-a").arg("-o").arg(work.join("perf.data"));
            // perf prints nothing once attached: give it the same settle time as bpftrace.
            Some((c, None, Duration::from_millis(1500)))
        }
    }
}

/// The commands of a configuration as the report shows them (paths relative to the root).
pub fn commands(opts: &Options, config: Config) -> Vec<String> {
    let rel = |s: String| {
        let root = format!("{}/", crate::workspace::root().display());
        s.replace(&root, "")
    };
    let mut out = Vec::new();
    if let Some((c, _, _)) = tracer(config, &opts.work) {
        out.push(format!("{} &", rel(cmd::display(&c))));
    }
    let report = opts.work.join("run.json");
    out.push(rel(cmd::display(&workload(opts, config, &report))));
    if tracer(config, &opts.work).is_some() {
        out.push("kill -INT %1".to_string());
    }
    out
}

fn tracer_figures(config: Config, s: &Stopped) -> (Option<u64>, Option<u64>) {
    match config {
        Config::BpftraceCount => (
            bpftrace_counts(&s.stdout.tail),
            Some(bpftrace_lost(&s.stderr)),
        ),
        // Every line but the "Attaching N probes..." banner is one event.
        Config::BpftracePrint => (
            Some(s.stdout.lines.saturating_sub(1)),
            Some(bpftrace_lost(&s.stderr)),
        ),
        Config::PerfRecord => perf_samples(&s.stderr),
        Config::Untraced | Config::Lockrace | Config::LockraceLean | Config::LockraceFast => {
            (None, None)
        }
    }
}

fn one_run(opts: &Options, config: Config) -> Result<Run> {
    let report = opts.work.join("run.json");
    let _ = std::fs::remove_file(&report);
    let contention = Contention::start();
    let bg = match tracer(config, &opts.work) {
        Some((c, marker, settle)) => Some(Background::start(
            c,
            marker,
            settle,
            Duration::from_secs(60),
        )?),
        None => None,
    };
    let mut w = workload(opts, config, &report);
    let ran = cmd::exec(&mut w, Io::Capture);
    let stopped = bg.map(Background::stop);
    let other_cpu = contention.other_percent();
    let _ = std::fs::remove_file(opts.work.join("perf.data"));
    let ran = ran?;
    if !ran.status.success() {
        return Err(cmd::failure(&cmd::display(&w), ran.status, &ran.stderr));
    }
    let json = std::fs::read_to_string(&report)
        .with_context(|| format!("the run wrote no report {}", report.display()))?;
    let (wph, hps, events, dropped) = report_figures(&json)?;
    let (events, lost) = match &stopped {
        Some((_, s)) => tracer_figures(config, s),
        None => (events, dropped),
    };
    Ok(Run {
        whoops_per_handoff: wph,
        handoffs_per_s: hps,
        events,
        lost,
        other_cpu,
        tracer_cpu_s: stopped.as_ref().and_then(|(_, s)| s.cpu_s),
    })
}

/// Phase 1: every configuration `reps` times, interleaved.
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
            let load = machine::loadavg()[0];
            match one_run(opts, config) {
                Ok(r) => {
                    println!(
                        "xtask bench: probe effect {}/{} {:<30} whoops/handoff {:>7.2}  \
                         handoffs/s {:>8.0}  ({:.1} s, load {load:.2}, other CPU {})",
                        rep + 1,
                        opts.reps,
                        config.label(),
                        r.whoops_per_handoff,
                        r.handoffs_per_s,
                        t.elapsed().as_secs_f64(),
                        r.other_cpu.map_or("?".into(), |p| format!("{p:.0}%")),
                    );
                    series[i].runs.push(r);
                }
                Err(e) => {
                    println!(
                        "xtask bench: probe effect {}/{} {} failed: {e}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_both_roles() {
        let json = r#"{"workload":{"roles":[
            {"iterations":100,"whoops":1500,"elapsed_ns":2000000},
            {"iterations":100,"whoops":1300,"elapsed_ns":4000000}]},
            "capture":{"events":12345,"dropped":0,"complete":true}}"#;
        let (w, h, e, d) = report_figures(json).unwrap();
        assert_eq!(w, 14.0);
        assert_eq!(h, 50_000.0);
        assert_eq!((e, d), (Some(12345), Some(0)));
        let untraced = r#"{"workload":{"roles":[
            {"iterations":1,"whoops":0,"elapsed_ns":1},{"iterations":1,"whoops":0,"elapsed_ns":1}]},
            "capture":null}"#;
        assert_eq!(report_figures(untraced).unwrap().2, None);
        assert!(report_figures(r#"{"workload":{"roles":[]}}"#).is_err());
        assert!(report_figures("nope").is_err());
    }

    #[test]
    fn tracer_outputs_are_parsed() {
        let tail: Vec<String> = ["", "", "@lock: 790617", "@switch: 13445", "@waking: 7234"]
            .map(String::from)
            .to_vec();
        assert_eq!(bpftrace_counts(&tail), Some(790617 + 13445 + 7234));
        assert_eq!(bpftrace_counts(&["Attaching 3 probes...".into()]), None);
        assert_eq!(bpftrace_lost("Lost 12 events\nLost 3 events\nother\n"), 15);
        let perf = "[ perf record: Woken up 9 times to write data ]\n\
                    [ perf record: Captured and wrote 33.482 MB /t/perf.data (412345 samples) ]\n";
        assert_eq!(perf_samples(perf), (Some(412345), None));
        assert_eq!(
            perf_samples("Processed 10 events and lost 4 chunks!\n(9 samples)"),
            (Some(9), Some(4))
        );
    }

    #[test]
    fn commands_show_the_tracer_then_the_workload() {
        let opts = Options {
            lockrace: "target/release/lockrace".into(),
            iterations: 20000,
            reps: 9,
            work: "target/bench".into(),
            configs: Config::ALL.to_vec(),
        };
        assert_eq!(
            commands(&opts, Config::Untraced),
            [
                "target/release/lockrace run --no-trace --lock posix --share reopen --iterations \
              20000 --json target/bench/run.json"
            ]
        );
        let perf = commands(&opts, Config::PerfRecord);
        assert_eq!(perf.len(), 3);
        assert!(perf[0].starts_with(
            "perf record -e filelock:posix_lock_inode -e sched:sched_waking -e \
             sched:sched_switch -a"
        ));
        assert!(
            commands(&opts, Config::Lockrace)[0].contains("run --no-baseline --probes full --lock")
        );
        assert!(
            commands(&opts, Config::LockraceLean)[0].contains("run --no-baseline --probes lean")
        );
        assert!(
            commands(&opts, Config::LockraceFast)[0]
                .starts_with("target/release/lockrace run --no-baseline --probes fast")
        );
    }
}
