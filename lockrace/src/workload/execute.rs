//! One execution of the experiment: both roles as child processes ([`execute`] a [`Workload`]).
//!
//! [`execute`] is pure orchestration, meant to be wrapped by kernel tracing (capture attaches
//! before it and filters on this process's tgid and the children it forks): make a private 0700
//! temp dir (mkdtemp), start `server` then `client` by re-executing this binary
//! (`/proc/self/exe`) with `--json` and `--acquisition-log` into that dir, watch both
//! (pidfds + `ppoll`, so the parent sleeps until a child ends or a signal arrives and adds no
//! scheduling noise), then read their reports and logs into a [`RunOutcome`]. Invariants: when
//! `execute` returns, both children have been reaped and the temp dir is gone; a child that
//! fails gets the other one killed at once (no waiting for its stall timeout); SIGINT/SIGTERM
//! kill both and come back as `RunOutcome::interrupted`.
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{SigmaskHow, Signal};

use super::outcome::{ChildExit, MemfdId, RoleRun, RunOutcome};
use super::{Acquisition, Role, lock_name, parse_acquisition_log, share_name};
use super::{LockKind, Scenario, Share, SyncKind};
use crate::host::monotonic_ns;
use crate::report::model::RoleReport;

/// One execution of the experiment, checked: what [`execute`] runs (`lockrace run` makes one
/// from its flags, `compare-sync` one per primitive).
#[derive(Debug, Clone)]
pub struct Workload {
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
    /// Show the progress line on a terminal (`lockrace run`; `compare-sync` shows its own).
    pub progress: bool,
}

impl Workload {
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
pub fn role_args(cfg: &Workload, role: Role, socket: &Path, acq: &Path) -> Vec<String> {
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

fn spawn_role(cfg: &Workload, role: Role, dir: &Path, socket: &Path) -> anyhow::Result<Child> {
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
pub fn execute(cfg: &Workload) -> anyhow::Result<RunOutcome> {
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
    let progress = super::progress::run_ticker(cfg, pids);
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
