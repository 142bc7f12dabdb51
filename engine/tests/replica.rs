//! What replication needs of a log: follower appends that keep the leader's
//! offsets and epochs, truncation (at every batch boundary, across segments,
//! with crashes), the leader-epoch history and the high-watermark
//! checkpoint. Tests named after recovery-table rows carry the row's name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use bytes::Bytes;
use common::*;
use sluice_engine::{
    Durability, EpochEnd, LEADER_EPOCH_FILE, Log, LogConfig, LogError,
    batch::{self, BatchHeader},
};

/// Appends `n` three-record batches as leader at `epoch`, returning them.
async fn lead(log: &Log, n: usize, epoch: i32) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut b = batch(3, 200, 1_000 + i as i64);
        let info = log.append_wait(b.clone(), epoch, Durability::Written).await.unwrap();
        batch::assign(&mut b, info.base_offset, epoch);
        out.push((info.base_offset, b.freeze()));
    }
    out
}

async fn follow(log: &Log, batches: &[(i64, Bytes)]) {
    for (_, b) in batches {
        let info = log.append_replica(b.clone()).unwrap();
        log.wait(info.last_offset + 1, Durability::Written).await.unwrap();
    }
}

/// Batch boundaries of `batches`: each base offset and the end.
fn boundaries(batches: &[(i64, Bytes)]) -> Vec<i64> {
    let mut out: Vec<i64> = batches.iter().map(|b| b.0).collect();
    out.push(
        batches
            .last()
            .map_or(0, |(_, b)| BatchHeader::parse(b).unwrap().last_offset() + 1),
    );
    out
}

#[compio::test]
async fn follower_append_preserves_offsets_and_epochs() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(ld.path(), small_config()).await;
    let mut batches = lead(&leader, 20, 0).await;
    batches.extend(lead(&leader, 20, 3).await);
    let follower = open(fd.path(), small_config()).await;
    follow(&follower, &batches).await;
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.epoch_entries(), vec![(0, 0), (3, 60)]);
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    // Not contiguous, an older epoch, a bad CRC: refused, nothing written.
    let end = follower.log_end_offset();
    let mut gap = batch(1, 5, 1);
    batch::assign(&mut gap, end + 1, 3);
    assert!(matches!(
        follower.append_replica(gap.freeze()),
        Err(LogError::NotContiguous { expected, got }) if expected == end && got == end + 1
    ));
    let mut old = batch(1, 5, 1);
    batch::assign(&mut old, end, 2);
    assert!(matches!(
        follower.append_replica(old.freeze()),
        Err(LogError::StaleEpoch { epoch: 2, latest: 3 })
    ));
    let mut bad = batch(1, 5, 1);
    batch::assign(&mut bad, end, 3);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(follower.append_replica(bad.freeze()).is_err());
    assert_eq!(follower.next_offset(), end);
    // A leader cannot go back to an older epoch either.
    assert!(matches!(
        leader.append(batch(1, 5, 1), 1),
        Err(LogError::StaleEpoch { epoch: 1, latest: 3 })
    ));
}

#[compio::test]
async fn truncation_at_every_batch_boundary_survives_a_crash() {
    let src = tempfile::tempdir().unwrap();
    let model = {
        let log = open(src.path(), small_config()).await;
        let mut m = lead(&log, 15, 1).await;
        m.extend(lead(&log, 15, 4).await);
        assert!(log.segment_count() > 3, "the cut crosses segments");
        log.close().await.unwrap();
        m
    };
    let ends = boundaries(&model);
    for (k, &cut) in ends.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        for e in fs::read_dir(src.path()).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.truncate_to(cut).await.unwrap(), cut);
        assert_eq!(read_all(&log), model[..k].to_vec(), "cut at {cut}");
        assert!(log.high_watermark() <= cut);
        // A crash right after: no close, reopen.
        drop(log);
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), cut, "cut at {cut} after a crash");
        assert_eq!(read_all(&log), model[..k].to_vec());
        let epochs: Vec<(i32, i64)> = [(1, 0), (4, 45)].into_iter().filter(|e| e.1 < cut).collect();
        assert_eq!(log.epoch_entries(), epochs, "cut at {cut}");
        // The log goes on from the cut, and the next epoch starts there.
        let more = lead(&log, 2, 5).await;
        assert_eq!(more[0].0, cut);
        assert_eq!(log.epoch_entries().last(), Some(&(5, cut)));
    }
}

#[compio::test]
async fn truncation_inside_a_batch_drops_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let model = lead(&log, 5, 0).await;
    assert_eq!(log.truncate_to(7).await.unwrap(), 6, "offset 7 lies in the batch 6..=8");
    assert_eq!(read_all(&log), model[..2].to_vec());
    assert_eq!(log.truncate_to(100).await.unwrap(), 6, "past the end: nothing to cut");
}

