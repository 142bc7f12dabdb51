//! The cleaner's throughput: one pass over a compacted log's rolled
//! segments (10,000 keys, each written four times in batches of 16 records
//! of 1 KiB values), next to a plain copy of the same files in the same
//! run (pread, write, fdatasync), the floor any rewrite pays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    future::Future,
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    pin::Pin,
    time::Duration,
};

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_engine::{
    CleanRules, Env, Log, LogConfig,
    batch::{self, ProducerFields, Record},
};

const KEYS: u32 = 10_000;

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// 8 MiB segments; 64 KiB at the tiny size the test run uses, so that
/// some roll there too.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: if full_size() { 8 << 20 } else { 64 << 10 },
        ..LogConfig::default()
    }
}

fn keyed(first: u32) -> BytesMut {
    let records: Vec<Record> = (0..16)
        .map(|i| Record {
            timestamp: 1_700_000_000_000,
            key: Some(format!("key-{:06}", (first + i) % KEYS).into_bytes()),
            value: Some(vec![b'v'; 1024]),
            headers: Vec::new(),
        })
        .collect();
    batch::build(&records, ProducerFields::NONE)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn never(_: i64, _: i64) -> bool {
    false
}

fn no_pace(_: u64) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async {})
}

fn clean_throughput(c: &mut Criterion) {
    let base = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    fs::create_dir_all(&base).unwrap();
    let source = tempfile::tempdir_in(&base).unwrap();
    let rt = compio::runtime::Runtime::new().unwrap();
    // Four writes of every key, then a last batch in its own segment.
    let batches = if full_size() { KEYS * 4 / 16 } else { 16 };
    let rolled: Vec<(PathBuf, u64)> = rt.block_on(async {
        let log = Log::open(source.path(), config(), Env::default()).await.unwrap();
        for b in 0..batches {
            log.append(keyed(b * 16), 0).unwrap();
        }
        log.sync().await.unwrap();
        let rolled = log.rolled_segments();
        rolled
            .iter()
            .map(|(base, _, size, _)| (source.path().join(format!("{base:020}.log")), *size))
            .collect()
    });
    let total: u64 = rolled.iter().map(|(_, s)| s).sum();
    assert!(total > 0, "some segments rolled");
    let mut g = c.benchmark_group("clean");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(if full_size() { 20 } else { 1 }))
        .throughput(Throughput::Bytes(total));
    g.bench_function("pass_over_rolled_segments", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir_in(&base).unwrap();
                copy_dir(source.path(), dir.path());
                let log = rt.block_on(Log::open(dir.path(), config(), Env::default())).unwrap();
                (dir, log)
            },
            |(dir, log)| {
                let rules = CleanRules {
                    upto: i64::MAX,
                    tombstones_before_ms: 0,
                    dirty_from: i64::MIN,
                    map_bytes: 64 << 20,
                    aborted: &never,
                    producer_last: &never,
                    codecs: None,
                };
                let stats = rt.block_on(log.clean(&rules, &no_pace)).unwrap();
                assert!(stats.records_removed > 0 || !full_size());
                (dir, log)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("baseline_copy_read_write_fdatasync", |b| {
        let mut buf = vec![0u8; 1 << 20];
        b.iter_batched(
            || tempfile::tempdir_in(&base).unwrap(),
            |dir| {
                for (i, (path, size)) in rolled.iter().enumerate() {
                    let from = fs::File::open(path).unwrap();
                    let mut to = fs::File::create(dir.path().join(format!("{i}.copy"))).unwrap();
                    let mut pos = 0;
                    while pos < *size {
                        let n = (*size - pos).min(buf.len() as u64) as usize;
                        from.read_exact_at(&mut buf[..n], pos).unwrap();
                        to.write_all(&buf[..n]).unwrap();
                        pos += n as u64;
                    }
                    to.sync_data().unwrap();
                }
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, clean_throughput);
criterion_main!(benches);
