//! The seed's two roles (the child side of `lockrace server` and `lockrace client`, whose flags
//! are `cmd::role`'s) and their shared turn loop.
//!
//! Each role completes `--iterations` turns. One pass of the loop: take the lock (blocking),
//! stamp CLOCK_MONOTONIC, enter the shared "inside" counter (an overlap if the other side is
//! inside), try its turn on the channel (a whoops if it is not its turn; whoops are retried),
//! leave, unlock. When it is its turn the role also records the handoff latency (now minus the
//! other role's stamp) and stamps its own slot before the channel write that hands the turn
//! over (`latency`). Invariants: acquisitions = turns + whoops; nothing but the lock calls, the
//! clock reads and the channel's 1-3 syscalls happens inside the loop (the acquisition log is
//! buffered and written at the end); SIGINT/SIGTERM end the role promptly with 130/143; a peer
//! that stops making progress ends it after the stall timeout (`watchdog`).
//!
//! `--sync eventfd|futex` replace the lock loop with `sync::sync_loop`, and `--scenario upgrade`
//! with `scenario::upgrade_loop`; `--scenario mixed` is this loop with flock on the server and
//! the `--lock` fcntl flavour on the client.
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use super::channel::Channel;
use super::handshake;
use super::latency::LatencyHist;
use super::shared::Inside;
use super::watchdog::Watchdog;
use super::{Acquisition, Role, lock, lock_name, share_name};
use super::{LockKind, Scenario, Share, SyncKind};
use crate::host::monotonic_ns;
use crate::report::model::{HandoffLatency, RoleReport, UpgradeCounts};

/// A role's validated settings.
#[derive(Debug, Clone)]
pub struct RoleConfig {
    pub role: Role,
    pub socket: PathBuf,
    /// The lock THIS role takes (with `--scenario mixed` the server's is flock).
    pub lock: LockKind,
    pub share: Share,
    pub sync: SyncKind,
    pub scenario: Option<Scenario>,
    pub iterations: u64,
    pub stall: Duration,
    pub json: bool,
    pub acquisition_log: Option<PathBuf>,
}

/// Check the combination of `--lock`, `--sync` and `--scenario`, and return the lock and share
/// mode `role` uses. Scenarios use private descriptions (`reopen`), so that every lock flavour
/// would exclude on its own; `mixed` gives the server flock.
pub fn effective_lock(
    role: Role,
    lock: LockKind,
    share: Share,
    sync: SyncKind,
    scenario: Option<Scenario>,
) -> anyhow::Result<(LockKind, Share)> {
    let Some(scenario) = scenario else {
        return Ok((lock, share));
    };
    if sync != SyncKind::Fcntl {
        return Err(crate::error::hinted(
            format!(
                "--scenario {} is about file locks and cannot use --sync {}",
                super::scenario::scenario_name(scenario),
                super::sync::sync_name(sync)
            ),
            "drop --sync (or pass --sync fcntl)",
        ));
    }
    match (scenario, lock) {
        (Scenario::Upgrade, LockKind::Lockf) => Err(crate::error::hinted(
            "lockf has no shared lock, so there is nothing to upgrade",
            "use --lock posix (lockf is a POSIX lock through fcntl), ofd or flock",
        )),
        (Scenario::Mixed, LockKind::Flock) => Err(crate::error::hinted(
            "--scenario mixed pairs the server's flock with an fcntl lock on the client",
            "pass --lock posix, ofd or lockf",
        )),
        (Scenario::Mixed, _) if role == Role::Server => Ok((LockKind::Flock, Share::Reopen)),
        _ => Ok((lock, Share::Reopen)),
    }
}

/// What the turn loop produced.
#[derive(Debug)]
pub struct LoopResult {
    pub report: RoleReport,
    pub log: Vec<Acquisition>,
}

/// What every loop counts (the turn loop, the remedies' `sync_loop`, the scenario's rounds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub turns: u64,
    /// Lock grants (turns + whoops; a scenario's rounds take two).
    pub acquisitions: u64,
    pub whoops: u64,
    pub overlaps: u64,
    pub elapsed_ns: u64,
}

impl Counts {
    /// A loop of turns, where every grant was a turn or a whoops.
    pub fn of_turns(turns: u64, whoops: u64, overlaps: u64, elapsed_ns: u64) -> Counts {
        Counts {
            turns,
            acquisitions: turns + whoops,
            whoops,
            overlaps,
            elapsed_ns,
        }
    }
}

impl LoopResult {
    /// A loop of turns (the turn loop, the remedies'), with the handoff latency it measured.
    pub fn of_turns(
        role: Role,
        memfd: (u64, u64),
        counts: Counts,
        latency: &LatencyHist,
        log: Vec<Acquisition>,
    ) -> LoopResult {
        LoopResult::new(role, memfd, counts, Some(latency.summary()), None, log)
    }

