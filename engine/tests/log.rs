//! Behaviour of every public log operation and error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sluice_engine::{
    Durability, Env, FlushPolicy, Log, LogConfig, LogError, OpenFiles, ReadBound, TimestampOffset, batch::BatchError,
};

#[compio::test]
async fn append_assigns_consecutive_offsets_and_reads_back_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let model = append_n(&log, 10, 100, 1_000).await;
    assert_eq!(model[0].0, 0);
    assert_eq!(model[9].0, 27, "3 records per batch");
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.high_watermark(), 30);
    assert_eq!(read_all(&log), model);
}

#[compio::test]
async fn read_from_middle_of_batch_starts_at_that_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let model = append_n(&log, 5, 10, 1).await;
    let r = log.read(7, 1 << 20, ReadBound::HighWatermark).unwrap();
    let got = split_batches(r.slice.unwrap().to_bytes().unwrap());
    assert_eq!(got, model[2..].to_vec(), "offset 7 lies in the batch 6..=8");
}

#[compio::test]
async fn a_stable_read_stops_before_the_batch_holding_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let model = append_n(&log, 5, 10, 1).await;
    let r = log.read(0, 1 << 20, ReadBound::Stable(6)).unwrap();
    let got = split_batches(r.slice.unwrap().to_bytes().unwrap());
    assert_eq!(got, model[..2].to_vec(), "offset 6 starts the third batch");
    let r = log.read(0, 1 << 20, ReadBound::Stable(i64::MAX)).unwrap();
    assert_eq!(
        split_batches(r.slice.unwrap().to_bytes().unwrap()),
        model,
        "bounded by the high watermark"
    );
    assert!(log.read(6, 1 << 20, ReadBound::Stable(6)).unwrap().slice.is_none());
}

#[compio::test]
async fn read_honours_max_bytes_but_returns_at_least_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let model = append_n(&log, 5, 200, 1).await;
    let one = model[0].1.len() as u64;
    let r = log.read(0, 1, ReadBound::HighWatermark).unwrap();
    assert_eq!(r.slice.as_ref().unwrap().len, one, "one whole batch past the limit");
    let r = log.read(0, 2 * one + one / 2, ReadBound::HighWatermark).unwrap();
    assert_eq!(r.slice.unwrap().len, 2 * one, "only whole batches within the limit");
}

#[compio::test]
async fn read_at_log_end_is_empty_and_beyond_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, 2, 10, 1).await;
    let r = log.read(6, 100, ReadBound::HighWatermark).unwrap();
    assert!(r.slice.is_none());
    assert_eq!((r.log_start_offset, r.log_end_offset, r.high_watermark), (0, 6, 6));
    assert!(matches!(
        log.read(7, 100, ReadBound::HighWatermark),
        Err(LogError::OffsetOutOfRange {
            requested: 7,
            log_start_offset: 0,
            log_end_offset: 6
        })
    ));
    assert!(matches!(
        log.read(-1, 100, ReadBound::HighWatermark),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[compio::test]
async fn high_watermark_hook_bounds_consumer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    log.set_hw_limit(6);
    let model = append_n(&log, 4, 10, 1).await;
    assert_eq!(log.high_watermark(), 6);
    let r = log.read(0, 1 << 20, ReadBound::HighWatermark).unwrap();
    assert_eq!(split_batches(r.slice.unwrap().to_bytes().unwrap()), model[..2].to_vec());
    assert!(log.read(6, 1 << 20, ReadBound::HighWatermark).unwrap().slice.is_none());
    let r = log.read(6, 1 << 20, ReadBound::LogEnd).unwrap();
    assert_eq!(split_batches(r.slice.unwrap().to_bytes().unwrap()), model[2..].to_vec());
}

#[compio::test]
async fn invalid_batches_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 500,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg).await;
    let mut bad_crc = batch(1, 10, 1);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(
        log.append(bad_crc, 0),
        Err(LogError::Batch(BatchError::CrcMismatch { .. }))
    ));
    assert!(matches!(
        log.append(batch(1, 600, 1), 0),
        Err(LogError::Batch(BatchError::TooLarge { .. }))
    ));
    let mut lying = batch(1, 10, 1);
    lying.truncate(lying.len() - 3);
    assert!(matches!(
        log.append(lying, 0),
        Err(LogError::Batch(BatchError::LengthMismatch { .. }))
    ));
    let mut magic = batch(1, 10, 1);
    magic[16] = 0;
    assert!(matches!(
        log.append(magic, 0),
        Err(LogError::Batch(BatchError::BadMagic(0)))
    ));
    assert_eq!(log.next_offset(), 0);
    log.sync().await.unwrap();
    assert_eq!(log.size_bytes(), 0);
    append_n(&log, 1, 10, 1).await;
    assert_eq!(log.log_end_offset(), 3, "a good batch still goes in after refusals");
}

