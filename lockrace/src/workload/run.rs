//! `lockrace run`: both roles as child processes, then the side-by-side summary.
//!
//! [`execute`] is pure orchestration, meant to be wrapped by kernel tracing (capture attaches
//! before it and filters on this process's tgid and the children it forks): make a private 0700
//! temp dir (mkdtemp), start `server` then `client` by re-executing this binary
//! (`/proc/self/exe`) with `--json` and `--acquisition-log` into that dir, watch both
//! (pidfds + `ppoll`, so the parent sleeps until a child ends or a signal arrives and adds no
//! scheduling noise), then read their reports and logs. Invariants: when `execute` returns, both
//! children have been reaped and the temp dir is gone; a child that fails gets the other one
//! killed at once (no waiting for its stall timeout); SIGINT/SIGTERM kill both and come back as
//! `RunOutcome::interrupted`. [`render_summary`] and [`document`] are pure renderings.
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{SigmaskHow, Signal};

use super::{Acquisition, Role, lock_name, parse_acquisition_log, share_name};
use super::{LockKind, Scenario, Share, SyncKind};
use crate::cli::RunArgs;
use crate::host::{kernel_release, monotonic_ns};
use crate::report::model::{Document, RoleReport, WorkloadReport};

/// A validated `run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub lock: LockKind,
    pub share: Share,
    /// `fcntl` (the lock loop), or the `eventfd`/`futex` remedies (`lock`/`share` unused).
    pub sync: SyncKind,
    /// A scenario instead of the turn loop (`iterations` rounds).
    pub scenario: Option<Scenario>,
    pub iterations: u64,
    pub stall_timeout: Duration,
    /// The binary to re-execute for the roles (`/proc/self/exe` by default).
    pub exe: PathBuf,
    /// Where the private temp dir is created.
    pub tmpdir_parent: PathBuf,
}