    /// The one way a role's report is made: this process, its memfd `(dev, ino)`, what its
    /// loop counted, the handoff latency it measured and (scenario) what it saw of upgrades.
    pub fn new(
        role: Role,
        (dev, ino): (u64, u64),
        c: Counts,
        handoff_latency: Option<HandoffLatency>,
        upgrade: Option<UpgradeCounts>,
        log: Vec<Acquisition>,
    ) -> LoopResult {
        LoopResult {
            report: RoleReport {
                role: role.as_str().to_string(),
                pid: std::process::id(),
                iterations: c.turns,
                acquisitions: c.acquisitions,
                whoops: c.whoops,
                overlaps: c.overlaps,
                elapsed_ns: c.elapsed_ns,
                memfd_dev: dev,
                memfd_ino: ino,
                handoff_latency,
                upgrade,
            },
            log,
        }
    }
}

/// Run this role: the server binds its socket and waits for the client's memfd, the client
/// creates and sends it; then the loop of its mode.
pub fn run(cfg: &RoleConfig) -> anyhow::Result<LoopResult> {
    match cfg.role {
        Role::Server => serve(cfg),
        Role::Client => connect(cfg),
    }
}

fn serve(cfg: &RoleConfig) -> anyhow::Result<LoopResult> {
    let (sock, bound) = handshake::bind_server(&cfg.socket)?;
    let got = handshake::receive(sock.as_fd(), &cfg.socket, cfg.stall)?;
    // Nobody else needs the socket: close it and remove its path right away.
    drop(sock);
    drop(bound);
    log::info!(
        "server: datagram {:?} with {} descriptor(s)",
        handshake::payload_text(&got.payload),
        got.fds.len()
    );
    let (fd, eventfds) = handshake::validate_for(got, handshake::Expect::for_sync(cfg.sync))
        .map_err(|r| r.into_error())?;
    let (dev, ino) = handshake::memfd_id(fd.as_fd())?;
    run_loop(cfg, fd, dev, ino, eventfds)
}

fn connect(cfg: &RoleConfig) -> anyhow::Result<LoopResult> {
    let memfd = handshake::create_memfd()?;
    let (dev, ino) = handshake::memfd_id(memfd.as_fd())?;
    let eventfds = match cfg.sync {
        // The server's eventfd, then the client's, after the memfd in the same datagram.
        SyncKind::Eventfd => vec![super::eventfd::create()?, super::eventfd::create()?],
        _ => Vec::new(),
    };
    let mut fds = vec![memfd.as_fd()];
    fds.extend(eventfds.iter().map(|f| f.as_fd()));
    handshake::send_fds(&cfg.socket, &fds, cfg.stall)?;
    run_loop(cfg, memfd, dev, ino, eventfds)
}

/// The loop this role's mode runs.
fn run_loop(
    cfg: &RoleConfig,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    eventfds: Vec<OwnedFd>,
) -> anyhow::Result<LoopResult> {
    match (cfg.scenario, cfg.sync) {
        (Some(Scenario::Upgrade), _) => {
            super::scenario::upgrade_loop(cfg, share_fd(fd, cfg.share)?, dev, ino)
        }
        (_, SyncKind::Fcntl) => turn_loop(cfg, share_fd(fd, cfg.share)?, dev, ino),
        _ => super::sync::sync_loop(cfg, fd, dev, ino, eventfds),
    }
}

/// `same`: keep the descriptor (one open file description for both roles); `reopen`: a
/// private description, and the shared one is closed before any lock is taken.
fn share_fd(fd: OwnedFd, share: Share) -> anyhow::Result<OwnedFd> {
    match share {
        Share::Same => Ok(fd),
        Share::Reopen => handshake::reopen(fd.as_fd()),
    }
}

fn is_eintr(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINTR)
}

