//! The remedies: `--sync eventfd` and `--sync futex`, a strict alternation of turns with no file
//! lock at all.
//!
//! - eventfd: the client creates two eventfds (the server's, then its own) and sends them with
//!   the memfd in one datagram. A role waits on ITS eventfd (`poll` with a bounded timeout, then
//!   a blocking `read`), and hands the turn over by writing 1 to the OTHER's. Whose turn it is
//!   lives in a u64 counter at bytes 0..8 of the memfd mapping (even: server, odd: client), so a
//!   role that wakes can check that it really is its turn.
//! - futex: handoff number `h` (1, 2, 3, ...; odd: the client's turn, even: the server's) is
//!   published as a u32 in one of two turn words, bytes 48..52 and 52..56, chosen by
//!   [`futex_word_index`]`(h)`. The role that wants `h` sleeps with `FUTEX_WAIT` (a shared
//!   futex: the two roles are different processes) while that word does not hold `h`; the other
//!   hands over with a store of `h` and `FUTEX_WAKE`. Two words, because a waker preempted
//!   between its store and its `FUTEX_WAKE` would otherwise wake the other role late, while that
//!   role already waits for its NEXT turn on the same word (a stale wakeup); consecutive turns of
//!   a role alternate words, and a waker cannot get two handoffs ahead. `EAGAIN` (the word changed
//!   before the kernel looked) and genuinely spurious wakeups just re-check the word.
//!
//! Invariants: a whoops here is a role that woke (eventfd readable, FUTEX_WAIT returned 0) and
//! found it was not its turn: with a correct handoff it is always 0. Overlaps use the same
//! "inside" counter as the lock loop. Every wait is sliced (100 ms), and each slice that ends
//! without the turn checks for a signal, a dead peer (its pid is in the mapping; a pidfd tells
//! when it has exited) and the stall timeout, so a role never hangs on a dead peer; the
//! `watchdog` stays as a backstop. Each role stamps its slot before handing over, for the
//! handoff latency (`latency`).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;

use super::SyncKind;
use super::channel::counter_says_my_turn;
use super::latency::LatencyHist;
use super::role::{Counts, LoopResult, RoleConfig};
use super::shared::{EVENTFD_TURN_OFFSET, FUTEX_OFFSET, Inside};
use super::watchdog::{Watchdog, stall_error};
use super::{Acquisition, Role, eventfd, futex};
use crate::host::monotonic_ns;

/// How long one bounded wait lasts before the role checks signals, its peer and the stall.
pub const SLICE: Duration = Duration::from_millis(100);

/// The CLI spelling of a sync mode.
pub fn sync_name(sync: SyncKind) -> &'static str {
    match sync {
        SyncKind::Fcntl => "fcntl",
        SyncKind::Eventfd => "eventfd",
        SyncKind::Futex => "futex",
    }
}

/// The other role, as seen through its pid in the shared mapping.
pub struct Peer {
    role: Role,
    pid: u32,
    pidfd: Option<OwnedFd>,
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

fn exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut p = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
    r > 0 && p[0].revents != 0
}

impl Peer {
    /// Watch `role` (the other side).
    pub fn new(role: Role) -> Peer {
        Peer {
            role,
            pid: 0,
            pidfd: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's pid when it is known to have exited (a zombie counts: it will never move).
    /// None while it lives or while its pid is not in the mapping yet.
    pub fn gone(&mut self, shared: &Inside) -> Option<u32> {
        if self.pid == 0 {
            let pid = shared.pid(self.role).load(Ordering::Acquire);
            if pid == 0 {
                return None;
            }
            self.pid = pid;
            match pidfd_open(pid) {
                Ok(fd) => self.pidfd = Some(fd),
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Some(pid),
                Err(_) => {} // no pidfds: fall back to kill(pid, 0)
            }
        }
        let dead = match &self.pidfd {
            Some(fd) => exited(fd.as_fd()),
            None => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), None)
                    == Err(nix::errno::Errno::ESRCH)
            }
        };
        dead.then_some(self.pid)
    }
}

