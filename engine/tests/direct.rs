//! Follower appends past the page cache (`Log::set_direct_writes`, ADR
//! 0017): the log holds the same bytes as a buffered one, through rolls,
//! truncations, switches between the two modes, clean closes and crashes.
//! Runs in the temp dir, which must be on a filesystem with `O_DIRECT`
//! (ext4 and tmpfs have it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{fs, path::Path};

use bytes::Bytes;
use common::*;
use sluice_engine::{DirectBuffers, Durability, Env, Log, LogConfig, batch};

/// Every round direct (no size threshold), unless a test says otherwise.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 10,
        index_interval_bytes: 1024,
        direct_write_min_bytes: 0,
        ..small_config()
    }
}

/// Batches of sizes that land the log's end at every offset within a
/// block, as a leader at `epoch` writes them.
async fn lead(log: &Log, n: usize, epoch: i32, seed: usize) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    for i in 0..n {
        let len = 1 + (i * 977 + seed * 131) % 5000;
        let mut b = batch(1 + i % 3, len, 1_000 + i as i64);
        let info = log.append_wait(b.clone(), epoch, Durability::Written).await.unwrap();
        batch::assign(&mut b, info.base_offset, epoch);
        out.push((info.base_offset, b.freeze()));
    }
    out
}

/// Appends `batches` as a follower, `group` at a time per flush round.
async fn follow(log: &Log, batches: &[(i64, Bytes)], group: usize) {
    for chunk in batches.chunks(group) {
        let mut end = 0;
        for (_, b) in chunk {
            end = log.append_replica(b.clone()).unwrap().last_offset + 1;
        }
        log.wait(end, Durability::Written).await.unwrap();
    }
}

/// A leader's log and a follower's with direct writes allowed, each in its
/// own temp dir (returned to keep them alive).
async fn leader_and_follower(cfg: LogConfig) -> (tempfile::TempDir, Log, tempfile::TempDir, Log) {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(ld.path(), cfg.clone()).await;
    let follower = open(fd.path(), cfg).await;
    follower.set_direct_writes(true);
    (ld, leader, fd, follower)
}

/// Each segment file's length, by name.
fn file_sizes(dir: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    out.sort();
    out
}

#[compio::test]
async fn direct_appends_hold_what_buffered_ones_do_and_close_without_padding() {
    let (ld, leader, fd, follower) = leader_and_follower(config()).await;
    let model = lead(&leader, 120, 2, 0).await;
    assert!(leader.segment_count() > 3, "the appends cross rolls");
    assert!(follower.direct_writes(), "the temp dir's filesystem has O_DIRECT");
    follow(&follower, &model[..50], 1).await;
    follow(&follower, &model[50..], 7).await;
    assert_eq!(read_all(&follower), model);
    leader.close().await.unwrap();
    follower.close().await.unwrap();
    // Same segments, each ending at its last batch.
    assert_eq!(file_sizes(fd.path()), file_sizes(ld.path()));
    let reopened = open(fd.path(), config()).await;
    assert_eq!(read_all(&reopened), model);
}

#[compio::test]
async fn a_crash_leaves_a_padded_block_that_recovery_cuts() {
    let (_ld, leader, fd, follower) = leader_and_follower(config()).await;
    let model = lead(&leader, 9, 1, 3).await;
    follow(&follower, &model, 2).await;
    let logical: u64 = model.iter().map(|(_, b)| b.len() as u64).sum();
    let base = follower.segment_bases()[0];
    // No close: the file still ends in the zeros of its last block.
    drop(follower);
    let len = fs::metadata(segment_file(fd.path(), base)).unwrap().len();
    assert!(
        len > logical && len.is_multiple_of(4096),
        "{len} bytes on disk for {logical} written"
    );
    let reopened = open(fd.path(), config()).await;
    assert_eq!(read_all(&reopened), model);
    assert_eq!(fs::metadata(segment_file(fd.path(), base)).unwrap().len(), logical);
    // It goes on from there, direct again, from the block read back.
    reopened.set_direct_writes(true);
    let more = lead(&leader, 5, 1, 4).await;
    follow(&reopened, &more, 1).await;
    let mut all = model.clone();
    all.extend(more);
    assert_eq!(read_all(&reopened), all);
}

