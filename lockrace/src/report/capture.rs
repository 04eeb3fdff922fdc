//! The capture's own account in a report: the probe set, each attached program's runs, cost
//! and recursion misses (`capture.programs`, `capture.missed`), and the sentences that say
//! them, worded once for the terminal, the HTML page and the incomplete reasons.
//!
//! Invariants: a figure the kernel did not count is `None`, never 0 (runs and ns per run
//! exist only while BPF statistics were on, `--self-cost`; misses on every kernel since
//! 5.12); a miss is an event lost, counted before lockrace's filter, so it may belong to an
//! untraced task, and it is always reported (a miss of a lock or task-following program also
//! makes the report incomplete).
use super::model::{CaptureInfo, ProgramReport};
use crate::capture::CaptureStats;

/// Each attached program's figures, as the report and the JSONL trailer carry them
/// (ns per run rounded to a tenth).
pub fn program_reports(stats: &CaptureStats) -> Vec<ProgramReport> {
    stats
        .programs
        .iter()
        .map(|p| ProgramReport {
            name: p.name.clone(),
            runs: p.runs,
            recursion_misses: p.recursion_misses,
            ns_per_run: p.ns_per_run().map(|ns| (ns * 10.0).round() / 10.0),
        })
        .collect()
}

/// The scheduler programs whose events time a wait (wakeups, switches, migrations) but
/// decide no lock figure: a miss there leaves a wake-to-run gap, not a wrong count.
const TIMING_PROGRAMS: &[&str] = &[
    "sched_waking",
    "sched_wakeup",
    "sched_switch",
    "sched_migrate_task",
    "fast_waking",
    "fast_switch",
];

/// The incomplete reason of a capture whose lock or task-following programs the kernel
/// skipped, if it skipped any: a lost lock decision, fork or exit can change every count.
/// Misses of the timing programs ([`TIMING_PROGRAMS`]) are listed by [`programs_line`] and
/// do not make the report incomplete: the classic scheduler tracepoints miss a few runs in
/// most captures (a BPF program already running on that CPU, typically lockrace's own while
/// its ring buffer wakes the reader), and the grant, block and wakeup counts do not depend on
/// them.
pub fn missed_reason(programs: &[ProgramReport]) -> Option<String> {
    let lock_path: Vec<ProgramReport> = programs
        .iter()
        .filter(|p| !TIMING_PROGRAMS.contains(&p.name.as_str()))
        .cloned()
        .collect();
    let total: u64 = lock_path.iter().filter_map(|p| p.recursion_misses).sum();
    (total > 0).then(|| {
        format!(
            "the kernel skipped lockrace's lock programs {total} times (another BPF program \
             was running on that CPU), so lock events may be missing: {}",
            missed_list(&lock_path)
        )
    })
}

fn missed_list(programs: &[ProgramReport]) -> String {
    programs
        .iter()
        .filter_map(|p| match p.recursion_misses {
            Some(m) if m > 0 => Some(format!("{} {m}", p.name)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The footer line on the programs: which set, how many programs, what was missed and, with
/// `--self-cost`, what each cost per run. None for reports without program figures (older
/// recordings, untraced runs).
pub fn programs_line(c: &CaptureInfo) -> Option<String> {
    if c.programs.is_empty() {
        return None;
    }
    let set = c.probes.as_deref().unwrap_or("unknown");
    let mut line = format!(
        "Probes: the {set} set, {} programs; {}",
        c.programs.len(),
        match c.missed.unwrap_or(0) {
            0 => "no run missed".to_string(),
            n => format!("{n} runs missed ({})", missed_list(&c.programs)),
        }
    );
    let costs: Vec<String> = c
        .programs
        .iter()
        .filter_map(|p| match (p.runs, p.ns_per_run) {
            (Some(runs), Some(ns)) => Some(format!("{} {ns:.0} ns x {runs}", p.name)),
            (Some(0), None) => Some(format!("{} not run", p.name)),
            _ => None,
        })
        .collect();
    if !costs.is_empty() {
        line.push_str("; cost per run: ");
        line.push_str(&costs.join(", "));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(name: &str, runs: Option<u64>, misses: u64, ns: Option<f64>) -> ProgramReport {
        ProgramReport {
            name: name.into(),
            runs,
            recursion_misses: Some(misses),
            ns_per_run: ns,
        }
    }

    #[test]
    fn the_programs_line_names_the_set_the_misses_and_the_costs() {
        let mut c = CaptureInfo {
            probes: Some("fast".into()),
            programs: vec![
                program("fast_posix_lock", None, 0, None),
                program("sched_waking", None, 3, None),
            ],
            missed: Some(3),
            ..CaptureInfo::default()
        };
        assert_eq!(
            programs_line(&c).unwrap(),
            "Probes: the fast set, 2 programs; 3 runs missed (sched_waking 3)"
        );
        assert_eq!(
            missed_reason(&c.programs),
            None,
            "a scheduler miss times, not counts"
        );
        let lost_grant = [program("fast_posix_lock", None, 2, None)];
        assert!(missed_reason(&lost_grant).unwrap().contains(
            "2 times (another BPF program was running on that CPU), so lock \
                           events may be missing: fast_posix_lock 2"
        ));
        c.programs = vec![
            program("fast_posix_lock", Some(1000), 0, Some(95.04)),
            program("fast_flock", Some(0), 0, None),
        ];
        c.missed = Some(0);
        assert_eq!(
            programs_line(&c).unwrap(),
            "Probes: the fast set, 2 programs; no run missed; cost per run: fast_posix_lock 95 \
             ns x 1000, fast_flock not run"
        );
        assert_eq!(missed_reason(&c.programs), None);
        assert_eq!(programs_line(&CaptureInfo::default()), None);
    }
}
