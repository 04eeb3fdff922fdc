//! `lockrace run --scenario upgrade|mixed`: the seed's other claims, each in a shape that makes
//! the kernel show its hand.
//!
//! - `upgrade` (`--lock flock|posix|ofd`, `--iterations` rounds): per round both roles take the
//!   SHARED lock; the server then upgrades to exclusive and, since the client still holds its
//!   shared lock, has to wait; once the server is seen asleep in that call (`/proc/PID/stat`
//!   state `S`), the client tries to upgrade its own shared lock WITHOUT waiting. If the
//!   server's pending upgrade already dropped its shared lock (flock), nothing conflicts: the
//!   client gets the exclusive lock at once, and the server's upgrade was "stolen". If the
//!   pending upgrade kept its read lock (fcntl converts in place), the try is refused (EAGAIN);
//!   the client then releases its shared lock and waits for the exclusive lock behind the
//!   server. The outcome does not depend on scheduling: every round shows the same thing. Both
//!   roles record what they saw (`RoleReport::upgrade`); traced, `evidence::upgrade_windows`
//!   shows it in the kernel events. The roles coordinate through futex words at bytes 0, 4, 8.
//! - `mixed`: the ordinary turn loop with flock on the server and the `--lock` fcntl flavour on
//!   the client (private descriptions): overlaps > 0, and traced, `evidence::independence`
//!   shows grants of both kinds interleaving with no request ever blocked.
//!
//! This is the role side (the child's loop); the command side (the traced run, the kernel
//! evidence, the scenario's own document) is `cmd::run::scenario`.
//!
//! Invariants: every wait is bounded (sliced futex waits checking signals, a dead peer and the
//! stall timeout; the watchdog as a backstop).
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use super::Scenario;
use super::role::{Counts, LoopResult, RoleConfig};
use super::shared::{Inside, SCENARIO_OFFSET};
use super::sync::{Peer, WaitCtx, publish};
use super::watchdog::Watchdog;
use super::{Acquisition, Role, lock, lock_name};
use crate::host::monotonic_ns;
use crate::report::model::UpgradeCounts;

/// The CLI spelling of a scenario.
pub fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Upgrade => "upgrade",
        Scenario::Mixed => "mixed",
    }
}

/// Rounds are numbered in u32 futex words (4 phases each).
pub const MAX_ROUNDS: u64 = (u32::MAX / 4) as u64;

/// The state letter of `/proc/PID/stat` (`R`, `S`, `D`, `Z`, ...): the third field, after the
/// parenthesised command name (which may itself contain `)` and spaces).
pub fn stat_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().next()?.chars().next()
}

/// Wait until process `pid`'s main thread sleeps (`S` or `D`): the server is blocked in its
/// upgrade call. Bounded by the stall timeout through `ctx`.
fn await_asleep(ctx: &mut WaitCtx<'_>, pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/stat");
    let mut last_check = monotonic_ns();
    loop {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        if matches!(stat_state(&stat), Some('S' | 'D')) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_micros(20));
        if monotonic_ns().saturating_sub(last_check) > super::sync::SLICE.as_nanos() as u64 {
            last_check = monotonic_ns();
            ctx.check()?;
        }
    }
}

fn retry_eintr(f: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                if crate::signals::interrupted() {
                    return Err(e);
                }
            }
            r => return r,
        }
    }
}

