//! The event decoders and the JSONL writer, per event, over a realistic mix (100k events of
//! `synth::handoff_stream`: lock, sched and syscall records):
//! `cargo bench -p lockrace --bench events`.
//!
//! - `decode/raw_records`: `events::decode` on the ring buffer's raw records (what the capture's
//!   reader does for every record);
//! - `decode/from_json`: `events::from_json` on JSONL lines (`lockrace report FILE`);
//! - `decode/to_json`: one JSONL line per event through serde (`events::to_json`);
//! - `decode/push_json`: the same line without serde or allocation (what `--events FILE` and
//!   `lockrace record` write).
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lockrace::{
    analysis::synth,
    events::{self, Data, Event},
};
use lockrace_common::{
    Header, LockBody, LockEvent, SchedBody, SchedEvent, SyscallBody, SyscallEvent,
};

fn bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: lockrace-common's records are plain-old-data without padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// The raw record the kernel side would have written for `e`.
fn encode(e: &Event) -> Vec<u8> {
    let hdr = Header {
        ts_ns: e.ts_ns,
        tgid: e.tgid,
        tid: e.tid,
        cpu: e.cpu,
        kind: e.kind as u32,
        comm: e.comm.0,
    };
    match &e.data {
        Data::Lock(l) => bytes(&LockEvent {
            hdr,
            body: LockBody {
                fl: l.fl,
                ino: l.ino,
                blocker: l.blocker,
                owner: l.owner,
                start: l.start,
                end: l.end,
                dev: l.dev,
                flags: l.flags,
                fl_pid: l.fl_pid,
                ret: l.ret,
                lock_type: l.lock_type,
                _pad: [0; 7],
            },
        }),
        Data::Sched(s) => bytes(&SchedEvent {
            hdr,
            body: SchedBody {
                target_tid: s.target_tid,
                target_cpu: s.target_cpu,
                orig_cpu: s.orig_cpu,
                prio: s.prio,
                prev_state: s.prev_state,
                target_comm: s.target_comm.0,
            },
        }),
        Data::Syscall(s) => bytes(&SyscallEvent {
            hdr,
            body: SyscallBody {
                fd: s.fd,
                cmd: s.cmd,
                arg: 0,
                ret: s.ret,
                l_start: s.l_start,
                l_len: s.l_len,
                l_type: s.l_type.unwrap_or(0),
                l_whence: s.l_whence,
                flock_valid: u8::from(s.l_type.is_some()),
                _pad: [0; 3],
            },
        }),
    }
}

fn decoders(c: &mut Criterion) {
    let events = synth::handoff_stream(100_000, 42);
    let raw: Vec<Vec<u8>> = events.iter().map(encode).collect();
    // The encoding is exact: decoding gives the events back.
    assert!(
        raw.iter()
            .zip(&events)
            .all(|(r, e)| events::decode(r).as_ref() == Ok(e))
    );
    let lines: Vec<String> = events.iter().map(events::to_json).collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(20);
    g.bench_function("raw_records", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in &raw {
                if let Ok(e) = events::decode(black_box(r)) {
                    n = n.wrapping_add(e.ts_ns);
                }
            }
            black_box(n)
        })
    });
    g.bench_function("from_json", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for l in &lines {
                if let Ok(e) = events::from_json(black_box(l)) {
                    n = n.wrapping_add(e.ts_ns);
                }
            }
            black_box(n)
        })
    });
    g.bench_function("to_json", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for e in &events {
                n += events::to_json(black_box(e)).len();
            }
            black_box(n)
        })
    });
    g.bench_function("push_json", |b| {
        let mut line = Vec::with_capacity(512);
        b.iter(|| {
            let mut n = 0usize;
            for e in &events {
                line.clear();
                events::push_json(&mut line, black_box(e));
                n += line.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, decoders);
criterion_main!(benches);
