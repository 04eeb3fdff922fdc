//! The end of the events ([`Core::finish`]): requests still open are counted (as unfinished,
//! not lost), open handoffs are finalized, the whoops are correlated, and the bounded
//! [`Analysis`] is assembled, with a reason for each thing that makes it incomplete.
//!
//! Invariant: pure summarizing; nothing here changes what was counted while streaming.
use super::*;

impl<'o> Core<'o> {
    pub(super) fn finish(&mut self, input: &AnalysisInput) -> Analysis {
        let last = self.stats.last_ts;
        let mut tids: Vec<u32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.req.is_some())
            .map(|(&tid, _)| tid)
            .collect();
        tids.sort_unstable();
        for tid in tids {
            let Some(t) = self.tasks.get_mut(&tid) else {
                continue;
            };
            let tgid = t.tgid;
            let Some(req) = t.req.take() else { continue };
            if req.outcome.is_none() && req.sys != Sys::Test {
                self.stats.unfinished_requests += 1;
                if req.blocks > 0 {
                    self.stats.unfinished_blocked += 1;
                }
            }
            self.end_request(tid, tgid, req, None);
        }
        for id in 0..self.locks.len() {
            if self.locks[id].merged_into.is_some() {
                continue;
            }
            let holds = std::mem::take(&mut self.locks[id].holds);
            if let Some(obs) = obs_of(&mut self.obs) {
                for h in holds {
                    obs.on_hold(&HoldRecord {
                        task: h.task,
                        lock: self.locks[id].sum.key,
                        owner: h.owner,
                        lock_type: h.ltype,
                        start_ts: h.since,
                        end_ts: last.max(h.since),
                        released: false,
                        released_by: None,
                    });
                }
            }
            if let Some(open) = self.locks[id].open.take() {
                self.finalize(id, *open);
            }
        }

        // Live locks in a stable order; handoff records point at their index.
        let mut live: Vec<usize> = (0..self.locks.len())
            .filter(|&id| self.locks[id].merged_into.is_none())
            .collect();
        live.sort_by_key(|&id| {
            let k = &self.locks[id].sum.key;
            (k.dev, k.ino, k.class, k.start, k.end)
        });
        let mut index = vec![usize::MAX; self.locks.len()];
        for (i, &id) in live.iter().enumerate() {
            index[id] = i;
        }
        let locks: Vec<LockSummary> = live
            .iter()
            .map(|&id| {
                let mut s = self.locks[id].sum.clone();
                s.owners.sort_by_key(|o| o.owner);
                s.path = input.path_of(s.key.dev, s.key.ino).map(str::to_string);
                s
            })
            .collect();
        let mut worst = std::mem::take(&mut self.worst);
        for w in worst.iter_mut() {
            w.lock = index[resolve(&self.locks, w.lock)];
        }
        worst.retain(|w| w.lock != usize::MAX);

        let whoops = match (&input.whoops, self.whoops.as_mut()) {
            (Some(wi), Some(wt)) => Some(whoops::correlate(
                &wi.roles,
                &std::mem::take(&mut wt.grants),
            )),
            _ => None,
        };

        let mut tasks: Vec<TaskInfo> = self
            .tasks
            .iter()
            .filter(|(tid, _)| **tid != 0)
            .map(|(&tid, t)| TaskInfo {
                tid,
                tgid: t.tgid,
                comm: t.comm.as_str().into_owned(),
            })
            .collect();
        for r in std::mem::take(&mut self.retired) {
            if !self.tasks.contains_key(&r.tid) {
                tasks.push(r);
            }
        }
        tasks.sort_by_key(|t| t.tid);

        let st = self.stats;
        let mut incomplete = Vec::new();
        if st.out_of_order > 0 {
            incomplete.push(format!(
                "{} events arrived later than the {} ms reorder window and were analysed out of order",
                st.out_of_order,
                input.reorder_window_ns.unwrap_or(DEFAULT_WINDOW_NS) / 1_000_000
            ));
        }
        if st.unfinished_requests > 0 {
            incomplete.push(format!(
                "{} lock requests ({} of them blocked) had not ended when the events stopped: their outcome is unknown",
                st.unfinished_requests, st.unfinished_blocked
            ));
        }
        if st.inconsistencies > 0 {
            incomplete.push(format!(
                "{} grants conflicted with a lock held under another owner: some releases are missing from the events",
                st.inconsistencies
            ));
        }
        if let Some(w) = &whoops {
            for m in &w.mismatches {
                incomplete.push(format!("whoops correlation: {m}"));
            }
        }
        Analysis {
            stats: st,
            locks,
            worst_handoffs: worst,
            whoops,
            tasks,
            incomplete,
        }
    }
}