#[compio::test]
async fn truncation_and_mode_switches_keep_every_byte() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = open(ld.path(), config()).await;
    let first = lead(&leader, 30, 1, 5).await;
    // Staging buffers shared with another follower log, and fewer kept
    // than one round needs.
    let shared = DirectBuffers::new(8192);
    let env = || Env {
        direct_buffers: Some(shared.clone()),
        ..Env::default()
    };
    let follower = Log::open(fd.path(), config(), env()).await.unwrap();
    follower.set_direct_writes(true);
    let other_follower_dir = tempfile::tempdir().unwrap();
    let other_follower = Log::open(other_follower_dir.path(), config(), env()).await.unwrap();
    other_follower.set_direct_writes(true);
    follow(&other_follower, &first, 5).await;
    assert_eq!(read_all(&other_follower), first);
    follow(&follower, &first, 3).await;
    // The follower's tail diverged: cut back to the 20th batch, inside a
    // block, and take the leader's new epoch from there.
    let cut = first[20].0;
    assert_eq!(follower.truncate_to(cut).await.unwrap(), cut);
    let other_dir = tempfile::tempdir().unwrap();
    let new_leader = open(other_dir.path(), config()).await;
    follow(&new_leader, &first[..20], 20).await;
    let next = lead(&new_leader, 10, 2, 6).await;
    follow(&follower, &next, 1).await;
    // Leader for a while (buffered), then a follower again.
    follower.set_direct_writes(false);
    let own = lead(&follower, 6, 3, 7).await;
    follower.set_direct_writes(true);
    follow(&new_leader, &own, 6).await;
    let last = lead(&new_leader, 12, 4, 8).await;
    follow(&follower, &last, 4).await;
    let want = read_all(&new_leader);
    assert_eq!(want.len(), 20 + 10 + 6 + 12);
    assert_eq!(read_all(&follower), want);
    follower.close().await.unwrap();
    let reopened = open(fd.path(), config()).await;
    assert_eq!(read_all(&reopened), want);
}

#[compio::test]
async fn large_rounds_engage_direct_writes_and_small_ones_release_them() {
    let cfg = LogConfig {
        segment_bytes: 8 << 20,
        direct_write_min_bytes: 16 << 10,
        ..config()
    };
    let (_ld, leader, fd, follower) = leader_and_follower(cfg.clone()).await;
    let model = lead(&leader, 320, 1, 9).await;
    let file = || segment_file(fd.path(), 0);
    let written = |n: usize| model[..n].iter().map(|(_, b)| b.len() as u64).sum::<u64>();
    let padded = || {
        let (len, logical) = (fs::metadata(file()).unwrap().len(), written(read_all(&follower).len()));
        assert!(len >= logical);
        len > logical
    };
    // Small rounds: buffered, the file ends at the log's end.
    follow(&follower, &model[..10], 1).await;
    assert!(!padded());
    // Large rounds (about 60 KiB each) interrupted by a small one do not
    // engage the direct path...
    follow(&follower, &model[10..70], 12).await;
    follow(&follower, &model[70..71], 1).await;
    assert!(!padded());
    // ...eight in a row do: the file is padded to a block.
    follow(&follower, &model[71..167], 12).await;
    assert!(padded());
    // Small rounds stay direct for a while, then go back to buffered
    // writes, which overwrite the padding as they pass it.
    follow(&follower, &model[167..320], 1).await;
    assert!(!padded());
    assert_eq!(read_all(&follower), model);
    follower.close().await.unwrap();
    let reopened = open(fd.path(), cfg).await;
    assert_eq!(read_all(&reopened), model);
}
