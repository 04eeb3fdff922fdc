//! `lockrace compare-sync`: every way of handing the turn over, measured the same way, in one
//! table: the file-lock flavours (posix, lockf, ofd and flock, on private descriptions and, for
//! ofd and flock, on the seed's one shared description) and the remedies (eventfd, futex).
//!
//! Method: each primitive runs `execute()` with the same `--iterations`, `--repeat` times,
//! interleaved (every primitive once, then again, ...) so slow drifts of the machine hit every
//! row alike; the table shows medians over the repetitions. A handoff is one completed turn
//! (both roles' turns count); handoffs/s = turns / the longer role's loop time; latency p50/p99
//! come from both roles' merged handoff-latency histograms (`latency`). "x" columns are how many
//! times worse than the best row that holds mutual exclusion (a primitive that lets both roles
//! in at once is fast for the wrong reason; it still gets a ratio). As root (unless
//! `--no-trace`) the file-lock rows are then traced once each (`trace_pass`), with at most
//! [`TRACE_ITERATIONS`] turns per role, and show self-barges per handoff: whoops the analysis
//! attributes to the releaser taking the lock back, per turn, and the share of the kernel's
//! decided handoffs that were self-barges.
//!
//! The traced pass keeps every event in memory until the run ends (the whoops analysis needs the
//! roles' acquisition logs, which exist only then), and on a loaded machine a file lock can see
//! hundreds of whoops per turn, a few kernel events each: hence the cap on its turns.
//!
//! Invariants: [`measure`] is the whole measurement as a function (the future `cargo xtask
//! bench` calls it with its own `exe`), [`render_table`] and [`median`] are pure; progress goes
//! to the callback only (the CLI prints it on a TTY).
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use clap::Args;

use super::run::summary::fmt_latency;
use super::run::trace_pass::{TraceOptions, traced_execute};
use crate::capture::Limits;
use crate::error::hinted;
use crate::report::model::{Document, HandoffLatency};
use crate::workload::execute::{Workload, execute};
use crate::workload::outcome::RunOutcome;
use crate::workload::sync::sync_name;
use crate::workload::{LockKind, Share, SyncKind, lock_name, share_name};

#[derive(Args, Debug, Clone)]
pub struct CompareSyncArgs {
    /// Turns each role completes in every run.
    #[arg(long, default_value_t = 20000, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    /// Runs per primitive, interleaved (all primitives once, then again); medians are shown.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub repeat: u64,
    /// Write the table as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Do not trace the file-lock rows, even as root (no self-barge columns).
    #[arg(long)]
    pub no_trace: bool,
    /// Give up on a run whose other side makes no progress for this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Ring-buffer size in MiB for the traced pass (power of two).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_buffer_mb: u32,
    /// (internal, for tests) create the runs' private temp dirs under DIR instead of $TMPDIR.
    #[arg(long, value_name = "DIR", hide = true)]
    pub tmpdir_parent: Option<PathBuf>,
}

/// One way of handing the turn over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Primitive {
    pub name: &'static str,
    pub lock: LockKind,
    pub share: Share,
    pub sync: SyncKind,
}

const fn file_lock(name: &'static str, lock: LockKind, share: Share) -> Primitive {
    Primitive {
        name,
        lock,
        share,
        sync: SyncKind::Fcntl,
    }
}

/// The rows, in table order.
pub const PRIMITIVES: [Primitive; 8] = [
    file_lock("posix reopen", LockKind::Posix, Share::Reopen),
    file_lock("lockf reopen", LockKind::Lockf, Share::Reopen),
    file_lock("ofd reopen", LockKind::Ofd, Share::Reopen),
    file_lock("ofd same", LockKind::Ofd, Share::Same),
    file_lock("flock reopen", LockKind::Flock, Share::Reopen),
    file_lock("flock same", LockKind::Flock, Share::Same),
    Primitive {
        name: "eventfd",
        lock: LockKind::Ofd,
        share: Share::Same,
        sync: SyncKind::Eventfd,
    },
    Primitive {
        name: "futex",
        lock: LockKind::Ofd,
        share: Share::Same,
        sync: SyncKind::Futex,
    },
];

/// The most turns per role of a traced run (see the module docs).
pub const TRACE_ITERATIONS: u64 = 2000;

