//! Root hardening tests: clean detach under every fault (issue "Hardening").
//!
//! - SIGINT and SIGTERM to `record`, `run` and `trace` before attach, during the capture and
//!   during the analysis: no BPF program, link or map of that lockrace is left in the kernel, no
//!   child survives it, no temp dir or socket file is left, and a report it wrote says it is
//!   incomplete (`run --json`, the `record --events` trailer).
//! - Start/stop cycles (`LOCKRACE_CYCLES`, default 20; run 100 with `LOCKRACE_CYCLES=100`):
//!   lockrace started and signalled after a random delay, again and again; every 10 cycles and
//!   at the end nothing of lockrace's is left in the kernel (programs, links, maps) and the
//!   count of its maps is back to the baseline.
//! - A child of a traced `run` killed with SIGKILL: the run ends at once, names it, stops the
//!   other child, and its report is incomplete.
//! - `--max-tasks` and `--ring-buffer-mb` size the kernel maps; a low RLIMIT_MEMLOCK is raised.
//!
//! How "left behind" is checked: while lockrace runs, the test reads `/proc/PID/fdinfo` of it
//! (every few ms) to learn the ids of the programs, links and maps it holds; after it exits each
//! id must be gone from the kernel's lists (`aya::programs::loaded_programs`, `loaded_links`,
//! `aya::maps::loaded_maps`). A global check adds: every program named like ours (and its links
//! and maps) created since the test started is referenced by some live process (other
//! engineers' captures may run meanwhile), so nothing is held by the kernel alone.
//!
//! These FAIL (never skip) when eBPF cannot load: CI runs them as root through `cargo xtask
//! test`.
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lockrace::capture::loader::PROGRAMS;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_lockrace");

// ---------------------------------------------------------------------------------------------
// BPF objects

/// Ids of BPF objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ids {
    progs: BTreeSet<u32>,
    links: BTreeSet<u32>,
    maps: BTreeSet<u32>,
}

impl Ids {
    fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.links.is_empty() && self.maps.is_empty()
    }
    fn extend(&mut self, o: &Ids) {
        self.progs.extend(&o.progs);
        self.links.extend(&o.links);
        self.maps.extend(&o.maps);
    }
    fn intersect(&self, o: &Ids) -> Ids {
        Ids {
            progs: self.progs.intersection(&o.progs).copied().collect(),
            links: self.links.intersection(&o.links).copied().collect(),
            maps: self.maps.intersection(&o.maps).copied().collect(),
        }
    }
    fn minus(&self, o: &Ids) -> Ids {
        Ids {
            progs: self.progs.difference(&o.progs).copied().collect(),
            links: self.links.difference(&o.links).copied().collect(),
            maps: self.maps.difference(&o.maps).copied().collect(),
        }
    }
    fn counts(&self) -> (usize, usize, usize) {
        (self.progs.len(), self.links.len(), self.maps.len())
    }
}

/// The BPF objects process `pid` holds descriptors of (empty once it is gone).
fn held_by(pid: u32) -> Ids {
    let mut ids = Ids::default();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for e in dir.flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if !target.starts_with("anon_inode:bpf") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(info) else {
            continue;
        };
        let field = |key: &str| -> Option<u32> {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        if target.contains("bpf_link") {
            ids.links.extend(field("link_id:"));
        } else if target.contains("bpf-prog") {
            ids.progs.extend(field("prog_id:"));
        } else if target.contains("bpf-map") {
            ids.maps.extend(field("map_id:"));
        }
    }
    ids
}

/// Every BPF object some live process holds a descriptor of.
fn held_by_anyone() -> Ids {
    let mut ids = Ids::default();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            ids.extend(&held_by(pid));
        }
    }
    ids
}

/// Program names as the kernel keeps them (15 bytes).
fn our_program_names() -> BTreeSet<String> {
    PROGRAMS
        .iter()
        .map(|(_, n)| n.chars().take(15).collect())
        .collect()
}