#[compio::test]
async fn segments_roll_by_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let model = append_n(&log, 40, 300, 1).await;
    assert!(
        log.segment_count() > 5,
        "4 KiB segments roll often: {}",
        log.segment_count()
    );
    let bases = log.segment_bases();
    for w in bases.windows(2) {
        assert!(w[0] < w[1]);
    }
    for base in &bases {
        assert!(segment_file(dir.path(), *base).exists());
        assert!(dir.path().join(format!("{base:020}.index")).exists());
        assert!(dir.path().join(format!("{base:020}.timeindex")).exists());
    }
    assert_eq!(read_all(&log), model);
    for seg_len in bases
        .iter()
        .map(|b| std::fs::metadata(segment_file(dir.path(), *b)).unwrap().len())
    {
        assert!(seg_len <= 4096);
    }
}

#[compio::test]
async fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let mut model = append_n(&log, 1, 10, 1).await;
    model.extend(append_n(&log, 1, 6000, 2).await);
    model.extend(append_n(&log, 1, 10, 3).await);
    assert_eq!(log.segment_bases(), vec![0, 3, 6]);
    assert_eq!(read_all(&log), model);
}

#[compio::test]
async fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let cfg = LogConfig {
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg, clock.env()).await.unwrap();
    append_n(&log, 2, 10, 1).await;
    clock.advance(59_999);
    append_n(&log, 1, 10, 1).await;
    assert_eq!(log.segment_count(), 1);
    clock.advance(1);
    append_n(&log, 1, 10, 1).await;
    assert_eq!(log.segment_bases(), vec![0, 9]);
}

#[compio::test]
async fn retention_by_time_deletes_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(10_000_000);
    let cfg = LogConfig {
        retention_ms: Some(1_000),
        ..small_config()
    };
    let log = Log::open(dir.path(), cfg, clock.env()).await.unwrap();
    // Old batches (timestamp 1..) then fresh ones (timestamp = now).
    let old = append_n(&log, 20, 300, 1).await;
    let fresh = append_n(&log, 20, 300, 10_000_000).await;
    let before = log.segment_count();
    let deleted = log.enforce_retention().unwrap();
    assert!(!deleted.is_empty());
    assert!(log.segment_count() < before);
    let start = log.log_start_offset();
    assert_eq!(start, log.segment_bases()[0]);
    let remaining = read_all(&log);
    let all: Vec<_> = old
        .into_iter()
        .chain(fresh.clone())
        .filter(|(b, _)| *b >= start)
        .collect();
    assert_eq!(remaining, all);
    assert!(remaining.len() >= fresh.len(), "fresh data is kept");
    for base in deleted {
        assert!(!segment_file(dir.path(), base).exists());
    }
    // Everything expires: only the active segment stays.
    clock.advance(10_000_000);
    log.enforce_retention().unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.segment_bases()[0]);
}

