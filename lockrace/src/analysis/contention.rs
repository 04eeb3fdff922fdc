//! Contention the handoff model does not see: **polling** (non-blocking requests that find the
//! lock taken and are retried later) and **writer starvation** (a waiting writer passed by
//! readers that arrived after it).
//!
//! - A non-blocking request (`F_SETLK`, `F_OFD_SETLK`, `LOCK_NB`: no `FL_SLEEP` in the lock
//!   event) that conflicts fails with `EAGAIN` and never queues: it is a *busy attempt*. A task
//!   whose previous non-blocking attempt on the same lock was busy and that tries again is
//!   *retrying*; a run of busy attempts with no success in between is a *streak*. A polled lock
//!   has no queue, so no fairness at all (sqlite's busy handler works this way).
//! - Read locks granted together are not a conflict. But Linux grants a read lock whenever no
//!   *holder* conflicts, ignoring queued writers: each read grant to a request that arrived after
//!   a writer started waiting is a *reader ahead* of that writer. A writer wait passed by at least
//!   [`STARVATION_MIN_READERS`] of them is a *starved writer*.
//!
//! Invariants: pure, no I/O; bounded (at most [`BUSY_TASKS_CAP`] tasks listed per lock, beyond
//! which only the totals grow); merging two locks' records gives the same totals as one record
//! fed both streams.
use super::types::TaskRef;

/// Tasks tracked per lock for busy attempts (the totals count everyone).
pub const BUSY_TASKS_CAP: usize = 64;
/// A lock is diagnosed `polling-lock` once tasks retried busy attempts this many times.
pub const POLLING_MIN_RETRIES: u64 = 3;
/// A writer wait passed by this many newer readers is a starved writer (`writer-starvation`).
pub const STARVATION_MIN_READERS: u64 = 3;

/// One task's non-blocking attempts on one lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusyTask {
    pub task: TaskRef,
    /// Non-blocking requests.
    pub attempts: u64,
    /// Of which failed with EAGAIN.
    pub busy: u64,
    /// Non-blocking requests that followed a busy one of the same task on this lock.
    pub retries: u64,
    /// Most busy attempts in a row (no success in between).
    pub longest_streak: u64,
    /// Busy attempts in a row so far.
    pub streak: u64,
}

/// How a writer's wait that readers passed ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    Granted,
    Failed(i32),
    /// Still waiting (or its outcome was not seen) when the events ended.
    StillWaiting,
}

/// One writer wait and the newer readers granted while it waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterWait {
    pub writer: TaskRef,
    pub first_block_ts: u64,
    /// When the wait ended (grant, error, or the last event when still waiting).
    pub end_ts: u64,
    pub end: WaitEnd,
    /// Read grants to requests that arrived after the writer first blocked.
    pub readers_ahead: u64,
}

impl WriterWait {
    pub fn waited_ns(&self) -> u64 {
        self.end_ts.saturating_sub(self.first_block_ts)
    }
}

/// Polling and writer-starvation figures of one lock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contention {
    /// Non-blocking lock requests.
    pub nonblocking: u64,
    /// Of which failed with EAGAIN (the lock was taken): busy attempts.
    pub busy: u64,
    /// Busy attempts that were tried again by the same task.
    pub retries: u64,
    /// Most busy attempts in a row by one task, and that task.
    pub longest_streak: u64,
    pub streak_task: Option<TaskRef>,
    /// Per task, in first-attempt order (first [`BUSY_TASKS_CAP`]).
    pub tasks: Vec<BusyTask>,
    pub tasks_truncated: bool,
    /// Read grants that passed a waiting, older writer (counted once per writer passed).
    pub readers_ahead: u64,
    /// Writer waits passed by at least one newer reader.
    pub writers_passed: u64,
    /// Writer waits passed by at least [`STARVATION_MIN_READERS`] newer readers.
    pub starved_writers: u64,
    /// The writer wait passed by the most readers.
    pub worst_wait: Option<WriterWait>,
}

impl Contention {
    /// A lock request of `task` reached the lock code for the first time. `nonblocking`: no
    /// FL_SLEEP; `busy`: it failed with EAGAIN. Blocking requests only end a task's polling.
    pub fn attempt(&mut self, task: TaskRef, nonblocking: bool, busy: bool) {
        let pos = self.tasks.iter().position(|t| t.task.tid == task.tid);
        if !nonblocking {
            if let Some(i) = pos {
                self.tasks[i].streak = 0;
            }
            return;
        }
        self.nonblocking += 1;
        if busy {
            self.busy += 1;
        }
        let i = match pos {
            Some(i) => i,
            None if self.tasks.len() < BUSY_TASKS_CAP => {
                self.tasks.push(BusyTask {
                    task,
                    ..BusyTask::default()
                });
                self.tasks.len() - 1
            }
            None => {
                self.tasks_truncated = true;
                return;
            }
        };
        let t = &mut self.tasks[i];
        t.task = task;
        t.attempts += 1;
        if t.streak > 0 {
            t.retries += 1;
            self.retries += 1;
        }
        if busy {
            t.busy += 1;
            t.streak += 1;
            if t.streak > t.longest_streak {
                t.longest_streak = t.streak;
            }
            if t.streak > self.longest_streak {
                self.longest_streak = t.streak;
                self.streak_task = Some(task);
            }
        } else {
            t.streak = 0;
        }
    }

