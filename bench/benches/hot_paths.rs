//! Micro-benchmarks of per-request hot paths, next to the engine's own
//! append and read benchmarks (`cargo bench -p sluice-engine`):
//!
//! - batch header parse and validation (CRC32C included) and the in-place
//!   offset rewrite that every produce does;
//! - Fetch response encoding: framing for many partitions whose records
//!   stay in the segment files;
//! - the generator's batch encoding, per 1 KiB message, uncompressed and
//!   with lz4 and zstd.
//!
//! `cargo bench -p sluice-bench --bench hot_paths` runs full sizes; under
//! `cargo test` (no `--bench` flag) each routine runs once at tiny sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::protocol::fetch::{PartitionData, Top, TopicData, encode};
use sluice_bench::wire::{Codec, OpenBatch, put_batch};
use sluice_bench::workload::Compression;
use sluice_engine::{FileSlice, batch};

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn batches(c: &mut Criterion) {
    let records = if full_size() { 64 } else { 2 };
    let b = batch::build_simple(records, 1024 - 8, 1_700_000_000_000);
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function(BenchmarkId::new("validate", format!("{records}x1KiB")), |bench| {
        bench.iter(|| batch::validate(std::hint::black_box(&b), 1 << 20).unwrap());
    });
    let mut m = b.clone();
    g.bench_function(BenchmarkId::new("assign_offsets", format!("{records}x1KiB")), |bench| {
        let mut next = 0i64;
        bench.iter(|| {
            batch::assign(std::hint::black_box(&mut m), next, 0);
            next += records as i64;
        });
    });
    g.finish();
}

fn fetch_encoding(c: &mut Criterion) {
    let partitions = if full_size() { 256 } else { 2 };
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    let file = Arc::new(std::fs::File::open(f.path()).unwrap());
    let topics = vec![TopicData {
        name: Arc::from("bench-topic"),
        topic_id: uuid::Uuid::nil(),
        partitions: (0..partitions)
            .map(|i| PartitionData {
                partition_index: i,
                error_code: 0,
                high_watermark: 1_000_000,
                last_stable_offset: 1_000_000,
                log_start_offset: 0,
                aborted: None,
                records: Some(FileSlice {
                    file: file.clone(),
                    position: 0,
                    len: 4096,
                    recent: false,
                }),
                diverging_epoch: None,
                current_leader: None,
            })
            .collect(),
    }];
    let mut g = c.benchmark_group("fetch_response");
    g.throughput(Throughput::Elements(partitions as u64));
    for version in [11i16, 12] {
        g.bench_function(
            BenchmarkId::new(format!("v{version}"), format!("{partitions}_partitions")),
            |b| {
                b.iter(|| encode(version, 7, Top::default(), std::hint::black_box(&topics), &[]));
            },
        );
    }
    g.finish();
}

fn generator_batches(c: &mut Criterion) {
    let records = if full_size() { 128 } else { 2 };
    let payload: Vec<u8> = (0..1024u32).map(|i| if i < 512 { (i * 7) as u8 } else { 0 }).collect();
    let mut g = c.benchmark_group("generator_batch");
    g.throughput(Throughput::Elements(records as u64));
    for comp in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let mut open = OpenBatch::default();
        let mut out = BytesMut::with_capacity(records * 1100 + 128);
        let mut codec = Codec::default();
        g.bench_function(BenchmarkId::new(format!("{comp:?}"), format!("{records}x1KiB")), |b| {
            b.iter(|| {
                open.clear();
                for i in 0..records {
                    open.push(None, i as u64, &payload);
                }
                out.clear();
                put_batch(&mut out, &open, 0, comp, &mut codec).unwrap();
                std::hint::black_box(out.len())
            });
        });
    }
    g.finish();
}

criterion_group!(benches, batches, fetch_encoding, generator_batches);
criterion_main!(benches);