#[compio::test]
async fn retention_by_size_keeps_the_log_under_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(10_000),
        retention_ms: None,
        ..small_config()
    };
    let log = open(dir.path(), cfg).await;
    let model = append_n(&log, 60, 300, 1).await;
    log.enforce_retention().unwrap();
    assert!(log.size_bytes() <= 10_000 + 4096, "size {}", log.size_bytes());
    assert!(
        log.size_bytes() >= 10_000 - 4096,
        "not more than needed was deleted: {}",
        log.size_bytes()
    );
    let start = log.log_start_offset();
    let kept: Vec<_> = model.into_iter().filter(|(b, _)| *b >= start).collect();
    assert_eq!(read_all(&log), kept);
    assert!(matches!(
        log.read(0, 100, ReadBound::HighWatermark),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[compio::test]
async fn slice_stays_readable_after_retention_deletes_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(1),
        retention_ms: None,
        ..small_config()
    };
    let log = open(dir.path(), cfg).await;
    let model = append_n(&log, 20, 300, 1).await;
    let slice = log.read(0, 1 << 20, ReadBound::HighWatermark).unwrap().slice.unwrap();
    log.enforce_retention().unwrap();
    assert!(!segment_file(dir.path(), 0).exists());
    let got = split_batches(slice.to_bytes().unwrap());
    assert_eq!(got, model[..got.len()].to_vec());
}

#[compio::test]
async fn advancing_the_log_start_offset_persists_and_deletes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let model = append_n(&log, 30, 300, 1).await;
    let target = model[15].0 + 1;
    assert_eq!(log.advance_log_start_offset(target).unwrap(), target);
    assert!(log.segment_bases()[0] <= target);
    assert!(matches!(
        log.read(target - 1, 10, ReadBound::HighWatermark),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let r = log.read(target, 1 << 20, ReadBound::HighWatermark).unwrap();
    assert_eq!(split_batches(r.slice.unwrap().to_bytes().unwrap())[0], model[15]);
    assert!(matches!(
        log.advance_log_start_offset(1_000),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.close().await.unwrap();
    drop(log);
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.log_start_offset(), target, "checkpoint survives reopen");
}

#[compio::test]
async fn timestamp_lookup_finds_first_batch_at_or_after_target() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    // Batch i has timestamp 1000 + 10 * i.
    let mut model = Vec::new();
    for i in 0..50i64 {
        model.extend(append_n(&log, 1, 200, 1_000 + 10 * i).await);
    }
    for (i, (base, _)) in model.iter().enumerate() {
        let ts = 1_000 + 10 * i as i64;
        assert_eq!(
            log.offset_for_timestamp(ts, 0).unwrap(),
            Some(TimestampOffset {
                offset: *base,
                timestamp: ts
            })
        );
        assert_eq!(log.offset_for_timestamp(ts - 5, 0).unwrap().unwrap().offset, *base);
    }
    assert_eq!(log.offset_for_timestamp(0, 0).unwrap().unwrap().offset, 0);
    assert_eq!(log.offset_for_timestamp(999_999, 0).unwrap(), None);
    assert_eq!(
        log.max_timestamp(),
        Some(TimestampOffset {
            offset: model[49].0,
            timestamp: 1_490
        })
    );
}

#[compio::test]
async fn reopen_after_close_keeps_everything_and_continues_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let mut model = append_n(&log, 25, 300, 1).await;
    log.close().await.unwrap();
    assert!(matches!(log.append(batch(1, 1, 1), 0), Err(LogError::Closed)));
    drop(log);
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model);
    model.extend(append_n(&log, 5, 300, 100).await);
    assert_eq!(read_all(&log), model);
    assert_eq!(log.max_timestamp().unwrap().timestamp, 104);
}

#[compio::test]
async fn flush_policy_always_syncs_before_completing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg).await;
    let before = log.stats().sync_calls;
    append_n(&log, 3, 10, 1).await;
    assert_eq!(log.durable_offset(), 9);
    assert_eq!(
        log.stats().sync_calls - before,
        3,
        "one fdatasync per sequential append"
    );
}

