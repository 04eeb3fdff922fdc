//! The live sink of `lockrace trace`: on the capture's reader thread, every event goes to the
//! JSONL file (`--events`), names its inode ([`Names`]), and is analysed at once by the one
//! pipeline (`crate::pipeline`), whose analyzer also streams Perfetto records (`--perfetto`)
//! as it completes them.
//!
//! Invariants: no event is kept after it was analysed (memory is the analyzer's bounded state,
//! whatever the trace's length); `--interval` tables are printed from the reader thread between
//! ring drains ([`Sink::idle`]), from the analyzer's live summaries, so they cost nothing per
//! event.
use std::io::{self, Write};
use std::time::{Duration, Instant};

use lockrace_common::k;

use super::interval::{self, Row};
use super::names::Names;
use crate::capture::Sink;
use crate::events::{Event, Kind};
use crate::jsonl::Collector;
use crate::pipeline::Pipeline;

/// How far behind the clock the interval tables release the reorder buffer.
const QUIET_MARGIN: Duration = Duration::from_millis(20);
/// How often idle tasks are forgotten, and after how long without an event.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
const TASK_IDLE: Duration = Duration::from_secs(30);

/// Periodic summaries.
struct Ticker {
    every: Duration,
    next: Instant,
    out: Box<dyn Write + Send>,
}

pub struct TraceSink {
    pipeline: Pipeline,
    jsonl: Option<Collector>,
    names: Names,
    ticker: Option<Ticker>,
    /// When the reader thread first ran (the programs are attached by then).
    started: Option<Instant>,
    next_prune: Instant,
}

impl TraceSink {
    pub fn new(
        pipeline: Pipeline,
        jsonl: Option<Collector>,
        names: Names,
        interval: Option<(Duration, Box<dyn Write + Send>)>,
    ) -> TraceSink {
        let now = Instant::now();
        TraceSink {
            pipeline,
            jsonl,
            names,
            ticker: interval.map(|(every, out)| Ticker {
                every,
                next: now + every,
                out,
            }),
            started: None,
            next_prune: now + PRUNE_EVERY,
        }
    }

    /// The per-lock table as it stands now.
    pub fn interval_table(&mut self) -> String {
        let mut rows = Vec::new();
        let names = &self.names;
        self.pipeline
            .analyzer()
            .for_each_lock(|s| rows.push(Row::from_summary(s, names.get(s.key.dev, s.key.ino))));
        interval::render(
            self.started
                .map(|s| s.elapsed().as_secs_f64())
                .unwrap_or(0.0),
            self.pipeline.stats().events,
            &rows,
        )
    }

    /// The pipeline to finish (the names name its locks: [`Names::name_locks`]), the names,
    /// and the JSONL writer (for its trailer).
    pub fn into_parts(self) -> (Pipeline, Names, Option<Collector>) {
        (self.pipeline, self.names, self.jsonl)
    }
}

impl Sink for TraceSink {
    fn push(&mut self, e: &Event) -> io::Result<()> {
        if let Some(c) = &mut self.jsonl {
            c.push(e)?;
        }
        if matches!(e.kind, Kind::PosixLockInode | Kind::FlockLockInode)
            && let Some(l) = e.lock()
            && l.lock_type != k::F_UNLCK
        {
            self.names.note(e.tgid, l.dev, l.ino);
        }
        self.pipeline.push(e);
        Ok(())
    }

    fn idle(&mut self) -> io::Result<()> {
        if self.started.is_none() {
            // Count intervals from the attach, not from the load before it.
            let now = Instant::now();
            self.started = Some(now);
            if let Some(t) = self.ticker.as_mut() {
                t.next = now + t.every;
            }
        }
        if Instant::now() >= self.next_prune {
            // Every process that ever locked would otherwise stay in the analyzer's task table
            // (a `--path` trace of a cron job sees a new process each run).
            self.next_prune = Instant::now() + PRUNE_EVERY;
            let before = crate::host::monotonic_ns().saturating_sub(TASK_IDLE.as_nanos() as u64);
            self.pipeline.analyzer().prune_tasks(before);
        }
        let due = self
            .ticker
            .as_ref()
            .is_some_and(|t| Instant::now() >= t.next);
        if due {
            // Events stay in the reorder buffer until a newer one comes: when the traced
            // programs went quiet, time alone releases them (with a margin for records still
            // on their way into the ring).
            let now = crate::host::monotonic_ns();
            self.pipeline
                .analyzer()
                .advance(now.saturating_sub(QUIET_MARGIN.as_nanos() as u64));
            let table = self.interval_table();
            if let Some(t) = self.ticker.as_mut() {
                // Skip intervals missed while busy rather than printing a burst of them.
                while t.next <= Instant::now() {
                    t.next += t.every;
                }
                t.out.write_all(table.as_bytes())?;
                t.out.write_all(b"\n")?;
                t.out.flush()?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        match &mut self.jsonl {
            Some(c) => c.finish(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::synth::{Actor, Flavor, Script};
    use std::sync::{Arc, Mutex};

    /// Writes into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn script() -> Vec<Event> {
        let mut s = Script::new();
        let a = Actor::new(10, 10, 0, "a", 0xa0, Flavor::Flock);
        let b = Actor::new(11, 11, 1, "b", 0xb0, Flavor::Flock);
        s.lock_now(&a, k::F_WRLCK);
        s.lock_block(&b, k::F_WRLCK, a.held);
        s.unlock(&a, &[&b]);
        s.run(&b);
        s.retry_grant(&b, k::F_WRLCK);
        s.unlock(&b, &[]);
        s.events
    }

    #[test]
    fn the_sink_analyses_as_it_goes_and_ticks_on_idle() {
        let buf = Buf::default();
        let mut names = Names::new();
        names.insert(
            crate::analysis::synth::DEV,
            crate::analysis::synth::INO,
            "/x".into(),
        );
        let pipeline = Pipeline::new(&crate::analysis::AnalysisInput::default(), None).unwrap();
        let mut sink = TraceSink::new(
            pipeline,
            None,
            names,
            Some((Duration::from_millis(1), Box::new(buf.clone()))),
        );
        sink.idle().unwrap(); // the reader thread's first round: the clock starts
        for e in script() {
            sink.push(&e).unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
        sink.idle().unwrap();
        let printed = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(printed.contains("/x (flock)"), "{printed}");
        sink.finish().unwrap();
        let (pipeline, names, jsonl) = sink.into_parts();
        assert!(jsonl.is_none());
        let mut a = None;
        pipeline
            .finish(|analysis| {
                names.name_locks(analysis);
                a = Some(analysis.clone());
                Default::default()
            })
            .unwrap();
        let a = a.unwrap();
        assert_eq!(a.locks.len(), 1);
        assert_eq!(a.locks[0].path.as_deref(), Some("/x"));
        assert_eq!(a.locks[0].grants, 2);
        assert_eq!(a.locks[0].handoffs.fifo, 1);
    }

    #[test]
    fn the_sink_is_send() {
        fn send<T: Send + 'static>() {}
        send::<TraceSink>();
    }
}
