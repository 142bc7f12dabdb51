//! Cleaning a compacted log: what a pass keeps, that offsets stay, that a
//! reopened log reads the same, and the recovery rows `interrupted_clean`
//! and `interrupted_swap`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use common::*;
use proptest::prelude::*;
use sluice_engine::{
    CleanRules, CleanStats, Durability, Log, LogConfig,
    batch::{self, BatchHeader, HEADER_BYTES, ProducerFields, Record},
    compact,
};

fn no_pace(_: u64) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(async {})
}

fn never(_: i64, _: i64) -> bool {
    false
}

fn rules(upto: i64, tombstones_before_ms: i64) -> CleanRules<'static> {
    CleanRules {
        upto,
        tombstones_before_ms,
        dirty_from: i64::MIN,
        map_bytes: 1 << 20,
        aborted: &never,
        producer_last: &never,
        codecs: None,
    }
}

/// One record per (key, value); `None` is a tombstone.
fn keyed(records: &[(u32, Option<u32>)], ts: i64) -> bytes::BytesMut {
    let recs: Vec<Record> = records
        .iter()
        .map(|(k, v)| Record {
            timestamp: ts,
            key: Some(format!("k{k}").into_bytes()),
            value: v.map(|v| format!("v{v}").into_bytes()),
            headers: Vec::new(),
        })
        .collect();
    batch::build(&recs, ProducerFields::NONE)
}

/// Every data record the log holds, by offset: (key, value).
fn records(log: &Log) -> BTreeMap<i64, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    for (_, b) in read_all(log) {
        let mut offsets = Vec::new();
        compact::walk_records(&b, None, |r, _| offsets.push(r.offset)).unwrap();
        let mut i = 0;
        let count = BatchHeader::parse(&b).unwrap().records_count();
        batch::for_each_record(&b[HEADER_BYTES..], count, |k, v| {
            let s = |x: &[u8]| String::from_utf8(x.to_vec()).unwrap();
            out.insert(offsets[i], (s(k.unwrap()), v.map(s)));
            i += 1;
        })
        .unwrap();
    }
    out
}

/// The batches cover every offset from the log start to the log end.
fn assert_contiguous(log: &Log) {
    let mut next = log.log_start_offset();
    for (base, b) in read_all(log) {
        assert_eq!(base, next, "batches follow each other");
        next = BatchHeader::parse(&b).unwrap().last_offset() + 1;
    }
    assert_eq!(next, log.log_end_offset());
}

/// A log of 1 KiB segments: a few batches roll.
async fn open_small(dir: &std::path::Path) -> Log {
    open(
        dir,
        LogConfig {
            segment_bytes: 1024,
            ..small_config()
        },
    )
    .await
}

async fn append(log: &Log, b: bytes::BytesMut) -> i64 {
    log.append_wait(b, 0, Durability::Written).await.unwrap().base_offset
}

#[compio::test]
async fn a_pass_keeps_the_latest_record_of_each_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let mut written = Vec::new();
    for round in 0..40u32 {
        let recs: Vec<(u32, Option<u32>)> = (0..5).map(|i| ((round * 3 + i) % 7, Some(round * 10 + i))).collect();
        let base = append(&log, keyed(&recs, 1_000)).await;
        for (i, (k, v)) in recs.iter().enumerate() {
            written.push((base + i as i64, *k, v.unwrap()));
        }
    }
    // The map covers the rolled segments: below the active one, each key
    // keeps its latest record there.
    let active_base = log.segment_bases().last().copied().unwrap();
    assert!(active_base > 0, "some segments rolled");
    let mut latest: HashMap<u32, (i64, u32)> = HashMap::new();
    for (offset, k, v) in written.iter().filter(|(o, _, _)| *o < active_base) {
        latest.insert(*k, (*offset, *v));
    }
    let before = records(&log);
    let end = log.log_end_offset();
    let stats: CleanStats = log.clean(&rules(end, 0), &no_pace).await.unwrap();
    assert!(stats.segments > 0 && stats.records_removed > 0, "{stats:?}");
    assert!(stats.bytes_written < stats.bytes_read);
    assert_contiguous(&log);
    let after = records(&log);
    // The active segment is never cleaned: what it holds stays.
    for (offset, (k, v)) in &after {
        assert_eq!(
            before.get(offset),
            Some(&(k.clone(), v.clone())),
            "a kept record is unchanged at its offset"
        );
        let key: u32 = k[1..].parse().unwrap();
        assert!(
            *offset >= active_base || latest[&key].0 == *offset,
            "only the latest record of {k} is kept below the active segment (found {offset})"
        );
    }
    for (k, (offset, v)) in &latest {
        assert_eq!(
            after.get(offset),
            Some(&(format!("k{k}"), Some(format!("v{v}")))),
            "the latest of k{k}"
        );
    }
    // A reopened log reads the same.
    let reopened_from = read_all(&log);
    drop(log);
    let log = open(dir.path(), small_config()).await;
    assert_eq!(read_all(&log), reopened_from);
    assert_eq!(log.log_end_offset(), end);
    // A second pass finds nothing more to remove.
    let again = log.clean(&rules(end, 0), &no_pace).await.unwrap();
    assert_eq!(again.records_removed, 0, "{again:?}");
}