/// The measured loop. Returns early (with an error naming the cause) when interrupted; the
/// caller turns that into the signal's exit code.
pub fn turn_loop(cfg: &RoleConfig, fd: OwnedFd, dev: u64, ino: u64) -> anyhow::Result<LoopResult> {
    let role = cfg.role;
    let kind = cfg.lock;
    let channel = Channel::for_mode(cfg.lock, cfg.share);
    let inside = Inside::map(fd.as_fd())?;
    let mut log: Vec<Acquisition> = if cfg.acquisition_log.is_some() {
        // Virtual reservation only: pages are touched as the log grows.
        Vec::with_capacity(
            usize::try_from(cfg.iterations.saturating_mul(32)).map_or(1 << 22, |n| n.min(1 << 22)),
        )
    } else {
        Vec::new()
    };
    let keep_log = cfg.acquisition_log.is_some();
    log::info!(
        "{role}: {} lock, share {}, state in the {}",
        lock_name(kind),
        share_name(cfg.share),
        channel.name()
    );
    let mut latency = LatencyHist::default();
    let my_stamp = inside.stamp(role);
    let their_stamp = inside.stamp(role.other());
    let watchdog = Watchdog::start(role, cfg.stall)?;
    let (mut turns, mut whoops, mut overlaps) = (0u64, 0u64, 0u64);
    let start = monotonic_ns();
    while turns < cfg.iterations {
        if crate::signals::interrupted() {
            anyhow::bail!("interrupted");
        }
        if let Err(e) = lock::lock(kind, fd.as_fd()) {
            if is_eintr(&e) {
                continue;
            }
            return Err(e).with_context(|| format!("cannot take the {} lock", lock_name(kind)));
        }
        let ts_ns = monotonic_ns();
        if inside.enter() {
            overlaps += 1;
        }
        let mine = channel.try_turn_then(role, fd.as_fd(), turns, || {
            latency.record_handoff(their_stamp.load(Ordering::Acquire), ts_ns);
            my_stamp.store(monotonic_ns(), Ordering::Release);
        });
        inside.leave();
        loop {
            match lock::unlock(kind, fd.as_fd()) {
                Err(e) if is_eintr(&e) => continue,
                r => break r,
            }
        }
        .with_context(|| format!("cannot release the {} lock", lock_name(kind)))?;
        let mine = mine.context("cannot use the memfd")?;
        if keep_log {
            log.push(Acquisition {
                ts_ns,
                whoops: !mine,
            });
        }
        if mine {
            turns += 1;
            watchdog.progress(ts_ns);
        } else {
            whoops += 1;
        }
    }
    let elapsed_ns = monotonic_ns().saturating_sub(start);
    watchdog.stop();
    let counts = Counts::of_turns(turns, whoops, overlaps, elapsed_ns);
    Ok(LoopResult::of_turns(
        role,
        (dev, ino),
        counts,
        &latency,
        log,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_check_their_lock_and_sync() {
        use LockKind::*;
        let ok = |role, lock, scenario| {
            effective_lock(role, lock, Share::Same, SyncKind::Fcntl, Some(scenario)).unwrap()
        };
        assert_eq!(
            ok(Role::Server, Posix, Scenario::Mixed),
            (Flock, Share::Reopen)
        );
        assert_eq!(
            ok(Role::Client, Posix, Scenario::Mixed),
            (Posix, Share::Reopen)
        );
        assert_eq!(
            ok(Role::Server, Flock, Scenario::Upgrade),
            (Flock, Share::Reopen)
        );
        assert_eq!(
            effective_lock(Role::Client, Ofd, Share::Same, SyncKind::Fcntl, None).unwrap(),
            (Ofd, Share::Same)
        );
        for (lock, sync, scenario, want) in [
            (
                Lockf,
                SyncKind::Fcntl,
                Scenario::Upgrade,
                "lockf has no shared lock",
            ),
            (
                Flock,
                SyncKind::Fcntl,
                Scenario::Mixed,
                "pairs the server's flock",
            ),
            (
                Posix,
                SyncKind::Futex,
                Scenario::Mixed,
                "cannot use --sync futex",
            ),
        ] {
            let err = effective_lock(Role::Server, lock, Share::Same, sync, Some(scenario));
            let msg = crate::error::render_error(&err.unwrap_err());
            assert!(msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn both_roles_hand_off_in_one_process_pair_of_threads() {
        // Two descriptions of one memfd, one per thread, flock (per-description) locks: real
        // exclusion between the threads, counter channel.
        let memfd = handshake::create_memfd().unwrap();
        let (dev, ino) = handshake::memfd_id(memfd.as_fd()).unwrap();
        let mk = |role| RoleConfig {
            role,
            socket: PathBuf::from("/nonexistent"),
            lock: LockKind::Flock,
            share: Share::Reopen,
            sync: SyncKind::Fcntl,
            scenario: None,
            iterations: 50,
            stall: Duration::from_secs(20),
            json: false,
            acquisition_log: Some(PathBuf::from("/nonexistent")),
        };
        let a = handshake::reopen(memfd.as_fd()).unwrap();
        let b = handshake::reopen(memfd.as_fd()).unwrap();
        let cfg_s = mk(Role::Server);
        let server = std::thread::spawn(move || turn_loop(&cfg_s, a, dev, ino).unwrap());
        let client = turn_loop(&mk(Role::Client), b, dev, ino).unwrap();
        let server = server.join().unwrap();
        for r in [&server, &client] {
            assert_eq!(r.report.iterations, 50);
            assert_eq!(r.report.overlaps, 0);
            assert_eq!(r.report.acquisitions, r.report.iterations + r.report.whoops);
            assert_eq!(r.log.len() as u64, r.report.acquisitions);
            assert_eq!(r.log.iter().filter(|a| !a.whoops).count(), 50);
            assert!(r.log.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
            // Every turn but the server's first measured a handoff.
            let lat = r.report.handoff_latency.as_ref().unwrap();
            let want = if r.report.role == "server" { 49 } else { 50 };
            assert_eq!(lat.samples, want);
        }
    }
}
