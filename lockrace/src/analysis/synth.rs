//! Synthetic event streams: a small script builder for hand-written kernel event sequences
//! (tests), and a generator of long realistic handoff streams (benchmarks, property tests).
//!
//! Invariants: the sequences follow the kernel's order (docs/EVENTS.md): a waiter's
//! posix_lock_inode(ret 1) then its switch-out; an unlock's sched_waking events before its
//! posix_lock_inode(F_UNLCK); a retry after the wakee's switch-in; fcntl_setlk then sys_exit.
//! Timestamps strictly increase by `step` per event unless moved with [`Script::wait`].
//! Generation is deterministic for a given seed.
use lockrace_common::k;

use crate::events::{Comm, Data, Event, Kind, LockData, SchedData, SyscallData};

/// Device (kernel encoding of 0:1) and inode used by default.
pub const DEV: u32 = 1;
pub const INO: u64 = 4242;
const EAGAIN: i32 = -11;

/// Lock flavour of an [`Actor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Posix,
    Ofd,
    Flock,
}

impl Flavor {
    fn flags(self, sleep: bool) -> u32 {
        let base = match self {
            Flavor::Posix => k::FL_POSIX,
            Flavor::Ofd => k::FL_POSIX | k::FL_OFDLCK,
            Flavor::Flock => k::FL_FLOCK,
        };
        if sleep { base | k::FL_SLEEP } else { base }
    }
    fn kind(self) -> Kind {
        match self {
            Flavor::Flock => Kind::FlockLockInode,
            _ => Kind::PosixLockInode,
        }
    }
}

/// A task taking locks: its ids, CPU, lock owner and the kernel addresses of its request and of
/// the lock it holds (the kernel reuses these; tests may give two actors the same ones).
#[derive(Clone, Copy, Debug)]
pub struct Actor {
    pub tid: u32,
    pub tgid: u32,
    pub cpu: u32,
    pub comm: Comm,
    pub owner: u64,
    pub flavor: Flavor,
    /// `struct file_lock *` of its requests.
    pub fl: u64,
    /// Address of the lock it holds once granted (what its waiters' `blocker` shows).
    pub held: u64,
    /// Byte range.
    pub start: i64,
    pub end: i64,
}

impl Actor {
    pub fn new(tid: u32, tgid: u32, cpu: u32, name: &str, owner: u64, flavor: Flavor) -> Actor {
        Actor {
            tid,
            tgid,
            cpu,
            comm: Comm::from_str_lossy(name),
            owner,
            flavor,
            fl: 0xffff_8880_0100_0000 + tid as u64 * 0x100,
            held: 0xffff_8880_0200_0000 + tid as u64 * 0x100,
            start: 0,
            end: i64::MAX,
        }
    }
    pub fn range(mut self, start: i64, end: i64) -> Actor {
        self.start = start;
        self.end = end;
        self
    }
}

/// A hand-written event sequence.
pub struct Script {
    pub events: Vec<Event>,
    pub now: u64,
    pub step: u64,
    pub dev: u32,
    pub ino: u64,
    /// Every grant, in order: (tgid, ts) — to build acquisition logs in tests.
    pub grants: Vec<(u32, u64)>,
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    pub fn new() -> Script {
        Script {
            events: Vec::new(),
            now: 1_000_000_000,
            step: 1_000,
            dev: DEV,
            ino: INO,
            grants: Vec::new(),
        }
    }

    /// Let `ns` pass before the next event.
    pub fn wait(&mut self, ns: u64) {
        self.now += ns;
    }

    fn push(&mut self, a: &Actor, cpu: u32, kind: Kind, data: Data) {
        self.now += self.step;
        self.events.push(Event {
            ts_ns: self.now,
            cpu,
            tgid: a.tgid,
            tid: a.tid,
            comm: a.comm,
            kind,
            data,
        });
    }

    // ------------------------------------------------------------ raw events

    pub fn enter(&mut self, a: &Actor, lock_type: u8, sleep: bool) {
        let (kind, cmd, l_type) = match a.flavor {
            Flavor::Posix => (
                Kind::SysEnterFcntl,
                if sleep { k::F_SETLKW } else { k::F_SETLK },
                Some(lock_type as i16),
            ),
            Flavor::Ofd => (
                Kind::SysEnterFcntl,
                if sleep {
                    k::F_OFD_SETLKW
                } else {
                    k::F_OFD_SETLK
                },
                Some(lock_type as i16),
            ),
            Flavor::Flock => {
                let op = match lock_type {
                    k::F_RDLCK => k::LOCK_SH,
                    k::F_WRLCK => k::LOCK_EX,
                    _ => k::LOCK_UN,
                };
                (
                    Kind::SysEnterFlock,
                    if sleep { op } else { op | k::LOCK_NB },
                    None,
                )
            }
        };
        self.push(
            a,
            a.cpu,
            kind,
            Data::Syscall(SyscallData {
                fd: 3,
                cmd,
                ret: 0,
                l_type,
                l_whence: 0,
                l_start: a.start,
                l_len: if a.end == i64::MAX {
                    0
                } else {
                    a.end - a.start + 1
                },
            }),
        );
    }