#[compio::test]
async fn tombstones_stay_until_their_horizon_and_then_go_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    append(&log, keyed(&[(1, Some(1)), (2, Some(2))], 5_000)).await;
    append(&log, keyed(&[(1, None)], 5_000)).await;
    // Roll the two batches out of the active segment.
    while log.segment_bases().len() < 2 {
        append(&log, keyed(&[(9, Some(0)); 20], 5_000)).await;
    }
    let end = log.log_end_offset();
    log.clean(&rules(end, 5_000), &no_pace).await.unwrap();
    let kept = records(&log);
    assert!(
        kept.values().any(|(k, v)| k == "k1" && v.is_none()),
        "the tombstone is younger than the horizon"
    );
    assert!(
        !kept.values().any(|(k, v)| k == "k1" && v.is_some()),
        "the deleted value is gone"
    );
    log.clean(&rules(end, 5_001), &no_pace).await.unwrap();
    let kept = records(&log);
    assert!(
        !kept.values().any(|(k, _)| k == "k1"),
        "the tombstone is gone past the horizon"
    );
    assert!(kept.values().any(|(k, _)| k == "k2"));
    assert_contiguous(&log);
}

#[compio::test]
async fn aborted_records_go_and_a_producers_last_batch_stays_as_an_empty_header() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    let producer = ProducerFields {
        producer_id: 7,
        producer_epoch: 1,
        base_sequence: 0,
    };
    let rec = |k: u32, v: u32| Record {
        timestamp: 1,
        key: Some(format!("k{k}").into_bytes()),
        value: Some(format!("v{v}").into_bytes()),
        headers: Vec::new(),
    };
    let aborted_at = append(&log, batch::build_with(&[rec(1, 1)], producer, batch::TRANSACTIONAL)).await;
    let last_at = append(
        &log,
        batch::build(
            &[rec(2, 2)],
            ProducerFields {
                base_sequence: 1,
                ..producer
            },
        ),
    )
    .await;
    while log.segment_bases().len() < 2 {
        append(&log, keyed(&[(2, Some(3)); 20], 1)).await;
    }
    let aborted = move |pid: i64, base: i64| pid == 7 && base == aborted_at;
    let producer_last = move |pid: i64, last: i64| pid == 7 && last == last_at;
    let r = CleanRules {
        upto: log.log_end_offset(),
        tombstones_before_ms: 0,
        dirty_from: i64::MIN,
        map_bytes: 1 << 20,
        aborted: &aborted,
        producer_last: &producer_last,
        codecs: None,
    };
    log.clean(&r, &no_pace).await.unwrap();
    let kept = records(&log);
    assert!(!kept.contains_key(&aborted_at), "the aborted record is gone");
    assert!(!kept.contains_key(&last_at), "k2's record was superseded");
    let batches = read_all(&log);
    let (_, last) = batches
        .iter()
        .find(|(b, _)| *b == last_at)
        .expect("the producer's last batch stays");
    let h = BatchHeader::parse(last).unwrap();
    assert_eq!((h.records_count(), h.producer_id(), h.base_sequence()), (0, 7, 1));
    assert_contiguous(&log);
}

#[compio::test]
async fn a_small_map_cleans_up_to_where_it_filled() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small(dir.path()).await;
    for round in 0..30u32 {
        append(&log, keyed(&[(round, Some(0)), (round, Some(1))], 1)).await;
    }
    let mut r = rules(log.log_end_offset(), 0);
    r.map_bytes = 5 * 60;
    let stats = log.clean(&r, &no_pace).await.unwrap();
    assert!(
        stats.cleaned_to > 0 && stats.cleaned_to < log.log_end_offset(),
        "{stats:?}"
    );
    for (offset, (k, v)) in records(&log) {
        if offset < stats.cleaned_to {
            assert_eq!(
                v.as_deref(),
                Some("v1"),
                "{k} at {offset}: only the latest below the map's end"
            );
        }
    }
    assert_contiguous(&log);
}

