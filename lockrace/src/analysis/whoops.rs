//! Whoops correlation for `lockrace run`: each acquisition a role logged is matched with the
//! lock grant the kernel gave it, and each whoops acquisition gets the cause the kernel state
//! showed at that grant.
//!
//! Invariants: the k-th grant a role receives on the memfd's inode is its k-th acquisition; when
//! the counts differ (dropped events) the matching falls back to timestamps and says so in
//! `mismatches`, never panics; `explained <= total`, and `explained == total` when every whoops
//! acquisition was matched with a traced grant.
use serde::{Deserialize, Serialize};

/// One acquisition as a role logged it (CLOCK_MONOTONIC ns right after the lock call returned).
/// The workload's own type converts into this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquisition {
    pub ts_ns: u64,
    pub whoops: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleInput {
    pub name: String,
    pub tgid: u32,
    pub acquisitions: Vec<Acquisition>,
}

/// What `run` knows: the memfd's inode and the roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoopsInput {
    pub dev: u32,
    pub ino: u64,
    pub roles: Vec<RoleInput>,
}

/// Why a role got the lock again while the other side had made no progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WhoopsCause {
    /// The other side was waiting for the lock (blocked, or woken but not yet retried) and the
    /// releaser took it back first.
    SelfBarge,
    /// The other side was not in a lock request (running its own code, or preempted):
    /// scheduling, not lock fairness.
    PeerNotWaiting,
    /// Both sides share one lock owner: the lock does not exclude them at all.
    NoExclusion,
}

