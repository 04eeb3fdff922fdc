//! Analyzer throughput over a synthetic 1M-event stream of realistic handoffs (barging, fair
//! handoffs, spurious wakeups, newcomers): `cargo bench -p lockrace --bench analyzer`.
//! Goal: >= 5M events/s with memory that does not grow with the number of events.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lockrace::analysis::{self, AnalysisInput, synth};

fn analyzer(c: &mut Criterion) {
    let events = synth::handoff_stream(1_000_000, 42);
    let input = AnalysisInput::default();
    let mut g = c.benchmark_group("analyzer");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.sample_size(10);
    g.bench_function("push_1m_events", |b| {
        b.iter(|| black_box(analysis::analyze(&events, &input)))
    });
    g.finish();
}

criterion_group!(benches, analyzer);
criterion_main!(benches);
