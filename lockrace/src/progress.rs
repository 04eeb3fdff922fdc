//! Progress on a terminal: one stderr line, rewritten in place at most [`TICKS_PER_S`] times a
//! second by a side thread, and erased when the work ends. Nothing at all when stderr is not a
//! terminal (logs and CI output stay clean).
//!
//! [`Ticker`] is the generic part (a closure renders the line; `lockrace trace --duration` shows
//! elapsed and remaining time with [`duration_line`]); `lockrace run`'s line, read from the
//! roles' turn counter, is `workload::progress`.
//!
//! Invariants: the ticker thread blocks SIGINT/SIGTERM (they reach the thread that acts on
//! them); it stops within one tick of [`Ticker`] being dropped, and its line is gone by then.
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Line updates per second, at most.
pub const TICKS_PER_S: u64 = 5;
const TICK: Duration = Duration::from_millis(1000 / TICKS_PER_S);

/// A line on stderr, rewritten every tick until dropped.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Calls `line(elapsed)` every tick and shows what it returns (None: leave the line as
    /// is). Returns None, and starts nothing, when stderr is not a terminal.
    pub fn start<F>(line: F) -> Option<Ticker>
    where
        F: FnMut(Duration) -> Option<String> + Send + 'static,
    {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Self::start_unchecked(line, std::io::stderr()))
    }

    fn start_unchecked<F, W>(mut line: F, mut out: W) -> Ticker
    where
        F: FnMut(Duration) -> Option<String> + Send + 'static,
        W: Write + Send + 'static,
    {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let _ = crate::signals::handled().thread_block();
            let started = Instant::now();
            let mut shown = false;
            let (lock, cvar) = &*stop2;
            let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let (guard, _) = cvar
                    .wait_timeout(stopped, TICK)
                    .unwrap_or_else(|e| e.into_inner());
                stopped = guard;
                if *stopped {
                    break;
                }
                if let Some(text) = line(started.elapsed()) {
                    let _ = write!(out, "\r{text}\x1b[K");
                    let _ = out.flush();
                    shown = true;
                }
            }
            if shown {
                let _ = write!(out, "\r\x1b[K");
                let _ = out.flush();
            }
        });
        Ticker {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cvar.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `12.0 s elapsed, 18.0 s left` for a bounded wait (`trace --duration`).
pub fn duration_line(what: &str, elapsed: Duration, total: Duration) -> String {
    let left = total.saturating_sub(elapsed);
    format!(
        "{what}: {:.1} s elapsed, {:.1} s left (Ctrl-C ends it early)",
        elapsed.as_secs_f64(),
        left.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_rewrites_one_line_and_erases_it() {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let started = Instant::now();
        let t = Ticker::start_unchecked(|_| Some("working".to_string()), sink.clone());
        let updates = || sink.0.lock().unwrap().len() / "\rworking\x1b[K".len();
        while updates() < 2 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(t);
        let elapsed = started.elapsed();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("\rworking\x1b[K"), "{text:?}");
        assert!(text.ends_with("\r\x1b[K"), "erased at the end: {text:?}");
        assert!(!text.contains('\n'), "{text:?}");
        // At most one update per tick.
        let n = text.matches("working").count() as u128;
        assert!(
            n >= 2 && n <= elapsed.as_millis() / TICK.as_millis() + 1,
            "{n} in {elapsed:?}"
        );
        // Dropped, it writes no more.
        let len = text.len();
        std::thread::sleep(TICK * 2);
        assert_eq!(sink.0.lock().unwrap().len(), len);
    }
}
