//! The whoops correlator: matching each role's acquisition log with the grants the kernel
//! traced (`analysis::whoops::correlate`), and the whole analyzer with whoops tracking on (a
//! traced `lockrace run`'s analysis): `cargo bench -p lockrace --bench whoops`.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lockrace::{
    analysis::{
        self, AnalysisInput, RoleInput, WhoopsCause, WhoopsInput,
        synth::{self, DEV, INO},
        whoops::{self, Acquisition, GrantNote, PeerState},
    },
    events::{Data, Event, Kind},
};
use lockrace_common::k;

/// Two roles taking turns with `n` acquisitions each, 15 whoops per turn (the native-speed
/// handoff's ratio), and the kernel's grants 1 µs before each acquisition.
fn logs(n: usize, drop_every: Option<usize>) -> (Vec<RoleInput>, Vec<Vec<GrantNote>>) {
    let mut roles = Vec::new();
    let mut grants = Vec::new();
    for (ri, name) in ["server", "client"].iter().enumerate() {
        let mut acqs = Vec::with_capacity(n);
        let mut g = Vec::with_capacity(n);
        for i in 0..n {
            let ts = 1_000_000 + (i as u64) * 2_000 + ri as u64 * 1_000;
            let whoops = i % 16 != 0;
            acqs.push(Acquisition { ts_ns: ts, whoops });
            if drop_every.is_some_and(|d| i % d == d - 1) {
                continue;
            }
            g.push(GrantNote {
                ts_ns: ts - 1_000,
                cause: if whoops {
                    WhoopsCause::SelfBarge
                } else {
                    WhoopsCause::PeerNotWaiting
                },
                peer: if whoops {
                    PeerState::WokenNotRunning
                } else {
                    PeerState::NotInRequest
                },
            });
        }
        roles.push(RoleInput {
            name: name.to_string(),
            tgid: 1001 + ri as u32,
            acquisitions: acqs,
        });
        grants.push(g);
    }
    (roles, grants)
}

/// The acquisition logs the synthetic stream's grants imply (a grant by the role that held
/// the lock last is a whoops).
fn acquisitions(events: &[Event]) -> Vec<RoleInput> {
    let mut roles: Vec<RoleInput> = ["server", "client"]
        .iter()
        .enumerate()
        .map(|(i, n)| RoleInput {
            name: n.to_string(),
            tgid: 1001 + i as u32,
            acquisitions: Vec::new(),
        })
        .collect();
    let mut last = 0u32;
    for e in events {
        if let (Kind::PosixLockInode, Data::Lock(l)) = (e.kind, &e.data)
            && l.ret == 0
            && l.lock_type == k::F_WRLCK
            && let Some(r) = roles.iter_mut().find(|r| r.tgid == e.tgid)
        {
            r.acquisitions.push(Acquisition {
                ts_ns: e.ts_ns + 1,
                whoops: last == e.tgid,
            });
            last = e.tgid;
        }
    }
    roles
}

fn correlator(c: &mut Criterion) {
    let mut g = c.benchmark_group("whoops");
    let n = 100_000;
    let (roles, grants) = logs(n, None);
    g.throughput(Throughput::Elements(2 * n as u64));
    g.bench_function("correlate_200k_acquisitions", |b| {
        b.iter(|| black_box(whoops::correlate(black_box(&roles), black_box(&grants))))
    });
    let (roles, grants) = logs(n, Some(1000));
    g.bench_function("correlate_200k_acquisitions_with_missing_grants", |b| {
        b.iter(|| black_box(whoops::correlate(black_box(&roles), black_box(&grants))))
    });

    let events = synth::handoff_stream(1_000_000, 42);
    let input = AnalysisInput {
        whoops: Some(WhoopsInput {
            dev: DEV,
            ino: INO,
            roles: acquisitions(&events),
        }),
        ..Default::default()
    };
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("analyze_1m_events_with_whoops", |b| {
        b.iter(|| black_box(analysis::analyze(&events, &input)))
    });
    g.finish();
}

criterion_group!(benches, correlator);
criterion_main!(benches);