/// What to measure.
#[derive(Debug, Clone)]
pub struct CompareSyncConfig {
    pub iterations: u64,
    pub repeat: u64,
    pub stall_timeout: Duration,
    /// Trace the file-lock rows in a second pass (needs root).
    pub trace: bool,
    /// Turns per role of the traced runs (`iterations`, capped at [`TRACE_ITERATIONS`]).
    pub trace_iterations: u64,
    /// `--ring-buffer-mb` of the traced pass, checked; the task maps keep their default size.
    pub limits: Limits,
    /// The lockrace binary the roles run (`/proc/self/exe` from the CLI).
    pub exe: PathBuf,
    pub tmpdir_parent: PathBuf,
}

impl CompareSyncConfig {
    fn run_config(&self, p: &Primitive) -> Workload {
        Workload {
            lock: p.lock,
            share: p.share,
            sync: p.sync,
            scenario: None,
            iterations: self.iterations,
            stall_timeout: self.stall_timeout,
            exe: self.exe.clone(),
            tmpdir_parent: self.tmpdir_parent.clone(),
            progress: false,
        }
    }
}

/// One run of one primitive.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunMetrics {
    pub overlaps: u64,
    pub whoops: u64,
    /// Both roles' turns.
    pub turns: u64,
    /// The longer of the two roles' loop times.
    pub elapsed_ns: u64,
    pub whoops_per_handoff: f64,
    pub handoffs_per_s: f64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
}

impl RunMetrics {
    /// The metrics of a complete run (None when a role did not report).
    pub fn of(outcome: &RunOutcome) -> Option<RunMetrics> {
        let reports: Vec<_> = outcome
            .roles()
            .iter()
            .map(|r| r.report.as_ref())
            .collect::<Option<Vec<_>>>()?;
        let turns: u64 = reports.iter().map(|r| r.iterations).sum();
        let whoops: u64 = reports.iter().map(|r| r.whoops).sum();
        let elapsed_ns = reports.iter().map(|r| r.elapsed_ns).max().unwrap_or(0);
        let latency =
            HandoffLatency::merge(reports.iter().filter_map(|r| r.handoff_latency.as_ref()));
        Some(RunMetrics {
            overlaps: reports.iter().map(|r| r.overlaps).sum(),
            whoops,
            turns,
            elapsed_ns,
            whoops_per_handoff: whoops as f64 / turns.max(1) as f64,
            handoffs_per_s: if elapsed_ns == 0 {
                0.0
            } else {
                turns as f64 * 1e9 / elapsed_ns as f64
            },
            p50_ns: latency.p50_ns,
            p99_ns: latency.p99_ns,
        })
    }
}

/// The traced pass's figures for a file-lock row.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct TracedFigures {
    /// Whoops the analysis attributes to a self-barge, per handoff (turn).
    pub self_barge_whoops_per_handoff: f64,
    /// Decided kernel handoffs of the memfd lock that were self-barges, as a fraction.
    pub self_barged_handoffs: Option<f64>,
    pub kernel_handoffs: u64,
    pub whoops_per_handoff: f64,
    /// False when events were dropped or the run was incomplete.
    pub complete: bool,
}

/// One row of the table.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub primitive: String,
    /// `fcntl`, `eventfd` or `futex`.
    pub sync: String,
    /// The lock flavour and share mode (null for eventfd/futex).
    pub lock: Option<String>,
    pub share: Option<String>,
    /// No overlap in any run.
    pub mutual_exclusion: bool,
    /// Overlaps summed over the runs.
    pub overlaps: u64,
    /// Medians over the runs.
    pub whoops_per_handoff: f64,
    pub handoffs_per_s: f64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// Times worse than the best row that holds mutual exclusion (1.0 = the best; below 1 for
    /// a row that does not exclude and is faster): best rate / this rate, this latency / best
    /// latency.
    pub handoffs_per_s_vs_best: Option<f64>,
    pub p50_vs_best: Option<f64>,
    pub p99_vs_best: Option<f64>,
    /// The traced pass (file-lock rows, root only).
    #[serde(default)]
    pub traced: Option<TracedFigures>,
    pub runs: Vec<RunMetrics>,
}

/// The whole comparison (what `--json` writes).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CompareSyncReport {
    /// Always `lockrace-compare-sync`.
    pub report: String,
    pub lockrace_version: String,
    pub kernel_release: String,
    pub iterations: u64,
    pub repeat: u64,
    /// True when the file-lock rows were traced.
    pub traced: bool,
    /// Turns per role of each traced run.
    #[serde(default)]
    pub trace_iterations: Option<u64>,
    pub rows: Vec<Row>,
}

