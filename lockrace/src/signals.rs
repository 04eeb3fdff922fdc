//! SIGINT/SIGTERM handling shared by every long-running subcommand.
//!
//! [`install`] sets handlers (nix `sigaction`) that only record the signal number in a global
//! atomic; everything else polls [`interrupted`] and shuts down in its own way. The handlers are
//! installed WITHOUT `SA_RESTART`, so a thread blocked in a syscall (`F_SETLKW`, `flock`, `poll`,
//! `waitpid`, ...) that receives the signal returns `EINTR` and gets a chance to look at the flag.
//! Invariants: the handler is async-signal-safe (one atomic store); the first signal wins, so
//! the exit code reflects what stopped us; installing twice is harmless.
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, sigaction};

/// The first SIGINT/SIGTERM received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signo: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
}

/// The signals [`install`] handles.
pub fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Install the SIGINT/SIGTERM handlers and make sure the calling thread does not block them
/// (a parent may have spawned us with them blocked).
pub fn install() -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only performs an atomic compare-exchange, which is
        // async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("cannot install a handler for {}", sig.as_str()))?;
    }
    handled()
        .thread_swap_mask(SigmaskHow::SIG_UNBLOCK)
        .context("cannot unblock SIGINT/SIGTERM")?;
    Ok(())
}

/// True once SIGINT or SIGTERM has been received.
pub fn interrupted() -> bool {
    RECEIVED.load(Ordering::SeqCst) != 0
}

/// The first signal received, if any.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The conventional shell exit code for death by `sig`: 128 + signal number (130 for SIGINT,
/// 143 for SIGTERM).
pub fn exit_code(sig: Signal) -> u8 {
    u8::try_from(128 + sig as i32).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(Signal::SIGINT), 130);
        assert_eq!(exit_code(Signal::SIGTERM), 143);
    }

    #[test]
    fn handled_set_is_sigint_and_sigterm() {
        // install() is exercised by the integration tests (tests/integration/workload_faults.rs): installing
        // it here would make the unit-test binary ignore Ctrl-C.
        let set = handled();
        assert!(set.contains(Signal::SIGINT) && set.contains(Signal::SIGTERM));
        assert!(!set.contains(Signal::SIGKILL));
    }
}
