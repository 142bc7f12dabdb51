//! Fault injection: a failed write or fdatasync poisons the log. No later
//! append succeeds, no waiter is told its data is durable, and reopening
//! (recovery) yields exactly a valid prefix holding every acknowledged batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use sluice_engine::{Durability, Env, FaultInjector, FlushPolicy, Log, LogConfig, LogError};

fn env(faults: &std::rc::Rc<FaultInjector>) -> Env {
    Env {
        faults: Some(faults.clone()),
        ..Env::default()
    }
}

#[compio::test]
async fn failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    faults.fail_write_at(4);
    let log = Log::open(dir.path(), LogConfig::default(), env(&faults)).await.unwrap();
    let acked = append_n(&log, 3, 50, 1).await;
    let err = log
        .append_wait(batch(1, 50, 1), 0, Durability::Written)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    assert!(log.is_poisoned());
    assert!(matches!(log.append(batch(1, 50, 1), 0), Err(LogError::Poisoned { .. })));
    assert!(matches!(log.sync().await, Err(LogError::Poisoned { .. })));
    assert_eq!(read_all(&log), acked, "acknowledged data stays readable");
    drop(log);
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(read_all(&log), acked);
    append_n(&log, 1, 50, 1).await;
}

#[compio::test]
async fn failed_fdatasync_poisons_and_fails_every_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    faults.fail_sync_at(2);
    let cfg = LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg.clone(), env(&faults)).await.unwrap();
    let acked = append_n(&log, 1, 50, 1).await;
    let durable_before = log.durable_offset();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let log = log.clone();
            compio::runtime::spawn(async move { log.append_wait(batch(1, 50, i), 0, Durability::Synced).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(LogError::Poisoned { .. })));
    }
    assert_eq!(
        log.durable_offset(),
        durable_before,
        "no waiter was told its data is durable"
    );
    assert_eq!(faults.syncs_seen(), 2, "the failed fdatasync is not retried");
    assert!(matches!(log.append(batch(1, 50, 1), 0), Err(LogError::Poisoned { .. })));
    drop(log);
    // The written-but-unsynced batches may or may not be on disk; what is
    // there must be a valid prefix that holds the acknowledged batch.
    let log = open(dir.path(), cfg).await;
    let got = read_all(&log);
    assert!(got.len() >= acked.len());
    assert_eq!(got[..acked.len()], acked[..]);
}

#[compio::test]
async fn torn_write_poisons_and_recovery_cuts_the_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    faults.short_write_at(3);
    let log = Log::open(dir.path(), LogConfig::default(), env(&faults)).await.unwrap();
    let acked = append_n(&log, 2, 400, 1).await;
    let before = std::fs::metadata(segment_file(dir.path(), 0)).unwrap().len();
    let err = log
        .append_wait(batch(1, 400, 1), 0, Durability::Written)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }));
    let after = std::fs::metadata(segment_file(dir.path(), 0)).unwrap().len();
    assert!(after > before, "half a batch reached the file");
    drop(log);
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(read_all(&log), acked);
    assert_eq!(log.log_end_offset(), 6);
}

#[compio::test]
async fn a_full_disk_poisons_only_until_reopened_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    faults.full_disk_write_at(3);
    let log = Log::open(dir.path(), LogConfig::default(), env(&faults)).await.unwrap();
    let acked = append_n(&log, 2, 400, 1).await;
    assert!(!log.is_poisoned_reopenable());
    let err = log
        .append_wait(batch(1, 400, 1), 0, Durability::Written)
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Poisoned { .. }), "{err}");
    assert!(log.is_poisoned_reopenable(), "ENOSPC on a write is a full disk");
    assert!(matches!(log.append(batch(1, 50, 1), 0), Err(LogError::Poisoned { .. })));
    drop(log);
    // Reopening is what the broker does once there is space again.
    let log = open(dir.path(), LogConfig::default()).await;
    assert_eq!(
        read_all(&log),
        acked,
        "the torn batch is cut, nothing acknowledged lost"
    );
    assert!(!log.is_poisoned());
    append_n(&log, 1, 50, 1).await;
}

#[compio::test]
async fn other_failures_are_not_taken_for_a_full_disk() {
    for write in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let faults = FaultInjector::new();
        if write {
            faults.fail_write_at(2);
        } else {
            faults.fail_sync_at(2);
        }
        let log = Log::open(dir.path(), LogConfig::default(), env(&faults)).await.unwrap();
        append_n(&log, 1, 50, 1).await;
        let _ = log.append_wait(batch(1, 50, 1), 0, Durability::Synced).await;
        let _ = log.append_wait(batch(1, 50, 1), 0, Durability::Synced).await;
        assert!(log.is_poisoned(), "write={write}");
        assert!(!log.is_poisoned_reopenable(), "write={write}");
    }
}

#[compio::test]
async fn failed_sync_during_a_roll_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    faults.fail_sync_at(1);
    let log = Log::open(dir.path(), small_config(), env(&faults)).await.unwrap();
    let mut acked = Vec::new();
    let err = loop {
        let b = batch(3, 300, 1);
        match log.append_wait(b.clone(), 0, Durability::Written).await {
            Ok(info) => acked.push((info.base_offset, expected(b, info.base_offset))),
            Err(e) => break e,
        }
        assert!(acked.len() < 100, "a roll must have happened");
    };
    assert!(
        matches!(err, LogError::Poisoned { ref cause } if cause.contains("roll")),
        "{err}"
    );
    assert_eq!(log.segment_count(), 1, "no new segment after a failed roll");
    drop(log);
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), acked);
}

#[compio::test]
async fn faults_on_later_calls_leave_earlier_ones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    faults.fail_write_at(1_000);
    faults.fail_sync_at(1_000);
    let cfg = LogConfig {
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg, env(&faults)).await.unwrap();
    let acked = append_n(&log, 20, 50, 1).await;
    assert_eq!(faults.writes_seen(), 20);
    assert_eq!(faults.syncs_seen(), 20);
    assert!(!log.is_poisoned());
    assert_eq!(read_all(&log), acked);
}