/// Where the measurement is, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub primitive: &'static str,
    pub pass: &'static str,
}

/// The median of `v` (the mean of the two middle values for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn median_u64(v: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let v: Vec<f64> = v.flatten().map(|x| x as f64).collect();
    median(&v).map(|m| m.round() as u64)
}

/// The rows from the runs (per primitive, in [`PRIMITIVES`] order), with the ratios to the best.
pub fn rows(runs: &[Vec<RunMetrics>]) -> Vec<Row> {
    let mut rows: Vec<Row> = PRIMITIVES
        .iter()
        .zip(runs)
        .map(|(p, runs)| {
            let file_lock = p.sync == SyncKind::Fcntl;
            let overlaps: u64 = runs.iter().map(|r| r.overlaps).sum();
            let col = |f: &dyn Fn(&RunMetrics) -> f64| {
                median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
            };
            Row {
                primitive: p.name.to_string(),
                sync: sync_name(p.sync).to_string(),
                lock: file_lock.then(|| lock_name(p.lock).to_string()),
                share: file_lock.then(|| share_name(p.share).to_string()),
                mutual_exclusion: overlaps == 0,
                overlaps,
                whoops_per_handoff: col(&|r| r.whoops_per_handoff),
                handoffs_per_s: col(&|r| r.handoffs_per_s),
                p50_ns: median_u64(runs.iter().map(|r| r.p50_ns)),
                p99_ns: median_u64(runs.iter().map(|r| r.p99_ns)),
                handoffs_per_s_vs_best: None,
                p50_vs_best: None,
                p99_vs_best: None,
                traced: None,
                runs: runs.clone(),
            }
        })
        .collect();
    // The reference rows: those that exclude (all rows if none does).
    let excluding: Vec<&Row> = rows.iter().filter(|r| r.mutual_exclusion).collect();
    let reference: Vec<&Row> = if excluding.is_empty() {
        rows.iter().collect()
    } else {
        excluding
    };
    let best_rate = reference
        .iter()
        .map(|r| r.handoffs_per_s)
        .fold(0.0, f64::max);
    let best = |pick: fn(&Row) -> Option<u64>| {
        reference
            .iter()
            .filter_map(|r| pick(r))
            .filter(|&v| v > 0)
            .min()
    };
    let (best50, best99) = (best(|r| r.p50_ns), best(|r| r.p99_ns));
    for r in &mut rows {
        r.handoffs_per_s_vs_best = (r.handoffs_per_s > 0.0).then(|| best_rate / r.handoffs_per_s);
        r.p50_vs_best = r.p50_ns.zip(best50).map(|(v, b)| v as f64 / b as f64);
        r.p99_vs_best = r.p99_ns.zip(best99).map(|(v, b)| v as f64 / b as f64);
    }
    rows
}

/// The traced figures of one traced run's document.
pub fn traced_figures(doc: &Document) -> TracedFigures {
    let ino = doc
        .workload
        .as_ref()
        .and_then(|w| w.roles.first())
        .map(|r| r.memfd_ino);
    let turns: u64 = doc
        .workload
        .as_ref()
        .map_or(0, |w| w.roles.iter().map(|r| r.iterations).sum());
    let whoops = doc.whoops.as_ref();
    let self_barge = whoops.map_or(0, |w| w.by_cause.self_barge);
    let total_whoops = whoops.map_or(0, |w| w.total);
    let lock = doc.locks.iter().find(|l| Some(l.ino) == ino);
    let (handoffs, barged) = lock.map_or((0, 0), |l| {
        let h = &l.handoffs;
        (
            h.fifo + h.self_barge + h.newcomer_barge + h.waiter_reorder + h.unresolved,
            h.self_barge,
        )
    });
    TracedFigures {
        self_barge_whoops_per_handoff: self_barge as f64 / turns.max(1) as f64,
        self_barged_handoffs: (handoffs > 0).then(|| barged as f64 / handoffs as f64),
        kernel_handoffs: handoffs,
        whoops_per_handoff: total_whoops as f64 / turns.max(1) as f64,
        complete: doc.complete,
    }
}