impl RunConfig {
    pub fn from_args(args: &RunArgs) -> anyhow::Result<RunConfig> {
        let w = &args.workload;
        if w.iterations == 0 {
            anyhow::bail!("--iterations must be at least 1");
        }
        let tmpdir_parent = args
            .tmpdir_parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        if !tmpdir_parent.is_dir() {
            return Err(crate::error::hinted(
                format!("{} is not a directory", tmpdir_parent.display()),
                "set TMPDIR to a writable directory",
            ));
        }
        // Both roles' view of the combination must be valid (the server's and the client's lock
        // differ in `mixed`); the run keeps the client's, i.e. the `--lock` flavour.
        super::role::effective_lock(Role::Server, w.lock, w.share, w.sync, w.scenario)?;
        let (lock, share) =
            super::role::effective_lock(Role::Client, w.lock, w.share, w.sync, w.scenario)?;
        Ok(RunConfig {
            lock,
            share,
            sync: w.sync,
            scenario: w.scenario,
            iterations: w.iterations,
            stall_timeout: Duration::from_secs(w.stall_timeout.max(1)),
            exe: PathBuf::from("/proc/self/exe"),
            tmpdir_parent,
        })
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

impl ChildExit {
    fn from_status(st: ExitStatus) -> ChildExit {
        match (st.code(), st.signal()) {
            (Some(c), _) => ChildExit::Code(c),
            (None, Some(s)) => ChildExit::Signal(s),
            (None, None) => ChildExit::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == ChildExit::Code(0)
    }

    /// "exited with status 1" / "was killed by SIGKILL".
    pub fn describe(self) -> String {
        match self {
            ChildExit::Code(c) => format!("exited with status {c}"),
            ChildExit::Signal(s) => match Signal::try_from(s) {
                Ok(sig) => format!("was killed by {}", sig.as_str()),
                Err(_) => format!("was killed by signal {s}"),
            },
        }
    }
}

/// One child's side of the run.
#[derive(Debug, Clone)]
pub struct RoleRun {
    pub role: Role,
    pub pid: u32,
    pub exit: Option<ChildExit>,
    /// Its `--json` report (None when it did not finish).
    pub report: Option<RoleReport>,
    /// Its lock grants in order (the k-th line is its k-th grant).
    pub acquisitions: Vec<Acquisition>,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// The memfd both roles locked, as the kernel names it in filelock events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemfdId {
    /// `(major << 20) | minor`.
    pub dev: u64,
    pub ino: u64,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub server: RoleRun,
    pub client: RoleRun,
    pub memfd: Option<MemfdId>,
    /// The signal that stopped the run, if any.
    pub interrupted: Option<Signal>,
    /// Why the run failed (a child died or failed), one line.
    pub failure: Option<String>,
    /// CLOCK_MONOTONIC just before the first child was started and after the last was reaped.
    pub started_ns: u64,
    pub ended_ns: u64,
}

impl RunOutcome {
    pub fn roles(&self) -> [&RoleRun; 2] {
        [&self.server, &self.client]
    }

    pub fn child_pids(&self) -> [u32; 2] {
        [self.server.pid, self.client.pid]
    }

    /// Why the outcome is incomplete, one line each (empty when complete).
    pub fn incomplete_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(sig) = self.interrupted {
            out.push(format!("run interrupted by {}", sig.as_str()));
        }
        if let Some(f) = &self.failure {
            out.push(f.clone());
        }
        out
    }

    pub fn is_complete(&self) -> bool {
        self.incomplete_reasons().is_empty()
    }

    /// The `workload` object of the report: the roles that reported, server first.
    pub fn workload_report(&self, cfg: &RunConfig) -> WorkloadReport {
        let file_lock = cfg.sync == SyncKind::Fcntl;
        WorkloadReport {
            lock: if file_lock {
                lock_name(cfg.lock)
            } else {
                "none"
            }
            .to_string(),
            share: if file_lock {
                share_name(cfg.share)
            } else {
                "none"
            }
            .to_string(),
            iterations: cfg.iterations,
            roles: self
                .roles()
                .iter()
                .filter_map(|r| r.report.clone())
                .collect(),
            probe_effect: None,
            sync: (!file_lock).then(|| super::sync::sync_name(cfg.sync).to_string()),
            scenario: cfg
                .scenario
                .map(|s| super::scenario::scenario_name(s).to_string()),
        }
    }
}

/// The run's private directory; removed (with everything in it) on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create(parent: &Path) -> anyhow::Result<TempDir> {
        let path = nix::unistd::mkdtemp(&parent.join("lockrace-run.XXXXXX"))
            .with_context(|| format!("cannot create a temp dir in {}", parent.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

struct Files {
    json: PathBuf,
    acq: PathBuf,
    err: PathBuf,
}

fn files(dir: &Path, role: Role) -> Files {
    Files {
        json: dir.join(format!("{role}.json")),
        acq: dir.join(format!("{role}.acq")),
        err: dir.join(format!("{role}.err")),
    }
}

/// The role's command line (also what `-v` prints). `--sync` and `--scenario` appear only
/// when they are not the defaults.
pub fn role_args(cfg: &RunConfig, role: Role, socket: &Path, acq: &Path) -> Vec<String> {
    let mut extra: Vec<String> = Vec::new();
    if cfg.sync != SyncKind::Fcntl {
        extra.extend(["--sync".into(), super::sync::sync_name(cfg.sync).into()]);
    }
    if let Some(s) = cfg.scenario {
        extra.extend([
            "--scenario".into(),
            super::scenario::scenario_name(s).into(),
        ]);
    }
    let mut args = vec![
        role.as_str().to_string(),
        "--socket".into(),
        socket.display().to_string(),
        "--lock".into(),
        lock_name(cfg.lock).into(),
        "--share".into(),
        share_name(cfg.share).into(),
        "--iterations".into(),
        cfg.iterations.to_string(),
        "--stall-timeout".into(),
        cfg.stall_timeout.as_secs().to_string(),
        "--json".into(),
        "--acquisition-log".into(),
        acq.display().to_string(),
    ];
    args.extend(extra);
    args
}

impl RunConfig {
    /// What the run measures, as the summary's first line says it: `ofd lock, share same`,
    /// `eventfd sync`, `upgrade scenario, flock lock`, `mixed scenario, flock vs posix`.
    pub fn label(&self) -> String {
        match (self.scenario, self.sync) {
            (Some(Scenario::Mixed), _) => {
                format!("mixed scenario, flock vs {}", lock_name(self.lock))
            }
            (Some(s), _) => format!(
                "{} scenario, {} lock",
                super::scenario::scenario_name(s),
                lock_name(self.lock)
            ),
            (None, SyncKind::Fcntl) => format!(
                "{} lock, share {}",
                lock_name(self.lock),
                share_name(self.share)
            ),
            (None, sync) => format!("{} sync", super::sync::sync_name(sync)),
        }
    }
}

fn spawn_role(cfg: &RunConfig, role: Role, dir: &Path, socket: &Path) -> anyhow::Result<Child> {
    let f = files(dir, role);
    let stdout = File::create(&f.json).context("cannot create a file in the temp dir")?;
    let stderr = File::create(&f.err).context("cannot create a file in the temp dir")?;
    let parent = std::process::id();
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(role_args(cfg, role, socket, &f.acq))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own process group: a terminal's Ctrl-C reaches only us, and we stop the children.
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Die with the parent even if it is SIGKILLed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start the {role} ({})", cfg.exe.display()))
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        None
    } else {
        // SAFETY: a fresh descriptor nobody else owns.
        Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// `ppoll` with `mask` as the signal mask while waiting; EINTR and timeouts are not errors.
fn wait_for(
    fds: &mut [libc::pollfd],
    timeout: Duration,
    mask: &nix::sys::signal::SigSet,
) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let raw_mask: &libc::sigset_t = mask.as_ref();
    // SAFETY: `fds`, `ts` and `raw_mask` are live for the call and sized as stated.
    let r = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, raw_mask) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}

/// How the supervision ended.
struct Supervised {
    exits: [Option<ChildExit>; 2],
    interrupted: Option<Signal>,
    /// Index of the first child that failed.
    failed: Option<usize>,
}

/// Wait for both children; stop at the first failure or signal. Kills and reaps whatever is
/// still running before returning.
fn supervise(children: &mut [Child; 2]) -> anyhow::Result<Supervised> {
    let pidfds: Vec<Option<OwnedFd>> = children.iter().map(|c| pidfd_open(c.id())).collect();
    // Keep SIGINT/SIGTERM blocked except inside ppoll, so a signal cannot slip in between the
    // flag check and the wait.
    let old = crate::signals::handled()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .context("cannot block signals")?;
    let mut during = old;
    during.remove(Signal::SIGINT);
    during.remove(Signal::SIGTERM);
    let mut out = Supervised {
        exits: [None, None],
        interrupted: None,
        failed: None,
    };
    let result = (|| -> anyhow::Result<()> {
        loop {
            for (i, child) in children.iter_mut().enumerate() {
                if out.exits[i].is_none()
                    && let Some(st) = child.try_wait().context("cannot wait for a child")?
                {
                    let exit = ChildExit::from_status(st);
                    out.exits[i] = Some(exit);
                    if !exit.success() && out.failed.is_none() {
                        out.failed = Some(i);
                    }
                }
            }
            if let Some(sig) = crate::signals::received() {
                out.interrupted = Some(sig);
                return Ok(());
            }
            if out.failed.is_some() || out.exits.iter().all(Option::is_some) {
                return Ok(());
            }
            let mut fds: Vec<libc::pollfd> = (0..2)
                .filter(|&i| out.exits[i].is_none())
                .filter_map(|i| pidfds[i].as_ref())
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // Without pidfds (very old kernels) this degrades to polling every 20 ms. With them
            // the timeout only matters when a signal was delivered to another thread of this
            // process (a capture thread): the flag is then seen within 250 ms.
            let timeout = if fds.is_empty() {
                Duration::from_millis(20)
            } else {
                Duration::from_millis(250)
            };
            wait_for(&mut fds, timeout, &during).context("cannot wait for the children")?;
        }
    })();
    let _ = old.thread_set_mask();
    for (i, child) in children.iter_mut().enumerate() {
        if out.exits[i].is_none() {
            let _ = child.kill();
            if let Ok(st) = child.wait() {
                out.exits[i] = Some(ChildExit::from_status(st));
            }
        }
    }
    result?;
    Ok(out)
}

/// The last meaningful line a child printed to stderr, without our `lockrace: ` prefix.
fn last_error_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.strip_prefix("lockrace: ").unwrap_or(l).to_string())
}

/// "the client (pid 12) was killed by SIGKILL; stopped the server (pid 11)".
pub fn describe_failure(
    role: Role,
    pid: u32,
    exit: ChildExit,
    stderr: &str,
    stopped_other: Option<u32>,
) -> String {
    let mut s = format!("the {role} (pid {pid}) {}", exit.describe());
    if let (ChildExit::Code(_), Some(line)) = (exit, last_error_line(stderr)) {
        s.push_str(": ");
        s.push_str(&line);
    }
    if let Some(other) = stopped_other {
        s.push_str(&format!("; stopped the {} (pid {other})", role.other()));
    }
    s
}

/// Run both roles once. Errors are setup failures (temp dir, spawn); what happened to the
/// children is in the outcome (`failure`, `interrupted`).
pub fn execute(cfg: &RunConfig) -> anyhow::Result<RunOutcome> {
    let dir = TempDir::create(&cfg.tmpdir_parent)?;
    let socket = dir.path.join("sock");
    let started_ns = monotonic_ns();
    let server = spawn_role(cfg, Role::Server, &dir.path, &socket)?;
    let client = match spawn_role(cfg, Role::Client, &dir.path, &socket) {
        Ok(c) => c,
        Err(e) => {
            let mut server = server;
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }
    };
    log::info!(
        "started the server (pid {}) and the client (pid {}) in {}",
        server.id(),
        client.id(),
        dir.path.display()
    );
    let mut children = [server, client];
    let pids = [children[0].id(), children[1].id()];
    let progress = crate::progress::run_ticker(cfg, pids);
    let sup = supervise(&mut children)?;
    drop(progress);
    let ended_ns = monotonic_ns();

    let roles = [Role::Server, Role::Client];
    let mut runs: Vec<RoleRun> = Vec::with_capacity(2);
    let mut failure: Option<String> = None;
    for (i, role) in roles.into_iter().enumerate() {
        let f = files(&dir.path, role);
        let stderr = std::fs::read_to_string(&f.err).unwrap_or_default();
        let mut run = RoleRun {
            role,
            pid: pids[i],
            exit: sup.exits[i],
            report: None,
            acquisitions: Vec::new(),
            stderr,
        };
        if run.exit.is_some_and(ChildExit::success) {
            match read_role_output(&f) {
                Ok((report, acquisitions)) => {
                    run.report = Some(report);
                    run.acquisitions = acquisitions;
                }
                Err(e) => {
                    failure.get_or_insert(format!(
                        "the {role}'s output is unreadable: {}",
                        crate::error::render_error(&e)
                    ));
                }
            }
        }
        runs.push(run);
    }
    if sup.interrupted.is_none()
        && let Some(i) = sup.failed
    {
        let other = 1 - i;
        // The other child was stopped by us if it had not ended successfully on its own.
        let stopped = (!runs[other].exit.is_some_and(ChildExit::success)).then_some(pids[other]);
        failure = Some(describe_failure(
            roles[i],
            pids[i],
            runs[i].exit.unwrap_or(ChildExit::Code(-1)),
            &runs[i].stderr,
            stopped,
        ));
    }
    drop(dir);
    let client = runs.pop().context("missing client")?;
    let server = runs.pop().context("missing server")?;
    let memfd = [&client, &server]
        .iter()
        .filter_map(|r| r.report.as_ref())
        .map(|r| MemfdId {
            dev: r.memfd_dev,
            ino: r.memfd_ino,
        })
        .next();
    Ok(RunOutcome {
        server,
        client,
        memfd,
        interrupted: sup.interrupted,
        failure,
        started_ns,
        ended_ns,
    })
}

fn read_role_output(f: &Files) -> anyhow::Result<(RoleReport, Vec<Acquisition>)> {
    let json = std::fs::read_to_string(&f.json).context("cannot read its report")?;
    let report: RoleReport =
        serde_json::from_str(json.trim()).context("its report is not the expected JSON")?;
    let acq = std::fs::read_to_string(&f.acq).context("cannot read its acquisition log")?;
    let acquisitions = parse_acquisition_log(&acq)?;
    if acquisitions.len() as u64 != report.acquisitions {
        anyhow::bail!(
            "its acquisition log has {} lines for {} acquisitions",
            acquisitions.len(),
            report.acquisitions
        );
    }
    Ok((report, acquisitions))
}

fn fmt_ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

/// A latency in the summary: `12.3 us`, or `-` when the role measured none.
fn latency_cell(
    r: &RoleReport,
    pick: impl Fn(&crate::report::model::HandoffLatency) -> Option<u64>,
) -> String {
    r.handoff_latency
        .as_ref()
        .and_then(pick)
        .map_or_else(|| "-".to_string(), fmt_latency)
}

/// `850 ns`, `12.3 us`, `4.56 ms`.
pub fn fmt_latency(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

/// The side-by-side terminal summary.
pub fn render_summary(cfg: &RunConfig, outcome: &RunOutcome, traced: bool) -> String {
    let mut out = format!(
        "lockrace run: {}, {} iterations, {}\n",
        cfg.label(),
        cfg.iterations,
        if traced { "traced" } else { "untraced" }
    );
    let reports: Vec<Option<&RoleReport>> =
        outcome.roles().iter().map(|r| r.report.as_ref()).collect();
    let cell = |f: &dyn Fn(&RoleReport) -> String| -> Vec<String> {
        reports
            .iter()
            .map(|r| r.map_or_else(|| "-".to_string(), f))
            .collect()
    };
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "pid",
            outcome.roles().iter().map(|r| r.pid.to_string()).collect(),
        ),
        ("turns", cell(&|r| r.iterations.to_string())),
        ("acquisitions", cell(&|r| r.acquisitions.to_string())),
        ("whoops", cell(&|r| r.whoops.to_string())),
        (
            "whoops/handoff",
            cell(&|r| format!("{:.2}", r.whoops as f64 / r.iterations.max(1) as f64)),
        ),
        ("overlaps", cell(&|r| r.overlaps.to_string())),
        ("elapsed", cell(&|r| fmt_ms(r.elapsed_ns))),
        (
            "handoffs/s",
            cell(&|r| {
                if r.elapsed_ns == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", r.iterations as f64 * 1e9 / r.elapsed_ns as f64)
                }
            }),
        ),
        ("handoff p50", cell(&|r| latency_cell(r, |l| l.p50_ns))),
        ("handoff p99", cell(&|r| latency_cell(r, |l| l.p99_ns))),
    ];
    out.push_str(&format!("  {:<16}{:>14}{:>14}\n", "", "server", "client"));
    for (name, cells) in rows {
        out.push_str(&format!("  {name:<16}{:>14}{:>14}\n", cells[0], cells[1]));
    }
    if let Some(m) = outcome.memfd {
        let state = match (cfg.scenario, cfg.sync) {
            (Some(Scenario::Upgrade), _) => "scenario words at bytes 0..12",
            (_, SyncKind::Fcntl) => super::channel::Channel::for_mode(cfg.lock, cfg.share).name(),
            (_, SyncKind::Eventfd) => "counter in bytes 0..8 (woken through eventfds)",
            (_, SyncKind::Futex) => "futex words at bytes 48..56",
        };
        out.push_str(&format!(
            "  memfd dev {}:{} ino {}, state in the {state}\n",
            m.dev >> 20,
            m.dev & 0xfffff,
            m.ino,
        ));
    }
    let overlaps: u64 = reports.iter().flatten().map(|r| r.overlaps).sum();
    if cfg.scenario == Some(Scenario::Mixed) && overlaps > 0 {
        out.push_str("  overlaps > 0: flock and fcntl locks on one file do not see each other\n");
    } else if overlaps > 0 && cfg.sync != SyncKind::Fcntl {
        out.push_str(&format!(
            "  overlaps > 0: the {} handoff let both roles in at once (a bug)\n",
            super::sync::sync_name(cfg.sync)
        ));
    } else if overlaps > 0 {
        out.push_str(&format!(
            "  overlaps > 0: the {} lock did not exclude; both roles lock through one open file \
             description, which owns {} locks (try --share reopen)\n",
            lock_name(cfg.lock),
            lock_name(cfg.lock)
        ));
    }
    out
}