#[compio::test]
async fn an_interrupted_clean_is_discarded_and_an_interrupted_swap_finished() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_config()).await;
    for round in 0..20u32 {
        append(&log, keyed(&[(round % 3, Some(round)); 4], 1)).await;
    }
    let end = log.log_end_offset();
    let before = read_all(&log);
    let first = log.segment_bases()[0];
    drop(log);
    // interrupted_clean: a half-written cleaned file is dropped.
    let cleaned = dir
        .path()
        .join(format!("{first:020}.{}", sluice_engine::CLEANED_SUFFIX));
    std::fs::write(&cleaned, b"half a batch").unwrap();
    let log = open(dir.path(), small_config()).await;
    assert!(!cleaned.exists());
    assert_eq!(read_all(&log), before);

    // interrupted_swap: a clean made on a copy, its first segment left as
    // `.swap` beside the original (and one index already gone).
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    let other = open(copy.path(), small_config()).await;
    other.clean(&rules(end, 0), &no_pace).await.unwrap();
    let cleaned_view = read_all(&other);
    drop(other);
    drop(log);
    let swap = dir.path().join(format!("{first:020}.{}", sluice_engine::SWAP_SUFFIX));
    std::fs::copy(segment_file(copy.path(), first), &swap).unwrap();
    std::fs::remove_file(dir.path().join(format!("{first:020}.index"))).unwrap();
    let log = open(dir.path(), small_config()).await;
    assert!(!swap.exists());
    let now = read_all(&log);
    let first_next = log.segment_bases().get(1).copied().unwrap_or(end);
    let cleaned_first: Vec<_> = cleaned_view.iter().filter(|(b, _)| *b < first_next).cloned().collect();
    assert_eq!(
        now.iter().filter(|(b, _)| *b < first_next).cloned().collect::<Vec<_>>(),
        cleaned_first
    );
    assert_contiguous(&log);
    assert_eq!(log.log_end_offset(), end);
}

/// The log changes while a pass runs (its pace yields): a segment deleted
/// meanwhile is not swapped back, appends go on, and what is left reads
/// whole.
#[compio::test]
async fn a_segment_deleted_during_a_pass_is_not_swapped_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small(dir.path()).await;
    for round in 0..60u32 {
        append(&log, keyed(&[(round % 4, Some(round)); 3], 1)).await;
    }
    let bases = log.segment_bases();
    assert!(bases.len() > 3);
    let (first, second) = (bases[0], bases[1]);
    let end = log.log_end_offset();
    let calls = std::cell::Cell::new(0);
    let handle = log.clone();
    let pace = |_: u64| -> Pin<Box<dyn Future<Output = ()>>> {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            handle.advance_log_start_offset(second).unwrap();
        }
        let h = handle.clone();
        Box::pin(async move {
            h.append_wait(keyed(&[(99, Some(0))], 1), 0, Durability::Written)
                .await
                .unwrap();
        })
    };
    log.clean(&rules(end, 0), &pace).await.unwrap();
    assert_eq!(log.segment_bases()[0], second, "the deleted segment stays deleted");
    assert!(!segment_file(dir.path(), first).exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(log.log_end_offset() > end, "appends went on");
    assert_contiguous(&log);
    drop(log);
    let log = open_small(dir.path()).await;
    assert_contiguous(&log);
}

