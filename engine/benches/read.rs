//! Read throughput through the slice path (offset lookup, then the bytes of
//! the returned file slice), next to plain sequential `pread` of the same
//! file in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{fs, os::unix::fs::FileExt, path::PathBuf, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_engine::{Env, Log, LogConfig, ReadBound, batch};

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn read_throughput(c: &mut Criterion) {
    let base = std::env::var_os("SLUICE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let rt = compio::runtime::Runtime::new().unwrap();
    let batches = if full_size() { 4096 } else { 4 };
    let template = batch::build_simple(16, 1024 - 8, 1_700_000_000_000);
    let log = rt.block_on(async {
        let log = Log::open(dir.path(), LogConfig::default(), Env::default())
            .await
            .unwrap();
        for _ in 0..batches {
            log.append(template.clone(), 0).unwrap();
        }
        log.sync().await.unwrap();
        log
    });
    let total = log.size_bytes();
    let segment = dir.path().join(format!("{:020}.log", 0));
    let file = fs::File::open(&segment).unwrap();
    let fetch_bytes: u64 = 1 << 20;
    let mut buf = vec![0u8; 2 << 20];

    let mut g = c.benchmark_group("read");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(total));
    g.bench_function("slice_path_1MiB_fetches", |b| {
        b.iter(|| {
            let mut offset = 0;
            let mut bytes = 0u64;
            while let Some(s) = log.read(offset, fetch_bytes, ReadBound::HighWatermark).unwrap().slice {
                let out = &mut buf[..s.len as usize];
                s.file.read_exact_at(out, s.position).unwrap();
                let last = batch::BatchHeader::parse(&out[out.len() - template.len()..])
                    .unwrap()
                    .last_offset();
                offset = last + 1;
                bytes += s.len;
            }
            assert_eq!(bytes, total);
        })
    });
    g.bench_function("baseline_pread_1MiB", |b| {
        b.iter(|| {
            let mut pos = 0;
            while pos < total {
                let n = fetch_bytes.min(total - pos) as usize;
                file.read_exact_at(&mut buf[..n], pos).unwrap();
                pos += n as u64;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, read_throughput);
criterion_main!(benches);