/// The versioned JSON document for this run (untraced: `capture` is null).
pub fn document(cfg: &RunConfig, outcome: &RunOutcome) -> Document {
    let mut doc = Document::new(kernel_release());
    doc.workload = Some(outcome.workload_report(cfg));
    for why in outcome.incomplete_reasons() {
        doc.mark_incomplete(why);
    }
    doc
}

pub fn write_document(path: &Path, doc: &Document) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("cannot write the report {}", path.display()))
}

pub fn main(args: RunArgs, _verbose: u8) -> anyhow::Result<ExitCode> {
    let cfg = RunConfig::from_args(&args)?;
    crate::progress::enable_run_progress();
    if cfg.scenario.is_some() {
        if args.html.html.is_some() {
            return Err(crate::error::hinted(
                "--html draws the turn loop's report; a scenario writes its own",
                "drop --html and use --json FILE",
            ));
        }
        return super::scenario::main(&args, &cfg);
    }
    if cfg.sync != SyncKind::Fcntl && !args.no_trace {
        if args.events.is_some() || args.perfetto.is_some() {
            return Err(crate::error::hinted(
                format!(
                    "--sync {} takes no file lock, so there are no lock events to write",
                    super::sync::sync_name(cfg.sync)
                ),
                "drop --events/--perfetto",
            ));
        }
        eprintln!(
            "lockrace: --sync {} takes no file lock; running untraced",
            super::sync::sync_name(cfg.sync)
        );
        crate::signals::install()?;
        let outcome = execute(&cfg)?;
        if outcome.roles().iter().any(|r| r.report.is_some()) {
            print!("{}", render_summary(&cfg, &outcome, false));
        }
        return finish(&args, &cfg, outcome, None);
    }
    let wants_trace = !args.no_trace;
    let root = nix::unistd::geteuid().is_root();
    if wants_trace && root {
        return super::traced::main(&args, &cfg);
    }
    if args.events.is_some() || args.perfetto.is_some() {
        return Err(crate::error::hinted(
            "--events and --perfetto need kernel tracing, which needs root",
            "run it with sudo (and without --no-trace)",
        ));
    }
    if wants_trace {
        eprintln!(
            "lockrace: not root, so the run is untraced (run it with sudo to see the kernel's side)"
        );
    }
    crate::signals::install()?;
    let outcome = execute(&cfg)?;
    if outcome.roles().iter().any(|r| r.report.is_some()) {
        print!("{}", render_summary(&cfg, &outcome, false));
    }
    finish(&args, &cfg, outcome, None)
}

