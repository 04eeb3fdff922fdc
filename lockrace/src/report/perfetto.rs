//! `--perfetto FILE`: a Chrome JSON trace (`{"traceEvents": [...]}`) that ui.perfetto.dev and
//! chrome://tracing open.
//!
//! Layout: one track per task (pid = tgid, tid = tid, named by `M` metadata events). On it,
//! complete (`X`) slices: "blocked on LOCK" (first block -> decision), nested in it "runnable"
//! (a wakeup -> the switch-in), "holding LOCK" (grant -> release) and nested in that "unlock
//! LOCK" (syscall entry -> unlock). Each wakeup is an instant on the wakee's track and a
//! zero-length "wake" slice on the waker's track, and a flow arrow (Perfetto's v2 flows:
//! `bind_id`, `flow_out`, `flow_in`) runs wake -> runnable -> what the wakee did next (granted,
//! blocked again, gave up).
//!
//! The writer is an analyzer observer; `crate::pipeline` attaches it and closes the file.
//!
//! Invariants: streamed (written as the analyzer completes records, nothing accumulated);
//! only `X`, `i` and `M` phases, so there is never a `B` without its `E`; every flow id is used
//! by exactly one chain (one start, at most one step, at most one end); slices on one track nest
//! or are disjoint (Perfetto drops partially overlapping ones); timestamps are microseconds with
//! nanosecond decimals, on the capture's CLOCK_MONOTONIC; kernel pointers in args (`blocker`,
//! `owner`) are `#N` labels numbered in the file unless made with `raw_pointers`.
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::analysis::observer::{
    AfterWake, HoldRecord, Observer, ReleaseRecord, RequestOutcome, RequestRecord,
};

/// Streams trace events to `W`.
pub struct PerfettoWriter<W: Write> {
    out: W,
    first: bool,
    next_flow: u64,
    named_pids: HashSet<u32>,
    labels: crate::redact::Labels,
    err: Option<io::Error>,
    /// Trace events written.
    pub written: u64,
}

/// `ts` in microseconds with exact nanoseconds (a JSON number).
fn us(ns: u64) -> Value {
    let s = format!("{}.{:03}", ns / 1000, ns % 1000);
    serde_json::from_str(&s).unwrap_or(Value::from(ns / 1000))
}

fn type_name(t: Option<u8>) -> &'static str {
    match t {
        Some(0) => "read",
        Some(1) => "write",
        Some(2) => "unlock",
        _ => "?",
    }
}

impl PerfettoWriter<BufWriter<File>> {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let f = File::create(path)
            .with_context(|| format!("cannot create the trace {}", path.display()))?;
        PerfettoWriter::new(BufWriter::new(f))
            .with_context(|| format!("cannot write the trace {}", path.display()))
    }
}

impl<W: Write> PerfettoWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"{\"traceEvents\":[\n")?;
        Ok(PerfettoWriter {
            out,
            first: true,
            next_flow: 1,
            named_pids: HashSet::new(),
            labels: crate::redact::Labels::new(false),
            err: None,
            written: 0,
        })
    }

    fn emit(&mut self, v: Value) {
        if self.err.is_some() {
            return;
        }
        let r = (|| {
            if !self.first {
                self.out.write_all(b",\n")?;
            }
            serde_json::to_writer(&mut self.out, &v).map_err(io::Error::other)
        })();
        self.first = false;
        self.written += 1;
        if let Err(e) = r {
            self.err = Some(e);
        }
    }

    /// Write the kernel's addresses in args (`--raw-pointers`) instead of `#N` labels.
    pub fn raw_pointers(mut self, raw: bool) -> Self {
        self.labels = crate::redact::Labels::new(raw);
        self
    }

    fn flow_id(&mut self) -> u64 {
        let id = self.next_flow;
        self.next_flow += 1;
        id
    }

    /// Close the JSON document; returns the writer, or the first write error.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        self.out.write_all(
            b"\n],\"displayTimeUnit\":\"ns\",\"otherData\":{\"producer\":\"lockrace\"}}\n",
        )?;
        self.out.flush()?;
        Ok(self.out)
    }

    #[allow(clippy::too_many_arguments)]
    fn slice(
        &mut self,
        pid: u32,
        tid: u32,
        name: String,
        ts: u64,
        dur: u64,
        args: Value,
        flow: Option<(u64, bool, bool)>,
    ) {
        let mut v = json!({
            "ph": "X", "cat": "lock", "name": name, "pid": pid, "tid": tid,
            "ts": us(ts), "dur": us(dur), "args": args,
        });
        if let Some((id, fin, fout)) = flow
            && let Some(m) = v.as_object_mut()
        {
            m.insert("bind_id".into(), json!(id));
            if fin {
                m.insert("flow_in".into(), json!(true));
            }
            if fout {
                m.insert("flow_out".into(), json!(true));
            }
        }
        self.emit(v);
    }
}