#[compio::test]
async fn flush_policy_never_syncs_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    append_n(&log, 3, 10, 1).await;
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.durable_offset(), 0);
    assert_eq!(log.stats().sync_calls, 0);
    let info = log.append_wait(batch(1, 10, 1), 0, Durability::Synced).await.unwrap();
    assert_eq!(
        log.durable_offset(),
        info.last_offset + 1,
        "acks=all asks for a sync whatever the policy"
    );
    assert_eq!(log.stats().sync_calls, 1);
}

#[compio::test]
async fn flush_policy_interval_syncs_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let cfg = LogConfig {
        flush: FlushPolicy::IntervalMs(1_000),
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg, clock.env()).await.unwrap();
    append_n(&log, 2, 10, 1).await;
    log.sync_if_due().await.unwrap();
    assert_eq!(log.durable_offset(), 0, "not due yet");
    clock.advance(1_000);
    log.sync_if_due().await.unwrap();
    assert_eq!(log.durable_offset(), 6);
    append_n(&log, 1, 10, 1).await;
    assert_eq!(log.durable_offset(), 6);
    clock.advance(1_000);
    append_n(&log, 1, 10, 1).await;
    // The append completes at the write; the same round's sync follows.
    for _ in 0..10 {
        if log.durable_offset() == 12 {
            break;
        }
        log.listen().await;
    }
    assert_eq!(
        log.durable_offset(),
        12,
        "a flush round syncs when the interval has passed"
    );
}

#[compio::test]
async fn concurrent_appenders_share_one_write_and_one_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let log = open(dir.path(), cfg).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = log.clone();
            compio::runtime::spawn(
                async move { log.append_wait(batch(1, 100, i), 0, Durability::Synced).await.unwrap() },
            )
        })
        .collect();
    let mut offsets = Vec::new();
    for t in tasks {
        offsets.push(t.await.unwrap().base_offset);
    }
    offsets.sort();
    assert_eq!(offsets, (0..64).collect::<Vec<i64>>());
    let stats = log.stats();
    assert_eq!(stats.batches_appended, 64);
    assert!(stats.sync_calls <= 2, "64 appends took {} fdatasyncs", stats.sync_calls);
    assert!(stats.write_calls <= 2, "64 appends took {} writes", stats.write_calls);
    assert_eq!(log.durable_offset(), 64);
}

#[compio::test]
async fn changed_wakes_a_waiting_reader_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let reader = {
        let log = log.clone();
        compio::runtime::spawn(async move {
            while log.log_end_offset() == 0 {
                log.listen().await;
            }
            log.read(0, 100, ReadBound::HighWatermark).unwrap().slice.is_some()
        })
    };
    append_n(&log, 1, 10, 1).await;
    assert!(reader.await.unwrap());
}

#[compio::test]
async fn config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        },
        LogConfig {
            segment_bytes: 1 << 32,
            ..LogConfig::default()
        },
        LogConfig {
            index_interval_bytes: 0,
            ..LogConfig::default()
        },
        LogConfig {
            max_batch_bytes: 10,
            ..LogConfig::default()
        },
    ] {
        assert!(matches!(
            Log::open(dir.path(), bad, Env::default()).await,
            Err(LogError::Config(_))
        ));
    }
    let log = open(dir.path(), LogConfig::default()).await;
    assert!(
        log.set_config(LogConfig {
            segment_ms: 0,
            ..LogConfig::default()
        })
        .is_err()
    );
    log.set_config(LogConfig {
        segment_bytes: 2048,
        ..LogConfig::default()
    })
    .unwrap();
    assert_eq!(log.config().segment_bytes, 2048);
}

#[compio::test]
async fn an_append_nobody_waits_for_is_still_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let b = batch(2, 10, 1);
    let info = log.append(b.clone(), 0).unwrap();
    for _ in 0..10 {
        if log.log_end_offset() == 2 {
            break;
        }
        log.listen().await;
    }
    assert_eq!(log.log_end_offset(), 2, "acks=0 style append reached the file");
    assert_eq!(read_all(&log), vec![(info.base_offset, expected(b, 0))]);
}

