//! Crash recovery: each test is named after a row of the recovery table in
//! `src/segment.rs` and `docs/storage.md`. Crashes are simulated on closed
//! logs by cutting, extending or damaging their files the way a power loss
//! or a failing disk would, then reopening.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    fs,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use common::*;
use sluice_engine::{LogConfig, LogError, ReadBound};

fn seg_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// The log accepts appends right after its recovered end.
async fn assert_next_append_at(log: &sluice_engine::Log, end: i64) {
    let info = log
        .append_wait(batch(1, 5, 1), 0, log.default_durability())
        .await
        .unwrap();
    assert_eq!(info.base_offset, end);
}

/// XORs one byte of a file, as a failing disk would.
fn flip_byte(path: &Path, pos: u64, mask: u8) {
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, pos).unwrap();
    byte[0] ^= mask;
    f.write_all_at(&byte, pos).unwrap();
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The batches of `model` that end at or before byte `cut` of the newest
/// segment, given that segment's base offset and the batches' positions.
fn whole_before(model: &[(i64, Bytes)], newest_base: i64, cut: u64) -> Vec<(i64, Bytes)> {
    let mut pos = 0u64;
    model
        .iter()
        .filter(|(base, b)| {
            if *base < newest_base {
                return true;
            }
            pos += b.len() as u64;
            pos <= cut
        })
        .cloned()
        .collect()
}

/// A closed log of several segments; returns the model and the newest base.
async fn closed_log(dir: &Path, batches: usize) -> (Vec<(i64, Bytes)>, i64) {
    let log = open(dir, small_config()).await;
    let model = append_n(&log, batches, 300, 1_000).await;
    log.close().await.unwrap();
    let newest = *log.segment_bases().last().unwrap();
    (model, newest)
}

#[compio::test]
async fn clean_tail_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = closed_log(dir.path(), 30).await;
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model);
    assert_eq!(log.log_end_offset(), model.last().unwrap().0 + 3);
}

#[compio::test]
async fn torn_tail_is_truncated_to_last_valid_batch_at_every_byte() {
    let base = tempfile::tempdir().unwrap();
    let (model, newest) = closed_log(base.path(), 31).await;
    let log_file = seg_path(base.path(), newest, "log");
    let full = fs::metadata(&log_file).unwrap().len();
    let in_newest: Vec<_> = model.iter().filter(|(b, _)| *b >= newest).collect();
    assert!(in_newest.len() >= 3, "the newest segment needs a few batches");
    // Every cut point across the last three batches of the newest segment.
    let last3: u64 = in_newest[in_newest.len() - 3..]
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum();
    for cut in (full - last3)..full {
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        truncate(&seg_path(work.path(), newest, "log"), cut);
        let log = open(work.path(), small_config()).await;
        let want = whole_before(&model, newest, cut);
        assert_eq!(read_all(&log), want, "cut at byte {cut}");
        let end = want.last().map_or(newest, |(b, _)| b + 3);
        assert_eq!(log.log_end_offset(), end, "cut at byte {cut}");
        assert_next_append_at(&log, end).await;
    }
}

#[compio::test]
async fn torn_tail_at_random_positions_in_a_larger_log() {
    let base = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    };
    let log = open(base.path(), cfg.clone()).await;
    let mut model = Vec::new();
    for i in 0..400 {
        model.extend(append_n(&log, 1, (i * 37) % 900, i as i64).await);
    }
    log.close().await.unwrap();
    let newest = *log.segment_bases().last().unwrap();
    let full = fs::metadata(seg_path(base.path(), newest, "log")).unwrap().len();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..40 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cut = seed % full;
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        truncate(&seg_path(work.path(), newest, "log"), cut);
        let log = open(work.path(), cfg.clone()).await;
        assert_eq!(read_all(&log), whole_before(&model, newest, cut), "cut at byte {cut}");
    }
}

#[compio::test]
async fn corrupt_tail_garbage_after_last_batch_is_truncated() {
    for garbage in [vec![0u8; 100], vec![0xffu8; 7], (0..200u8).collect::<Vec<_>>()] {
        let dir = tempfile::tempdir().unwrap();
        let (model, newest) = closed_log(dir.path(), 20).await;
        let path = seg_path(dir.path(), newest, "log");
        let len = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&garbage, len)
            .unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(read_all(&log), model);
        assert_eq!(fs::metadata(&path).unwrap().len(), len, "garbage was cut off the file");
    }
}

