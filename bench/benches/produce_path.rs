//! What one small batch costs on the owner shard, piece by piece, against
//! the CRC32C that every batch must pay:
//!
//! - `crc`: `batch::validate` of a 1-record 1 KiB batch (length, magic,
//!   CRC32C), the floor;
//! - `producer_check`: the idempotence table's verdict plus its record of
//!   the batch;
//! - `append_wait/64_partitions`: `Log::append` of one such batch to each of
//!   64 logs, then waiting until all are written (validation, offset
//!   rewrite, the flush round with its write, index bookkeeping and the
//!   wake-up of waiters), per batch. The batches are copies of a template
//!   made outside the timed part. `append_wait_uring` is the same with
//!   every write through io_uring (`inline_write_bytes = 0`).
//!
//! `cargo bench -p sluice-bench --bench produce_path` runs full sizes; under
//! `cargo test` each routine runs once at tiny sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::producer_state::{BatchFacts, ProducerStates, Verdict};
use sluice_engine::batch::{self, ProducerFields, Record};
use sluice_engine::{Durability, Env, FlushPolicy, Log, LogConfig};

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn one_record_batch(producer_id: i64, seq: i32) -> BytesMut {
    let record = Record {
        timestamp: 1_700_000_000_000,
        key: Some(b"key-0001".to_vec()),
        value: Some(vec![7u8; 1000]),
        headers: Vec::new(),
    };
    batch::build(
        &[record],
        ProducerFields {
            producer_id,
            producer_epoch: 0,
            base_sequence: seq,
        },
    )
}

fn per_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("produce_batch");
    g.throughput(Throughput::Elements(1));
    let b = one_record_batch(1, 0);
    g.bench_function(BenchmarkId::new("crc", "1x1KiB"), |bench| {
        bench.iter(|| batch::validate(std::hint::black_box(&b), 1 << 20).unwrap());
    });

    let mut states = ProducerStates::default();
    let mut seq = 0i32;
    g.bench_function(BenchmarkId::new("producer_check", "1x1KiB"), |bench| {
        bench.iter(|| {
            let h = batch::BatchHeader::parse(&b).unwrap();
            let v = states.check(h.producer_id(), h.producer_epoch(), seq, seq);
            assert_eq!(v, Verdict::Append);
            // What the produce path records: the batch's facts, at its offsets.
            let mut facts = BatchFacts::of(&h, &b);
            (facts.first_seq, facts.last_seq) = (seq, seq);
            states.apply(&facts, i64::from(seq), i64::from(seq));
            seq = seq.wrapping_add(1) & i32::MAX;
        });
    });

    let partitions = if full_size() { 64 } else { 2 };
    let runtime = compio::runtime::Runtime::new().unwrap();
    let template = one_record_batch(-1, -1);
    g.throughput(Throughput::Elements(partitions as u64));
    // The default (a round this small is a pwritev on the shard thread) and
    // every round through io_uring, for ADR 0011.
    for (name, inline_write_bytes) in [
        ("append_wait", LogConfig::default().inline_write_bytes),
        ("append_wait_uring", 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Never,
            preallocate_bytes: 0,
            inline_write_bytes,
            ..LogConfig::default()
        };
        let logs: Vec<Log> = runtime.block_on(async {
            let mut logs = Vec::new();
            for p in 0..partitions {
                logs.push(
                    Log::open(dir.path().join(format!("t-{p}")), config.clone(), Env::default())
                        .await
                        .unwrap(),
                );
            }
            logs
        });
        g.bench_function(BenchmarkId::new(name, format!("{partitions}_partitions")), |bench| {
            bench.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let batches: Vec<BytesMut> = (0..partitions).map(|_| template.clone()).collect();
                        let start = Instant::now();
                        let ends: Vec<i64> = logs
                            .iter()
                            .zip(batches)
                            .map(|(log, b)| log.append(b, 0).unwrap().last_offset + 1)
                            .collect();
                        for (log, end) in logs.iter().zip(ends) {
                            log.wait(end, Durability::Written).await.unwrap();
                        }
                        spent += start.elapsed();
                    }
                    spent
                })
            });
        });
    }
    g.finish();
}

criterion_group!(benches, per_batch);
criterion_main!(benches);