/// The role side of `--scenario upgrade`. `fd` is this role's private description.
pub fn upgrade_loop(
    cfg: &RoleConfig,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
) -> anyhow::Result<LoopResult> {
    let role = cfg.role;
    let kind = cfg.lock;
    if cfg.iterations > MAX_ROUNDS {
        return Err(crate::error::hinted(
            format!("--scenario upgrade runs at most {MAX_ROUNDS} rounds"),
            "lower --iterations",
        ));
    }
    let shared = Inside::map(fd.as_fd())?;
    shared
        .pid(role)
        .store(std::process::id(), Ordering::Release);
    let phase = shared.u32_at(SCENARIO_OFFSET);
    let upgraded = shared.u32_at(SCENARIO_OFFSET + 4);
    let client_ex = shared.u32_at(SCENARIO_OFFSET + 8);
    let mut ctx = WaitCtx {
        role,
        shared: &shared,
        peer: Peer::new(role.other()),
        stall: cfg.stall,
        last_progress_ns: monotonic_ns(),
        waiting_on: "the scenario's phase word",
    };
    let watchdog = Watchdog::start(role, cfg.stall)?;
    let keep_log = cfg.acquisition_log.is_some();
    let mut log: Vec<Acquisition> = Vec::new();
    let grant = |log: &mut Vec<Acquisition>| {
        let ts_ns = monotonic_ns();
        if keep_log {
            log.push(Acquisition {
                ts_ns,
                whoops: false,
            });
        }
        ts_ns
    };
    let what = lock_name(kind);
    let (mut overlaps, mut stolen, mut refused) = (0u64, 0u64, 0u64);
    let start = monotonic_ns();
    for k in 0..cfg.iterations as u32 {
        let base = k * 4;
        let round = k + 1;
        match role {
            Role::Server => {
                ctx.await_word(phase, |v| v == base)?;
                retry_eintr(|| lock::lock_shared(kind, fd.as_fd()))
                    .with_context(|| format!("cannot take the shared {what} lock"))?;
                grant(&mut log);
                publish(phase, base + 1)?;
                ctx.await_word(phase, |v| v == base + 2)?;
                publish(phase, base + 3)?;
                // The upgrade: the client holds a shared lock, so this waits.
                retry_eintr(|| lock::lock(kind, fd.as_fd()))
                    .with_context(|| format!("cannot upgrade the {what} lock"))?;
                grant(&mut log);
                if client_ex.load(Ordering::Acquire) == round {
                    stolen += 1;
                }
                publish(upgraded, round)?;
                if shared.enter() {
                    overlaps += 1;
                }
                shared.leave();
                retry_eintr(|| lock::unlock(kind, fd.as_fd()))
                    .with_context(|| format!("cannot release the {what} lock"))?;
            }
            Role::Client => {
                ctx.await_word(phase, |v| v == base + 1)?;
                retry_eintr(|| lock::lock_shared(kind, fd.as_fd()))
                    .with_context(|| format!("cannot take the shared {what} lock"))?;
                grant(&mut log);
                publish(phase, base + 2)?;
                ctx.await_word(phase, |v| v == base + 3)?;
                let server = shared.pid(Role::Server).load(Ordering::Acquire);
                await_asleep(&mut ctx, server)?;
                // Upgrade our own shared lock, without waiting, while the server's upgrade waits.
                let got = lock::try_lock(kind, fd.as_fd())
                    .with_context(|| format!("cannot try the {what} lock"))?;
                if !got {
                    // The server still holds a lock: release ours and queue behind its upgrade.
                    refused += 1;
                    retry_eintr(|| lock::unlock(kind, fd.as_fd()))
                        .with_context(|| format!("cannot release the shared {what} lock"))?;
                    retry_eintr(|| lock::lock(kind, fd.as_fd()))
                        .with_context(|| format!("cannot take the {what} lock"))?;
                }
                grant(&mut log);
                if upgraded.load(Ordering::Acquire) != round {
                    stolen += 1;
                }
                publish(client_ex, round)?;
                if shared.enter() {
                    overlaps += 1;
                }
                shared.leave();
                retry_eintr(|| lock::unlock(kind, fd.as_fd()))
                    .with_context(|| format!("cannot release the {what} lock"))?;
                ctx.await_word(upgraded, |v| v == round)?;
                publish(phase, base + 4)?;
            }
        }
        let now = monotonic_ns();
        ctx.last_progress_ns = now;
        watchdog.progress(now);
    }
    let elapsed_ns = monotonic_ns().saturating_sub(start);
    watchdog.stop();
    let grants = 2 * cfg.iterations;
    let counts = Counts {
        turns: cfg.iterations,
        acquisitions: grants,
        whoops: 0,
        overlaps,
        elapsed_ns,
    };
    let upgrades = UpgradeCounts {
        rounds: cfg.iterations,
        stolen,
        refused,
    };
    Ok(LoopResult::new(
        role,
        (dev, ino),
        counts,
        None,
        Some(upgrades),
        log,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_state_survives_odd_command_names() {
        assert_eq!(stat_state("123 (lockrace) S 1 2 3"), Some('S'));
        assert_eq!(stat_state("123 (a) b) R 1 2"), Some('R'));
        assert_eq!(stat_state("123 (x y) D 0"), Some('D'));
        assert_eq!(stat_state(""), None);
        assert_eq!(stat_state("123 (x)"), None);
        let me = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(stat_state(&me), Some('R'));
    }

    #[test]
    fn names_match_the_cli_spelling() {
        use clap::ValueEnum;
        for s in Scenario::value_variants() {
            assert_eq!(s.to_possible_value().unwrap().get_name(), scenario_name(*s));
        }
    }
}
