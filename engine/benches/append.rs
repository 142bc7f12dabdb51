//! Append throughput and group commit, each next to a plain baseline
//! measured in the same run on the same filesystem.
//!
//! `cargo bench -p sluice-engine --bench append` runs full sizes; under
//! `cargo test` (no `--bench` flag) every routine runs once at tiny sizes so
//! the benchmarks keep compiling and working. Data goes to `$SLUICE_BENCH_DIR`
//! (default: the system temp dir).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_engine::{Durability, Env, FlushPolicy, Log, LogConfig, batch};

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// One batch of `records` 1 KiB records.
fn kib_batch(records: usize) -> BytesMut {
    batch::build_simple(records, 1024 - 8, 1_700_000_000_000)
}

struct Case {
    name: &'static str,
    records_per_batch: usize,
    flush: FlushPolicy,
    batches_full: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "16KiB/never",
        records_per_batch: 16,
        flush: FlushPolicy::Never,
        batches_full: 4096,
    },
    Case {
        name: "1MiB/never",
        records_per_batch: 1024,
        flush: FlushPolicy::Never,
        batches_full: 64,
    },
    Case {
        name: "16KiB/always",
        records_per_batch: 16,
        flush: FlushPolicy::Always,
        batches_full: 256,
    },
    Case {
        name: "1MiB/always",
        records_per_batch: 1024,
        flush: FlushPolicy::Always,
        batches_full: 16,
    },
];

/// Appends `batches` copies of `template`, `depth` at a time (1: one append
/// in flight; 8: the pipelining of a busy broker), waiting as the policy says. Buffers are prepared before the clock starts.
fn sluice_append(
    rt: &compio::runtime::Runtime,
    template: &BytesMut,
    batches: usize,
    flush: FlushPolicy,
    depth: usize,
) -> Duration {
    let dir = bench_dir();
    let mut bufs: Vec<BytesMut> = (0..batches).map(|_| template.clone()).collect();
    rt.block_on(async {
        let cfg = LogConfig {
            flush,
            max_batch_bytes: 4 << 20,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), cfg, Env::default()).await.unwrap();
        let durability = log.default_durability();
        let start = Instant::now();
        while !bufs.is_empty() {
            let rest = bufs.split_off(bufs.len().saturating_sub(depth));
            let mut last = 0;
            for b in rest {
                last = log.append(b, 0).unwrap().last_offset;
            }
            log.wait(last + 1, durability).await.unwrap();
        }
        let elapsed = start.elapsed();
        log.close().await.unwrap();
        elapsed
    })
}

/// The same bytes with one io_uring write (compio) per batch: what the
/// kernel charges for the io_uring path alone, before any log work.
fn baseline_uring_write(rt: &compio::runtime::Runtime, template: &BytesMut, batches: usize) -> Duration {
    use compio::io::AsyncWriteAt;
    let dir = bench_dir();
    let bufs: Vec<bytes::Bytes> = (0..batches).map(|_| template.clone().freeze()).collect();
    rt.block_on(async {
        let f = compio::fs::File::create(dir.path().join("baseline.log")).await.unwrap();
        let start = Instant::now();
        let mut pos = 0u64;
        for b in bufs {
            let len = b.len();
            let mut h = &f;
            let compio::BufResult(r, _) = h.write_at(b, pos).await;
            assert_eq!(r.unwrap(), len);
            pos += len as u64;
        }
        start.elapsed()
    })
}

/// The same bytes with plain sequential `write` (and `fdatasync` after each
/// batch when `sync`).
fn baseline_write(template: &BytesMut, batches: usize, sync: bool) -> Duration {
    let dir = bench_dir();
    // Distinct buffers, like the log's: the same bytes from the same memory footprint.
    let bufs: Vec<BytesMut> = (0..batches).map(|_| template.clone()).collect();
    let mut f = fs::File::create(dir.path().join("baseline.log")).unwrap();
    let start = Instant::now();
    for b in &bufs {
        f.write_all(b).unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }
    start.elapsed()
}

fn append_throughput(c: &mut Criterion) {
    let rt = compio::runtime::Runtime::new().unwrap();
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for case in CASES {
        let template = kib_batch(case.records_per_batch);
        let batches = if full_size() { case.batches_full } else { 2 };
        g.throughput(Throughput::Bytes((template.len() * batches) as u64));
        let sync = case.flush == FlushPolicy::Always;
        g.bench_function(BenchmarkId::new("sluice", case.name), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| sluice_append(&rt, &template, batches, case.flush, 1))
                    .sum()
            })
        });
        if case.flush == FlushPolicy::Never {
            g.bench_function(BenchmarkId::new("sluice_pipelined8", case.name), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| sluice_append(&rt, &template, batches, case.flush, 8))
                        .sum()
                })
            });
            g.bench_function(BenchmarkId::new("baseline_uring_write", case.name), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| baseline_uring_write(&rt, &template, batches)).sum())
            });
        }
        g.bench_function(BenchmarkId::new("baseline_write", case.name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| baseline_write(&template, batches, sync)).sum())
        });
    }
    g.finish();
}

/// `appenders` tasks each append `per_task` small batches with
/// `Durability::Synced`; returns elapsed time and fdatasyncs per append.
fn group_commit_run(rt: &compio::runtime::Runtime, appenders: usize, per_task: usize) -> (Duration, f64) {
    let dir = bench_dir();
    rt.block_on(async {
        let cfg = LogConfig {
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), cfg, Env::default()).await.unwrap();
        let template = batch::build_simple(1, 100, 1_700_000_000_000);
        let before = log.stats();
        let start = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let log = log.clone();
                let bufs: Vec<BytesMut> = (0..per_task).map(|_| template.clone()).collect();
                compio::runtime::spawn(async move {
                    for b in bufs {
                        log.append_wait(b, 0, Durability::Synced).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        let after = log.stats();
        let appends = (after.batches_appended - before.batches_appended) as f64;
        let syncs = (after.sync_calls - before.sync_calls) as f64;
        log.close().await.unwrap();
        (elapsed, syncs / appends)
    })
}

fn group_commit(c: &mut Criterion) {
    let rt = compio::runtime::Runtime::new().unwrap();
    let mut g = c.benchmark_group("group_commit");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    let total = if full_size() { 1024 } else { 64 };
    for appenders in [1usize, 8, 64] {
        let per_task = total / appenders;
        g.throughput(Throughput::Elements((per_task * appenders) as u64));
        let mut ratio = 0.0;
        g.bench_function(BenchmarkId::new("always", appenders), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (d, r) = group_commit_run(&rt, appenders, per_task);
                        ratio = r;
                        d
                    })
                    .sum()
            })
        });
        eprintln!("group_commit/always/{appenders}: {ratio:.4} fdatasync per append");
    }
    let template = batch::build_simple(1, 100, 1_700_000_000_000);
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function("baseline_write_fdatasync_each", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| baseline_write(&template, total, true)).sum())
    });
    g.finish();
}

criterion_group!(benches, append_throughput, group_commit);
criterion_main!(benches);