#[compio::test]
async fn close_flushes_queued_appends_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let mut model = Vec::new();
    for i in 0..5 {
        let b = batch(1, 10, i);
        let info = log.append(b.clone(), 0).unwrap();
        model.push((info.base_offset, expected(b, info.base_offset)));
    }
    log.close().await.unwrap();
    assert_eq!(log.durable_offset(), 5);
    assert!(matches!(log.append(batch(1, 1, 1), 0), Err(LogError::Closed)));
    assert!(matches!(log.wait(6, Durability::Written).await, Err(LogError::Closed)));
    drop(log);
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(read_all(&log), model);
}

/// Bytes of disk a file holds, from its block count.
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[compio::test]
async fn preallocation_reserves_blocks_past_the_end_and_gives_them_back() {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let config = LogConfig {
        segment_bytes: 4 * MIB,
        segment_ms: 1_000,
        preallocate_bytes: 4 * MIB,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone(), clock.env()).await.unwrap();
    let mut model = append_n(&log, 40, 10_000, 1).await;
    let first = segment_file(dir.path(), 0);
    let len = std::fs::metadata(&first).unwrap().len();
    assert_eq!(len, log.size_bytes(), "the file's size is the bytes written");
    assert!(
        allocated(&first) >= len + MIB / 2,
        "at least 512 KiB reserved past {len}: {} allocated",
        allocated(&first)
    );

    // A roll by age: the old segment gives its reserve back, the new one
    // takes its own.
    clock.advance(2_000);
    model.extend(append_n(&log, 3, 10_000, 100).await);
    let bases = log.segment_bases();
    assert_eq!(bases.len(), 2, "{bases:?}");
    assert!(
        allocated(&first) < len + 64 * 1024,
        "rolled segment keeps {} bytes for {len}",
        allocated(&first)
    );
    let second = segment_file(dir.path(), bases[1]);
    assert!(allocated(&second) > std::fs::metadata(&second).unwrap().len() + MIB / 2);

    // A crash (no close) leaves the reserve; reopening reads exactly what
    // was written and appends after it.
    drop(log);
    let log = Log::open(dir.path(), config, clock.env()).await.unwrap();
    assert_eq!(read_all(&log), model);
    model.extend(append_n(&log, 3, 10_000, 200).await);
    assert_eq!(read_all(&log), model);

    // Close gives the active segment's reserve back.
    log.close().await.unwrap();
    let second_len = std::fs::metadata(&second).unwrap().len();
    assert!(
        allocated(&second) < second_len + 64 * 1024,
        "closed segment keeps {} bytes for {second_len}",
        allocated(&second)
    );
}

#[compio::test]
async fn preallocation_off_reserves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        preallocate_bytes: 0,
        ..LogConfig::default()
    };
    let log = open(dir.path(), config).await;
    append_n(&log, 40, 10_000, 1).await;
    log.sync().await.unwrap();
    let active = segment_file(dir.path(), 0);
    let len = std::fs::metadata(&active).unwrap().len();
    assert!(
        allocated(&active) < len + 64 * 1024,
        "{} allocated for {len}",
        allocated(&active)
    );
}

