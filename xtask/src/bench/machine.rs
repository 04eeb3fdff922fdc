//! What the benchmark report says about the machine, and how busy it was: kernel, CPU model,
//! cores, memory, load averages, and the CPU time other processes took while we measured.
//!
//! Invariant: everything here reads /proc (or runs a version command) and never fails the
//! bench: a fact that cannot be read is shown as "?"; the parsers are pure and tested.
use std::{process::Command, time::Duration};

use crate::cmd;

/// The machine facts at the top of docs/BENCHMARKS.md.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub os: String,
    pub bpftrace: String,
    pub perf: String,
    pub commit: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    cmd::stdout_of(Command::new(program).args(args))
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_string())
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let os_release = read("/etc/os-release");
        let mut commit = first_line_of(
            "git",
            &[
                "-C",
                &crate::workspace::root().to_string_lossy(),
                "rev-parse",
                "--short=12",
                "HEAD",
            ],
        );
        let dirty = cmd::stdout_of(Command::new("git").args([
            "-C",
            &crate::workspace::root().to_string_lossy(),
            "status",
            "--porcelain",
            "--untracked-files=no",
        ]))
        .is_ok_and(|s| !s.trim().is_empty());
        if dirty {
            commit.push_str(" (plus uncommitted changes)");
        }
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "?".into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_gib: mem_total_kib(&meminfo).unwrap_or(0) as f64 / (1024.0 * 1024.0),
            os: pretty_name(&os_release).unwrap_or_else(|| "?".into()),
            bpftrace: first_line_of("bpftrace", &["--version"]),
            perf: first_line_of("perf", &["--version"]),
            commit,
        }
    }
}

/// `model name` of the first CPU in /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// `MemTotal` in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `PRETTY_NAME` of /etc/os-release, unquoted.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The three load averages of /proc/loadavg.
pub fn parse_loadavg(s: &str) -> Option<[f64; 3]> {
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

pub fn loadavg() -> [f64; 3] {
    parse_loadavg(&read("/proc/loadavg")).unwrap_or([f64::NAN; 3])
}

pub fn fmt_load(l: [f64; 3]) -> String {
    format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
}

/// Wait (at most `max`) until the 1-minute load average is below `below`; returns the load
/// seen last. Other engineers' builds on a shared machine distort timings.
pub fn wait_for_quiet(below: f64, max: Duration) -> [f64; 3] {
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        let l = loadavg();
        if l[0] < below || start.elapsed() >= max {
            return l;
        }
        if !said {
            println!(
                "xtask bench: load average {}, waiting up to {} s for it to drop below {below}",
                fmt_load(l),
                max.as_secs()
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Busy CPU time of the whole machine (the `cpu` line of /proc/stat: everything but idle and
/// iowait), in clock ticks.
pub fn parse_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice (already in user)]
    Some(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds of this process (e.g. the thread draining a tracer's output) and of its reaped
/// children (and theirs).
fn own_cpu_s() -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage with a valid out pointer.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        total += tv(ru.ru_utime) + tv(ru.ru_stime);
    }
    total
}

/// Measures the share of the machine other processes used over a window in which every
/// process we started was also reaped.
pub struct Contention {
    busy0: Option<u64>,
    ours0: f64,
    t0: std::time::Instant,
}

impl Contention {
    pub fn start() -> Contention {
        Contention {
            busy0: parse_busy_ticks(&read("/proc/stat")),
            ours0: own_cpu_s(),
            t0: std::time::Instant::now(),
        }
    }

    /// Percent of all cores busy with work that was not ours (kernel threads included).
    pub fn other_percent(&self) -> Option<f64> {
        let busy1 = parse_busy_ticks(&read("/proc/stat"))?;
        let busy = busy1.checked_sub(self.busy0?)? as f64 / ticks_per_s();
        let ours = own_cpu_s() - self.ours0;
        let wall = self.t0.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (wall > 0.0).then(|| ((busy - ours).max(0.0) / (wall * cores) * 100.0).min(100.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(
            mem_total_kib("MemTotal:       24683776 kB\nMemFree: 1 kB\n"),
            Some(24683776)
        );
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_loadavg("0.52 1.07 2.00 1/345 6789\n"),
            Some([0.52, 1.07, 2.0])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        assert_eq!(
            parse_busy_ticks("cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8\n"),
            Some(100 + 5 + 50 + 3 + 2 + 1)
        );
        assert_eq!(parse_busy_ticks("intr 1 2 3\n"), None);
    }
}