const OUR_MAPS: [&str; 5] = [
    "EVENTS",
    "DROPS",
    "TRACED_TGIDS",
    "TRACED_INODES",
    "IN_REQUEST",
];

/// What the kernel has loaded now: every id, and the ids of lockrace's (programs named like
/// ours, their links, the maps named like ours or used by our programs).
fn loaded() -> (Ids, Ids) {
    let ours = our_program_names();
    let (mut all, mut mine) = (Ids::default(), Ids::default());
    for p in aya::programs::loaded_programs().flatten() {
        all.progs.insert(p.id());
        if p.name_as_str().is_some_and(|n| ours.contains(n)) {
            mine.progs.insert(p.id());
            if let Ok(Some(maps)) = p.map_ids() {
                mine.maps.extend(maps);
            }
        }
    }
    for l in aya::programs::loaded_links().flatten() {
        all.links.insert(l.id());
        if mine.progs.contains(&l.program_id()) {
            mine.links.insert(l.id());
        }
    }
    for m in aya::maps::loaded_maps().flatten() {
        all.maps.insert(m.id());
        if m.name_as_str().is_some_and(|n| OUR_MAPS.contains(&n)) {
            mine.maps.insert(m.id());
        }
    }
    mine.maps = mine.maps.intersection(&all.maps).copied().collect();
    (all, mine)
}