/// Row `interrupted_truncation`: a crash after the newer segments were
/// deleted but before the cut segment was shortened leaves a longer log
/// whose prefix is intact; the epoch history is checked against it.
#[compio::test]
async fn interrupted_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let model = {
        let log = open(dir.path(), small_config()).await;
        let mut m = lead(&log, 10, 1).await;
        m.extend(lead(&log, 10, 2).await);
        log.close().await.unwrap();
        m
    };
    let bases = {
        let log = open(dir.path(), small_config()).await;
        log.segment_bases()
    };
    let newest = *bases.last().unwrap();
    fs::remove_file(segment_file(dir.path(), newest)).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.log_end_offset(), newest);
    let kept: Vec<_> = model.iter().filter(|b| b.0 < newest).cloned().collect();
    assert_eq!(read_all(&log), kept);
    let epochs: Vec<(i32, i64)> = [(1, 0), (2, 30)].into_iter().filter(|e| e.1 < newest).collect();
    assert_eq!(log.epoch_entries(), epochs);
}

/// Row `epoch_file_missing`: rebuilt from the batch headers.
#[compio::test]
async fn epoch_file_missing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), small_config()).await;
        lead(&log, 10, 2).await;
        lead(&log, 10, 7).await;
        lead(&log, 1, 9).await;
        log.close().await.unwrap();
    }
    fs::remove_file(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.epoch_entries(), vec![(2, 0), (7, 30), (9, 60)]);
    assert!(dir.path().join(LEADER_EPOCH_FILE).exists(), "written back");
    assert_eq!(
        log.epoch_end(7),
        EpochEnd {
            epoch: 7,
            end_offset: 60
        }
    );
    assert_eq!(
        log.epoch_end(8),
        EpochEnd {
            epoch: 7,
            end_offset: 60
        }
    );
    assert_eq!(
        log.epoch_end(9),
        EpochEnd {
            epoch: 9,
            end_offset: 63
        }
    );
    // Older than the history: it ends where the history starts.
    assert_eq!(
        log.epoch_end(1),
        EpochEnd {
            epoch: 1,
            end_offset: 0
        }
    );
}

/// Row `epoch_file_stale`: a file that misses the newest epoch (or is
/// damaged) is rebuilt; one naming epochs past the log end (their batches
/// never reached the disk) loses those entries.
#[compio::test]
async fn epoch_file_stale() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), small_config()).await;
        lead(&log, 4, 2).await;
        lead(&log, 4, 5).await;
        log.close().await.unwrap();
    }
    let file = dir.path().join(LEADER_EPOCH_FILE);
    fs::write(&file, "sluice-epochs 1\n2 0\n").unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.epoch_entries(), vec![(2, 0), (5, 12)]);
    drop(log);
    fs::write(&file, "sluice-epochs 1\n2 0\n5 12\n6 24\n").unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.epoch_entries(), vec![(2, 0), (5, 12)]);
    drop(log);
    fs::write(&file, "sluice-epochs 1\n2 zero\n").unwrap();
    let log = open(dir.path(), small_config()).await;
    assert_eq!(log.epoch_entries(), vec![(2, 0), (5, 12)]);
}

#[compio::test]
async fn truncate_fully_restarts_at_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    lead(&log, 12, 1).await;
    log.truncate_fully(500).await.unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert!(log.epoch_entries().is_empty());
    let mut b = batch(2, 10, 1);
    batch::assign(&mut b, 500, 3);
    log.append_replica(b.freeze()).unwrap();
    log.wait(502, Durability::Written).await.unwrap();
    drop(log);
    let log = open(dir.path(), small_config()).await;
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 502));
    assert_eq!(log.segment_bases(), vec![500]);
    assert_eq!(log.epoch_entries(), vec![(3, 500)]);
}

#[compio::test]
async fn the_high_watermark_follows_its_limit_and_its_checkpoint_survives() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default()).await;
    log.set_hw_limit(0);
    lead(&log, 4, 0).await;
    assert_eq!(log.high_watermark(), 0, "held by the limit");
    log.set_hw_limit(7);
    assert_eq!(log.high_watermark(), 7);
    log.set_hw_limit(3);
    assert_eq!(log.high_watermark(), 7, "never back");
    log.checkpoint_high_watermark().unwrap();
    log.set_hw_limit(i64::MAX);
    assert_eq!(log.high_watermark(), 12);
    drop(log);
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(log.high_watermark(), 7, "from the checkpoint, not the log end");
    // Retention keeps what is above the high watermark.
    assert_eq!(log.truncate_to(5).await.unwrap(), 3);
    assert_eq!(log.high_watermark(), 3, "a truncation below it lowers it");
}
