//! What the operator metrics add per request, per appended batch, per
//! fetched partition and per storage write: each counting step timed
//! alone, to set against the broker's CPU time per request at full load
//! (`docs/benchmarks.md`, "What counting costs on the produce path").
//!
//! `cargo bench -p sluice --bench metrics` measures; under `cargo test`
//! every routine runs once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::metrics::{ShardMetrics, Traffic};
use sluice_engine::stats::Histogram;

/// The next of a cheap pseudo-random sequence of latencies (up to about
/// 1 s), so that every bucket of a histogram is hit, as real latencies do.
fn next_ns(ns: &mut u64) -> u64 {
    *ns = ns.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    *ns >> 34
}

fn counting(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    // A request's latency: the clock read at dispatch and at the answer.
    g.bench_function("clock_pair", |b| {
        b.iter(|| {
            let started = Instant::now();
            black_box(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX))
        })
    });
    let shard = ShardMetrics::default();
    let mut ns = 1_u64;
    // Per request: the API's counter and a latency bucket (37 bounds).
    g.bench_function("request", |b| b.iter(|| shard.request(black_box(0), next_ns(&mut ns))));
    // Per appended batch: bytes and records of its partition.
    let traffic = Traffic::default();
    g.bench_function("appended", |b| {
        b.iter(|| traffic.appended(black_box(16_384), black_box(16)))
    });
    // Per partition in a consumer's fetch answer: bytes out by topic.
    let topic: Arc<str> = Arc::from("orders");
    g.bench_function("sent", |b| b.iter(|| shard.sent(black_box(&topic), black_box(16_384))));
    // Per segment write or fdatasync: a latency bucket (and a clock pair).
    let h = Histogram::latency();
    g.bench_function("io_observe", |b| b.iter(|| h.observe(black_box(next_ns(&mut ns)))));
    // The pseudo-random sequence alone, to subtract from the two above.
    g.bench_function("sequence_only", |b| b.iter(|| black_box(next_ns(&mut ns))));
    g.finish();
}

criterion_group!(benches, counting);
criterion_main!(benches);