/// Files of `dir` this process holds open, from /proc.
fn fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[compio::test]
async fn an_idle_log_holds_no_files_and_reopens_them_on_use() {
    let dir = tempfile::tempdir().unwrap();
    let files = OpenFiles::new();
    let env = Env {
        open_files: Some(files.clone()),
        ..Env::default()
    };
    let log = Log::open(dir.path(), small_config(), env.clone()).await.unwrap();
    assert_eq!((files.get(), fds_under(dir.path())), (0, 0), "opening keeps no file");
    let mut model = append_n(&log, 12, 400, 1).await;
    assert!(log.segment_count() > 2, "rolled");
    assert_eq!(files.get(), 3, "the active segment's writer");
    assert_eq!(read_all(&log), model);
    assert_eq!(files.get(), log.open_files());
    assert_eq!(files.get(), 3 + log.segment_count(), "a reader per segment read");
    assert_eq!(fds_under(dir.path()), files.get(), "the count is the real one");
    let slice = log.read(0, 1, ReadBound::LogEnd).unwrap().slice.unwrap();
    assert!(log.release_files().await);
    assert_eq!((files.get(), log.open_files()), (0, 0));
    assert_eq!(fds_under(dir.path()), 1, "only the slice handed out keeps its file");
    assert_eq!(split_batches(slice.to_bytes().unwrap())[0], model[0]);
    drop(slice);
    // Writes and syncs reopen the writer where the log ends.
    model.extend(append_n(&log, 2, 400, 9).await);
    log.sync().await.unwrap();
    assert_eq!(log.durable_offset(), log.log_end_offset());
    assert_eq!(read_all(&log), model);
    assert!(log.release_files().await);
    log.close().await.unwrap();
    drop(log);
    assert_eq!(files.get(), 0);
    let log = Log::open(dir.path(), small_config(), env).await.unwrap();
    assert_eq!(read_all(&log), model, "nothing lost across releases and a restart");
}

#[compio::test]
async fn release_waits_for_queued_writes_and_keeps_unsynced_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    let b = batch(3, 100, 1);
    let info = log.append(b.clone(), 0).unwrap();
    assert!(!log.release_files().await, "a write is queued");
    log.wait(info.last_offset + 1, Durability::Written).await.unwrap();
    assert!(log.durable_offset() < log.log_end_offset(), "written, not synced");
    assert!(log.release_files().await);
    log.sync().await.unwrap();
    assert_eq!(log.durable_offset(), log.log_end_offset(), "the sync reopened the file");
    assert_eq!(read_all(&log), vec![(0, expected(b, 0))]);
}

/// A sync asked for right after the append rides in the log's first flush
/// round: one write and one fdatasync, and the data is durable before
/// anyone waits for it.
#[compio::test]
async fn a_sync_wanted_at_append_time_rides_in_the_first_round() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    let logs = [
        open(&dir.path().join("a"), config.clone()).await,
        open(&dir.path().join("b"), config).await,
    ];
    let mut ends = Vec::new();
    for log in &logs {
        let end = log.append(batch(1, 100, 1), 0).unwrap().last_offset + 1;
        log.want_synced(end);
        ends.push(end);
    }
    // Waiting for the writes alone lets both rounds finish; their syncs were
    // asked for already.
    for (log, end) in logs.iter().zip(&ends) {
        log.wait(*end, Durability::Written).await.unwrap();
    }
    for (log, end) in logs.iter().zip(&ends) {
        while log.durable_offset() < *end {
            log.listen().await;
        }
        let stats = log.stats();
        assert_eq!((stats.write_calls, stats.sync_calls), (1, 1), "one round with its sync");
    }
    // Without the ask, the same append is written and never synced.
    let plain = open(&dir.path().join("c"), LogConfig::default()).await;
    let end = plain.append(batch(1, 100, 1), 0).unwrap().last_offset + 1;
    plain.wait(end, Durability::Written).await.unwrap();
    assert_eq!(plain.stats().sync_calls, 0);
    assert!(plain.durable_offset() < end);
}

#[compio::test]
async fn background_writeback_makes_written_data_durable_without_a_waiter() {
    for (writeback_bytes, expect_durable) in [(4096, true), (0, false)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            writeback_bytes,
            flush: FlushPolicy::Never,
            ..LogConfig::default()
        };
        let log = open(dir.path(), cfg).await;
        append_n(&log, 20, 500, 1).await;
        // Each round after the first 4 KiB starts a background fdatasync.
        for _ in 0..200 {
            if log.durable_offset() > 0 {
                break;
            }
            compio::runtime::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(log.durable_offset() > 0, expect_durable, "writeback {writeback_bytes}");
        assert!(log.durable_offset() <= log.log_end_offset());
    }
}