impl WhoopsCause {
    pub fn code(self) -> &'static str {
        match self {
            WhoopsCause::SelfBarge => "self_barge",
            WhoopsCause::PeerNotWaiting => "peer_not_waiting",
            WhoopsCause::NoExclusion => "no_exclusion",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CauseCounts {
    pub self_barge: u64,
    pub peer_not_waiting: u64,
    pub no_exclusion: u64,
}

impl CauseCounts {
    pub fn add(&mut self, c: WhoopsCause) {
        match c {
            WhoopsCause::SelfBarge => self.self_barge += 1,
            WhoopsCause::PeerNotWaiting => self.peer_not_waiting += 1,
            WhoopsCause::NoExclusion => self.no_exclusion += 1,
        }
    }
    pub fn total(&self) -> u64 {
        self.self_barge + self.peer_not_waiting + self.no_exclusion
    }
}

/// What the other side was doing when a role was granted the lock (the evidence behind the
/// cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Not inside a lock request on the memfd (its own code, or preempted there).
    NotInRequest,
    /// Inside a lock syscall that had not reached the lock code (or not blocked) yet.
    InRequestNotBlocked,
    /// Blocked, not woken.
    Blocked,
    /// Woken, not yet switched in.
    WokenNotRunning,
    /// Woken and running, not yet back in the lock code.
    RunningNotRetried,
    /// Locks with the same owner: never excluded.
    SharedOwner,
}

impl PeerState {
    /// Which state wins when the other side has several tasks.
    pub fn rank(self) -> u8 {
        match self {
            PeerState::NotInRequest => 0,
            PeerState::InRequestNotBlocked => 1,
            PeerState::RunningNotRetried => 2,
            PeerState::Blocked => 3,
            PeerState::WokenNotRunning => 4,
            PeerState::SharedOwner => 5,
        }
    }
    pub fn cause(self) -> WhoopsCause {
        match self {
            PeerState::NotInRequest | PeerState::InRequestNotBlocked => WhoopsCause::PeerNotWaiting,
            PeerState::Blocked | PeerState::WokenNotRunning | PeerState::RunningNotRetried => {
                WhoopsCause::SelfBarge
            }
            PeerState::SharedOwner => WhoopsCause::NoExclusion,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStateCounts {
    pub not_in_request: u64,
    pub in_request_not_blocked: u64,
    pub blocked: u64,
    pub woken_not_running: u64,
    pub running_not_retried: u64,
    pub shared_owner: u64,
}

impl PeerStateCounts {
    pub fn add(&mut self, s: PeerState) {
        match s {
            PeerState::NotInRequest => self.not_in_request += 1,
            PeerState::InRequestNotBlocked => self.in_request_not_blocked += 1,
            PeerState::Blocked => self.blocked += 1,
            PeerState::WokenNotRunning => self.woken_not_running += 1,
            PeerState::RunningNotRetried => self.running_not_retried += 1,
            PeerState::SharedOwner => self.shared_owner += 1,
        }
    }
}

/// A grant a role received on the memfd, with the cause computed at that instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantNote {
    pub ts_ns: u64,
    pub cause: WhoopsCause,
    pub peer: PeerState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleWhoops {
    pub name: String,
    pub tgid: u32,
    pub acquisitions: u64,
    pub grants: u64,
    pub whoops: u64,
    pub explained: u64,
    pub by_cause: CauseCounts,
}

/// One explained whoops, for the report's examples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoopsExample {
    pub role: String,
    /// 0-based acquisition index.
    pub index: u64,
    pub acquisition_ts: u64,
    pub grant_ts: u64,
    pub cause: WhoopsCause,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WhoopsResult {
    pub total: u64,
    pub explained: u64,
    pub by_cause: CauseCounts,
    /// What the other side was doing at the explained whoops grants.
    pub by_peer_state: PeerStateCounts,
    pub roles: Vec<RoleWhoops>,
    /// Problems matching acquisitions with grants, one line each.
    pub mismatches: Vec<String>,
    pub examples: Vec<WhoopsExample>,
}

const EXAMPLES_CAP: usize = 10;

/// Match one role's acquisitions with its grants. Returns (acquisition index, grant index)
/// pairs and a mismatch line when the two sides disagree.
fn match_role(grants: &[GrantNote], acqs: &[Acquisition]) -> (Vec<(usize, usize)>, Option<String>) {
    if grants.len() == acqs.len() {
        let late = grants
            .iter()
            .zip(acqs)
            .filter(|(g, a)| g.ts_ns > a.ts_ns)
            .count();
        let pairs = (0..acqs.len()).map(|i| (i, i)).collect();
        let why = (late > 0).then(|| {
            format!("{late} acquisitions were logged before the grant matched with them (clock mismatch?)")
        });
        return (pairs, why);
    }
    // Counts differ: match each acquisition with the latest unused grant at or before it.
    let mut pairs = Vec::new();
    let mut g = 0usize;
    for (i, a) in acqs.iter().enumerate() {
        let mut best = None;
        while g < grants.len() && grants[g].ts_ns <= a.ts_ns {
            best = Some(g);
            g += 1;
        }
        if let Some(b) = best {
            pairs.push((i, b));
        }
    }
    let why = format!(
        "{} acquisitions logged but {} grants traced; matched {} by timestamp",
        acqs.len(),
        grants.len(),
        pairs.len()
    );
    (pairs, Some(why))
}

/// Correlate every role's log with its traced grants.
pub fn correlate(roles: &[RoleInput], grants: &[Vec<GrantNote>]) -> WhoopsResult {
    let mut out = WhoopsResult::default();
    for (ri, role) in roles.iter().enumerate() {
        let g: &[GrantNote] = grants.get(ri).map(|v| v.as_slice()).unwrap_or(&[]);
        let (pairs, why) = match_role(g, &role.acquisitions);
        if let Some(w) = why {
            out.mismatches
                .push(format!("{} (tgid {}): {w}", role.name, role.tgid));
        }
        let mut rw = RoleWhoops {
            name: role.name.clone(),
            tgid: role.tgid,
            acquisitions: role.acquisitions.len() as u64,
            grants: g.len() as u64,
            whoops: role.acquisitions.iter().filter(|a| a.whoops).count() as u64,
            explained: 0,
            by_cause: CauseCounts::default(),
        };
        for (ai, gi) in pairs {
            let a = &role.acquisitions[ai];
            if !a.whoops {
                continue;
            }
            let cause = g[gi].cause;
            rw.explained += 1;
            rw.by_cause.add(cause);
            out.by_peer_state.add(g[gi].peer);
            if out.examples.len() < EXAMPLES_CAP {
                out.examples.push(WhoopsExample {
                    role: role.name.clone(),
                    index: ai as u64,
                    acquisition_ts: a.ts_ns,
                    grant_ts: g[gi].ts_ns,
                    cause,
                });
            }
        }
        out.total += rw.whoops;
        out.explained += rw.explained;
        out.by_cause.self_barge += rw.by_cause.self_barge;
        out.by_cause.peer_not_waiting += rw.by_cause.peer_not_waiting;
        out.by_cause.no_exclusion += rw.by_cause.no_exclusion;
        out.roles.push(rw);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ts: u64, cause: WhoopsCause) -> GrantNote {
        let peer = match cause {
            WhoopsCause::SelfBarge => PeerState::Blocked,
            WhoopsCause::PeerNotWaiting => PeerState::NotInRequest,
            WhoopsCause::NoExclusion => PeerState::SharedOwner,
        };
        GrantNote {
            ts_ns: ts,
            cause,
            peer,
        }
    }
    fn a(ts: u64, whoops: bool) -> Acquisition {
        Acquisition { ts_ns: ts, whoops }
    }

    #[test]
    fn kth_grant_is_kth_acquisition() {
        let roles = vec![RoleInput {
            name: "server".into(),
            tgid: 1,
            acquisitions: vec![a(11, false), a(21, true), a(31, true)],
        }];
        let grants = vec![vec![
            g(10, WhoopsCause::PeerNotWaiting),
            g(20, WhoopsCause::SelfBarge),
            g(30, WhoopsCause::PeerNotWaiting),
        ]];
        let r = correlate(&roles, &grants);
        assert_eq!((r.total, r.explained), (2, 2));
        assert_eq!(r.by_cause.self_barge, 1);
        assert_eq!(r.by_cause.peer_not_waiting, 1);
        assert!(r.mismatches.is_empty());
    }

    #[test]
    fn count_mismatch_is_reported_and_matched_by_time() {
        let roles = vec![RoleInput {
            name: "client".into(),
            tgid: 2,
            acquisitions: vec![a(11, true), a(21, true), a(31, true)],
        }];
        // The grant before the second acquisition was dropped.
        let grants = vec![vec![
            g(10, WhoopsCause::SelfBarge),
            g(30, WhoopsCause::NoExclusion),
        ]];
        let r = correlate(&roles, &grants);
        assert_eq!((r.total, r.explained), (3, 2));
        assert_eq!(r.by_cause.no_exclusion, 1);
        assert_eq!(r.mismatches.len(), 1);
        assert!(r.mismatches[0].contains("3 acquisitions logged but 2 grants"));
    }

    #[test]
    fn missing_grants_for_a_role_do_not_panic() {
        let roles = vec![RoleInput {
            name: "x".into(),
            tgid: 3,
            acquisitions: vec![a(1, true)],
        }];
        let r = correlate(&roles, &[]);
        assert_eq!((r.total, r.explained), (1, 0));
        assert_eq!(r.mismatches.len(), 1);
    }
}
