//! `lockrace bench ...` (hidden): the measurement helpers `cargo xtask bench` runs in child
//! processes, each printing one JSON object on stdout (docs/BENCHMARKS.md).
//!
//! - `storm`: a lock storm, `--procs` processes x `--threads` threads taking and releasing
//!   uncontended POSIX locks (each thread on its own byte), optionally paced to `--rate` fcntl
//!   calls per second, optionally captured in-process (`--capture count`: the real loader and
//!   ring-buffer reader decoding every record into a counting sink; `--capture jsonl`: the real
//!   JSONL writer). The capture filters on this process and adopts the workers it forks, exactly
//!   like `lockrace record -- CMD`. The workers are this binary re-executed (`storm-worker`).
//! - `analyzer`: a synthetic handoff stream ([`synth::HandoffGen`], generated chunk by chunk so
//!   the input takes constant memory) through the streaming [`Analyzer`]; reports events/s and
//!   this process's peak RSS (`VmHWM`), so 1M and 10M events can be compared for growth.
//!
//! Invariants: nothing here is user-facing (the subcommand is hidden from `--help`); every run
//! ends with exactly one JSON line on stdout, and the storm's lock file is removed whatever the
//! outcome; timings exclude process start-up (each worker times its own loop).
use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::{
    analysis::{AnalysisInput, Analyzer, synth},
    capture::{Capture, Filter, Sink},
    events::Event,
    jsonl::Collector,
};

/// The hidden `lockrace bench` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// A lock storm, optionally captured in-process.
    Storm(StormArgs),
    /// One storm process (started by `storm`).
    StormWorker(WorkerArgs),
    /// A synthetic event stream through the streaming analyzer.
    Analyzer(AnalyzerArgs),
}

/// What the storm's in-process capture does with each event.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// No capture (e.g. under `lockrace record`).
    None,
    /// Decode every record and count it.
    Count,
    /// Decode and write JSONL to `--events`.
    Jsonl,
}

#[derive(Args, Debug, Clone)]
pub struct StormArgs {
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub procs: u32,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Seconds each worker hammers the locks.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// fcntl calls per second over all threads (0: as fast as they go).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, value_enum, default_value_t = CaptureMode::None)]
    pub capture: CaptureMode,
    /// JSONL destination for `--capture jsonl`.
    #[arg(long, value_name = "FILE", default_value = "/dev/null")]
    pub events: PathBuf,
    /// Ring-buffer size in MiB (power of two).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_buffer_mb: u32,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub file: PathBuf,
    /// This worker's index (its threads lock bytes `index * threads ..`).
    #[arg(long)]
    pub index: u32,
    #[arg(long)]
    pub threads: u32,
    #[arg(long)]
    pub duration: f64,
    /// fcntl calls per second for this whole process (0: unpaced).
    #[arg(long)]
    pub rate: f64,
}

#[derive(Args, Debug, Clone)]
pub struct AnalyzerArgs {
    /// Events to push through the analyzer.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events generated per chunk (the generator's own memory).
    #[arg(long, default_value_t = 65_536)]
    pub chunk: usize,
}

pub fn main(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let json = match cmd {
        BenchCommand::Storm(a) => serde_json::to_string(&storm(&a)?)?,
        BenchCommand::StormWorker(a) => serde_json::to_string(&worker(&a)?)?,
        BenchCommand::Analyzer(a) => serde_json::to_string(&analyzer(&a)?)?,
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

// ---- storm -----------------------------------------------------------------------------------

/// One worker's account.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct WorkerResult {
    /// fcntl lock/unlock calls made (all threads).
    pub calls: u64,
    /// Failed fcntl calls (should be 0).
    pub errors: u64,
    /// The longest thread loop, ns.
    pub loop_ns: u64,
}

/// The storm's account (one JSON line).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StormResult {
    pub procs: u32,
    pub threads: u32,
    pub target_calls_per_s: f64,
    pub capture: CaptureMode,
    pub calls: u64,
    pub errors: u64,
    /// The longest worker loop, ns (the storm's duration).
    pub loop_ns: u64,
    pub calls_per_s: f64,
    /// Captured events (0 without a capture).
    pub events: u64,
    pub dropped: u64,
    pub decode_errors: u64,
    /// Events per second of the storm (captured events + drops, over `loop_ns`).
    pub offered_events_per_s: f64,
    /// Captured events per second.
    pub events_per_s: f64,
    /// CPU time of this process (the capture's reader; the workers are children), ns.
    pub reader_cpu_ns: u64,
}

/// Counts decoded events (the capture's cost without any output).
#[derive(Default)]
struct CountSink {
    n: u64,
    last_ts: u64,
}

impl Sink for CountSink {
    fn push(&mut self, e: &Event) -> io::Result<()> {
        self.n += 1;
        self.last_ts = self.last_ts.max(e.ts_ns);
        Ok(())
    }
}

/// Per-thread calls per second for a process pacing `rate` over `threads` threads.
pub fn per_thread_rate(rate: f64, threads: u32) -> f64 {
    if rate > 0.0 && threads > 0 {
        rate / f64::from(threads)
    } else {
        0.0
    }
}