/// A second pass maps only the segments past where the first left the
/// log clean, and still leaves each key's latest record alone below the
/// active segment: the clean part's records are superseded by the new
/// ones through the map.
#[compio::test]
async fn a_second_pass_maps_only_what_came_since() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small(dir.path()).await;
    let mut written = Vec::new();
    let write = async |log: &Log, rounds: std::ops::Range<u32>, written: &mut Vec<(i64, u32)>| {
        for round in rounds {
            let recs: Vec<(u32, Option<u32>)> = (0..3).map(|i| ((round + i) % 5, Some(round))).collect();
            let base = append(log, keyed(&recs, 1)).await;
            written.extend(recs.iter().enumerate().map(|(i, (k, _))| (base + i as i64, *k)));
        }
    };
    write(&log, 0..30, &mut written).await;
    let first = log.clean(&rules(log.log_end_offset(), 0), &no_pace).await.unwrap();
    write(&log, 30..60, &mut written).await;
    let mut second_rules = rules(log.log_end_offset(), 0);
    second_rules.dirty_from = first.cleaned_to;
    let second = log.clean(&second_rules, &no_pace).await.unwrap();
    assert!(second.records_removed > 0, "{second:?}");
    assert!(second.cleaned_to > first.cleaned_to);
    let active = log.segment_bases().last().copied().unwrap();
    let mut latest = HashMap::new();
    for (offset, k) in written.iter().filter(|(o, _)| *o < active) {
        latest.insert(*k, *offset);
    }
    for (offset, (k, _)) in records(&log).range(..active) {
        let key: u32 = k[1..].parse().unwrap();
        assert_eq!(latest[&key], *offset, "only the latest of {k} below the active segment");
    }
    assert_contiguous(&log);
}

/// A follower that copied part of the log before it was cleaned goes on
/// copying from the cleaned log: batches keep their bounds, so the one
/// holding its log end starts there.
#[compio::test]
async fn a_follower_behind_goes_on_copying_from_a_cleaned_log() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open_small(dir.path()).await;
    for round in 0..60u32 {
        append(&leader, keyed(&[(round % 4, Some(round)); 2], 1)).await;
    }
    let copied = read_all(&leader);
    let fdir = tempfile::tempdir().unwrap();
    let follower = open_small(fdir.path()).await;
    for (_, b) in copied.iter().take(17) {
        follower.append_replica(b.clone()).unwrap();
    }
    follower.sync().await.unwrap();
    let stats = leader
        .clean(&rules(leader.log_end_offset(), 0), &no_pace)
        .await
        .unwrap();
    assert!(stats.records_removed > 0);
    loop {
        let from = follower.log_end_offset();
        let r = leader.read(from, 4096, sluice_engine::ReadBound::LogEnd).unwrap();
        let Some(slice) = r.slice else { break };
        for (base, b) in split_batches(slice.to_bytes().unwrap()) {
            assert!(base >= from, "a batch starts at the follower's end or later");
            follower.append_replica(b).unwrap();
        }
        follower.sync().await.unwrap();
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_contiguous(&follower);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random keyed writes, tombstones among them: after a pass, below the
    /// active segment each live key has exactly its latest record there, a
    /// deleted key nothing (the horizon passed), and every kept record is
    /// the one written at its offset.
    #[test]
    fn cleaning_keeps_exactly_the_latest_of_each_key(
        writes in proptest::collection::vec(
            proptest::collection::vec((0u32..12, proptest::option::weighted(0.85, 0u32..1000)), 1..6),
            10..60,
        )
    ) {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let log = open(dir.path(), LogConfig { segment_bytes: 1024, ..small_config() }).await;
            let mut written = Vec::new();
            for w in &writes {
                let base = append(&log, keyed(w, 1)).await;
                for (i, (k, v)) in w.iter().enumerate() {
                    written.push((base + i as i64, *k, *v));
                }
            }
            let active = log.segment_bases().last().copied().unwrap();
            let mut latest: HashMap<u32, (i64, Option<u32>)> = HashMap::new();
            for (offset, k, v) in written.iter().filter(|(o, _, _)| *o < active) {
                latest.insert(*k, (*offset, *v));
            }
            let before = records(&log);
            log.clean(&rules(log.log_end_offset(), 2), &no_pace).await.unwrap();
            let after = records(&log);
            for (offset, kv) in &after {
                assert_eq!(before.get(offset), Some(kv));
                let key: u32 = kv.0[1..].parse().unwrap();
                if *offset < active {
                    assert_eq!(latest[&key].0, *offset, "only the latest of k{key}");
                    assert!(kv.1.is_some(), "tombstones past the horizon go");
                }
            }
            for (k, (offset, v)) in &latest {
                if v.is_some() {
                    assert!(after.contains_key(offset), "the latest of k{k} at {offset}");
                }
            }
            assert_contiguous(&log);
        });
    }
}