fn failed(p: &Primitive, outcome: &RunOutcome) -> anyhow::Error {
    let why = outcome.incomplete_reasons().join("; ");
    hinted(
        format!("the {} run failed: {why}", p.name),
        "raise --stall-timeout on a loaded machine, or run that primitive alone with `lockrace run`",
    )
}

/// Run the whole comparison.
pub fn measure(
    cfg: &CompareSyncConfig,
    progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<CompareSyncReport> {
    let traced_rows: Vec<usize> = (0..PRIMITIVES.len())
        .filter(|&i| cfg.trace && PRIMITIVES[i].sync == SyncKind::Fcntl)
        .collect();
    let total = PRIMITIVES.len() * cfg.repeat as usize + traced_rows.len();
    let mut done = 0usize;
    let mut runs: Vec<Vec<RunMetrics>> = vec![Vec::new(); PRIMITIVES.len()];
    for _ in 0..cfg.repeat {
        for (i, p) in PRIMITIVES.iter().enumerate() {
            progress(Progress {
                done,
                total,
                primitive: p.name,
                pass: "untraced",
            });
            let outcome = execute(&cfg.run_config(p))?;
            if outcome.interrupted.is_some() {
                anyhow::bail!("interrupted");
            }
            let m = RunMetrics::of(&outcome).ok_or_else(|| failed(p, &outcome))?;
            if !outcome.is_complete() {
                return Err(failed(p, &outcome));
            }
            runs[i].push(m);
            done += 1;
        }
    }
    let mut rows = rows(&runs);
    for &i in &traced_rows {
        let p = &PRIMITIVES[i];
        progress(Progress {
            done,
            total,
            primitive: p.name,
            pass: "traced",
        });
        let mut run_cfg = cfg.run_config(p);
        run_cfg.iterations = cfg.trace_iterations.max(1);
        let t = traced_execute(
            &run_cfg,
            &TraceOptions {
                limits: cfg.limits,
                ..Default::default()
            },
        )?;
        if t.outcome.interrupted.is_some() {
            anyhow::bail!("interrupted");
        }
        if RunMetrics::of(&t.outcome).is_none() {
            return Err(failed(p, &t.outcome));
        }
        rows[i].traced = Some(traced_figures(&t.doc));
        done += 1;
    }
    progress(Progress {
        done,
        total,
        primitive: "",
        pass: "done",
    });
    Ok(CompareSyncReport {
        report: "lockrace-compare-sync".to_string(),
        lockrace_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: crate::host::kernel_release(),
        iterations: cfg.iterations,
        repeat: cfg.repeat,
        traced: !traced_rows.is_empty(),
        trace_iterations: (!traced_rows.is_empty()).then_some(cfg.trace_iterations.max(1)),
        rows,
    })
}

fn fmt_rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_x(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.1}x"))
}