/// The error of a role whose peer exited while it waited.
pub fn peer_gone_error(role: Role, pid: u32, waiting_on: &str) -> anyhow::Error {
    crate::error::hinted(
        format!(
            "the {} (pid {pid}) exited while the {role} waited on {waiting_on}; giving up",
            role.other()
        ),
        "a role cannot get the turn back from a dead peer; start both sides again",
    )
}

/// What a bounded wait checks each time a slice ends without the turn.
pub struct WaitCtx<'a> {
    pub role: Role,
    pub shared: &'a Inside,
    pub peer: Peer,
    pub stall: Duration,
    /// CLOCK_MONOTONIC of the last turn the role completed (or of the start).
    pub last_progress_ns: u64,
    /// "its eventfd", "the futex turn word", ...: for the error message.
    pub waiting_on: &'static str,
}

impl WaitCtx<'_> {
    /// Err when the role must stop waiting: a signal, a dead peer, or the stall timeout.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if crate::signals::interrupted() {
            anyhow::bail!("interrupted");
        }
        if let Some(pid) = self.peer.gone(self.shared) {
            return Err(peer_gone_error(self.role, pid, self.waiting_on));
        }
        let left = super::watchdog::remaining_ns(self.last_progress_ns, self.stall, monotonic_ns());
        if left == 0 {
            return Err(stall_error(self.role, self.stall));
        }
        Ok(())
    }

    /// Sleep (sliced) until `word` satisfies `done`. Returns the value that did.
    pub fn await_word(
        &mut self,
        word: &AtomicU32,
        done: impl Fn(u32) -> bool,
    ) -> anyhow::Result<u32> {
        loop {
            let v = word.load(Ordering::Acquire);
            if done(v) {
                return Ok(v);
            }
            match futex::wait(word, v, SLICE).context("FUTEX_WAIT failed")? {
                futex::Wait::Woken | futex::Wait::Changed => {}
                futex::Wait::TimedOut | futex::Wait::Interrupted => self.check()?,
            }
        }
    }
}

/// Store `v` in `word` and wake its waiters.
pub fn publish(word: &AtomicU32, v: u32) -> anyhow::Result<()> {
    word.store(v, Ordering::Release);
    futex::wake(word, i32::MAX).context("FUTEX_WAKE failed")?;
    Ok(())
}

/// Whoops and the acquisition log, as the lock loop keeps them.
struct Tally {
    whoops: u64,
    keep_log: bool,
    log: Vec<Acquisition>,
}

impl Tally {
    fn push(&mut self, ts_ns: u64, whoops: bool) {
        if whoops {
            self.whoops += 1;
        }
        if self.keep_log {
            self.log.push(Acquisition { ts_ns, whoops });
        }
    }
}

/// How the turn reaches this role.
enum Signal {
    Eventfd { mine: OwnedFd, theirs: OwnedFd },
    Futex,
}

/// Wait for this role's eventfd until the counter says it is its turn. Returns (seen, h).
fn eventfd_turn(
    ctx: &mut WaitCtx<'_>,
    mine: BorrowedFd<'_>,
    first: bool,
    tally: &mut Tally,
) -> anyhow::Result<(u64, u64)> {
    let role = ctx.role;
    let counter = ctx.shared.u64_at(EVENTFD_TURN_OFFSET);
    if first {
        let h = counter.load(Ordering::Acquire);
        if counter_says_my_turn(role, h) {
            return Ok((monotonic_ns(), h));
        }
    }
    loop {
        if !eventfd::wait_readable(mine, SLICE).context("cannot wait on the eventfd")? {
            ctx.check()?;
            continue;
        }
        if eventfd::read(mine)
            .context("cannot read the eventfd")?
            .is_none()
        {
            ctx.check()?;
            continue;
        }
        let seen = monotonic_ns();
        let h = counter.load(Ordering::Acquire);
        if counter_says_my_turn(role, h) {
            return Ok((seen, h));
        }
        tally.push(seen, true);
    }
}

