//! docs/BENCHMARKS.md from the measurements: pure functions, no I/O.
//!
//! Invariants: every figure in the document is a median over the runs shown next to it (with
//! the run count), every ratio names what it divides; a goal is "met" only when the measured
//! figure reaches it; the hand-written "Optimisation history" section of the previous file is
//! carried over unchanged ([`keep_history`]), so regenerating never loses it.
use std::fmt::Write as _;

use super::{
    Results,
    cost::{self, Config as CostConfig},
    micro::Micro,
    probe::{Config, Series},
    storm::{self, Cell, Mode},
};

/// The heading that starts the carried-over section.
pub const HISTORY_HEADING: &str = "## Optimisation history";

/// Median of the finite values (None when there are none).
pub fn median(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn min_max(v: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    v.into_iter().fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// Everything from [`HISTORY_HEADING`] to the end of `previous` (empty when absent).
pub fn keep_history(previous: &str) -> &str {
    match previous.find(&format!("\n{HISTORY_HEADING}")) {
        Some(i) => &previous[i + 1..],
        None if previous.starts_with(HISTORY_HEADING) => previous,
        None => "",
    }
}

/// 12345678 -> "12,345,678".
pub fn thousands(n: u64) -> String {
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

fn f0(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| thousands(v.round().max(0.0) as u64))
}

fn f2(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{v:.2}"))
}

/// A share as a percentage with enough digits to show small drop rates.
fn pct(share: f64) -> String {
    let p = share * 100.0;
    if p == 0.0 || p >= 0.1 {
        format!("{p:.2}%")
    } else {
        format!("{p:.4}%")
    }
}

fn mevents(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{:.2}M", v / 1e6))
}

/// UTC date and time of a Unix timestamp, `2026-05-19 18:47 UTC`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Median whoops/handoff of a series.
pub fn wph(s: &Series) -> Option<f64> {
    median(s.runs.iter().map(|r| r.whoops_per_handoff))
}

fn hps(s: &Series) -> Option<f64> {
    median(s.runs.iter().map(|r| r.handoffs_per_s))
}

/// traced / untraced whoops per handoff of `config` (medians).
pub fn probe_ratio(series: &[Series], config: Config) -> Option<f64> {
    let base = series.iter().find(|s| s.config == Config::Untraced)?;
    let s = series.iter().find(|s| s.config == config)?;
    let (b, t) = (wph(base)?, wph(s)?);
    (b > 0.0).then(|| t / b)
}

/// The lockrace full-capture goal: whoops/handoff traced/untraced >= 0.9.
pub const PROBE_GOAL: f64 = 0.9;
/// The fast probe set's added cost per traced lock call, ns (issue 14).
pub const COST_GOAL_NS: f64 = 60.0;
/// Capture throughput goal, events/s with 0 drops.
pub const STORM_GOAL: f64 = 1e6;
/// Analyzer goal, events/s.
pub const ANALYZER_GOAL: f64 = 5e6;

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

/// Median (wall, CPU) ns per call of a cost series.
pub fn cost_medians(s: &cost::Series) -> (Option<f64>, Option<f64>) {
    (
        median(s.runs.iter().map(|r| r.wall_ns)),
        median(s.runs.iter().map(|r| r.cpu_ns)),
    )
}

/// Added (wall, CPU) ns per call of `config` over the untraced loop, medians of one run.
pub fn cost_added(series: &[cost::Series], config: CostConfig) -> (Option<f64>, Option<f64>) {
    let of = |c: CostConfig| series.iter().find(|s| s.config == c).map(cost_medians);
    match (of(CostConfig::Untraced), of(config)) {
        (Some((bw, bc)), Some((w, c))) => {
            (w.zip(bw).map(|(a, b)| a - b), c.zip(bc).map(|(a, b)| a - b))
        }
        _ => (None, None),
    }
}

fn signed(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{v:+.0}"))
}

fn cost_section(out: &mut String, r: &Results) {
    let Some(c) = &r.cost else {
        return;
    };
    let _ = writeln!(out, "## 1. Cost per lock call\n");
    if let Some(e) = &c.error {
        let _ = writeln!(out, "Not measured: `{}`\n", e.replace('`', "'"));
        return;
    }
    let _ = writeln!(
        out,
        "An uncontended loop of `fcntl(F_SETLKW)` lock + unlock on a memfd ({} pairs, one \
         process pinned to one CPU, never waits), untraced and under each tracer; {} interleaved repetitions (the \
         order rotated by one each time). Load average when the phase started: {}. The loop \
         times itself: *ns/call* is wall-clock time per fcntl call, *CPU ns/call* its own CPU \
         time (which includes the eBPF programs the kernel runs in its context, and excludes \
         time other processes, lockrace's reader among them, took its CPU). *Added* is the \
         median minus the untraced median. lockrace records to /dev/null; the probe set is \
         chosen with `--probes` (fast, the default: 8 programs, the filelock ones on \
         classic tracepoints, the sched ones tp_btf; lean: 7 classic tracepoint programs; \
         full: all 14, syscall enter/exit included). \
         The loop's source is `LOOP_C` in xtask/src/bench/cost.rs.\n",
        thousands(c.iterations),
        c.reps,
        super::machine::fmt_load(c.load)
    );
    let _ = writeln!(out, "```sh");
    for s in &c.series {
        let _ = writeln!(out, "# {}", s.config.label());
        for cmd in &s.commands {
            let _ = writeln!(out, "{cmd}");
        }
    }
    let _ = writeln!(out, "```\n");
    let _ = writeln!(
        out,
        "| configuration | runs | ns/call, median (min–max) | added | CPU ns/call, median | added | events recorded, median | dropped | other CPU, median |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &c.series {
        let (w, cpu) = cost_medians(s);
        let (aw, ac) = cost_added(&c.series, s.config);
        let range = min_max(s.runs.iter().map(|r| r.wall_ns))
            .map_or(String::new(), |(lo, hi)| format!(" ({lo:.0}–{hi:.0})"));
        let events = median(s.runs.iter().filter_map(|r| r.events.map(|e| e as f64)));
        let dropped: Option<u64> = s
            .runs
            .iter()
            .map(|r| r.dropped)
            .try_fold(0u64, |acc, d| d.map(|d| acc + d));
        let other = median(s.runs.iter().filter_map(|r| r.other_cpu));
        let mut runs = s.runs.len().to_string();
        if !s.errors.is_empty() {
            let _ = write!(runs, " ({} failed)", s.errors.len());
        }
        let base = s.config == CostConfig::Untraced;
        let _ = writeln!(
            out,
            "| {} | {runs} | {}{range} | {} | {} | {} | {} | {} | {} |",
            s.config.label(),
            w.map_or("–".into(), |v| format!("{v:.0}")),
            if base { "–".into() } else { signed(aw) },
            cpu.map_or("–".into(), |v| format!("{v:.0}")),
            if base { "–".into() } else { signed(ac) },
            f0(events),
            if s.config.probes().is_some() {
                dropped.map_or("–".into(), thousands)
            } else {
                "–".into()
            },
            other.map_or("–".to_string(), |o| format!("{o:.0}%")),
        );
    }
    let _ = writeln!(out);
    let (aw, ac) = cost_added(&c.series, CostConfig::LockraceFast);
    let _ = writeln!(
        out,
        "Goal: the fast probe set adds <= {COST_GOAL_NS:.0} ns per traced lock call: {} (wall \
         {} ns, CPU {} ns).",
        met(aw.is_some_and(|x| x <= COST_GOAL_NS) && ac.is_some_and(|x| x <= COST_GOAL_NS)),
        signed(aw),
        signed(ac)
    );
    for s in c.series.iter().filter(|s| !s.errors.is_empty()) {
        let _ = writeln!(
            out,
            "\n{} failures ({}): first error: `{}`",
            s.config.label(),
            s.errors.len(),
            s.errors[0].replace('`', "'")
        );
    }
    let _ = writeln!(
        out,
        "\nWhere the time goes: one more run of each lockrace set with `LOCKRACE_SELF_COST=1` \
         (BPF_ENABLE_STATS on for the capture: the kernel's run count and run time of each \
         program; they include the two clock reads the statistics add per run, and the runs \
         of untraced tasks, which the programs filter out). *Recursion misses* are runs the \
         kernel skipped because another BPF program was running on that CPU: events lost.\n"
    );
    for set in &c.programs {
        let _ = writeln!(out, "{}: `{}`\n", set.config.label(), set.command);
        if let Some(e) = &set.error {
            let _ = writeln!(out, "Not measured: `{}`\n", e.replace('`', "'"));
            continue;
        }
        let _ = writeln!(out, "| program | runs | ns/run | recursion misses |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for p in &set.programs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                p.name,
                thousands(p.runs),
                p.ns_per_run.map_or("–".into(), |v| format!("{v:.1}")),
                p.recursion_misses.map_or("–".into(), thousands)
            );
        }
        let _ = writeln!(out);
    }
}

fn probe_section(out: &mut String, r: &Results) {
    let Some(p) = &r.probe else {
        return;
    };
    let _ = writeln!(out, "## 2. Probe effect\n");
    let _ = writeln!(
        out,
        "The native-speed handoff (`--lock posix --share reopen`, {} handoffs per role) untraced \
         and under each tracer; {} interleaved repetitions (every configuration once per \
         repetition, the order rotated by one each time). Load average when the phase started: \
         {}. A *handoff* is one completed turn; whoops/handoff = all whoops / all turns; \
         handoffs/s = all turns / the longer role's loop time (the roles time their own \
         loops, so tracer start-up and lockrace's analysis are not included). *Other CPU* is \
         the share of the machine's CPU time (all cores) not spent by the bench's own \
         processes while a run lasted: other users' builds, kernel threads.\n",
        thousands(p.iterations),
        p.reps,
        super::machine::fmt_load(p.load)
    );
    let _ = writeln!(
        out,
        "Commands (one repetition; `&` = started first, attached, then stopped with SIGINT after the run):\n"
    );
    let _ = writeln!(out, "```sh");
    for s in &p.series {
        let _ = writeln!(out, "# {}", s.config.label());
        for c in &s.commands {
            let _ = writeln!(out, "{c}");
        }
    }
    let _ = writeln!(out, "```\n");
    let _ = writeln!(
        out,
        "| configuration | runs | whoops/handoff, median (min–max) | ratio to untraced | handoffs/s, median | ratio to untraced | events recorded, median | lost | tracer process CPU, median | other CPU, median |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = p.series.iter().find(|s| s.config == Config::Untraced);
    for s in &p.series {
        let w = wph(s);
        let h = hps(s);
        let wr = probe_ratio(&p.series, s.config);
        let hr = base
            .and_then(hps)
            .zip(h)
            .and_then(|(b, t)| (b > 0.0).then(|| t / b));
        let range = min_max(s.runs.iter().map(|r| r.whoops_per_handoff))
            .map_or(String::new(), |(lo, hi)| format!(" ({lo:.2}–{hi:.2})"));
        let events = median(s.runs.iter().filter_map(|r| r.events.map(|e| e as f64)));
        let lost: Option<u64> = s
            .runs
            .iter()
            .map(|r| r.lost)
            .try_fold(0u64, |acc, l| l.map(|l| acc + l));
        let other = median(s.runs.iter().filter_map(|r| r.other_cpu));
        let tracer_cpu = median(s.runs.iter().filter_map(|r| r.tracer_cpu_s));
        let mut runs = s.runs.len().to_string();
        if !s.errors.is_empty() {
            let _ = write!(runs, " ({} failed)", s.errors.len());
        }
        let _ = writeln!(
            out,
            "| {} | {runs} | {}{range} | {} | {} | {} | {} | {} | {} | {} |",
            s.config.label(),
            f2(w),
            if s.config == Config::Untraced {
                "1".to_string()
            } else {
                f2(wr)
            },
            f0(h),
            if s.config == Config::Untraced {
                "1".to_string()
            } else {
                f2(hr)
            },
            f0(events),
            if s.config == Config::Untraced {
                "–".to_string()
            } else {
                lost.map_or("–".into(), thousands)
            },
            tracer_cpu.map_or("–".to_string(), |c| format!("{c:.2} s")),
            other.map_or("–".to_string(), |o| format!("{o:.0}%")),
        );
    }
    let _ = writeln!(out);
    let lr = probe_ratio(&p.series, Config::Lockrace);
    let lean = probe_ratio(&p.series, Config::LockraceLean);
    let fast = probe_ratio(&p.series, Config::LockraceFast);
    let _ = writeln!(
        out,
        "Goal: lockrace's default capture (the fast probe set) keeps whoops/handoff at >= \
         {PROBE_GOAL} of untraced: {} (ratio {}). With `--probes lean`: {} (ratio {}). With \
         `--probes full`: {} (ratio {}).",
        met(fast.is_some_and(|x| x >= PROBE_GOAL)),
        f2(fast),
        met(lean.is_some_and(|x| x >= PROBE_GOAL)),
        f2(lean),
        met(lr.is_some_and(|x| x >= PROBE_GOAL)),
        f2(lr)
    );
    for s in p.series.iter().filter(|s| !s.errors.is_empty()) {
        let _ = writeln!(
            out,
            "\n{} failures ({}): first error: `{}`",
            s.config.label(),
            s.errors.len(),
            s.errors[0].replace('`', "'")
        );
    }
    let _ = writeln!(
        out,
        "\nA ratio below 1 means fewer whoops per handoff under the tracer, above 1 more; either \
         way the tracer moved the race. The direction for the light tracers has differed between \
         runs of this bench on one machine, so read it from the table, not from a rule. The \
         tracer process CPU column shows which tracers need a CPU of their own in user space \
         (bpftrace printing every event): on a machine with few cores such a tracer competes \
         with the two roles, one likely cause of a large ratio that this bench does not isolate."
    );
    let _ = writeln!(
        out,
        "\nReference figures measured earlier with a native C handoff (posix, 20,000 handoffs, \
         5 interleaved repetitions, median whoops/handoff, ratio to untraced): untraced 14.6; \
         bpftrace counting 13.8 (0.95); bpftrace printing every event 9.4 (0.64); perf record -a \
         8.7 (0.60).\n"
    );
}

/// The highest median events/s among the cells of `mode` whose every run had 0 drops, and
/// the drops (share of offered events) of the cells beyond it.
pub fn storm_summary(cells: &[Cell], mode: Mode) -> (Option<f64>, Vec<(f64, f64, f64)>) {
    let mine: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.mode == mode && !c.runs.is_empty())
        .collect();
    let clean = |c: &Cell| c.runs.iter().all(|r| r.dropped == 0);
    let best = mine
        .iter()
        .filter(|c| clean(c))
        .filter_map(|c| median(c.runs.iter().map(|r| r.events_per_s)))
        .fold(None, |acc: Option<f64>, x| {
            Some(acc.map_or(x, |a| a.max(x)))
        });
    let beyond = mine
        .iter()
        .filter(|c| !clean(c))
        .filter_map(|c| {
            let offered = median(c.runs.iter().map(|r| r.offered_per_s))?;
            let drop = median(c.runs.iter().map(|r| {
                let total = (r.events + r.dropped) as f64;
                if total > 0.0 {
                    r.dropped as f64 / total
                } else {
                    0.0
                }
            }))?;
            Some((c.rate, offered, drop))
        })
        .collect();
    (best, beyond)
}

fn storm_section(out: &mut String, r: &Results) {
    let Some(s) = &r.storm else {
        return;
    };
    let _ = writeln!(out, "## 3. Capture throughput\n");
    let _ = writeln!(
        out,
        "A lock storm: {} processes x {} threads, each thread taking and releasing an \
         uncontended POSIX lock on its own byte of one file (`F_SETLKW`), paced to a target \
         rate ({} events per fcntl call: sys_enter_fcntl, posix_lock_inode, fcntl_setlk, \
         sys_exit_fcntl), {} s per storm, {} repetition(s) per cell, interleaved. Load average \
         when the phase started: {}. Captured two ways: in-process by lockrace's loader and \
         ring-buffer reader, every record decoded into a counting sink (the capture itself), and \
         by `lockrace record` writing JSONL to /dev/null (the capture plus JSONL formatting). \
         16 MiB ring buffer. Events/s are captured events over the storm's duration; *dropped* \
         are records the kernel could not write because the ring buffer was full.\n",
        s.procs,
        s.threads,
        storm::EVENTS_PER_CALL,
        s.duration_s,
        s.reps,
        super::machine::fmt_load(s.load)
    );
    let _ = writeln!(out, "```sh");
    for c in &s.commands {
        let _ = writeln!(out, "{c}");
    }
    let _ = writeln!(out, "```\n");
    let _ = writeln!(
        out,
        "| capture | target events/s | runs | fcntl calls/s | events/s captured | dropped (all runs) | drop share | reader CPU/event |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for c in &s.cells {
        let dropped: u64 = c.runs.iter().map(|r| r.dropped).sum();
        let total: u64 = c.runs.iter().map(|r| r.dropped + r.events).sum();
        let mut runs = c.runs.len().to_string();
        if !c.errors.is_empty() {
            let _ = write!(runs, " ({} failed)", c.errors.len());
        }
        let _ = writeln!(
            out,
            "| {} | {} | {runs} | {} | {} | {} | {} | {} |",
            c.mode.label(),
            if c.mode == Mode::Untraced {
                "unpaced".to_string()
            } else {
                storm::fmt_rate(c.rate)
            },
            f0(median(c.runs.iter().map(|r| r.calls_per_s))),
            if c.mode == Mode::Untraced {
                "–".to_string()
            } else {
                f0(median(c.runs.iter().map(|r| r.events_per_s)))
            },
            if c.mode == Mode::Untraced {
                "–".to_string()
            } else {
                thousands(dropped)
            },
            if c.mode == Mode::Untraced || total == 0 {
                "–".to_string()
            } else {
                pct(dropped as f64 / total as f64)
            },
            median(c.runs.iter().filter_map(|r| r.reader_ns_per_event))
                .map_or("–".to_string(), |n| format!("{n:.0} ns")),
        );
    }
    let _ = writeln!(out);
    for mode in [Mode::Count, Mode::Record] {
        let (best, beyond) = storm_summary(&s.cells, mode);
        let _ = write!(
            out,
            "- {}: highest rate with 0 drops {} events/s",
            mode.label(),
            mevents(best)
        );
        if beyond.is_empty() {
            let _ = writeln!(out, "; no rate dropped events.");
        } else {
            let parts: Vec<String> = beyond
                .iter()
                .map(|(rate, offered, drop)| {
                    format!(
                        "target {} (offered {} events/s): {} dropped",
                        storm::fmt_rate(*rate),
                        mevents(Some(*offered)),
                        pct(*drop)
                    )
                })
                .collect();
            let _ = writeln!(out, "; beyond it: {}.", parts.join("; "));
        }
    }
    let (count_best, _) = storm_summary(&s.cells, Mode::Count);
    let (rec_best, _) = storm_summary(&s.cells, Mode::Record);
    let _ = writeln!(
        out,
        "\nGoal: >= 1M events/s with 0 drops: capture {} ({}), through `lockrace record` to \
         JSONL {} ({}).\n",
        met(count_best.is_some_and(|x| x >= STORM_GOAL)),
        mevents(count_best),
        met(rec_best.is_some_and(|x| x >= STORM_GOAL)),
        mevents(rec_best),
    );
    for c in s.cells.iter().filter(|c| !c.errors.is_empty()) {
        let _ = writeln!(
            out,
            "{} at {} failures: first error: `{}`\n",
            c.mode.label(),
            storm::fmt_rate(c.rate),
            c.errors[0].replace('`', "'")
        );
    }
}

fn analyzer_section(out: &mut String, r: &Results) {
    if r.analyzer.is_empty() {
        return;
    }
    let _ = writeln!(out, "## 4. Analyzer\n");
    let _ = writeln!(
        out,
        "A synthetic stream of realistic handoffs (`analysis::synth::HandoffGen`: barging ~60%, \
         fair handoffs, spurious wakeups, newcomers), generated chunk by chunk (64 Ki events) so \
         the input takes constant memory, pushed through the streaming `Analyzer`; each size in \
         its own process. Events/s counts time in `Analyzer::push` and `finish` only (generation \
         excluded); peak RSS is the process's `VmHWM` (binary, generator chunk and analyzer).\n"
    );
    let _ = writeln!(out, "```sh");
    for a in &r.analyzer {
        let _ = writeln!(out, "{}", a.command);
    }
    let _ = writeln!(out, "```\n");
    let _ = writeln!(
        out,
        "| events | runs | events/s, median | peak RSS, median | RSS before the first event |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for a in &r.analyzer {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            thousands(a.events),
            a.runs.len(),
            mevents(median(a.runs.iter().map(|x| x.events_per_s))),
            median(a.runs.iter().map(|x| x.peak_rss_kib as f64))
                .map_or("–".into(), |k| format!("{:.1} MiB", k / 1024.0)),
            median(a.runs.iter().map(|x| x.start_rss_kib as f64))
                .map_or("–".into(), |k| format!("{:.1} MiB", k / 1024.0)),
        );
    }
    let speeds: Vec<Option<f64>> = r
        .analyzer
        .iter()
        .map(|a| median(a.runs.iter().map(|x| x.events_per_s)))
        .collect();
    let slowest = speeds.iter().flatten().fold(None, |acc: Option<f64>, &x| {
        Some(acc.map_or(x, |a| a.min(x)))
    });
    let rss: Vec<f64> = r
        .analyzer
        .iter()
        .filter_map(|a| median(a.runs.iter().map(|x| x.peak_rss_kib as f64)))
        .collect();
    let growth = match (rss.first(), rss.last()) {
        (Some(a), Some(b)) if rss.len() >= 2 && *a > 0.0 => Some(b / a),
        _ => None,
    };
    let _ = writeln!(
        out,
        "\nGoal: >= 5M events/s: {} (slowest size {}). Flat RSS (largest / smallest size's peak \
         RSS within 10%): {} ({}).\n",
        met(slowest.is_some_and(|x| x >= ANALYZER_GOAL)),
        mevents(slowest),
        met(growth.is_some_and(|g| g <= 1.10)),
        growth.map_or("–".into(), |g| format!("x{g:.3}"))
    );
    for a in r.analyzer.iter().filter(|a| !a.errors.is_empty()) {
        let _ = writeln!(
            out,
            "{} events: {} failed runs, first error: `{}`\n",
            a.events,
            a.errors.len(),
            a.errors[0].replace('`', "'")
        );
    }
}