    /// A writer's wait ended after `w.readers_ahead` newer readers were granted during it.
    pub fn writer_wait_ended(&mut self, w: WriterWait) {
        if w.readers_ahead == 0 {
            return;
        }
        self.writers_passed += 1;
        if w.readers_ahead >= STARVATION_MIN_READERS {
            self.starved_writers += 1;
        }
        let worse = self
            .worst_wait
            .is_none_or(|o| (w.readers_ahead, w.waited_ns()) > (o.readers_ahead, o.waited_ns()));
        if worse {
            self.worst_wait = Some(w);
        }
    }

    /// Fold another lock's record into this one (two lock groups merged).
    pub fn merge(&mut self, o: &Contention) {
        self.nonblocking += o.nonblocking;
        self.busy += o.busy;
        self.retries += o.retries;
        if o.longest_streak > self.longest_streak {
            self.longest_streak = o.longest_streak;
            self.streak_task = o.streak_task;
        }
        for t in &o.tasks {
            if let Some(m) = self.tasks.iter_mut().find(|m| m.task.tid == t.task.tid) {
                m.attempts += t.attempts;
                m.busy += t.busy;
                m.retries += t.retries;
                m.longest_streak = m.longest_streak.max(t.longest_streak);
                m.streak = m.streak.max(t.streak);
            } else if self.tasks.len() < BUSY_TASKS_CAP {
                self.tasks.push(*t);
            } else {
                self.tasks_truncated = true;
            }
        }
        self.tasks_truncated |= o.tasks_truncated;
        self.readers_ahead += o.readers_ahead;
        self.writers_passed += o.writers_passed;
        self.starved_writers += o.starved_writers;
        if let Some(w) = o.worst_wait {
            let worse = self.worst_wait.is_none_or(|s| {
                (w.readers_ahead, w.waited_ns()) > (s.readers_ahead, s.waited_ns())
            });
            if worse {
                self.worst_wait = Some(w);
            }
        }
    }

    /// Polling seen: busy attempts retried at least [`POLLING_MIN_RETRIES`] times.
    pub fn polling(&self) -> bool {
        self.retries >= POLLING_MIN_RETRIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tid: u32) -> TaskRef {
        TaskRef { tid, tgid: tid }
    }

    #[test]
    fn streaks_and_retries_follow_one_task() {
        let mut c = Contention::default();
        c.attempt(t(1), true, false);
        c.attempt(t(2), true, true);
        c.attempt(t(2), true, true);
        c.attempt(t(2), true, true);
        c.attempt(t(2), true, false);
        c.attempt(t(2), true, true);
        assert_eq!((c.nonblocking, c.busy, c.retries), (6, 4, 3));
        assert_eq!(c.longest_streak, 3);
        assert_eq!(c.streak_task, Some(t(2)));
        let two = c.tasks.iter().find(|x| x.task.tid == 2).unwrap();
        assert_eq!((two.attempts, two.busy, two.retries), (5, 4, 3));
        assert!(c.polling());
    }

    #[test]
    fn a_blocking_request_ends_a_streak_without_counting() {
        let mut c = Contention::default();
        c.attempt(t(1), true, true);
        c.attempt(t(1), false, false);
        c.attempt(t(1), true, true);
        assert_eq!((c.nonblocking, c.busy, c.retries), (2, 2, 0));
        assert!(!c.polling());
    }

    #[test]
    fn tasks_are_capped_totals_are_not() {
        let mut c = Contention::default();
        for tid in 0..(BUSY_TASKS_CAP as u32 + 10) {
            c.attempt(t(tid), true, true);
        }
        assert_eq!(c.tasks.len(), BUSY_TASKS_CAP);
        assert!(c.tasks_truncated);
        assert_eq!(c.busy, BUSY_TASKS_CAP as u64 + 10);
    }

    #[test]
    fn merging_adds_up_and_keeps_the_worst_wait() {
        let wait = |readers: u64| WriterWait {
            writer: t(9),
            first_block_ts: 10,
            end_ts: 20,
            end: WaitEnd::Granted,
            readers_ahead: readers,
        };
        let mut a = Contention::default();
        a.attempt(t(1), true, true);
        a.writer_wait_ended(wait(1));
        a.writer_wait_ended(wait(0));
        let mut b = Contention::default();
        b.attempt(t(1), true, true);
        b.writer_wait_ended(wait(5));
        a.merge(&b);
        assert_eq!((a.busy, a.writers_passed, a.starved_writers), (2, 2, 1));
        assert_eq!(a.worst_wait.unwrap().readers_ahead, 5);
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].busy, 2);
    }
}