/// Which of the two futex turn words (0: bytes 48..52, 1: bytes 52..56) carries handoff `h`.
/// Consecutive handoffs to one role (h, h + 2) use different words.
pub fn futex_word_index(h: u64) -> usize {
    ((h / 2) % 2) as usize
}

fn futex_word(shared: &Inside, h: u64) -> &AtomicU32 {
    shared.u32_at(FUTEX_OFFSET + 4 * futex_word_index(h))
}

/// Sleep until handoff `want` is published (0: the server's first turn, nothing to wait for).
/// Returns when the role saw it.
fn futex_turn(ctx: &mut WaitCtx<'_>, want: u64, tally: &mut Tally) -> anyhow::Result<u64> {
    if want == 0 {
        return Ok(monotonic_ns());
    }
    let word = futex_word(ctx.shared, want);
    let want32 = want as u32;
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want32 {
            return Ok(monotonic_ns());
        }
        match futex::wait(word, v, SLICE).context("FUTEX_WAIT failed")? {
            futex::Wait::Woken => {
                let seen = monotonic_ns();
                if word.load(Ordering::Acquire) == want32 {
                    return Ok(seen);
                }
                // Woken, and still not our turn: a spurious wakeup.
                tally.push(seen, true);
            }
            futex::Wait::Changed => {}
            futex::Wait::TimedOut | futex::Wait::Interrupted => ctx.check()?,
        }
    }
}