fn fmt_time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn micro_section(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## 5. Micro-benchmarks (criterion)\n");
    match &r.micro {
        Err(e) => {
            let _ = writeln!(out, "Not measured: `{}`\n", e.replace('`', "'"));
        }
        Ok((command, micros)) => {
            let _ = writeln!(
                out,
                "Medians with criterion's 95% confidence interval; per-element figures divide by \
                 the elements (records, lines, acquisitions, events) one iteration handles.\n"
            );
            let _ = writeln!(out, "```sh\n{command}\n```\n");
            let _ = writeln!(
                out,
                "| benchmark | time per iteration, median [95% CI] | elements | per element | elements/s |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|");
            for m in micros {
                let _ = writeln!(out, "{}", micro_row(m));
            }
            let _ = writeln!(out);
        }
    }
}

fn micro_row(m: &Micro) -> String {
    let per = m.per_element_ns();
    format!(
        "| `{}` | {} [{} – {}] | {} | {} | {} |",
        m.id,
        fmt_time(m.median_ns),
        fmt_time(m.lower_ns),
        fmt_time(m.upper_ns),
        m.elements.map_or("–".into(), thousands),
        per.map_or("–".into(), fmt_time),
        per.filter(|&p| p > 0.0)
            .map_or("–".into(), |p| mevents(Some(1e9 / p))),
    )
}

