//! Stall detection for a role: a side thread that ends the process when the other side has made
//! no progress for the stall timeout.
//!
//! Turns strictly alternate, so a role completing a turn is proof that the other side completed
//! its previous one; the turn loop calls [`Watchdog::progress`] after each turn (one relaxed
//! atomic store, no syscall). The watchdog thread sleeps until the current deadline, so it wakes
//! about once per stall timeout and adds no noise to the measured handoff. It covers both ways a
//! dead or frozen peer shows up: spinning on whoops, and blocking forever in the lock call (a
//! stopped peer holding the lock). The thread runs with SIGINT/SIGTERM blocked, so those signals
//! interrupt the turn loop's blocking lock call instead.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::SigmaskHow;

use super::Role;
use crate::host::monotonic_ns;

/// Handle held by the turn loop.
pub struct Watchdog {
    last_progress_ns: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
}

/// The error a stalled role dies with.
pub fn stall_error(role: Role, stall: Duration) -> anyhow::Error {
    crate::error::hinted(
        format!(
            "the {} made no progress for {} s, giving up",
            role.other(),
            stall.as_secs()
        ),
        format!(
            "check that the {} is alive; raise --stall-timeout on a slow machine",
            role.other()
        ),
    )
}

/// Nanoseconds left before `last + stall` at `now` (0 once past).
pub fn remaining_ns(last_ns: u64, stall: Duration, now_ns: u64) -> u64 {
    let deadline = last_ns.saturating_add(u64::try_from(stall.as_nanos()).unwrap_or(u64::MAX));
    deadline.saturating_sub(now_ns)
}

impl Watchdog {
    /// Start watching; the clock starts now.
    pub fn start(role: Role, stall: Duration) -> anyhow::Result<Watchdog> {
        let last_progress_ns = Arc::new(AtomicU64::new(monotonic_ns()));
        let done = Arc::new(AtomicBool::new(false));
        let (last, fin) = (last_progress_ns.clone(), done.clone());
        // The new thread inherits the creator's mask: block SIGINT/SIGTERM around the spawn.
        let old = crate::signals::handled()
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .context("cannot block signals for the watchdog")?;
        let spawned = std::thread::Builder::new()
            .name("lockrace-watchdog".into())
            .spawn(move || {
                loop {
                    if fin.load(Ordering::SeqCst) {
                        return;
                    }
                    let left = remaining_ns(last.load(Ordering::Relaxed), stall, monotonic_ns());
                    if left == 0 {
                        if fin.load(Ordering::SeqCst) {
                            return;
                        }
                        let err = stall_error(role, stall);
                        eprintln!("lockrace: {}", crate::error::render_error(&err));
                        std::process::exit(1);
                    }
                    std::thread::sleep(Duration::from_nanos(left));
                }
            });
        old.thread_set_mask()
            .context("cannot restore the signal mask")?;
        spawned.context("cannot start the watchdog thread")?;
        Ok(Watchdog {
            last_progress_ns,
            done,
        })
    }

    /// The other side made progress (we just completed a turn) at `ts_ns`.
    pub fn progress(&self, ts_ns: u64) {
        self.last_progress_ns.store(ts_ns, Ordering::Relaxed);
    }

    /// The turn loop is over; the watchdog must not fire any more.
    pub fn stop(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_counts_down_to_zero() {
        let s = Duration::from_secs(2);
        assert_eq!(remaining_ns(100, s, 100), 2_000_000_000);
        assert_eq!(remaining_ns(100, s, 1_000_000_100), 1_000_000_000);
        assert_eq!(remaining_ns(100, s, 2_000_000_100), 0);
        assert_eq!(remaining_ns(100, s, u64::MAX), 0);
        assert_eq!(remaining_ns(u64::MAX, s, 0), u64::MAX);
    }

    #[test]
    fn stall_error_names_the_other_side() {
        let msg = crate::error::render_error(&stall_error(Role::Server, Duration::from_secs(3)));
        assert!(
            msg.starts_with("the client made no progress for 3 s"),
            "{msg}"
        );
        assert!(msg.contains("--stall-timeout"), "{msg}");
    }
}