#[compio::test]
async fn corrupt_tail_bad_crc_in_last_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (model, newest) = closed_log(dir.path(), 20).await;
    let path = seg_path(dir.path(), newest, "log");
    let len = fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 10, 0x01);
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model[..model.len() - 1].to_vec());
}

#[compio::test]
async fn corrupt_tail_batch_with_a_lying_offset_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (model, newest) = closed_log(dir.path(), 20).await;
    let path = seg_path(dir.path(), newest, "log");
    let len = fs::metadata(&path).unwrap().len();
    // A valid batch, but with an offset that does not follow the log.
    let mut stray = batch(1, 10, 1);
    sluice_engine::batch::assign(&mut stray, 10_000, 0);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&stray, len)
        .unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model);
}

#[compio::test]
async fn stale_index_entries_past_the_end_are_dropped() {
    let base = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 1,
        ..small_config()
    };
    let log = open(base.path(), cfg.clone()).await;
    let model = append_n(&log, 11, 300, 1).await;
    log.close().await.unwrap();
    let newest = *log.segment_bases().last().unwrap();
    let index = seg_path(base.path(), newest, "index");
    let entries_before = fs::metadata(&index).unwrap().len() / 8;
    assert!(entries_before >= 2);
    let path = seg_path(base.path(), newest, "log");
    let len = fs::metadata(&path).unwrap().len();
    let last = model.last().unwrap().1.len() as u64;
    truncate(&path, len - last);
    let log = open(base.path(), cfg).await;
    assert_eq!(read_all(&log), model[..model.len() - 1].to_vec());
    assert_eq!(
        fs::metadata(&index).unwrap().len() / 8,
        entries_before - 1,
        "index rewritten"
    );
}

#[compio::test]
async fn stale_index_entries_naming_the_wrong_batch_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (model, newest) = closed_log(dir.path(), 20).await;
    let index = seg_path(dir.path(), newest, "index");
    // Entries that point into the middle of batches.
    let mut bogus = Vec::new();
    for (rel, pos) in [(1u32, 7u32), (2, 100), (3, 333)] {
        bogus.extend_from_slice(&rel.to_be_bytes());
        bogus.extend_from_slice(&pos.to_be_bytes());
    }
    fs::write(&index, bogus).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model);
}

#[compio::test]
async fn missing_index_files_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let mut model = Vec::new();
    for i in 0..40i64 {
        model.extend(append_n(&log, 1, 300, 1_000 + i).await);
    }
    log.close().await.unwrap();
    let bases = log.segment_bases();
    let saved: Vec<_> = bases
        .iter()
        .map(|b| {
            (
                fs::read(seg_path(dir.path(), *b, "index")).unwrap(),
                fs::read(seg_path(dir.path(), *b, "timeindex")).unwrap(),
            )
        })
        .collect();
    for b in &bases {
        fs::remove_file(seg_path(dir.path(), *b, "index")).unwrap();
        fs::remove_file(seg_path(dir.path(), *b, "timeindex")).unwrap();
    }
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model);
    for (b, (idx, tidx)) in bases.iter().zip(saved) {
        assert_eq!(
            fs::read(seg_path(dir.path(), *b, "index")).unwrap(),
            idx,
            "offset index of {b} rebuilt identically"
        );
        let rebuilt = fs::read(seg_path(dir.path(), *b, "timeindex")).unwrap();
        assert!(
            tidx.starts_with(&rebuilt),
            "time index of {b} rebuilt as a prefix of the original"
        );
        assert!(!rebuilt.is_empty() || tidx.is_empty());
    }
    for (i, (base, _)) in model.iter().enumerate() {
        assert_eq!(
            log.offset_for_timestamp(1_000 + i as i64, 0).unwrap().unwrap().offset,
            *base
        );
    }
}