/// The `--sync eventfd|futex` loop. `eventfds` are the server's and the client's eventfd (in
/// that order) for eventfd, empty for futex.
pub fn sync_loop(
    cfg: &RoleConfig,
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    eventfds: Vec<OwnedFd>,
) -> anyhow::Result<LoopResult> {
    let role = cfg.role;
    let signal = match cfg.sync {
        SyncKind::Eventfd => {
            let [server, client]: [OwnedFd; 2] = eventfds
                .try_into()
                .map_err(|_| anyhow::anyhow!("--sync eventfd needs exactly two eventfds"))?;
            match role {
                Role::Server => Signal::Eventfd {
                    mine: server,
                    theirs: client,
                },
                Role::Client => Signal::Eventfd {
                    mine: client,
                    theirs: server,
                },
            }
        }
        SyncKind::Futex => Signal::Futex,
        SyncKind::Fcntl => anyhow::bail!("the sync loop needs --sync eventfd or futex"),
    };
    let shared = Inside::map(fd.as_fd())?;
    shared
        .pid(role)
        .store(std::process::id(), Ordering::Release);
    log::info!("{role}: {} sync", sync_name(cfg.sync));
    let mut ctx = WaitCtx {
        role,
        shared: &shared,
        peer: Peer::new(role.other()),
        stall: cfg.stall,
        last_progress_ns: monotonic_ns(),
        waiting_on: match signal {
            Signal::Eventfd { .. } => "its eventfd",
            Signal::Futex => "the futex turn words",
        },
    };
    let keep_log = cfg.acquisition_log.is_some();
    let mut tally = Tally {
        whoops: 0,
        keep_log,
        log: if keep_log {
            Vec::with_capacity(usize::try_from(cfg.iterations).map_or(1 << 22, |n| n.min(1 << 22)))
        } else {
            Vec::new()
        },
    };
    let mut latency = LatencyHist::default();
    let my_stamp = shared.stamp(role);
    let their_stamp = shared.stamp(role.other());
    let watchdog = Watchdog::start(role, cfg.stall)?;
    let (mut turns, mut overlaps) = (0u64, 0u64);
    let start = monotonic_ns();
    ctx.last_progress_ns = start;
    while turns < cfg.iterations {
        if crate::signals::interrupted() {
            anyhow::bail!("interrupted");
        }
        let first = role == Role::Server && turns == 0;
        let (seen, next) = match &signal {
            Signal::Eventfd { mine, .. } => {
                let (seen, h) = eventfd_turn(&mut ctx, mine.as_fd(), first, &mut tally)?;
                (seen, h.wrapping_add(1))
            }
            Signal::Futex => {
                // The server's turn t is handoff 2t, the client's 2t + 1.
                let want = 2 * turns + u64::from(role == Role::Client);
                (futex_turn(&mut ctx, want, &mut tally)?, want + 1)
            }
        };
        if shared.enter() {
            overlaps += 1;
        }
        latency.record_handoff(their_stamp.load(Ordering::Acquire), seen);
        tally.push(seen, false);
        turns += 1;
        shared.leave();
        my_stamp.store(monotonic_ns(), Ordering::Release);
        match &signal {
            Signal::Eventfd { theirs, .. } => {
                shared
                    .u64_at(EVENTFD_TURN_OFFSET)
                    .store(next, Ordering::Release);
                eventfd::signal(theirs.as_fd()).context("cannot signal the other eventfd")?;
            }
            Signal::Futex => {
                let word = futex_word(&shared, next);
                word.store(next as u32, Ordering::Release);
                futex::wake(word, 1).context("FUTEX_WAKE failed")?;
            }
        }
        ctx.last_progress_ns = seen;
        watchdog.progress(seen);
    }
    let elapsed_ns = monotonic_ns().saturating_sub(start);
    watchdog.stop();
    let counts = Counts::of_turns(turns, tally.whoops, overlaps, elapsed_ns);
    Ok(LoopResult::of_turns(
        role,
        (dev, ino),
        counts,
        &latency,
        tally.log,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::handshake;
    use crate::workload::{LockKind, Share};
    use std::path::PathBuf;

    fn cfg(role: Role, sync: SyncKind, iterations: u64) -> RoleConfig {
        RoleConfig {
            role,
            socket: PathBuf::from("/nonexistent"),
            lock: LockKind::Ofd,
            share: Share::Same,
            sync,
            scenario: None,
            iterations,
            stall: Duration::from_secs(20),
            json: false,
            acquisition_log: Some(PathBuf::from("/nonexistent")),
        }
    }

    fn pair(sync: SyncKind, iterations: u64) -> [LoopResult; 2] {
        let memfd = handshake::create_memfd().unwrap();
        let (dev, ino) = handshake::memfd_id(memfd.as_fd()).unwrap();
        let (s_fd, c_fd) = (
            memfd.as_fd().try_clone_to_owned().unwrap(),
            memfd.as_fd().try_clone_to_owned().unwrap(),
        );
        let (s_ev, c_ev) = if sync == SyncKind::Eventfd {
            let (a, b) = (eventfd::create().unwrap(), eventfd::create().unwrap());
            let dup = |f: &OwnedFd| f.as_fd().try_clone_to_owned().unwrap();
            (vec![dup(&a), dup(&b)], vec![a, b])
        } else {
            (vec![], vec![])
        };
        let cs = cfg(Role::Server, sync, iterations);
        let server = std::thread::spawn(move || sync_loop(&cs, s_fd, dev, ino, s_ev).unwrap());
        let client = sync_loop(&cfg(Role::Client, sync, iterations), c_fd, dev, ino, c_ev).unwrap();
        [server.join().unwrap(), client]
    }

    #[test]
    fn eventfd_and_futex_alternate_strictly_between_two_threads() {
        for sync in [SyncKind::Eventfd, SyncKind::Futex] {
            for r in pair(sync, 2000) {
                let rep = &r.report;
                assert_eq!(rep.iterations, 2000, "{sync:?}");
                assert_eq!(rep.whoops, 0, "{sync:?} {}", rep.role);
                assert_eq!(rep.overlaps, 0, "{sync:?} {}", rep.role);
                assert_eq!(r.log.len(), 2000);
                let lat = rep.handoff_latency.as_ref().unwrap();
                // Every turn but the server's first has a stamp from the other side.
                let want = if rep.role == "server" { 1999 } else { 2000 };
                assert_eq!(lat.samples, want, "{sync:?} {}", rep.role);
                assert!(lat.p50_ns.unwrap() <= lat.p99_ns.unwrap());
            }
        }
    }

    #[test]
    fn a_wait_gives_up_on_the_stall_timeout() {
        // The whole role is not run here: its watchdog would end the test process.
        let memfd = handshake::create_memfd().unwrap();
        let shared = Inside::map(memfd.as_fd()).unwrap();
        let mut ctx = WaitCtx {
            role: Role::Client,
            shared: &shared,
            peer: Peer::new(Role::Server),
            stall: Duration::from_secs(1),
            last_progress_ns: monotonic_ns(),
            waiting_on: "the futex turn words",
        };
        let t0 = std::time::Instant::now();
        let word = shared.u32_at(FUTEX_OFFSET);
        let err = ctx.await_word(word, |v| v == 1).unwrap_err();
        let msg = crate::error::render_error(&err);
        assert!(msg.contains("the server made no progress for 1 s"), "{msg}");
        assert!(t0.elapsed() < Duration::from_secs(3));
        // A word that already holds the value needs no wait.
        word.store(1, Ordering::SeqCst);
        assert_eq!(ctx.await_word(word, |v| v == 1).unwrap(), 1);
    }

    #[test]
    fn consecutive_turns_of_a_role_use_different_futex_words() {
        for h in 1..1000u64 {
            assert_ne!(futex_word_index(h), futex_word_index(h + 2), "{h}");
        }
        assert_eq!(
            (1..=6).map(futex_word_index).collect::<Vec<_>>(),
            [0, 1, 1, 0, 0, 1]
        );
    }

    #[test]
    fn a_late_wake_for_an_old_turn_is_not_a_whoops() {
        // The server published handoff 1 but its FUTEX_WAKE comes only after the client took
        // turn 1, handed over 2, and went to wait for 3: that wake hits the other word.
        let memfd = handshake::create_memfd().unwrap();
        let shared = Inside::map(memfd.as_fd()).unwrap();
        futex_word(&shared, 1).store(1, Ordering::SeqCst);
        futex_word(&shared, 2).store(2, Ordering::SeqCst);
        let mut ctx = WaitCtx {
            role: Role::Client,
            shared: &shared,
            peer: Peer::new(Role::Server),
            stall: Duration::from_secs(20),
            last_progress_ns: monotonic_ns(),
            waiting_on: "the futex turn words",
        };
        let mut tally = Tally {
            whoops: 0,
            keep_log: false,
            log: vec![],
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                // Its own mapping, as the other process would have.
                let theirs = Inside::map(memfd.as_fd()).unwrap();
                std::thread::sleep(Duration::from_millis(30));
                futex::wake(futex_word(&theirs, 1), 1).unwrap(); // the late wake
                std::thread::sleep(Duration::from_millis(30));
                futex_word(&theirs, 3).store(3, Ordering::SeqCst);
                futex::wake(futex_word(&theirs, 3), 1).unwrap();
            });
            futex_turn(&mut ctx, 3, &mut tally).unwrap();
        });
        assert_eq!(tally.whoops, 0);
    }

    #[test]
    fn a_dead_peer_is_noticed_through_its_pid() {
        let memfd = handshake::create_memfd().unwrap();
        let shared = Inside::map(memfd.as_fd()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let mut peer = Peer::new(Role::Server);
        assert_eq!(peer.gone(&shared), None, "no pid yet: unknown, not gone");
        shared.pid(Role::Server).store(pid, Ordering::SeqCst);
        child.wait().unwrap();
        assert_eq!(peer.gone(&shared), Some(pid));
        let mut me = Peer::new(Role::Client);
        shared
            .pid(Role::Client)
            .store(std::process::id(), Ordering::SeqCst);
        assert_eq!(me.gone(&shared), None);
        let msg = crate::error::render_error(&peer_gone_error(Role::Client, pid, "its eventfd"));
        assert!(
            msg.starts_with(&format!(
                "the server (pid {pid}) exited while the client waited on its eventfd"
            )),
            "{msg}"
        );
    }
}
