//! `lockrace trace --interval S`: a compact per-lock table printed every S seconds while tracing
//! (like the bcc tools' `-i`), counts since the trace began.
//!
//! Invariants: pure rendering from [`Row`]s (built from the analyzer's live lock summaries);
//! bounded output: the [`ROWS_SHOWN`] busiest locks, then a count of the rest.
use std::fmt::Write;

use crate::analysis::{LockClass, LockKey, LockSummary};

/// Locks listed per interval.
pub const ROWS_SHOWN: usize = 10;
/// Width of the lock-name column.
const NAME_WIDTH: usize = 36;

/// One lock's counts so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub requests: u64,
    pub blocks: u64,
    pub grants: u64,
    pub busy: u64,
    pub fifo: u64,
    pub self_barge: u64,
    pub newcomer_barge: u64,
    pub waiter_reorder: u64,
    pub unresolved: u64,
}

impl Row {
    pub fn from_summary(s: &LockSummary, path: Option<&str>) -> Row {
        Row {
            name: lock_name(&s.key, path),
            requests: s.requests,
            blocks: s.blocks,
            grants: s.grants,
            busy: s.contention.busy,
            fifo: s.handoffs.fifo,
            self_barge: s.handoffs.self_barge,
            newcomer_barge: s.handoffs.newcomer_barge,
            waiter_reorder: s.handoffs.waiter_reorder,
            unresolved: s.handoffs.unresolved,
        }
    }

    fn activity(&self) -> (u64, u64) {
        (self.blocks + self.busy, self.requests)
    }
}

/// A lock as a person reads it: the path when known (else `major:minor/ino`), then the byte
/// range when it is not the whole file, then ` (flock)` for flock locks.
pub fn lock_name(key: &LockKey, path: Option<&str>) -> String {
    let Some(p) = path else {
        return key.label();
    };
    let mut s = p.to_string();
    if !(key.start == 0 && key.end == i64::MAX) {
        if key.end == i64::MAX {
            let _ = write!(s, "[{}..EOF]", key.start);
        } else {
            let _ = write!(s, "[{}..{}]", key.start, key.end);
        }
    }
    if key.class == LockClass::Flock {
        s.push_str(" (flock)");
    }
    s
}

/// Keep the tail of a long name (the file name and range matter most).
fn fit(name: &str) -> String {
    let n = name.chars().count();
    if n <= NAME_WIDTH {
        return name.to_string();
    }
    let tail: String = name.chars().skip(n - (NAME_WIDTH - 3)).collect();
    format!("...{tail}")
}

/// The table for one interval: `elapsed_s` since the trace began, `events` analysed so far.
pub fn render(elapsed_s: f64, events: u64, rows: &[Row]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "--- +{elapsed_s:.1} s: {events} events, {} locks (counts since the start) ---",
        rows.len()
    );
    if rows.is_empty() {
        let _ = writeln!(o, "no lock activity yet");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<NAME_WIDTH$} {:>8} {:>7} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "LOCK", "REQUESTS", "BLOCKS", "GRANTS", "BUSY", "FIFO", "SELF", "NEWCMR", "REORD", "UNRES"
    );
    let mut order: Vec<&Row> = rows.iter().collect();
    order.sort_by_key(|r| std::cmp::Reverse(r.activity()));
    for r in order.iter().take(ROWS_SHOWN) {
        let _ = writeln!(
            o,
            "{:<NAME_WIDTH$} {:>8} {:>7} {:>8} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}",
            fit(&r.name),
            r.requests,
            r.blocks,
            r.grants,
            r.busy,
            r.fifo,
            r.self_barge,
            r.newcomer_barge,
            r.waiter_reorder,
            r.unresolved
        );
    }
    if rows.len() > ROWS_SHOWN {
        let _ = writeln!(o, "... and {} quieter locks", rows.len() - ROWS_SHOWN);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(start: i64, end: i64, class: LockClass) -> LockKey {
        LockKey {
            dev: 254 << 20,
            ino: 7,
            class,
            start,
            end,
        }
    }

    #[test]
    fn names_prefer_the_path_and_keep_ranges() {
        assert_eq!(
            lock_name(&key(0, i64::MAX, LockClass::Flock), Some("/tmp/f")),
            "/tmp/f (flock)"
        );
        assert_eq!(
            lock_name(&key(1073741825, 1073741825, LockClass::Posix), Some("/db")),
            "/db[1073741825..1073741825]"
        );
        assert_eq!(
            lock_name(&key(0, i64::MAX, LockClass::Posix), None),
            "254:0/7"
        );
    }

    #[test]
    fn busiest_locks_first_and_bounded() {
        let rows: Vec<Row> = (0..15u64)
            .map(|i| Row {
                name: format!("/lock/{i}"),
                requests: i,
                blocks: i * 2,
                ..Row::default()
            })
            .collect();
        let out = render(2.0, 99, &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains("+2.0 s: 99 events, 15 locks"), "{out}");
        assert!(lines[1].starts_with("LOCK"));
        assert!(lines[2].starts_with("/lock/14 "), "{out}");
        assert_eq!(lines.len(), 2 + ROWS_SHOWN + 1);
        assert!(lines.last().unwrap().contains("5 quieter locks"));
    }

    #[test]
    fn long_names_keep_their_tail() {
        let long = format!("/very/long/{}/database.sqlite", "x".repeat(60));
        let f = fit(&long);
        assert_eq!(f.chars().count(), NAME_WIDTH);
        assert!(f.starts_with("...") && f.ends_with("database.sqlite"));
        assert!(render(0.0, 0, &[]).contains("no lock activity yet"));
    }
}