#[compio::test]
async fn missing_index_with_corrupt_older_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = closed_log(dir.path(), 30).await;
    let path = seg_path(dir.path(), 0, "log");
    flip_byte(&path, 100, 0xff);
    fs::remove_file(seg_path(dir.path(), 0, "index")).unwrap();
    let err = sluice_engine::Log::open(dir.path(), small_config(), Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Corrupt { position: 0, .. }), "{err}");
}

#[compio::test]
async fn empty_segment_left_by_a_roll_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = closed_log(dir.path(), 20).await;
    let end = model.last().unwrap().0 + 3;
    fs::File::create(seg_path(dir.path(), end, "log")).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert!(!log.segment_bases().contains(&end), "the empty segment is gone");
    assert!(!seg_path(dir.path(), end, "log").exists());
    assert_eq!(read_all(&log), model);
    assert_next_append_at(&log, end).await;
}

#[compio::test]
async fn empty_segment_after_a_torn_older_segment_is_removed_and_the_tail_cut() {
    // A crash in the middle of a roll, before the old segment's data reached
    // the disk: the new file exists and is empty, the old one is torn.
    let dir = tempfile::tempdir().unwrap();
    let (model, newest) = closed_log(dir.path(), 20).await;
    let path = seg_path(dir.path(), newest, "log");
    let len = fs::metadata(&path).unwrap().len();
    truncate(&path, len - 5);
    fs::File::create(seg_path(dir.path(), model.last().unwrap().0 + 3, "log")).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), model[..model.len() - 1].to_vec());
}

#[compio::test]
async fn orphan_index_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = closed_log(dir.path(), 5).await;
    fs::write(seg_path(dir.path(), 999_999, "index"), [0u8; 16]).unwrap();
    fs::write(seg_path(dir.path(), 999_999, "timeindex"), [0u8; 24]).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert!(!seg_path(dir.path(), 999_999, "index").exists());
    assert!(!seg_path(dir.path(), 999_999, "timeindex").exists());
    assert_eq!(read_all(&log), model);
}

#[compio::test]
async fn corrupt_older_segment_is_reported_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = closed_log(dir.path(), 30).await;
    // Damage the last batch of the oldest segment (inside the tail check).
    let path = seg_path(dir.path(), 0, "log");
    let len = fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 3, 0x10);
    let err = sluice_engine::Log::open(dir.path(), small_config(), Default::default())
        .await
        .unwrap_err();
    match err {
        LogError::Corrupt { path: p, reason, .. } => {
            assert_eq!(p, path);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "nothing was truncated");
}

#[compio::test]
async fn everything_fdatasynced_survives_losing_the_unsynced_tail() {
    let base = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = open(base.path(), cfg.clone()).await;
    let mut model = append_n(&log, 30, 200, 1).await;
    log.sync().await.unwrap();
    let synced = model.len();
    let synced_bytes: u64 = model.iter().map(|(_, b)| b.len() as u64).sum();
    model.extend(append_n(&log, 30, 200, 2).await);
    let total: u64 = model.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(log.durable_offset(), synced as i64 * 3);
    drop(log); // crash: no close
    // The kernel may have lost any part of what was not synced.
    for cut in [synced_bytes, synced_bytes + 1, synced_bytes + 250, total - 1, total] {
        let work = tempfile::tempdir().unwrap();
        copy_dir(base.path(), work.path());
        truncate(&seg_path(work.path(), 0, "log"), cut);
        let log = open(work.path(), cfg.clone()).await;
        let got = read_all(&log);
        assert!(got.len() >= synced, "cut {cut}: synced batches lost");
        assert_eq!(
            got,
            model[..got.len()].to_vec(),
            "cut {cut}: a prefix of what was appended"
        );
        assert_eq!(got, whole_before(&model, 0, cut));
    }
}

#[compio::test]
async fn recovery_does_not_read_beyond_what_the_consumer_bound_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = closed_log(dir.path(), 10).await;
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.high_watermark(), log.log_end_offset());
    let r = log
        .read(model.last().unwrap().0, 1 << 20, ReadBound::HighWatermark)
        .unwrap();
    assert_eq!(r.slice.unwrap().to_bytes().unwrap(), model.last().unwrap().1);
}
