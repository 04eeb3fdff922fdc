//! The JSONL writer: [`Collector`], the capture sink of `--events FILE` and `lockrace record`
//! (it also keeps the events in memory for an analysis after the capture).
//!
//! Invariants: the header is the first line, written when the file is created; events are
//! written with [`crate::events::push_json`] (the same bytes as serde, without allocating);
//! kernel pointers in the file are per-run ids ([`Redactor`]) unless `raw_pointers`, while the
//! events kept in memory carry the kernel's values (the analysis needs them); the meta lines
//! after the capture are written and flushed by [`Collector::write_meta`].
use std::io::{self, Write};

use anyhow::Context as _;

use super::file::{FileHeader, FileTrailer, Meta, meta_to_json};
use crate::capture::{CaptureStats, Sink};
use crate::events::Event;
use crate::redact::Redactor;

/// Keeps every event in memory (for analysis after the capture) and/or writes JSONL.
///
/// A JSONL file starts with a `lockrace_header` line (format version, kernel, this process's
/// command line) and, once the owner calls [`Collector::write_meta`] after the capture, ends
/// with `lockrace_acquisitions` / `lockrace_trailer` lines (docs/EVENTS.md). The events kept
/// in memory carry the kernel's pointers (the analysis needs them); the file carries per-run
/// ids instead ([`Redactor`]) unless made with `raw_pointers`.
#[derive(Default)]
pub struct Collector {
    pub events: Option<Vec<Event>>,
    pub jsonl: Option<io::BufWriter<std::fs::File>>,
    /// Events written to the JSONL file.
    pub written: u64,
    /// Replaces kernel pointers in the file (None: `--raw-pointers`).
    redactor: Option<Redactor>,
    /// The JSONL line being written (reused: no allocation per event).
    line: Vec<u8>,
}

impl Collector {
    /// Kernel pointers in the JSONL file are replaced by ids (see [`Collector::new_with`]).
    pub fn new(keep: bool, jsonl: Option<&std::path::Path>) -> anyhow::Result<Collector> {
        Collector::new_with(keep, jsonl, false)
    }

    /// `raw_pointers`: write the kernel's addresses to the JSONL file (`--raw-pointers`).
    pub fn new_with(
        keep: bool,
        jsonl: Option<&std::path::Path>,
        raw_pointers: bool,
    ) -> anyhow::Result<Collector> {
        let jsonl = match jsonl {
            Some(p) => {
                let file = std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                let mut w = io::BufWriter::with_capacity(1 << 20, file);
                let command: Vec<String> = std::env::args().skip(1).collect();
                let mut header = FileHeader::new(command.join(" "));
                header.raw_pointers = raw_pointers;
                let header = Meta::LockraceHeader(header);
                writeln!(w, "{}", meta_to_json(&header))
                    .with_context(|| format!("cannot write {}", p.display()))?;
                Some(w)
            }
            None => None,
        };
        Ok(Collector {
            events: keep.then(Vec::new),
            jsonl,
            written: 0,
            redactor: (!raw_pointers).then(Redactor::new),
            line: Vec::with_capacity(512),
        })
    }

    /// Append meta lines (acquisitions, trailer) after the capture and flush.
    pub fn write_meta(&mut self, metas: &[Meta]) -> io::Result<()> {
        if let Some(w) = &mut self.jsonl {
            for m in metas {
                writeln!(w, "{}", meta_to_json(m))?;
            }
            w.flush()?;
        }
        Ok(())
    }

    /// The trailer for a capture that ended with `stats`.
    pub fn trailer(
        &self,
        stats: &CaptureStats,
        lock_field_names: &str,
        mut incomplete: Vec<String>,
    ) -> FileTrailer {
        incomplete.extend(stats.untracked_reason());
        FileTrailer {
            events: self.written,
            dropped: stats.dropped,
            decode_errors: stats.decode_errors,
            incomplete_reasons: incomplete,
            lock_field_names: lock_field_names.to_string(),
            memfd: None,
            workload: None,
            // A live capture always has programs; a rewritten file (redaction) has none and
            // claims no probe set.
            probes: (!stats.programs.is_empty()).then(|| stats.probes.name().to_string()),
            programs: crate::report::capture::program_reports(stats),
        }
    }
}

impl Sink for Collector {
    fn push(&mut self, e: &Event) -> io::Result<()> {
        if let Some(v) = &mut self.events {
            v.push(*e);
        }
        if let Some(w) = &mut self.jsonl {
            let out = match &mut self.redactor {
                Some(r) => r.event(e),
                None => *e,
            };
            self.line.clear();
            crate::events::push_json(&mut self.line, &out);
            self.line.push(b'\n');
            w.write_all(&self.line)?;
            self.written += 1;
        }
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.jsonl {
            w.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{self, Comm, Data, Kind, LockData};
    use crate::jsonl::file::meta_from_json;

    fn lock_event(fl: u64, owner: u64) -> Event {
        Event {
            ts_ns: 1,
            cpu: 0,
            tgid: 5,
            tid: 5,
            comm: Comm::from_str_lossy("x"),
            kind: Kind::PosixLockInode,
            data: Data::Lock(LockData {
                fl,
                owner,
                blocker: fl + 0x100,
                flags: 129,
                lock_type: 1,
                ..Default::default()
            }),
        }
    }

    fn written(raw: bool) -> (Vec<String>, Vec<Event>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut c = Collector::new_with(true, Some(&path), raw).unwrap();
        let e = lock_event(0xffff_8880_0000_1000, 0xffff_8880_0000_2000);
        c.push(&e).unwrap();
        c.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        (
            text.lines().map(str::to_string).collect(),
            c.events.take().unwrap(),
        )
    }

    #[test]
    fn the_jsonl_file_carries_ids_and_memory_the_kernel_pointers() {
        let (lines, kept) = written(false);
        assert!(!lines[0].contains("raw_pointers"), "{}", lines[0]);
        let e = events::from_json(&lines[1]).unwrap();
        let l = e.lock().unwrap();
        assert_eq!((l.fl, l.blocker, l.owner), (1, 2, 3));
        assert!(!lines[1].contains("18446"), "{}", lines[1]);
        assert_eq!(kept[0].lock().unwrap().fl, 0xffff_8880_0000_1000);
        let (lines, _) = written(true);
        match meta_from_json(&lines[0]).unwrap() {
            Meta::LockraceHeader(h) => assert!(h.raw_pointers),
            other => panic!("{other:?}"),
        }
        let e = events::from_json(&lines[1]).unwrap();
        assert_eq!(e.lock().unwrap().owner, 0xffff_8880_0000_2000);
    }
}