/// A pass whose fdatasync of a cleaned file fails leaves the log as it
/// was (that file's pages are the only ones in doubt, so the log is not
/// poisoned), removes what it made, and the next pass cleans.
#[compio::test]
async fn a_failed_sync_of_a_cleaned_segment_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let faults = sluice_engine::FaultInjector::new();
    let env = sluice_engine::Env {
        faults: Some(faults.clone()),
        ..sluice_engine::Env::default()
    };
    let config = LogConfig {
        segment_bytes: 1024,
        ..small_config()
    };
    let log = Log::open(dir.path(), config, env).await.unwrap();
    for round in 0..20u32 {
        append(&log, keyed(&[(round % 3, Some(round)); 4], 1)).await;
    }
    let end = log.log_end_offset();
    let before = records(&log);
    faults.fail_sync_at(faults.syncs_seen() + 1);
    assert!(log.clean(&rules(end, 0), &no_pace).await.is_err());
    assert!(!log.is_poisoned());
    assert_eq!(records(&log), before);
    let made: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(sluice_engine::CLEANED_SUFFIX) || n.ends_with(sluice_engine::SWAP_SUFFIX))
        .collect();
    assert!(made.is_empty(), "{made:?}");
    append(&log, keyed(&[(9, Some(9))], 1)).await;
    let stats = log.clean(&rules(end, 0), &no_pace).await.unwrap();
    assert!(stats.segments > 0 && stats.records_removed > 0, "{stats:?}");
    assert_contiguous(&log);
    let latest: HashMap<String, Option<String>> = records(&log).into_values().collect();
    assert_eq!(latest.len(), 4);
}

/// The first batch of a consumer's read with `read_records` (base, records).
fn first_read(log: &Log, offset: i64) -> Option<(i64, i32)> {
    let r = log
        .read_records(offset, 1 << 20, sluice_engine::ReadBound::LogEnd)
        .unwrap();
    let bytes = r.slice?.to_bytes().unwrap();
    let h = BatchHeader::parse(&bytes).unwrap();
    Some((h.base_offset(), h.records_count()))
}

/// A compacted log whose older keys were all overwritten holds runs of
/// segments of header-only batches: a consumer's read from inside such a
/// run starts at the first batch that holds a record (before and after a
/// reopen, which forgets which segments hold none); a read whose run
/// reaches the log end gets the run's last batch; a log that is not
/// compacted reads as it is.
#[compio::test]
async fn a_consumers_read_passes_over_batches_that_hold_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        compacted: true,
        ..small_config()
    };
    let log = open(dir.path(), config.clone()).await;
    for round in 0..30u32 {
        append(&log, keyed(&[(round % 2, Some(round))], 1)).await;
    }
    let end = log.log_end_offset();
    log.clean(&rules(end, 0), &no_pace).await.unwrap();
    let kept: Vec<i64> = records(&log).into_keys().collect();
    assert!(kept[0] > 5, "the oldest records went: {kept:?}");
    // From the start: the first kept record, not an empty batch.
    assert_eq!(first_read(&log, 0), Some((kept[0], 1)));
    assert_eq!(first_read(&log, kept[0]), Some((kept[0], 1)));
    drop(log);
    let log = open(dir.path(), config.clone()).await;
    assert_eq!(first_read(&log, 0), Some((kept[0], 1)));
    // Read as they are: by a follower, and in a log not compacted.
    let plain = log.read(0, 1 << 20, sluice_engine::ReadBound::LogEnd).unwrap();
    let bytes = plain.slice.unwrap().to_bytes().unwrap();
    assert_eq!(BatchHeader::parse(&bytes).unwrap().records_count(), 0);
    drop(log);
    let log = open(
        dir.path(),
        LogConfig {
            compacted: false,
            ..config.clone()
        },
    )
    .await;
    assert_eq!(first_read(&log, 0), Some((0, 0)));
    drop(log);
    // A run that reaches the bound (here as if a transaction opened at
    // the first record after a key's tombstone): its last batch, which
    // moves the reader to the bound.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), config).await;
    for round in 0..30u32 {
        append(&log, keyed(&[(0, Some(round))], 1)).await;
    }
    let bound = append(&log, keyed(&[(0, None)], 1)).await + 1;
    for round in 0..30u32 {
        append(&log, keyed(&[(1, Some(round))], 1)).await;
    }
    let end = log.log_end_offset();
    log.clean(&rules(end, i64::MAX), &no_pace).await.unwrap();
    let r = log
        .read_records(0, 1 << 20, sluice_engine::ReadBound::Stable(bound))
        .unwrap();
    let bytes = r.slice.unwrap().to_bytes().unwrap();
    let h = BatchHeader::parse(&bytes).unwrap();
    assert_eq!((h.records_count(), h.last_offset()), (0, bound - 1));
    assert_eq!(bytes.len(), HEADER_BYTES, "one header-only batch");
}
