//! The memfd handoff workload, the seed's experiment: the child side of the server and client
//! roles, and [`execute::execute`], which runs both as children of this process. It owns the
//! experiment's vocabulary ([`LockKind`], [`Share`], [`SyncKind`], [`Scenario`]); the commands
//! that drive it (`run`, `server`, `client`, `compare-sync`) are in `cmd`, and tracing it is
//! `cmd::run::trace_pass`'s business (this floor knows nothing of captures).
//!
//! Protocol and encodings are documented in docs/WORKLOAD.md. Layout of this module:
//! `handshake` (socket path safety, sending and validating the memfd), `lock` (the four lock
//! flavours), `channel` (whose turn it is: shared cursor or counter bytes), `shared` (the mmap'd
//! "inside" counter that measures mutual exclusion), `watchdog` (stall detection), `role` (the
//! turn loop of both roles and the one constructor of their reports), `execute` (both roles as
//! children), `outcome` (what an execution produced, and its `workload` report object),
//! `progress` (`run`'s progress line, read from the memfd).
//!
//! The remedies and the seed's other claims: `sync` (`--sync eventfd|futex`, with `eventfd`
//! and `futex`), `latency` (handoff latency from stamps in the memfd), `scenario`
//! (`--scenario upgrade|mixed`, the roles' side), `evidence` (pure functions over kernel events
//! that prove what the scenarios claim).
//!
//! Invariants: timestamps are CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`
//! clock), so acquisition logs join with kernel events; a role's `iterations` counts turns it
//! completed, `acquisitions` = turns + whoops = lock grants it received.
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

pub mod channel;
pub mod eventfd;
pub mod evidence;
pub mod execute;
pub mod futex;
pub mod handshake;
pub mod latency;
pub mod lock;
pub mod outcome;
pub mod progress;
pub mod role;
pub mod scenario;
pub mod shared;
pub mod sync;
pub mod watchdog;

/// Lock flavour used by the workload.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// fcntl(F_SETLKW): POSIX record lock, owned by the process.
    Posix,
    /// fcntl(F_OFD_SETLKW): open-file-description lock (the seed's choice).
    Ofd,
    /// flock(LOCK_EX): BSD lock, owned by the open file description.
    Flock,
    /// lockf(F_LOCK): POSIX lock through the libc wrapper.
    Lockf,
}

/// How the two roles reach the memfd.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Share {
    /// Use the received descriptor as is: one open file description for both (the seed).
    Same,
    /// Re-open /proc/self/fd/N: each role gets its own open file description.
    Reopen,
}

/// How the two roles hand the turn to each other.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SyncKind {
    /// A file lock around the turn (`--lock`, `--share`): the seed's experiment.
    #[default]
    Fcntl,
    /// Two eventfds passed with the memfd: each side blocks on its own, then signals the other's.
    Eventfd,
    /// A turn word in the shared memfd with FUTEX_WAIT / FUTEX_WAKE (shared, not private).
    Futex,
}

/// A shape that checks one of the seed's other claims instead of the turn loop.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Both hold a shared lock; the server upgrades to exclusive, the client then asks for one.
    Upgrade,
    /// The server takes flock(), the client the `--lock` fcntl flavour, on the same memfd.
    Mixed,
}

/// Size of the memfd the client creates and the server insists on.
pub const MEMFD_SIZE: u64 = 64;

/// Which side of the handoff.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }

    pub fn other(self) -> Role {
        match self {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lock grant a role received, from its acquisition log.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquisition {
    /// CLOCK_MONOTONIC right after the lock call returned.
    pub ts_ns: u64,
    /// The other side had made no progress (not this role's turn).
    pub whoops: bool,
}

/// One line per grant: `<ts_ns> <t|w>` (`t`: it was the role's turn, `w`: whoops).
pub fn format_acquisition_log(log: &[Acquisition]) -> String {
    let mut out = String::with_capacity(log.len() * 20);
    for a in log {
        out.push_str(&a.ts_ns.to_string());
        out.push(' ');
        out.push(if a.whoops { 'w' } else { 't' });
        out.push('\n');
    }
    out
}

/// Parse what [`format_acquisition_log`] wrote. Blank lines are skipped; anything else that is
/// not `<ts_ns> <t|w>` is an error naming the line.
pub fn parse_acquisition_log(text: &str) -> anyhow::Result<Vec<Acquisition>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some(ts), Some(kind), None) => ts.parse::<u64>().ok().and_then(|ts_ns| match kind {
                "t" => Some(Acquisition {
                    ts_ns,
                    whoops: false,
                }),
                "w" => Some(Acquisition {
                    ts_ns,
                    whoops: true,
                }),
                _ => None,
            }),
            _ => None,
        };
        match parsed {
            Some(a) => out.push(a),
            None => anyhow::bail!(
                "acquisition log line {}: expected `<ts_ns> <t|w>`, got {line:?}",
                i + 1
            ),
        }
    }
    Ok(out)
}

/// The CLI spelling of a lock flavour.
pub fn lock_name(lock: LockKind) -> &'static str {
    match lock {
        LockKind::Posix => "posix",
        LockKind::Ofd => "ofd",
        LockKind::Flock => "flock",
        LockKind::Lockf => "lockf",
    }
}

/// The CLI spelling of a share mode.
pub fn share_name(share: Share) -> &'static str {
    match share {
        Share::Same => "same",
        Share::Reopen => "reopen",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquisition_log_round_trips() {
        let log = vec![
            Acquisition {
                ts_ns: 5,
                whoops: true,
            },
            Acquisition {
                ts_ns: 18_446_744_073_709_551_615,
                whoops: false,
            },
        ];
        let text = format_acquisition_log(&log);
        assert_eq!(text, "5 w\n18446744073709551615 t\n");
        assert_eq!(parse_acquisition_log(&text).unwrap(), log);
        assert_eq!(parse_acquisition_log("\n  \n").unwrap(), vec![]);
    }

    #[test]
    fn acquisition_log_errors_name_the_line() {
        for bad in ["12 x", "12", "abc t", "12 t extra", "-1 t"] {
            let text = format!("1 t\n{bad}\n");
            let err = parse_acquisition_log(&text).unwrap_err().to_string();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
    }

    #[test]
    fn names_match_the_cli_spelling() {
        use clap::ValueEnum;
        for l in LockKind::value_variants() {
            assert_eq!(l.to_possible_value().unwrap().get_name(), lock_name(*l));
        }
        for s in Share::value_variants() {
            assert_eq!(s.to_possible_value().unwrap().get_name(), share_name(*s));
        }
        assert_eq!(Role::Server.other(), Role::Client);
        assert_eq!(Role::Client.to_string(), "client");
    }
}