/// The table, one line per primitive.
pub fn render_table(r: &CompareSyncReport) -> String {
    let mut out = format!(
        "lockrace compare-sync: {} turns per role, {} run{} per primitive (interleaved), medians; \
         Nx = N times worse than the best row that excludes\n",
        r.iterations,
        r.repeat,
        if r.repeat == 1 { "" } else { "s" }
    );
    let mut header = vec![
        "primitive",
        "exclusion",
        "whoops/handoff",
        "handoffs/s",
        "x",
        "p50",
        "x",
        "p99",
        "x",
    ];
    if r.traced {
        header.extend([
            "traced whoops/handoff",
            "self-barge/handoff",
            "barged handoffs",
        ]);
    }
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for row in &r.rows {
        let mut cells = vec![
            row.primitive.clone(),
            if row.mutual_exclusion {
                "yes".to_string()
            } else {
                format!("NO ({} overlaps)", row.overlaps)
            },
            format!("{:.2}", row.whoops_per_handoff),
            fmt_rate(row.handoffs_per_s),
            fmt_x(row.handoffs_per_s_vs_best),
            row.p50_ns.map_or_else(|| "-".to_string(), fmt_latency),
            fmt_x(row.p50_vs_best),
            row.p99_ns.map_or_else(|| "-".to_string(), fmt_latency),
            fmt_x(row.p99_vs_best),
        ];
        if r.traced {
            match &row.traced {
                Some(t) => {
                    let mark = if t.complete { "" } else { " (incomplete)" };
                    cells.push(format!("{:.2}", t.whoops_per_handoff));
                    cells.push(format!("{:.2}{mark}", t.self_barge_whoops_per_handoff));
                    cells.push(
                        t.self_barged_handoffs
                            .map_or_else(|| "-".to_string(), |f| format!("{:.0}%", f * 100.0)),
                    );
                }
                None => cells.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
            }
        }
        table.push(cells);
    }
    let cols = table[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            line.push(' ');
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if r.traced {
        out.push_str(&format!(
            "  traced: one traced run of {} turns per role per file-lock row (tracing moves the \
             race: compare its own whoops/handoff); self-barge/handoff: whoops the kernel events \
             attribute to the releaser taking the lock straight back; barged handoffs: share of \
             the kernel's decided handoffs that were self-barges\n",
            r.trace_iterations
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        ));
    }
    out
}

impl CompareSyncConfig {
    /// The flags, checked; the file-lock rows are traced as root unless `--no-trace`.
    pub fn from_args(args: &CompareSyncArgs, root: bool) -> anyhow::Result<CompareSyncConfig> {
        let tmpdir_parent = super::args::tmpdir_parent(&args.tmpdir_parent)?;
        Ok(CompareSyncConfig {
            iterations: args.iterations,
            repeat: args.repeat,
            stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
            trace: root && !args.no_trace,
            trace_iterations: args.iterations.min(TRACE_ITERATIONS),
            limits: Limits::from_flags(args.ring_buffer_mb, crate::capture::loader::TASKS_DEFAULT)?,
            exe: PathBuf::from("/proc/self/exe"),
            tmpdir_parent,
        })
    }
}

pub fn main(args: CompareSyncArgs) -> anyhow::Result<ExitCode> {
    crate::signals::install()?;
    let root = nix::unistd::geteuid().is_root();
    let cfg = CompareSyncConfig::from_args(&args, root)?;
    if !root && !args.no_trace {
        eprintln!(
            "lockrace: not root, so the file-lock rows are not traced (no self-barge columns)"
        );
    }
    let tty = std::io::stderr().is_terminal();
    let mut show = |p: Progress| {
        if !tty {
            return;
        }
        if p.pass == "done" {
            eprint!("\r\x1b[2K");
        } else {
            eprint!(
                "\r\x1b[2K[{}/{}] {} ({})",
                p.done + 1,
                p.total,
                p.primitive,
                p.pass
            );
        }
    };
    let result = measure(&cfg, &mut show);
    if tty {
        eprint!("\r\x1b[2K");
    }
    if let Some(sig) = crate::signals::received() {
        eprintln!("lockrace: compare-sync interrupted by {}", sig.as_str());
        return Ok(ExitCode::from(crate::signals::exit_code(sig)));
    }
    let report = result?;
    print!("{}", render_table(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(turns: u64, whoops: u64, elapsed_ns: u64, p50: u64, overlaps: u64) -> RunMetrics {
        RunMetrics {
            overlaps,
            whoops,
            turns,
            elapsed_ns,
            whoops_per_handoff: whoops as f64 / turns as f64,
            handoffs_per_s: turns as f64 * 1e9 / elapsed_ns as f64,
            p50_ns: Some(p50),
            p99_ns: Some(p50 * 3),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
        assert_eq!(
            median_u64([Some(5), None, Some(1), Some(9)].into_iter()),
            Some(5)
        );
    }

    #[test]
    fn rows_take_medians_and_ratios_to_the_best() {
        let mut runs: Vec<Vec<RunMetrics>> = Vec::new();
        for i in 0..PRIMITIVES.len() as u64 {
            // Row i: i+1 times slower, i+1 times the latency; "ofd same" (3) overlaps.
            let overlaps = u64::from(i == 3);
            runs.push(vec![
                run(2000, i, 1_000_000 * (i + 1), 1_000 * (i + 1), overlaps),
                run(2000, i, 1_000_000 * (i + 1), 1_000 * (i + 1), 0),
                run(2000, i, 9_000_000 * (i + 1), 9_000 * (i + 1), 0), // an outlier
            ]);
        }
        let rows = rows(&runs);
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0].primitive, "posix reopen");
        assert_eq!(rows[7].primitive, "futex");
        assert_eq!(rows[7].lock, None);
        assert_eq!(rows[0].lock.as_deref(), Some("posix"));
        assert_eq!(rows[0].handoffs_per_s, 2_000_000.0);
        assert_eq!(rows[0].handoffs_per_s_vs_best, Some(1.0));
        assert_eq!(rows[1].handoffs_per_s_vs_best, Some(2.0));
        assert_eq!(rows[1].p50_ns, Some(2_000));
        assert_eq!(rows[1].p50_vs_best, Some(2.0));
        assert!(!rows[3].mutual_exclusion && rows[3].overlaps == 1);
        assert!(rows[0].mutual_exclusion);
        // A faster row that does not exclude is not the reference.
        let mut fast = runs.clone();
        fast[3] = vec![run(2000, 0, 100_000, 100, 5)];
        let r2 = super::rows(&fast);
        assert_eq!(r2[0].handoffs_per_s_vs_best, Some(1.0));
        assert_eq!(r2[3].handoffs_per_s_vs_best, Some(0.1));
        assert_eq!(r2[3].p50_vs_best, Some(0.1));
        let report = CompareSyncReport {
            report: "lockrace-compare-sync".into(),
            lockrace_version: "0".into(),
            kernel_release: "6".into(),
            iterations: 1000,
            repeat: 3,
            traced: false,
            trace_iterations: None,
            rows,
        };
        let t = render_table(&report);
        assert_eq!(t.lines().count(), 10, "{t}");
        assert!(t.contains("NO (1 overlaps)"), "{t}");
        assert!(t.lines().nth(2).unwrap().contains("2,000,000"), "{t}");
        // serde_json's float parsing is not bit-exact: compare what matters.
        let back: CompareSyncReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.rows.len(), 8);
        assert_eq!(back.rows[3].overlaps, 1);
        assert_eq!(back.rows[1].p50_ns, Some(2_000));
    }

    #[test]
    fn traced_columns_appear_only_when_traced() {
        let runs: Vec<Vec<RunMetrics>> = (0..8)
            .map(|_| vec![run(100, 50, 1_000_000, 500, 0)])
            .collect();
        let mut rows = rows(&runs);
        rows[0].traced = Some(TracedFigures {
            self_barge_whoops_per_handoff: 0.5,
            self_barged_handoffs: Some(0.9),
            kernel_handoffs: 100,
            whoops_per_handoff: 0.5,
            complete: true,
        });
        let mut report = CompareSyncReport {
            report: "lockrace-compare-sync".into(),
            lockrace_version: "0".into(),
            kernel_release: "6".into(),
            iterations: 50,
            repeat: 1,
            traced: true,
            trace_iterations: Some(50),
            rows,
        };
        let t = render_table(&report);
        assert!(t.contains("self-barge/handoff") && t.contains("90%"), "{t}");
        assert!(t.contains("one traced run of 50 turns per role"), "{t}");
        report.traced = false;
        assert!(!render_table(&report).contains("self-barge"));
        assert_eq!(fmt_rate(1234567.4), "1,234,567");
        assert_eq!(fmt_rate(12.0), "12");
        assert_eq!(fmt_x(Some(2.345)), "2.3x");
    }

    #[test]
    fn traced_figures_read_the_document() {
        use crate::report::model::{Document, HandoffCountsReport, LockReport, WhoopsReport};
        let mut doc = Document::new("6".into());
        let role = |name: &str| crate::report::model::RoleReport {
            role: name.into(),
            pid: 1,
            iterations: 50,
            acquisitions: 75,
            whoops: 25,
            overlaps: 0,
            elapsed_ns: 1,
            memfd_dev: 1,
            memfd_ino: 9,
            handoff_latency: None,
            upgrade: None,
        };
        doc.workload = Some(crate::report::model::WorkloadReport {
            lock: "posix".into(),
            share: "reopen".into(),
            iterations: 50,
            roles: vec![role("server"), role("client")],
            probe_effect: None,
            sync: None,
            scenario: None,
        });
        let mut w = WhoopsReport {
            total: 50,
            ..Default::default()
        };
        w.by_cause.self_barge = 40;
        doc.whoops = Some(w);
        doc.locks.push(LockReport {
            ino: 9,
            handoffs: HandoffCountsReport {
                fifo: 20,
                self_barge: 60,
                ..Default::default()
            },
            ..Default::default()
        });
        let f = traced_figures(&doc);
        assert_eq!(f.self_barge_whoops_per_handoff, 0.4);
        assert_eq!(f.self_barged_handoffs, Some(0.75));
        assert_eq!(f.kernel_handoffs, 80);
        assert_eq!(f.whoops_per_handoff, 0.5);
    }
}