    pub fn exit(&mut self, a: &Actor, ret: i64) {
        let kind = match a.flavor {
            Flavor::Flock => Kind::SysExitFlock,
            _ => Kind::SysExitFcntl,
        };
        self.push(
            a,
            a.cpu,
            kind,
            Data::Syscall(SyscallData {
                ret,
                ..SyscallData::default()
            }),
        );
    }

    /// One filelock event of `a`'s flavour.
    pub fn lock_event(
        &mut self,
        a: &Actor,
        kind: Kind,
        lock_type: u8,
        ret: i32,
        blocker: u64,
        sleep: bool,
    ) {
        let data = LockData {
            dev: self.dev,
            ino: self.ino,
            owner: a.owner,
            fl: a.fl,
            blocker,
            lock_type,
            flags: a.flavor.flags(sleep),
            ret,
            start: a.start,
            end: a.end,
            fl_pid: a.tgid,
        };
        if kind != Kind::FcntlSetlk && ret == 0 && lock_type != k::F_UNLCK {
            self.grants.push((a.tgid, self.now + self.step));
        }
        self.push(a, a.cpu, kind, Data::Lock(data));
    }

    pub fn waking(&mut self, waker: &Actor, wakee: &Actor) {
        self.push(
            waker,
            waker.cpu,
            Kind::SchedWaking,
            Data::Sched(SchedData {
                target_tid: wakee.tid,
                target_cpu: wakee.cpu as i32,
                orig_cpu: -1,
                prio: 120,
                prev_state: 0,
                target_comm: wakee.comm,
            }),
        );
        self.push(
            waker,
            waker.cpu,
            Kind::SchedWakeup,
            Data::Sched(SchedData {
                target_tid: wakee.tid,
                target_cpu: wakee.cpu as i32,
                orig_cpu: -1,
                prio: 120,
                prev_state: 0,
                target_comm: wakee.comm,
            }),
        );
    }

    /// `prev` is switched out (state `prev_state`) and `next_tid` in, on `cpu`.
    pub fn switch(&mut self, prev: &Actor, next_tid: u32, prev_state: i64, cpu: u32) {
        self.push(
            prev,
            cpu,
            Kind::SchedSwitch,
            Data::Sched(SchedData {
                target_tid: next_tid,
                target_cpu: cpu as i32,
                orig_cpu: -1,
                prio: 120,
                prev_state,
                target_comm: Comm::default(),
            }),
        );
    }

    // ------------------------------------------------------------ request helpers

    /// A request granted at once (enter, grant, [fcntl_setlk], exit).
    pub fn lock_now(&mut self, a: &Actor, lock_type: u8) {
        self.enter(a, lock_type, true);
        self.lock_event(a, a.flavor.kind(), lock_type, 0, 0, true);
        self.finish_call(a, lock_type, 0);
    }

    /// A blocking request that blocks under `blocker`, then the task sleeps.
    pub fn lock_block(&mut self, a: &Actor, lock_type: u8, blocker: u64) {
        self.enter(a, lock_type, true);
        self.lock_event(
            a,
            a.flavor.kind(),
            lock_type,
            k::FILE_LOCK_DEFERRED,
            blocker,
            true,
        );
        self.sleep(a);
    }

    /// `a` goes to sleep: switched out (state 1), idle in.
    pub fn sleep(&mut self, a: &Actor) {
        self.switch(a, 0, 1, a.cpu);
    }

    /// `a` is switched in on its CPU (from idle).
    pub fn run(&mut self, a: &Actor) {
        let idle = Actor::new(0, 0, a.cpu, "swapper", 0, Flavor::Posix);
        self.switch(&idle, a.tid, 0, a.cpu);
    }

    /// A woken waiter retries and gets the lock.
    pub fn retry_grant(&mut self, a: &Actor, lock_type: u8) {
        self.lock_event(a, a.flavor.kind(), lock_type, 0, 0, true);
        self.finish_call(a, lock_type, 0);
    }

    /// A woken waiter retries and blocks again under `blocker`, then sleeps.
    pub fn retry_block(&mut self, a: &Actor, lock_type: u8, blocker: u64) {
        self.lock_event(
            a,
            a.flavor.kind(),
            lock_type,
            k::FILE_LOCK_DEFERRED,
            blocker,
            true,
        );
        self.sleep(a);
    }

    /// A blocked waiter's wait is interrupted (signal): -EINTR.
    pub fn interrupted(&mut self, a: &Actor, lock_type: u8) {
        self.finish_call(a, lock_type, -4);
    }

    /// Non-blocking request that conflicts: -EAGAIN.
    pub fn try_fail(&mut self, a: &Actor, lock_type: u8) {
        self.enter(a, lock_type, false);
        self.lock_event(a, a.flavor.kind(), lock_type, EAGAIN, 0, false);
        self.finish_call(a, lock_type, EAGAIN);
    }