/// The whole document.
pub fn render(r: &Results, previous: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{}` on {} in {:.1} minutes (commit {}). Reproduce as root on any machine \
         (Debian: the bench installs bpftrace and linux-perf when they are missing); figures \
         depend on the machine, so compare runs of one machine with each other. This file is \
         regenerated whole except the last section.\n",
        r.invocation,
        r.date,
        r.wall_s / 60.0,
        r.machine.commit
    );
    let m = &r.machine;
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| kernel | {} |", m.kernel);
    let _ = writeln!(out, "| OS | {} |", m.os);
    let _ = writeln!(out, "| CPU | {} |", m.cpu_model);
    let _ = writeln!(out, "| cores | {} |", m.cores);
    let _ = writeln!(out, "| memory | {:.1} GiB |", m.mem_gib);
    let _ = writeln!(
        out,
        "| load average (1, 5, 15 min) at start | {} |",
        super::machine::fmt_load(r.load_start)
    );
    let _ = writeln!(
        out,
        "| load average at end | {} |",
        super::machine::fmt_load(r.load_end)
    );
    let _ = writeln!(out, "| bpftrace | {} |", m.bpftrace);
    let _ = writeln!(out, "| perf | {} |", m.perf);
    let _ = writeln!(out);
    if r.quick {
        let _ = writeln!(
            out,
            "**`--quick` run**: fewer repetitions and shorter runs than the full bench; figures \
             are indicative only.\n"
        );
    }
    goals_summary(&mut out, r);
    cost_section(&mut out, r);
    probe_section(&mut out, r);
    storm_section(&mut out, r);
    analyzer_section(&mut out, r);
    micro_section(&mut out, r);
    let history = keep_history(previous);
    if history.is_empty() {
        let _ = writeln!(
            out,
            "{HISTORY_HEADING}\n\n(Hand-written; `cargo xtask bench` keeps this section.)"
        );
    } else {
        out.push_str(history);
        if !history.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn goals_summary(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## Goals\n");
    let _ = writeln!(out, "| goal | measured | |\n|---|---|---|");
    if let Some(c) = r.cost.as_ref().filter(|c| c.error.is_none()) {
        let (aw, ac) = cost_added(&c.series, CostConfig::LockraceFast);
        let (fw, _) = cost_added(&c.series, CostConfig::LockraceFull);
        let (bw, _) = cost_added(&c.series, CostConfig::BpftraceCount);
        let _ = writeln!(
            out,
            "| fast probe set: <= {COST_GOAL_NS:.0} ns added per traced lock call | {} ns wall, {} ns CPU (full set: {} ns; bpftrace count(): {} ns) | {} |",
            signed(aw),
            signed(ac),
            signed(fw),
            signed(bw),
            met(aw.is_some_and(|x| x <= COST_GOAL_NS) && ac.is_some_and(|x| x <= COST_GOAL_NS))
        );
    }
    if let Some(p) = &r.probe {
        let lr = probe_ratio(&p.series, Config::Lockrace);
        let lean = probe_ratio(&p.series, Config::LockraceLean);
        let fast = probe_ratio(&p.series, Config::LockraceFast);
        let bc = probe_ratio(&p.series, Config::BpftraceCount);
        let _ = writeln!(
            out,
            "| lockrace default capture (fast set): whoops/handoff traced/untraced >= {PROBE_GOAL} | {} (`--probes lean`: {}; `--probes full`: {}; bpftrace count(): {}) | {} |",
            f2(fast),
            f2(lean),
            f2(lr),
            f2(bc),
            met(fast.is_some_and(|x| x >= PROBE_GOAL))
        );
    }
    if let Some(s) = &r.storm {
        let (count_best, _) = storm_summary(&s.cells, Mode::Count);
        let (rec_best, _) = storm_summary(&s.cells, Mode::Record);
        let _ = writeln!(
            out,
            "| capture: >= 1M events/s with 0 drops | {} events/s (to JSONL via record: {}) | {} |",
            mevents(count_best),
            mevents(rec_best),
            met(count_best.is_some_and(|x| x >= STORM_GOAL))
        );
    }
    if !r.analyzer.is_empty() {
        let speeds: Vec<f64> = r
            .analyzer
            .iter()
            .filter_map(|a| median(a.runs.iter().map(|x| x.events_per_s)))
            .collect();
        let rss: Vec<f64> = r
            .analyzer
            .iter()
            .filter_map(|a| median(a.runs.iter().map(|x| x.peak_rss_kib as f64)))
            .collect();
        let slowest = speeds.iter().copied().fold(f64::INFINITY, f64::min);
        let flat = rss.len() >= 2 && rss[0] > 0.0 && rss[rss.len() - 1] / rss[0] <= 1.10;
        let _ = writeln!(
            out,
            "| analyzer: >= 5M events/s, flat RSS | {} events/s (slowest size); peak RSS {} | {} |",
            mevents(slowest.is_finite().then_some(slowest)),
            rss.iter()
                .map(|k| format!("{:.1} MiB", k / 1024.0))
                .collect::<Vec<_>>()
                .join(" → "),
            met(slowest.is_finite() && slowest >= ANALYZER_GOAL && flat)
        );
    }
    let _ = writeln!(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{
        AnalyzerSeries, CostPhase, ProbePhase, StormPhase, machine::Machine, micro::AnalyzerRun,
        probe::Run, storm::Run as StormRun,
    };

    fn cost_phase() -> CostPhase {
        let series = |config, walls: &[f64], cpus: &[f64], events: Option<u64>| cost::Series {
            config,
            commands: vec![format!("cmd {}", config.label())],
            runs: walls
                .iter()
                .zip(cpus)
                .map(|(&w, &c)| cost::Run {
                    wall_ns: w,
                    cpu_ns: c,
                    events,
                    dropped: events.map(|_| 0),
                    other_cpu: Some(3.0),
                })
                .collect(),
            errors: vec![],
        };
        CostPhase {
            iterations: 1_000_000,
            reps: 3,
            load: [0.2; 3],
            series: vec![
                series(
                    CostConfig::Untraced,
                    &[180.0, 181.0, 200.0],
                    &[179.0, 180.0, 181.0],
                    None,
                ),
                series(
                    CostConfig::LockraceFast,
                    &[230.0, 240.0, 235.0],
                    &[229.0, 231.0, 233.0],
                    Some(2_000_000),
                ),
                series(
                    CostConfig::LockraceFull,
                    &[1000.0, 1010.0, 990.0],
                    &[950.0, 960.0, 970.0],
                    Some(8_000_000),
                ),
            ],
            programs: vec![cost::ProgramSet {
                config: CostConfig::LockraceFast,
                command: "LOCKRACE_SELF_COST=1 lockrace record".into(),
                programs: vec![cost::Program {
                    name: "fast_posix_lock".into(),
                    runs: 2_000_000,
                    ns_per_run: Some(41.25),
                    recursion_misses: Some(0),
                }],
                error: None,
            }],
            error: None,
        }
    }

    #[test]
    fn the_cost_section_gives_added_ns_per_call_and_program_costs() {
        let mut r = results();
        r.cost = Some(cost_phase());
        let doc = render(&r, "");
        assert!(doc.contains("## 1. Cost per lock call"), "{doc}");
        assert!(
            doc.contains("| lockrace, fast probe set (the default) | 3 | 235 (230–240) | +54 | 231 | +51 | 2,000,000 | 0 | 3% |"),
            "{doc}"
        );
        assert!(doc.contains("| untraced | 3 | 181 (180–200) | – | 180 | – | – | – | 3% |"));
        assert!(doc.contains(
            "Goal: the fast probe set adds <= 60 ns per traced lock call: **met** (wall +54 ns, CPU +51 ns)."
        ));
        assert!(
            doc.contains("| fast_posix_lock | 2,000,000 | 41.2 | 0 |"),
            "{doc}"
        );
        assert!(doc.contains(
            "| fast probe set: <= 60 ns added per traced lock call | +54 ns wall, +51 ns CPU (full set: +819 ns; bpftrace count(): – ns) | **met** |"
        ), "{doc}");
        // A phase that could not run says why.
        let mut failed = cost_phase();
        failed.error = Some("cc: not found".into());
        r.cost = Some(failed);
        let doc = render(&r, "");
        assert!(doc.contains("## 1. Cost per lock call\n\nNot measured: `cc: not found`"));
        assert!(!doc.contains("fast probe set: <="));
    }

    #[test]
    fn medians_and_numbers() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median([f64::NAN]), None);
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_779_216_420), "2026-05-19 18:47 UTC");
    }

    #[test]
    fn history_is_carried_over() {
        let prev = "# Benchmarks\nold tables\n\n## Optimisation history\n\n- eBPF: 2x\n";
        assert_eq!(
            keep_history(prev),
            "## Optimisation history\n\n- eBPF: 2x\n"
        );
        assert_eq!(keep_history("# nothing"), "");
    }

    fn run(w: f64) -> Run {
        Run {
            whoops_per_handoff: w,
            handoffs_per_s: 1000.0,
            events: Some(10),
            lost: Some(0),
            other_cpu: Some(3.0),
            tracer_cpu_s: None,
        }
    }

    fn results() -> Results {
        let series = |config, ws: &[f64]| Series {
            config,
            commands: vec![format!("cmd {}", config.label())],
            runs: ws.iter().map(|&w| run(w)).collect(),
            errors: vec![],
        };
        let storm_run = |eps: f64, dropped: u64| StormRun {
            calls_per_s: eps / 4.0,
            events: (eps * 2.0) as u64,
            dropped,
            events_per_s: eps,
            offered_per_s: eps + dropped as f64 / 2.0,
            reader_ns_per_event: Some(80.0),
        };
        Results {
            invocation: "cargo xtask bench".into(),
            date: "today".into(),
            quick: false,
            wall_s: 600.0,
            machine: Machine::default(),
            load_start: [0.5; 3],
            load_end: [0.7; 3],
            cost: None,
            probe: Some(ProbePhase {
                iterations: 20000,
                reps: 3,
                load: [0.4; 3],
                series: vec![
                    series(Config::Untraced, &[14.0, 15.0, 16.0]),
                    series(Config::Lockrace, &[13.0, 14.0, 13.5]),
                    series(Config::BpftraceCount, &[14.0, 14.0, 14.0]),
                ],
            }),
            storm: Some(StormPhase {
                procs: 2,
                threads: 2,
                duration_s: 2.0,
                reps: 1,
                load: [0.4; 3],
                commands: vec!["storm".into()],
                cells: vec![
                    Cell {
                        mode: Mode::Count,
                        rate: 1e6,
                        runs: vec![storm_run(1.0e6, 0)],
                        errors: vec![],
                    },
                    Cell {
                        mode: Mode::Count,
                        rate: 2e6,
                        runs: vec![storm_run(1.5e6, 30_000)],
                        errors: vec![],
                    },
                    Cell {
                        mode: Mode::Record,
                        rate: 1e6,
                        runs: vec![storm_run(0.9e6, 10)],
                        errors: vec![],
                    },
                ],
            }),
            analyzer: vec![
                AnalyzerSeries {
                    events: 1_000_000,
                    command: "a1".into(),
                    runs: vec![AnalyzerRun {
                        events: 1_000_000,
                        events_per_s: 7e6,
                        peak_rss_kib: 13_000,
                        start_rss_kib: 12_000,
                    }],
                    errors: vec![],
                },
                AnalyzerSeries {
                    events: 10_000_000,
                    command: "a10".into(),
                    runs: vec![AnalyzerRun {
                        events: 10_000_000,
                        events_per_s: 9e6,
                        peak_rss_kib: 13_100,
                        start_rss_kib: 12_000,
                    }],
                    errors: vec![],
                },
            ],
            micro: Err("cargo bench failed".into()),
        }
    }

    #[test]
    fn the_document_has_every_figure_and_goal() {
        let doc = render(&results(), "## Optimisation history\n\nkept\n");
        assert!(
            doc.contains("| lockrace --probes full | 3 | 13.50 (13.00–14.00) | 0.90 |"),
            "{doc}"
        );
        assert!(doc.contains(
            "default capture (the fast probe set) keeps whoops/handoff at >= 0.9 of untraced: \
             **not met** (ratio –). With `--probes lean`: **not met** (ratio –). With `--probes \
             full`: **met** (ratio 0.90)."
        ));
        assert!(doc.contains("capture, counting sink: highest rate with 0 drops 1.00M events/s; beyond it: target 2M (offered 1.51M events/s): 0.99% dropped."), "{doc}");
        assert!(
            doc.contains(
                "lockrace record, JSONL to /dev/null: highest rate with 0 drops – events/s"
            )
        );
        assert!(
            doc.contains("| 10,000,000 | 1 | 9.00M | 12.8 MiB | 11.7 MiB |"),
            "{doc}"
        );
        assert!(doc.contains(">= 5M events/s: **met** (slowest size 7.00M). Flat RSS"));
        assert!(doc.contains("Not measured: `cargo bench failed`"));
        assert!(doc.ends_with("## Optimisation history\n\nkept\n"));
        let fresh = render(&results(), "");
        assert!(fresh.contains("## Optimisation history\n\n(Hand-written"));
    }

    #[test]
    fn storm_summary_picks_the_fastest_clean_cell() {
        let r = results();
        let cells = &r.storm.as_ref().unwrap().cells;
        let (best, beyond) = storm_summary(cells, Mode::Count);
        assert_eq!(best, Some(1.0e6));
        assert_eq!(beyond.len(), 1);
        assert_eq!(storm_summary(cells, Mode::Record).0, None);
    }
}
