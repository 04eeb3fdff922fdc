//! A bounded reorder buffer: events from several CPUs reach user space slightly out of
//! timestamp order (each CPU stamps its event, then reserves ring-buffer space); the analyzer
//! wants them in `ts_ns` order.
//!
//! Invariants: at most `cap` events are held; an event is released once it is older than the
//! newest pushed event by more than `window_ns` (or when the buffer is full, or at `drain`);
//! released events come out in non-decreasing `ts_ns` order, equal timestamps in arrival order.
//! An event older than one already released cannot be put back in order: it is released at once
//! and counted in [`Reorder::late`].
use std::collections::VecDeque;

use crate::events::Event;

pub const DEFAULT_WINDOW_NS: u64 = 2_000_000;
pub const DEFAULT_CAP: usize = 1 << 16;

pub struct Reorder {
    buf: VecDeque<Event>,
    window_ns: u64,
    cap: usize,
    newest: u64,
    last_released: u64,
    /// Events that arrived after a newer one had already been released.
    pub late: u64,
    /// Events that arrived out of order but were put back in order.
    pub reordered: u64,
}

impl Reorder {
    pub fn new(window_ns: u64, cap: usize) -> Self {
        Reorder {
            buf: VecDeque::with_capacity(cap.min(4096)),
            window_ns,
            cap: cap.max(1),
            newest: 0,
            last_released: 0,
            late: 0,
            reordered: 0,
        }
    }

    /// Add one event; `out` receives every event that can now be released, in order.
    #[inline]
    pub fn push(&mut self, e: &Event, mut out: impl FnMut(&Event)) {
        if e.ts_ns < self.last_released {
            self.late += 1;
            out(e);
            return;
        }
        if self.window_ns == 0 {
            self.last_released = e.ts_ns;
            out(e);
            return;
        }
        match self.buf.back() {
            Some(b) if b.ts_ns > e.ts_ns => {
                self.reordered += 1;
                let mut i = self.buf.len();
                while i > 0 && self.buf[i - 1].ts_ns > e.ts_ns {
                    i -= 1;
                }
                self.buf.insert(i, *e);
            }
            _ => self.buf.push_back(*e),
        }
        self.newest = self.newest.max(e.ts_ns);
        while let Some(f) = self.buf.front() {
            if self.buf.len() > self.cap || self.newest - f.ts_ns > self.window_ns {
                let f = self.buf.pop_front().expect("front exists");
                self.last_released = f.ts_ns;
                out(&f);
            } else {
                break;
            }
        }
    }

    /// The clock has reached `now_ns` (the events' clock) without a newer event: release what
    /// is now older than the window (a live capture that went quiet).
    pub fn advance(&mut self, now_ns: u64, mut out: impl FnMut(&Event)) {
        self.newest = self.newest.max(now_ns);
        while let Some(f) = self.buf.front() {
            if self.newest - f.ts_ns > self.window_ns {
                let f = self.buf.pop_front().expect("front exists");
                self.last_released = f.ts_ns;
                out(&f);
            } else {
                break;
            }
        }
    }

    /// Events currently held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Release everything still held, in order.
    pub fn drain(&mut self, mut out: impl FnMut(&Event)) {
        while let Some(f) = self.buf.pop_front() {
            self.last_released = f.ts_ns;
            out(&f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Comm, Data, Kind, SchedData};

    fn ev(ts: u64, tid: u32) -> Event {
        Event {
            ts_ns: ts,
            cpu: 0,
            tgid: tid,
            tid,
            comm: Comm::default(),
            kind: Kind::SchedWakeup,
            data: Data::Sched(SchedData::default()),
        }
    }

    #[test]
    fn restores_order_within_window_and_counts_late_events() {
        let mut r = Reorder::new(100, 1000);
        let mut out = Vec::new();
        for (ts, tid) in [
            (10, 1),
            (30, 2),
            (20, 3),
            (20, 4),
            (500, 5),
            (15, 6),
            (600, 7),
        ] {
            r.push(&ev(ts, tid), |e| out.push((e.ts_ns, e.tid)));
        }
        r.drain(|e| out.push((e.ts_ns, e.tid)));
        assert_eq!(
            out,
            vec![
                (10, 1),
                (20, 3),
                (20, 4),
                (30, 2),
                (15, 6),
                (500, 5),
                (600, 7)
            ]
        );
        assert_eq!(r.late, 1);
        assert_eq!(r.reordered, 2);
    }

    #[test]
    fn advancing_the_clock_releases_a_quiet_buffer() {
        let mut r = Reorder::new(100, 1000);
        let mut out = Vec::new();
        r.push(&ev(10, 1), |e| out.push(e.ts_ns));
        r.push(&ev(50, 2), |e| out.push(e.ts_ns));
        r.advance(120, |e| out.push(e.ts_ns));
        assert_eq!(out, vec![10]);
        r.advance(0, |e| out.push(e.ts_ns));
        assert_eq!(out, vec![10], "the clock never goes back");
        r.advance(1000, |e| out.push(e.ts_ns));
        assert_eq!(out, vec![10, 50]);
        assert_eq!(r.late, 0);
    }

    #[test]
    fn cap_bounds_memory() {
        let mut r = Reorder::new(u64::MAX, 4);
        let mut n = 0;
        for ts in 0..100 {
            r.push(&ev(ts, 1), |_| n += 1);
            assert!(r.buf.len() <= 4);
        }
        r.drain(|_| n += 1);
        assert_eq!(n, 100);
    }
}