impl<W: Write> Observer for PerfettoWriter<W> {
    fn on_task(&mut self, tid: u32, tgid: u32, comm: &str) {
        if self.named_pids.insert(tgid) {
            self.emit(
                json!({"ph": "M", "name": "process_name", "pid": tgid, "tid": tgid,
                "args": {"name": comm}}),
            );
        }
        self.emit(
            json!({"ph": "M", "name": "thread_name", "pid": tgid, "tid": tid,
            "args": {"name": comm}}),
        );
    }

    fn on_request(&mut self, r: &RequestRecord) {
        let Some(first) = r.blocks.first() else {
            return;
        };
        let lock = r.lock.map(|k| k.label()).unwrap_or_else(|| "?".into());
        let (pid, tid) = (r.task.tgid, r.task.tid);
        let last_known = r
            .blocks
            .iter()
            .map(|b| b.ts_ns)
            .chain(r.wakes.iter().filter_map(|w| w.run_ts))
            .max()
            .unwrap_or(first.ts_ns);
        let end = r
            .outcome_ts
            .or(r.exit_ts)
            .unwrap_or(last_known)
            .max(first.ts_ns);
        let blocker = self.labels.label(first.blocker);
        let outcome = match r.outcome {
            RequestOutcome::Granted => "granted".to_string(),
            RequestOutcome::Unlocked => "unlocked".to_string(),
            RequestOutcome::Failed(e) => format!("error {e}"),
            RequestOutcome::NoDecision => "no decision".to_string(),
            RequestOutcome::Unfinished => "unfinished".to_string(),
        };
        self.slice(
            pid,
            tid,
            format!("blocked on {lock}"),
            first.ts_ns,
            end - first.ts_ns,
            json!({
                "type": type_name(r.lock_type),
                "blocks": r.blocks.len(),
                "wakes": r.wakes.len(),
                "outcome": outcome,
                "blocker": blocker,
                "waits_under_tid": first.parent,
            }),
            None,
        );
        for w in &r.wakes {
            let id = self.flow_id();
            self.slice(
                w.waker.tgid,
                w.waker.tid,
                format!("wake {tid}"),
                w.ts_ns,
                0,
                json!({"wakee": tid, "waker_cpu": w.waker_cpu, "target_cpu": w.target_cpu}),
                Some((id, false, true)),
            );
            self.emit(json!({"ph": "i", "s": "t", "cat": "lock", "name": "wakeup",
                "pid": pid, "tid": tid, "ts": us(w.ts_ns),
                "args": {"waker": w.waker.tid, "waker_cpu": w.waker_cpu}}));
            let start = w.ts_ns + 1;
            let run = w.run_ts.unwrap_or(start).max(start).min(end.max(start));
            self.slice(
                pid,
                tid,
                format!("runnable (woken by {})", w.waker.tid),
                start,
                run - start,
                json!({"wake_to_run_ns": w.run_ts.map(|t| t.saturating_sub(w.ts_ns)),
                    "ran_on_cpu": w.run_cpu}),
                Some((id, true, true)),
            );
            let (name, ts) = match w.then {
                AfterWake::Granted(ts) => ("granted", ts),
                AfterWake::Reblocked(ts) => ("blocked again", ts),
                AfterWake::Failed(ts) => ("gave up", ts),
                AfterWake::Pending => continue,
            };
            self.slice(
                pid,
                tid,
                name.to_string(),
                ts.max(run),
                0,
                json!({}),
                Some((id, true, false)),
            );
        }
    }

    fn on_hold(&mut self, h: &HoldRecord) {
        let owner = self.labels.label(h.owner);
        self.slice(
            h.task.tgid,
            h.task.tid,
            format!("holding {}", h.lock.label()),
            h.start_ts,
            h.end_ts.saturating_sub(h.start_ts),
            json!({
                "type": type_name(Some(h.lock_type)),
                "owner": owner,
                "released": h.released,
                "released_by": h.released_by,
            }),
            None,
        );
    }

    fn on_release(&mut self, r: &ReleaseRecord) {
        let start = r.enter_ts.unwrap_or(r.ts_ns).min(r.ts_ns);
        self.slice(
            r.task.tgid,
            r.task.tid,
            format!("unlock {}", r.lock.label()),
            start,
            r.ts_ns - start,
            json!({"cpu": r.cpu, "woke": r.woke.iter().map(|w| w.0).collect::<Vec<_>>()}),
            None,
        );
    }
}
