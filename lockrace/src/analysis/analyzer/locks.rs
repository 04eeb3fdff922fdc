//! Lock groups: a lock is (dev, ino, class) plus the union of overlapping byte ranges; requests
//! whose ranges overlap land in the same group ([`Core::group_for`]), and two groups are merged
//! when a request bridges them ([`Core::merge_lock`]).
//!
//! Invariant: a merged group forwards to the group it was merged into (`merged_into`), so an
//! index handed out earlier stays valid; its counters move with it.
use super::*;

impl<'o> Core<'o> {
    /// The lock group for a request on (dev, ino, class, [start, end]); creates or merges groups.
    pub(super) fn group_for(
        &mut self,
        dev: u32,
        ino: u64,
        class: LockClass,
        start: i64,
        end: i64,
    ) -> usize {
        let ids = self.by_inode.entry((dev, ino, class)).or_default();
        let mut hit = None;
        let mut multi = false;
        for &id in ids.iter() {
            let k = &self.locks[id].sum.key;
            if overlaps(k.start, k.end, start, end) {
                if hit.is_none() {
                    hit = Some(id);
                } else {
                    multi = true;
                }
            }
        }
        let Some(h) = hit else {
            let id = self.locks.len();
            ids.push(id);
            self.locks.push(LockState::new(LockKey {
                dev,
                ino,
                class,
                start,
                end,
            }));
            return id;
        };
        if multi {
            let others: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&id| {
                    let k = &self.locks[id].sum.key;
                    id != h && overlaps(k.start, k.end, start, end)
                })
                .collect();
            ids.retain(|id| !others.contains(id));
            for o in others {
                self.merge_lock(h, o);
            }
        }
        let k = &mut self.locks[h].sum.key;
        k.start = k.start.min(start);
        k.end = k.end.max(end);
        h
    }

    /// Fold lock `o` into lock `h` (a request bridged their ranges).
    pub(super) fn merge_lock(&mut self, h: usize, o: usize) {
        if let Some(open) = self.locks[o].open.take() {
            self.finalize(o, *open);
        }
        let key = self.locks[o].sum.key;
        let other = std::mem::replace(&mut self.locks[o], LockState::new(key));
        self.locks[o].merged_into = Some(h);
        for t in self.tasks.values_mut() {
            if let Some(r) = t.req.as_mut()
                && r.lock == Some(o)
            {
                r.lock = Some(h);
            }
            for w in t.issued.iter_mut() {
                if w.lock == o {
                    w.lock = h;
                }
            }
        }
        let tasks = &self.tasks;
        let s = &mut self.locks[h];
        s.holds.extend(other.holds);
        s.waiters.extend(other.waiters);
        s.waiters.sort_by_key(|tid| {
            tasks
                .get(tid)
                .and_then(|t| t.req.as_ref())
                .and_then(|r| r.first_block)
                .unwrap_or(u64::MAX)
        });
        let (a, b) = (&mut s.sum, &other.sum);
        a.key.start = a.key.start.min(b.key.start);
        a.key.end = a.key.end.max(b.key.end);
        a.flavors.posix |= b.flavors.posix;
        a.flavors.ofd |= b.flavors.ofd;
        a.flavors.flock |= b.flavors.flock;
        for ow in &b.owners {
            for &tg in &ow.tgids {
                note_owner(a, ow.owner, tg);
            }
        }
        a.owners_truncated |= b.owners_truncated;
        a.requests += b.requests;
        a.blocks += b.blocks;
        a.blocked_requests += b.blocked_requests;
        a.grants += b.grants;
        a.releases += b.releases;
        a.errors += b.errors;
        a.would_block += b.would_block;
        a.handoffs.merge(&b.handoffs);
        a.wake_inversions += b.wake_inversions;
        a.wake_order_ambiguous += b.wake_order_ambiguous;
        a.spurious_wakes += b.spurious_wakes;
        a.overlapping_grants += b.overlapping_grants;
        for &x in &b.block_order {
            push_capped(&mut a.block_order, x);
        }
        for &x in &b.grant_order {
            push_capped(&mut a.grant_order, x);
        }
        a.wait.merge(&b.wait);
        a.wake_to_run.merge(&b.wake_to_run);
        a.wakes += b.wakes;
        a.wakes_same_cpu += b.wakes_same_cpu;
        a.first_overlap = a.first_overlap.min_by_ts(b.first_overlap);
        if a.first_inversion.is_none() {
            a.first_inversion = b.first_inversion;
        }
        a.contention.merge(&b.contention);
    }
}