/// Write the report (the untraced document when `doc` is None) and turn the outcome into the
/// exit code: 130/143 when interrupted, an error naming the failure, else success.
pub fn finish(
    args: &RunArgs,
    cfg: &RunConfig,
    outcome: RunOutcome,
    doc: Option<Document>,
) -> anyhow::Result<ExitCode> {
    if doc.is_none() {
        let untraced = document(cfg, &outcome);
        if let Some(path) = &args.json {
            write_document(path, &untraced)?;
        }
        crate::report::html::write_if_asked(&args.html, &untraced)?;
    }
    if let Some(sig) = outcome.interrupted {
        eprintln!(
            "lockrace: interrupted by {}; stopped the server (pid {}) and the client (pid {})",
            sig.as_str(),
            outcome.server.pid,
            outcome.client.pid
        );
        return Ok(ExitCode::from(crate::signals::exit_code(sig)));
    }
    if let Some(f) = outcome.failure {
        anyhow::bail!(f);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig {
            lock: LockKind::Ofd,
            share: Share::Same,
            sync: SyncKind::Fcntl,
            scenario: None,
            iterations: 100,
            stall_timeout: Duration::from_secs(10),
            exe: PathBuf::from("/proc/self/exe"),
            tmpdir_parent: std::env::temp_dir(),
        }
    }

    fn report(role: &str, whoops: u64, overlaps: u64) -> RoleReport {
        RoleReport {
            role: role.into(),
            pid: 7,
            iterations: 100,
            acquisitions: 100 + whoops,
            whoops,
            overlaps,
            elapsed_ns: 2_000_000,
            memfd_dev: 45,
            memfd_ino: 99,
            handoff_latency: None,
            upgrade: None,
        }
    }

    fn outcome(server: Option<RoleReport>, client: Option<RoleReport>) -> RunOutcome {
        let run = |role, report| RoleRun {
            role,
            pid: if role == Role::Server { 10 } else { 11 },
            exit: Some(ChildExit::Code(0)),
            report,
            acquisitions: vec![],
            stderr: String::new(),
        };
        RunOutcome {
            server: run(Role::Server, server),
            client: run(Role::Client, client),
            memfd: Some(MemfdId { dev: 45, ino: 99 }),
            interrupted: None,
            failure: None,
            started_ns: 1,
            ended_ns: 2,
        }
    }

    #[test]
    fn summary_is_side_by_side() {
        let o = outcome(
            Some(report("server", 412, 3)),
            Some(report("client", 380, 0)),
        );
        let s = render_summary(&cfg(), &o, false);
        assert!(s.starts_with("lockrace run: ofd lock, share same, 100 iterations, untraced\n"));
        let line = |name: &str| {
            s.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap()
                .split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("whoops/handoff"), ["4.12", "3.80"]);
        assert_eq!(line("whoops "), ["412", "380"]);
        assert_eq!(line("overlaps "), ["3", "0"]);
        assert_eq!(line("handoffs/s"), ["50000", "50000"]);
        assert_eq!(line("pid"), ["10", "11"]);
        assert!(s.contains("memfd dev 0:45 ino 99"), "{s}");
        assert!(s.contains("did not exclude"), "{s}");
    }

    #[test]
    fn a_missing_report_shows_dashes_and_no_overlap_note() {
        let o = outcome(Some(report("server", 1, 0)), None);
        let s = render_summary(&cfg(), &o, true);
        assert!(s.contains("traced\n"));
        let turns = s.lines().find(|l| l.contains("turns")).unwrap();
        assert!(turns.trim_end().ends_with('-'), "{turns}");
        assert!(!s.contains("did not exclude"));
    }

    #[test]
    fn document_carries_the_workload_and_why_it_is_incomplete() {
        let mut o = outcome(Some(report("server", 1, 0)), Some(report("client", 2, 0)));
        let doc = document(&cfg(), &o);
        assert!(doc.complete);
        let w = doc.workload.unwrap();
        assert_eq!((w.lock.as_str(), w.share.as_str()), ("ofd", "same"));
        assert_eq!(w.roles.len(), 2);
        assert_eq!(w.roles[0].role, "server");
        o.interrupted = Some(Signal::SIGTERM);
        o.failure = Some("the client (pid 11) was killed by SIGKILL".into());
        o.client.report = None;
        let doc = document(&cfg(), &o);
        assert!(!doc.complete);
        assert_eq!(
            doc.incomplete_reasons,
            [
                "run interrupted by SIGTERM",
                "the client (pid 11) was killed by SIGKILL"
            ]
        );
        assert_eq!(doc.workload.unwrap().roles.len(), 1);
        assert!(!o.is_complete());
        assert_eq!(o.child_pids(), [10, 11]);
    }

    #[test]
    fn failures_name_the_child_and_its_end() {
        assert_eq!(
            describe_failure(Role::Client, 12, ChildExit::Signal(9), "", Some(11)),
            "the client (pid 12) was killed by SIGKILL; stopped the server (pid 11)"
        );
        assert_eq!(
            describe_failure(
                Role::Server,
                11,
                ChildExit::Code(1),
                "lockrace: the datagram carried no file descriptor\n\n",
                None
            ),
            "the server (pid 11) exited with status 1: the datagram carried no file descriptor"
        );
        assert!(ChildExit::Code(0).success());
        assert!(!ChildExit::Signal(15).success());
        assert_eq!(ChildExit::Signal(15).describe(), "was killed by SIGTERM");
    }

    #[test]
    fn role_command_lines_carry_the_workload() {
        let a = role_args(
            &cfg(),
            Role::Client,
            Path::new("/t/sock"),
            Path::new("/t/c.acq"),
        );
        assert_eq!(
            a.join(" "),
            "client --socket /t/sock --lock ofd --share same --iterations 100 \
             --stall-timeout 10 --json --acquisition-log /t/c.acq"
        );
        // And clap accepts exactly that.
        let mut argv = vec!["lockrace".to_string()];
        argv.extend(a);
        assert!(<crate::cli::Cli as clap::Parser>::try_parse_from(argv).is_ok());
        let mut c = cfg();
        c.sync = SyncKind::Futex;
        let a = role_args(&c, Role::Server, Path::new("/s"), Path::new("/a"));
        assert!(
            a.join(" ").ends_with("--acquisition-log /a --sync futex"),
            "{a:?}"
        );
        c.sync = SyncKind::Fcntl;
        c.scenario = Some(Scenario::Upgrade);
        let a = role_args(&c, Role::Server, Path::new("/s"), Path::new("/a"));
        assert!(a.join(" ").ends_with("--scenario upgrade"), "{a:?}");
        let mut argv = vec!["lockrace".to_string()];
        argv.extend(a);
        assert!(<crate::cli::Cli as clap::Parser>::try_parse_from(argv).is_ok());
    }

    #[test]
    fn labels_and_latency_cells() {
        let mut c = cfg();
        assert_eq!(c.label(), "ofd lock, share same");
        c.sync = SyncKind::Eventfd;
        assert_eq!(c.label(), "eventfd sync");
        let o = outcome(Some(report("server", 0, 0)), Some(report("client", 0, 0)));
        assert_eq!(o.workload_report(&c).sync.as_deref(), Some("eventfd"));
        assert_eq!(o.workload_report(&c).lock, "none");
        c.sync = SyncKind::Fcntl;
        c.scenario = Some(Scenario::Mixed);
        c.lock = LockKind::Posix;
        assert_eq!(c.label(), "mixed scenario, flock vs posix");
        assert_eq!(fmt_latency(850), "850 ns");
        assert_eq!(fmt_latency(12_340), "12.3 us");
        assert_eq!(fmt_latency(4_560_000), "4.56 ms");
        let mut r = report("server", 0, 0);
        assert_eq!(latency_cell(&r, |l| l.p50_ns), "-");
        r.handoff_latency = Some(crate::report::model::HandoffLatency {
            samples: 1,
            p50_ns: Some(2_000),
            ..Default::default()
        });
        assert_eq!(latency_cell(&r, |l| l.p50_ns), "2.0 us");
    }
}