    /// Unlock waking `wake` (in that order): enter, wakings, unlock event, exit.
    pub fn unlock(&mut self, a: &Actor, wake: &[&Actor]) {
        self.enter(a, k::F_UNLCK, true);
        for w in wake {
            self.waking(a, w);
        }
        self.lock_event(a, a.flavor.kind(), k::F_UNLCK, 0, 0, false);
        self.finish_call(a, k::F_UNLCK, 0);
    }

    fn finish_call(&mut self, a: &Actor, lock_type: u8, ret: i32) {
        if a.flavor != Flavor::Flock {
            self.lock_event(a, Kind::FcntlSetlk, lock_type, ret, 0, true);
        }
        self.exit(a, ret as i64);
    }
}

/// Deterministic xorshift64* generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// About `target` events of the seed's workload under real mutual exclusion (two processes,
/// POSIX locks, 2 CPUs): handoffs where the releaser barges ~60% of the time, fair handoffs,
/// spurious wakeups, a newcomer now and then, wake-to-run latencies of 1-50 µs.
pub fn handoff_stream(target: usize, seed: u64) -> Vec<Event> {
    let mut g = HandoffGen::new(seed);
    g.script.events.reserve(target + 64);
    while g.script.events.len() < target {
        g.step();
    }
    g.script.events
}

/// [`handoff_stream`] without keeping the stream: [`HandoffGen::next_chunk`] hands out the next
/// whole handoffs, so streams of any length take constant memory (the analyzer benchmark feeds
/// 10M events through it). The concatenated chunks equal `handoff_stream` of the same seed.
pub struct HandoffGen {
    rng: Rng,
    script: Script,
    holder: Actor,
    waiter: Actor,
    newcomer: Actor,
    /// Whether `script.events` was handed out already (the next chunk starts empty).
    handed_out: bool,
}

impl HandoffGen {
    pub fn new(seed: u64) -> HandoffGen {
        let mut script = Script::new();
        let a = Actor::new(
            1001,
            1001,
            0,
            "server",
            0xffff_8881_0000_1000,
            Flavor::Posix,
        );
        let b = Actor::new(
            1002,
            1002,
            1,
            "client",
            0xffff_8881_0000_2000,
            Flavor::Posix,
        );
        let newcomer = Actor::new(
            1003,
            1003,
            1,
            "newcomer",
            0xffff_8881_0000_3000,
            Flavor::Posix,
        );
        script.lock_now(&a, k::F_WRLCK);
        script.lock_block(&b, k::F_WRLCK, a.held);
        HandoffGen {
            rng: Rng::new(seed),
            script,
            holder: a,
            waiter: b,
            newcomer,
            handed_out: false,
        }
    }

    /// The events of at least `min` events' worth of whole handoffs (the previous chunk is
    /// discarded; the first chunk starts with the initial grant and block).
    pub fn next_chunk(&mut self, min: usize) -> &[Event] {
        if self.handed_out {
            self.script.events.clear();
        }
        self.handed_out = true;
        self.script.grants.clear();
        while self.script.events.len() < min {
            self.step();
        }
        &self.script.events
    }

    /// One handoff (or one barge and retry).
    fn step(&mut self) {
        let (rng, s) = (&mut self.rng, &mut self.script);
        let (holder, waiter, c) = (self.holder, self.waiter, self.newcomer);
        s.wait(rng.below(5_000));
        s.unlock(&holder, &[&waiter]);
        if rng.chance(0.6) {
            // The releaser re-takes the lock before the woken waiter runs.
            s.lock_now(&holder, k::F_WRLCK);
            s.wait(1_000 + rng.below(50_000));
            s.run(&waiter);
            s.retry_block(&waiter, k::F_WRLCK, holder.held);
        } else if rng.chance(0.05) {
            // A newcomer takes it, then leaves.
            s.lock_now(&c, k::F_WRLCK);
            s.run(&waiter);
            s.retry_block(&waiter, k::F_WRLCK, c.held);
            s.unlock(&c, &[&waiter]);
            s.run(&waiter);
            s.retry_grant(&waiter, k::F_WRLCK);
            s.lock_block(&holder, k::F_WRLCK, waiter.held);
            std::mem::swap(&mut self.holder, &mut self.waiter);
        } else {
            s.wait(1_000 + rng.below(50_000));
            s.run(&waiter);
            s.retry_grant(&waiter, k::F_WRLCK);
            s.lock_block(&holder, k::F_WRLCK, waiter.held);
            std::mem::swap(&mut self.holder, &mut self.waiter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_deterministic_and_sorted() {
        let a = handoff_stream(5_000, 7);
        let b = handoff_stream(5_000, 7);
        assert_eq!(a, b);
        assert!(a.len() >= 5_000);
        assert!(a.windows(2).all(|w| w[0].ts_ns < w[1].ts_ns));
    }

    #[test]
    fn chunks_concatenate_to_the_whole_stream() {
        let whole = handoff_stream(20_000, 9);
        let mut g = HandoffGen::new(9);
        let mut joined = Vec::new();
        while joined.len() < whole.len() {
            joined.extend_from_slice(g.next_chunk(1_000));
        }
        assert!(joined.len() >= whole.len());
        assert_eq!(&joined[..whole.len()], &whole[..]);
    }
}