/// Wait (bounded: the kernel frees BPF objects after an RCU grace period) until none of `ids`
/// is loaded; returns what is still there.
fn still_loaded(ids: &Ids, limit: Duration) -> Ids {
    let deadline = Instant::now() + limit;
    loop {
        let left = loaded().0.intersect(ids);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Objects of lockrace's created since `baseline` that no live process holds: leaked. Checked
/// three times (an object of another engineer's lockrace that is exiting right now is freed
/// within a moment).
fn unowned_since(baseline: &Ids) -> Ids {
    let mut leaked: Option<Ids> = None;
    for _ in 0..3 {
        let now = loaded().1.minus(baseline).minus(&held_by_anyone());
        leaked = Some(match leaked {
            None => now,
            Some(prev) => prev.intersect(&now),
        });
        if leaked.as_ref().is_some_and(Ids::is_empty) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    leaked.unwrap_or_default()
}

fn must_load_ebpf() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root tests must run as root (cargo xtask test runs them with sudo)"
    );
    let (all, _) = loaded();
    assert!(
        !all.progs.is_empty() || aya::programs::loaded_programs().next().is_none(),
        "cannot list BPF programs"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(marker) {
            out.push((pid, cmd));
        }
    }
    out
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A lockrace process with its stderr read line by line on a thread.
struct Lockrace {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// BPF objects it was seen holding.
    held: Ids,
}

impl Lockrace {
    fn start(args: &[String], pre: Option<fn() -> std::io::Result<()>>) -> Lockrace {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Default dispositions whatever ours are (a shell's background job ignores
                // SIGINT, and that is inherited): a signal before lockrace's handlers are in
                // place must end it, not vanish.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                match pre {
                    Some(f) => f(),
                    None => Ok(()),
                }
            })
        };
        let mut child = cmd.spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lockrace {
            child,
            lines,
            seen: Vec::new(),
            held: Ids::default(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sample(&mut self) {
        self.held.extend(&held_by(self.pid()));
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Sample until a stderr line containing `what` arrives (or `limit`).
    fn until_line(&mut self, what: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.sample();
            if self.seen.iter().any(|l| l.contains(what)) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                self.sample();
                return self.seen.iter().any(|l| l.contains(what));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// Sample for `d`.
    fn for_a_while(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.sample();
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.pid() as i32), sig);
    }

    /// Wait for the exit (bounded), sampling meanwhile; then the rest of stderr.
    fn wait(&mut self, limit: Duration, what: &str) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let st = loop {
            self.sample();
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{what}: lockrace did not exit within {limit:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // The reader thread ends at EOF.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (st, self.seen.join("\n"))
    }
}

/// After a lockrace has exited: its BPF objects are gone, nothing carries `markers`, `dirs` are
/// empty.
fn nothing_left(what: &str, lr: &Lockrace, markers: &[&str], dirs: &[&Path]) {
    let left = still_loaded(&lr.held, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "{what}: BPF objects left after lockrace exited: {left:?} (it held {:?})",
        lr.held.counts()
    );
    // Children end with it (SIGKILL'd by the supervisor, or PR_SET_PDEATHSIG): bounded wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    for m in markers {
        loop {
            let orphans = processes_with(m);
            if orphans.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: processes outlived lockrace: {orphans:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for d in dirs {
        let rest: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            rest.is_empty(),
            "{what}: left behind in {}: {rest:?}",
            d.display()
        );
    }
}

/// 130/143 for a handled signal. Killed by the signal itself only when it came before the
/// handlers were installed (then nothing was loaded or created yet).
fn handled(st: ExitStatus, sig: Signal, lr: &Lockrace) -> bool {
    if st.signal() == Some(sig as i32) {
        assert!(
            lr.held.is_empty(),
            "killed by {sig} while holding BPF objects: {:?}",
            lr.held
        );
        return false;
    }
    assert_eq!(
        st.code(),
        Some(i32::from(lockrace::signals::exit_code(sig))),
        "exit status after {sig}: {st:?}"
    );
    true
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The three commands

/// Where a signal lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Right after the start: before or while the programs load.
    BeforeAttach,
    /// After the "Tracing ..." line.
    Capture,
    /// After "Detaching... done": the analysis (`run`) or the report (`trace`).
    Analysis,
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}{:04}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `record --events F -- sleep 10.<unique>`, signalled in `phase`.
fn record_case(sig: Signal, phase: Phase, delay: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let nap = format!("10.{}", unique(""));
    let mut lr = Lockrace::start(
        &[
            s(&["record", "--events"]),
            vec![events.display().to_string()],
            s(&["--", "sleep"]),
            vec![nap.clone()],
        ]
        .concat(),
        None,
    );
    let what = format!("record, {sig} {phase:?} +{delay:?}");
    match phase {
        Phase::BeforeAttach => lr.for_a_while(delay),
        Phase::Capture | Phase::Analysis => {
            assert!(
                lr.until_line("Tracing file locks", Duration::from_secs(30)),
                "{what}: never attached: {:?}",
                lr.seen
            );
            assert!(
                !lr.held.is_empty(),
                "{what}: attached but held no BPF object"
            );
            lr.for_a_while(delay);
        }
    }
    lr.signal(sig);
    let (st, err) = lr.wait(Duration::from_secs(15), &what);
    if handled(st, sig, &lr) && std::fs::metadata(&events).is_ok() {
        let text = std::fs::read_to_string(&events).unwrap();
        let last = text.lines().last().unwrap_or_default();
        match lockrace::jsonl::file::meta_from_json(last) {
            Ok(lockrace::jsonl::Meta::LockraceTrailer(t)) => assert!(
                t.incomplete_reasons
                    .iter()
                    .any(|r| r.contains(&format!("interrupted by {}", sig.as_str()))),
                "{what}: trailer {t:?}"
            ),
            other => panic!("{what}: last line is not a trailer: {other:?}\n{err}"),
        }
    }
    nothing_left(&what, &lr, &[&nap], &[]);
}

/// Traced `run --json F --tmpdir-parent D`, signalled in `phase`.
fn run_case(sig: Signal, phase: Phase, delay: Duration, iterations: u64) {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join(unique("runs"));
    std::fs::create_dir(&parent).unwrap();
    let json = dir.path().join("report.json");
    let mut lr = Lockrace::start(
        &[
            s(&["-v", "run", "--no-baseline", "--lock", "posix", "--share"]),
            s(&["reopen", "--stall-timeout", "5", "--iterations"]),
            vec![iterations.to_string(), "--json".into()],
            vec![json.display().to_string(), "--tmpdir-parent".into()],
            vec![parent.display().to_string()],
        ]
        .concat(),
        None,
    );
    let what = format!("run, {sig} {phase:?} +{delay:?}");
    match phase {
        Phase::BeforeAttach => lr.for_a_while(delay),
        Phase::Capture => {
            assert!(
                lr.until_line("Tracing the handoff", Duration::from_secs(30)),
                "{what}: never attached: {:?}",
                lr.seen
            );
            lr.for_a_while(delay);
        }
        Phase::Analysis => {
            assert!(
                lr.until_line("Detaching... done", Duration::from_secs(120)),
                "{what}: never detached: {:?}",
                lr.seen
            );
            lr.for_a_while(delay);
        }
    }
    let ended_before = lr.child.try_wait().unwrap().is_some();
    lr.signal(sig);
    let (st, err) = lr.wait(Duration::from_secs(60), &what);
    if phase == Phase::Analysis && st.success() {
        // The analysis (and the report) had finished before the signal came: complete.
        let doc: lockrace::report::model::Document =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(doc.complete, "{what}: {:?}", doc.incomplete_reasons);
        eprintln!("{what}: the analysis had ended before the signal");
    } else if !ended_before && handled(st, sig, &lr) {
        let doc: lockrace::report::model::Document = serde_json::from_str(
            &std::fs::read_to_string(&json)
                .unwrap_or_else(|e| panic!("{what}: no report written: {e}\n{err}")),
        )
        .unwrap();
        assert!(!doc.complete, "{what}: report claims to be complete\n{err}");
        let sig_name = sig.as_str();
        assert!(
            doc.incomplete_reasons
                .iter()
                .any(|r| r.contains(&format!("interrupted by {sig_name}"))),
            "{what}: {:?}",
            doc.incomplete_reasons
        );
        assert!(err.contains(&format!("interrupted by {sig_name}")), "{err}");
        if phase == Phase::Analysis {
            assert!(
                doc.incomplete_reasons
                    .iter()
                    .any(|r| r.starts_with("analysis interrupted by")),
                "{what}: {:?}",
                doc.incomplete_reasons
            );
        }
    }
    nothing_left(&what, &lr, &[&parent.display().to_string()], &[&parent]);
}

/// Whether this lockrace has `trace`.
fn has_trace() -> bool {
    Command::new(BIN)
        .args(["trace", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `trace --json F -- sleep 10.<unique>`, signalled in `phase`.
fn trace_case(sig: Signal, phase: Phase, delay: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("trace.json");
    let nap = format!("10.{}", unique(""));
    let mut lr = Lockrace::start(
        &[
            s(&["trace", "--json"]),
            vec![json.display().to_string()],
            s(&["--", "sleep"]),
            vec![nap.clone()],
        ]
        .concat(),
        None,
    );
    let what = format!("trace, {sig} {phase:?} +{delay:?}");
    if phase != Phase::BeforeAttach {
        assert!(
            lr.until_line("Tracing", Duration::from_secs(30)),
            "{what}: never attached: {:?}",
            lr.seen
        );
    }
    lr.for_a_while(delay);
    lr.signal(sig);
    let (st, err) = lr.wait(Duration::from_secs(30), &what);
    if handled(st, sig, &lr) {
        let doc: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&json)
                .unwrap_or_else(|e| panic!("{what}: no report: {e}\n{err}")),
        )
        .unwrap();
        let ended = doc["trace"]["ended_by"].as_str().unwrap_or_default();
        assert!(
            ended == "interrupted" || ended == "terminated",
            "{what}: ended_by {ended}"
        );
    }
    nothing_left(&what, &lr, &[&nap], &[]);
}

#[test]
fn signals_in_every_phase_leave_nothing_behind() {
    must_load_ebpf();
    let (_, baseline) = loaded();
    let trace = has_trace();
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        for (phase, delay) in [
            (Phase::BeforeAttach, Duration::ZERO),
            (Phase::BeforeAttach, Duration::from_millis(150)),
            (Phase::Capture, Duration::from_millis(100)),
        ] {
            record_case(sig, phase, delay);
            run_case(sig, phase, delay, 100_000_000);
            if trace {
                trace_case(sig, phase, delay);
            }
        }
        // The analysis: a run that ends by itself, signalled right after it detached.
        run_case(sig, Phase::Analysis, Duration::ZERO, 5_000);
    }
    let leaked = unowned_since(&baseline);
    assert!(leaked.is_empty(), "BPF objects held by nobody: {leaked:?}");
}

/// A small deterministic generator (the cycle test's random delays; the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn start_stop_cycles_leak_nothing() {
    must_load_ebpf();
    let cycles: u32 = std::env::var("LOCKRACE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("LOCKRACE_CYCLES_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    let mut rng = Rng(seed);
    let (_, baseline) = loaded();
    let base_counts = baseline.counts();
    let rss0 = rss_kib("self");
    eprintln!(
        "cycles: {cycles}, seed {seed}; lockrace's objects at start (progs, links, maps): \
         {base_counts:?}; test RSS {rss0} KiB"
    );
    let t0 = Instant::now();
    for i in 1..=cycles {
        let sig = if rng.next().is_multiple_of(2) {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let delay = Duration::from_millis(rng.next() % 1500);
        if i % 4 == 0 {
            run_case(sig, Phase::BeforeAttach, delay, 100_000_000);
        } else {
            record_case(sig, Phase::BeforeAttach, delay);
        }
        if i % 10 == 0 || i == cycles {
            let leaked = unowned_since(&baseline);
            let (_, now) = loaded();
            eprintln!(
                "cycle {i}: {:.0} s; lockrace's objects now {:?} (start {base_counts:?}), \
                 held by nobody {:?}; test RSS {} KiB",
                t0.elapsed().as_secs_f64(),
                now.counts(),
                leaked.counts(),
                rss_kib("self")
            );
            assert!(
                leaked.is_empty(),
                "cycle {i}: BPF objects held by nobody: {leaked:?}"
            );
        }
    }
    // Flat: every object of ours created since the start is gone, or held by a live process
    // that is not ours (another capture running meanwhile).
    let (_, end) = loaded();
    let foreign = held_by_anyone();
    let extra = end.minus(&baseline).minus(&foreign);
    assert!(extra.is_empty(), "objects since the start: {extra:?}");
    let rss1 = rss_kib("self");
    eprintln!(
        "after {cycles} cycles in {:.0} s: lockrace's objects {:?} (start {base_counts:?}, \
         of which held by other processes {:?}); test RSS {rss0} -> {rss1} KiB",
        t0.elapsed().as_secs_f64(),
        end.counts(),
        end.minus(&baseline).counts()
    );
    assert!(
        rss1 < rss0 + 32 * 1024,
        "the test process grew from {rss0} to {rss1} KiB"
    );
}

#[test]
fn a_child_killed_mid_traced_run_ends_it_with_a_clear_message() {
    must_load_ebpf();
    for victim in ["client", "server"] {
        let dir = tempfile::tempdir().unwrap();
        let parent = dir.path().join(unique("runs"));
        std::fs::create_dir(&parent).unwrap();
        let json = dir.path().join("report.json");
        let mut lr = Lockrace::start(
            &[
                s(&["-v", "run", "--no-baseline", "--lock", "posix"]),
                s(&["--stall-timeout", "60", "--iterations", "100000000"]),
                vec!["--json".into(), json.display().to_string()],
                vec!["--tmpdir-parent".into(), parent.display().to_string()],
            ]
            .concat(),
            None,
        );
        assert!(lr.until_line("the client (pid", Duration::from_secs(30)));
        let line = lr
            .seen
            .iter()
            .find(|l| l.contains("the client (pid"))
            .unwrap()
            .clone();
        let pid_after = |key: &str| -> u32 {
            line.split(key)
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|p| p.parse().ok())
                .unwrap()
        };
        let (server, client) = (pid_after("the server (pid "), pid_after("the client (pid "));
        lr.for_a_while(Duration::from_millis(400));
        let (dead, other) = if victim == "client" {
            (client, server)
        } else {
            (server, client)
        };
        kill(Pid::from_raw(dead as i32), Signal::SIGKILL).unwrap();
        let t0 = Instant::now();
        let (st, err) = lr.wait(Duration::from_secs(30), victim);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
        assert!(!st.success());
        let want = format!("the {victim} (pid {dead}) was killed by SIGKILL");
        assert!(
            err.contains(&want) && err.contains(&format!("stopped the {}", other_role(victim))),
            "{err}"
        );
        for pid in [dead, other] {
            assert!(
                kill(Pid::from_raw(pid as i32), None).is_err(),
                "pid {pid} survived"
            );
        }
        let doc: lockrace::report::model::Document =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(!doc.complete);
        assert!(
            doc.incomplete_reasons.iter().any(|r| r.contains(&want)),
            "{:?}",
            doc.incomplete_reasons
        );
        nothing_left(victim, &lr, &[&parent.display().to_string()], &[&parent]);
    }
}

fn other_role(r: &str) -> &'static str {
    if r == "client" { "server" } else { "client" }
}

#[test]
fn kernel_map_sizes_follow_the_limits() {
    must_load_ebpf();
    use lockrace::capture::{Capture, Filter, Limits};
    use lockrace::jsonl::Collector;
    let limits = Limits {
        ring_buffer_bytes: 1 << 20,
        max_tasks: 64,
    };
    let cap = Capture::start_with(
        &Filter {
            tgids: vec![std::process::id()],
            inodes: vec![],
        },
        &limits,
        Collector::new(false, None).unwrap(),
    )
    .unwrap_or_else(|e| panic!("eBPF capture must load on this kernel (run as root): {e:#}"));
    let mine = held_by(std::process::id());
    let sizes: Vec<(String, u32)> = aya::maps::loaded_maps()
        .flatten()
        .filter(|m| mine.maps.contains(&m.id()))
        .map(|m| (m.name_as_str().unwrap_or("?").to_string(), m.max_entries()))
        .collect();
    for (name, want) in [
        ("EVENTS", 1 << 20),
        ("TRACED_TGIDS", 64),
        ("IN_REQUEST", 256),
    ] {
        assert!(
            sizes.iter().any(|(n, s)| n == name && *s == want),
            "{name} should hold {want}: {sizes:?}"
        );
    }
    cap.stop().unwrap();
    assert!(still_loaded(&mine, Duration::from_secs(5)).is_empty());
    // Out of range: refused before anything is loaded.
    let bad = Limits {
        ring_buffer_bytes: 1 << 20,
        max_tasks: 1,
    };
    let err = Capture::start_with(
        &Filter::default(),
        &bad,
        Collector::new(false, None).unwrap(),
    )
    .err()
    .expect("--max-tasks 1 must be refused");
    assert!(
        lockrace::error::render_error(&err).contains("--max-tasks 1 is out of range"),
        "{err:#}"
    );
}

#[test]
fn a_low_memlock_limit_is_raised_and_recording_works() {
    must_load_ebpf();
    fn low_memlock() -> std::io::Result<()> {
        let low = libc::rlimit {
            rlim_cur: 64 << 10,
            rlim_max: libc::RLIM_INFINITY,
        };
        // Keep the hard limit: lower only what the loader must raise. (The hard limit cannot go
        // back up without CAP_SYS_RESOURCE, which some containers lack.)
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe {
            libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur);
            let low = libc::rlimit {
                rlim_max: cur.rlim_max,
                ..low
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("ev.jsonl");
    let mut lr = Lockrace::start(
        &[
            s(&["-v", "record", "--events"]),
            vec![events.display().to_string()],
            s(&["--", "flock", "/tmp", "true"]),
        ]
        .concat(),
        Some(low_memlock),
    );
    let (st, err) = lr.wait(Duration::from_secs(30), "record with a low memlock limit");
    assert!(st.success(), "{err}");
    assert!(
        err.contains("RLIMIT_MEMLOCK") && err.contains("from 64 KiB"),
        "the raise is logged with -v: {err}"
    );
    let mut text = String::new();
    std::fs::File::open(&events)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(
        text.contains("\"kind\":\"flock_lock_inode\""),
        "the command's flock was recorded"
    );
    nothing_left("memlock", &lr, &[], &[]);
}

/// Words of `text` that are kernel addresses (0xffff... as a number or in hex).
fn kernel_addresses(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|w| match w.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => w.parse::<u64>().ok(),
        })
        .filter(|&v| v >= 0xffff_0000_0000_0000)
        .count()
}

#[test]
fn outputs_carry_no_kernel_address_unless_raw_pointers() {
    must_load_ebpf();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let lockfile = p("lockfile");
    std::fs::write(&lockfile, b"").unwrap();
    // Two flock(1)s on one file, the second waiting for the first: blocked requests, so
    // blockers, and owners.
    let script = format!("flock {lockfile} sleep 0.2 & sleep 0.05; flock {lockfile} true; wait");
    let locker = ["--", "sh", "-c", script.as_str()];
    let run = |args: Vec<String>| {
        let mut lr = Lockrace::start(&args, None);
        let (st, err) = lr.wait(Duration::from_secs(120), &args.join(" "));
        assert!(st.success(), "{args:?}: {err}");
    };
    let read = |f: &str| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f}: {e}"));
    for raw in [false, true] {
        let flag: Vec<String> = if raw {
            vec!["--raw-pointers".into()]
        } else {
            vec![]
        };
        let (ev, rep, tr, tj, tp, rj, rp, re) = (
            p("r.jsonl"),
            p("report.json"),
            p("report.trace"),
            p("trace.json"),
            p("trace.trace"),
            p("run.json"),
            p("run.trace"),
            p("run.jsonl"),
        );
        run([s(&["record", "--events", &ev]), flag.clone(), s(&locker)].concat());
        run([
            s(&["report", &ev, "--json", &rep, "--perfetto", &tr]),
            flag.clone(),
        ]
        .concat());
        run([
            s(&["trace", "--json", &tj, "--perfetto", &tp]),
            flag.clone(),
            s(&locker),
        ]
        .concat());
        run([
            s(&[
                "run",
                "--no-baseline",
                "--lock",
                "posix",
                "--share",
                "reopen",
            ]),
            s(&[
                "--iterations",
                "200",
                "--json",
                &rj,
                "--perfetto",
                &rp,
                "--events",
                &re,
            ]),
            flag.clone(),
        ]
        .concat());
        let events = read(&ev);
        assert!(events.contains("flock_lock_inode"), "{events}");
        assert_eq!(events.lines().next().unwrap().contains("raw_pointers"), raw);
        for f in [&ev, &rep, &tr, &tj, &tp, &rj, &rp, &re] {
            let n = kernel_addresses(&read(f));
            if raw {
                // Files that name a pointer name the real one.
                if f != &tr && f != &tp && f != &rep && f != &tj {
                    assert!(n > 0, "{f}: --raw-pointers kept no address");
                }
            } else {
                assert_eq!(n, 0, "{f}: kernel addresses without --raw-pointers");
            }
        }
    }
}