/// How long to sleep so that `done` calls after `elapsed` keep to `rate` calls/s (None: on or
/// behind schedule, or unpaced).
pub fn pace(done: u64, elapsed: Duration, rate: f64) -> Option<Duration> {
    if rate <= 0.0 {
        return None;
    }
    let due = Duration::from_secs_f64(done as f64 / rate);
    due.checked_sub(elapsed).filter(|d| !d.is_zero())
}

fn process_cpu_ns() -> u64 {
    // SAFETY: getrusage with a valid out pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn check_duration(s: f64) -> anyhow::Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
        bail!("--duration {s} is not a number of seconds in (0, 3600]");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Removes the storm's lock file when dropped.
struct LockFile(PathBuf);

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn storm(a: &StormArgs) -> anyhow::Result<StormResult> {
    check_duration(a.duration)?;
    if !(a.rate.is_finite() && a.rate >= 0.0) {
        bail!("--rate {} is not a number of calls per second", a.rate);
    }
    let path = std::env::temp_dir().join(format!("lockrace-storm.{}", std::process::id()));
    File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let file = LockFile(path);

    let filter = Filter {
        tgids: vec![std::process::id()],
        inodes: vec![],
    };
    let ring = a.ring_buffer_mb << 20;
    enum Running {
        None,
        Count(Capture<CountSink>),
        Jsonl(Capture<Collector>),
    }
    let running = match a.capture {
        CaptureMode::None => Running::None,
        CaptureMode::Count => Running::Count(Capture::start(&filter, ring, CountSink::default())?),
        CaptureMode::Jsonl => Running::Jsonl(Capture::start(
            &filter,
            ring,
            Collector::new(false, Some(&a.events))?,
        )?),
    };
    let cpu_before = process_cpu_ns();
    let workers = run_workers(a, &file.0);
    let cpu_during = process_cpu_ns().saturating_sub(cpu_before);
    let stats = match running {
        Running::None => None,
        Running::Count(c) => Some(c.stop()?.1),
        Running::Jsonl(c) => Some(c.stop()?.1),
    };
    let workers = workers?;
    let calls: u64 = workers.iter().map(|w| w.calls).sum();
    let errors: u64 = workers.iter().map(|w| w.errors).sum();
    let loop_ns = workers.iter().map(|w| w.loop_ns).max().unwrap_or(0).max(1);
    let stats = stats.unwrap_or_default();
    let per_s = |n: u64| n as f64 * 1e9 / loop_ns as f64;
    Ok(StormResult {
        procs: a.procs,
        threads: a.threads,
        target_calls_per_s: a.rate,
        capture: a.capture,
        calls,
        errors,
        loop_ns,
        calls_per_s: per_s(calls),
        events: stats.events,
        dropped: stats.dropped,
        decode_errors: stats.decode_errors,
        offered_events_per_s: per_s(stats.events + stats.dropped),
        events_per_s: per_s(stats.events),
        reader_cpu_ns: cpu_during,
    })
}

/// Start every worker, then collect their JSON lines (all are reaped, also on error).
fn run_workers(a: &StormArgs, file: &Path) -> anyhow::Result<Vec<WorkerResult>> {
    let per_proc = a.rate / f64::from(a.procs);
    let mut children = Vec::new();
    for index in 0..a.procs {
        let child = Command::new("/proc/self/exe")
            .args(["bench", "storm-worker", "--file"])
            .arg(file)
            .args(["--index", &index.to_string()])
            .args(["--threads", &a.threads.to_string()])
            .args(["--duration", &a.duration.to_string()])
            .args(["--rate", &per_proc.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start a storm worker");
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e);
            }
        }
    }
    let mut out = Vec::new();
    let mut first_err = None;
    for mut c in children {
        let mut line = String::new();
        if let Some(stdout) = c.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let status = c.wait()?;
        match serde_json::from_str::<WorkerResult>(line.trim()) {
            Ok(r) if status.success() => out.push(r),
            _ => {
                first_err
                    .get_or_insert_with(|| anyhow::anyhow!("a storm worker failed ({status})"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One thread: lock and unlock byte `byte` with F_SETLKW until `deadline`, paced to `rate`.
fn hammer(file: &File, byte: i64, duration: Duration, rate: f64) -> (u64, u64, u64) {
    let fd = file.as_raw_fd();
    // SAFETY: zeroed `struct flock` is a valid value; the fields used are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = byte;
    fl.l_len = 1;
    let (mut calls, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            for t in [libc::F_WRLCK, libc::F_UNLCK] {
                fl.l_type = t as i16;
                // SAFETY: valid fd and pointer to a live `struct flock`.
                if unsafe { libc::fcntl(fd, libc::F_SETLKW, &fl) } != 0 {
                    errors += 1;
                }
                calls += 1;
            }
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return (calls, errors, elapsed.as_nanos() as u64);
        }
        if let Some(d) = pace(calls, elapsed, rate) {
            std::thread::sleep(d.min(duration - elapsed));
        }
    }
}

fn worker(a: &WorkerArgs) -> anyhow::Result<WorkerResult> {
    let duration = check_duration(a.duration)?;
    let rate = per_thread_rate(a.rate, a.threads);
    let results: Vec<anyhow::Result<(u64, u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.threads)
            .map(|t| {
                let byte = i64::from(a.index) * i64::from(a.threads) + i64::from(t);
                s.spawn(move || -> anyhow::Result<(u64, u64, u64)> {
                    // Each thread its own description (its own fd), POSIX locks of the process.
                    let f = File::options()
                        .read(true)
                        .write(true)
                        .open(&a.file)
                        .with_context(|| format!("cannot open {}", a.file.display()))?;
                    Ok(hammer(&f, byte, duration, rate))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a storm thread panicked")))
            })
            .collect()
    });
    let mut r = WorkerResult {
        calls: 0,
        errors: 0,
        loop_ns: 0,
    };
    for x in results {
        let (calls, errors, ns) = x?;
        r.calls += calls;
        r.errors += errors;
        r.loop_ns = r.loop_ns.max(ns);
    }
    Ok(r)
}

// ---- analyzer --------------------------------------------------------------------------------

/// The analyzer benchmark's account (one JSON line).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AnalyzerResult {
    pub events: u64,
    /// Time in `Analyzer::push` and `finish`, ns (generation excluded).
    pub analyze_ns: u64,
    /// Time generating the synthetic events, ns.
    pub generate_ns: u64,
    pub events_per_s: f64,
    /// Peak resident set of this process (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Resident set before the first event was pushed (binary, first chunk), KiB.
    pub start_rss_kib: u64,
    /// Handoffs the analysis counted (a check that the work was done).
    pub handoffs: u64,
}

/// A `Vm*:` line of /proc/self/status, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn own_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_kib(&s, field))
        .unwrap_or(0)
}

fn analyzer(a: &AnalyzerArgs) -> anyhow::Result<AnalyzerResult> {
    if a.events == 0 || a.chunk == 0 {
        bail!("--events and --chunk must be at least 1");
    }
    let input = AnalysisInput::default();
    let mut gen_ = synth::HandoffGen::new(a.seed);
    let mut analyzer = Analyzer::new(&input);
    let (mut pushed, mut gen_ns, mut analyze_ns) = (0u64, 0u64, 0u64);
    let mut start_rss = None;
    while pushed < a.events {
        let t = Instant::now();
        let chunk = gen_.next_chunk(a.chunk);
        gen_ns += t.elapsed().as_nanos() as u64;
        let take = chunk.len().min((a.events - pushed) as usize);
        if start_rss.is_none() {
            start_rss = Some(own_status("VmRSS"));
        }
        let t = Instant::now();
        for e in &chunk[..take] {
            analyzer.push(e);
        }
        analyze_ns += t.elapsed().as_nanos() as u64;
        pushed += take as u64;
    }
    let t = Instant::now();
    let analysis = analyzer.finish();
    analyze_ns += t.elapsed().as_nanos() as u64;
    let h = analysis.handoff_totals();
    let handoffs = h.fifo + h.self_barge + h.newcomer_barge + h.waiter_reorder + h.unresolved;
    Ok(AnalyzerResult {
        events: pushed,
        analyze_ns,
        generate_ns: gen_ns,
        events_per_s: pushed as f64 * 1e9 / analyze_ns.max(1) as f64,
        peak_rss_kib: own_status("VmHWM"),
        start_rss_kib: start_rss.unwrap_or(0),
        handoffs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_sleeps_only_when_ahead() {
        assert_eq!(
            pace(100, Duration::from_millis(50), 1000.0),
            Some(Duration::from_millis(50))
        );
        assert_eq!(pace(10, Duration::from_millis(50), 1000.0), None);
        assert_eq!(pace(1_000_000, Duration::ZERO, 0.0), None);
        assert_eq!(per_thread_rate(1000.0, 4), 250.0);
        assert_eq!(per_thread_rate(0.0, 4), 0.0);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let s = "Name:\tx\nVmHWM:\t  12345 kB\nVmRSS:\t   999 kB\n";
        assert_eq!(status_kib(s, "VmHWM"), Some(12345));
        assert_eq!(status_kib(s, "VmRSS"), Some(999));
        assert_eq!(status_kib(s, "VmPeak"), None);
    }

    #[test]
    fn worker_makes_unlocked_calls_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let r = worker(&WorkerArgs {
            file: path,
            index: 0,
            threads: 2,
            duration: 0.05,
            rate: 2000.0,
        })
        .unwrap();
        assert_eq!(r.errors, 0);
        // Paced to 2000 calls/s for 50 ms, in batches of 64 per thread.
        assert!(r.calls >= 64 && r.calls <= 400, "{r:?}");
        assert!(r.loop_ns >= 50_000_000);
    }

    #[test]
    fn analyzer_counts_what_it_was_given() {
        let r = analyzer(&AnalyzerArgs {
            events: 20_000,
            seed: 3,
            chunk: 4_096,
        })
        .unwrap();
        assert_eq!(r.events, 20_000);
        assert!(r.handoffs > 100, "{r:?}");
        assert!(r.peak_rss_kib >= r.start_rss_kib && r.start_rss_kib > 0);
    }
}
