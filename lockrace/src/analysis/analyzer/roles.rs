//! The whoops correlation of a `run`: the roles' grants on the memfd, noted with the state of
//! the other role at that moment (not in a request, blocked, woken but not running, ...), for
//! `whoops::correlate` to match with the roles' acquisition logs when the events end.
//!
//! Invariant: the only state that grows with the events (16 bytes per role grant on the
//! memfd), and only for a `run`.
use super::*;

impl<'o> Core<'o> {
    pub(super) fn note_role_owner(&mut self, tgid: u32, l: &LockData) {
        if let Some(w) = self.whoops.as_mut()
            && w.dev == l.dev
            && w.ino == l.ino
            && let Some(ri) = w.role(tgid)
        {
            w.owner[ri] = Some(l.owner);
        }
    }

    pub(super) fn note_role_grant(&mut self, e: &Event, l: &LockData) {
        let Some(w) = self.whoops.as_ref() else {
            return;
        };
        if w.dev != l.dev || w.ino != l.ino {
            return;
        }
        let Some(ri) = w.role(e.tgid) else { return };
        let shared = w
            .tgids
            .iter()
            .enumerate()
            .any(|(rj, &tg)| tg != e.tgid && w.owner[rj] == Some(l.owner));
        // The most telling state among the other roles' tasks.
        let mut peer = if shared {
            PeerState::SharedOwner
        } else {
            PeerState::NotInRequest
        };
        if !shared {
            for (rj, &tg) in w.tgids.iter().enumerate() {
                if tg == e.tgid {
                    continue;
                }
                for tid in &w.tids[rj] {
                    let Some(r) = self.tasks.get(tid).and_then(|t| t.req.as_ref()) else {
                        continue;
                    };
                    let on_memfd = r.lock.is_none_or(|id| {
                        let k = &self.locks[resolve(&self.locks, id)].sum.key;
                        k.dev == w.dev && k.ino == w.ino
                    });
                    let state = if !on_memfd || r.outcome.is_some() {
                        PeerState::NotInRequest
                    } else if r.waiting() {
                        match r.phase {
                            Phase::Woken { .. } => PeerState::WokenNotRunning,
                            Phase::Running => PeerState::RunningNotRetried,
                            _ => PeerState::Blocked,
                        }
                    } else if matches!(r.sys, Sys::Fcntl(_) | Sys::Flock(_))
                        && r.want.is_some_and(|t| t <= k::F_WRLCK)
                    {
                        PeerState::InRequestNotBlocked
                    } else {
                        PeerState::NotInRequest
                    };
                    if state.rank() > peer.rank() {
                        peer = state;
                    }
                }
            }
        }
        if let Some(w) = self.whoops.as_mut() {
            w.grants[ri].push(GrantNote {
                ts_ns: e.ts_ns,
                cause: peer.cause(),
                peer,
            });
        }
    }

    // ---------------------------------------------------------------- end
}
