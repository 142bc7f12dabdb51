//! Fetch: reads file slices from the owning shards and answers with a
//! response whose record bytes are file parts. Long polling: when fewer than
//! `min_bytes` are available, each owner waits for an append to one of the
//! requested partitions (the log's change notification, no timer loop) or
//! for `max_wait_ms`, whichever comes first.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::FetchRequest;
use sluice_engine::{FileSlice, LogError, ReadBound};
use uuid::Uuid;

use sluice_metadata::security::Operation;

use super::{Ctx, Outcome};
use crate::error_codes::{self, ErrorCode};
use crate::node::Shard;
use crate::partition::Partition;
use crate::protocol::fetch::{self as codec, PartitionData, Top, TopicData};
use crate::shard::ByOwner;
use crate::util::race;

/// One requested partition, resolved against the metadata.
#[derive(Debug, Clone)]
struct Wanted {
    topic: Option<Arc<str>>,
    partition: i32,
    offset: i64,
    max_bytes: u64,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    /// Error found before reading (unknown topic).
    error: Option<ErrorCode>,
}

/// What a fetcher may read: a follower up to the log end, a
/// read_uncommitted consumer up to the high watermark, a read_committed
/// one up to the last stable offset, told of the aborted transactions in
/// what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Replica(i32),
    Uncommitted,
    Committed,
}

/// A topic of the request: its name, its id and how many of its
/// partitions are asked for.
type Layout = (Arc<str>, Uuid, usize);

pub async fn handle(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: FetchRequest = decode_or_return!(ctx, body);
    let start = Instant::now();
    // A follower replica (a broker id) reads up to the log end and tells
    // the leader where it is; consumers send -1.
    let replica = if ctx.version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica >= 0).then_some(replica);
    let reader = match replica {
        Some(id) => Reader::Replica(id),
        None if req.isolation_level == 1 => Reader::Committed,
        None => Reader::Uncommitted,
    };
    let (layout, wanted) = wanted(&ctx, &req, replica);
    let max_bytes = u64::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(u64::from(ctx.shard.config().fetch_max_bytes));
    let min_bytes = u64::try_from(req.min_bytes).unwrap_or(0);
    // The client's wait, bounded by `sluice.fetch.max.wait.ms`.
    let max_wait = Duration::from_millis(
        u64::try_from(req.max_wait_ms)
            .unwrap_or(0)
            .min(ctx.shard.config().fetch_max_wait_ms),
    );
    let mut results = read_all(&ctx.shard, &wanted, max_bytes, reader).await;
    loop {
        let total: u64 = results.iter().map(|r| r.records.as_ref().map_or(0, |s| s.len)).sum();
        let any_error = results.iter().any(|r| r.error_code != 0 || r.diverging_epoch.is_some());
        // min_bytes 0 answers at once, as in Kafka.
        if total >= min_bytes || any_error || start.elapsed() >= max_wait {
            break;
        }
        // Wait on every requested partition's owner for its high watermark
        // to move past what this read saw (not past the fetch offset: with
        // data short of `min_bytes` that is already true, and re-reading at
        // once would hold the shard until the deadline). One waiter per
        // owner shard covers all of that shard's partitions.
        let deadline = start + max_wait;
        let mut by_owner = ByOwner::new(ctx.shard.shard_count());
        for (w, r) in wanted.iter().zip(&results) {
            if let Some(t) = &w.topic {
                let owner = ctx.shard.owner_of(t, w.partition);
                // A follower also waits for the log end to pass its offset.
                let end = if replica.is_some() { w.offset } else { i64::MAX };
                by_owner.push(owner, (t.clone(), w.partition, w.offset.max(r.high_watermark), end));
            }
        }
        let waits = by_owner
            .into_jobs()
            .map(|(owner, items)| Box::pin(ctx.shard.run_on(owner, move |s| wait_for_data(s, items, deadline))))
            .collect::<Vec<_>>();
        if waits.is_empty() {
            break;
        }
        let _ = race(futures_util::future::select_all(waits), ctx.shard.stopping.wait()).await;
        results = read_all(&ctx.shard, &wanted, max_bytes, reader).await;
        if ctx.shard.stopping.is_set() {
            break;
        }
    }
    answer(&ctx, layout, results, replica.is_none())
}

/// Each topic of the request (its name, id and partition count) and each
/// partition's read, refused up front where this broker cannot serve it.
fn wanted(ctx: &Ctx, req: &FetchRequest, replica: Option<i32>) -> (Vec<Layout>, Vec<Wanted>) {
    let snapshot = ctx.shard.meta();
    // A replica's fetch reads past the high watermark and moves it: it must
    // name a registered broker and that broker's current epoch (v15+), or
    // every partition is refused.
    let replica_error = replica.and_then(|id| {
        let current = ctx.version >= 15
            && snapshot
                .brokers
                .get(&id)
                .is_some_and(|b| b.epoch == req.replica_state.replica_epoch);
        (!current).then_some(ErrorCode::StaleBrokerEpoch)
    });
    // Kafka's authorization: a follower needs CLUSTER_ACTION, a consumer
    // READ on each topic; either way a refusal is TOPIC_AUTHORIZATION_FAILED
    // for the partition.
    let access = ctx.access();
    let follower_denied = replica.is_some() && !access.cluster(Operation::ClusterAction);
    let mut layout: Vec<Layout> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    for t in &req.topics {
        let meta = if ctx.version >= 13 {
            snapshot.topic_by_id(&t.topic_id).cloned()
        } else {
            snapshot.topic(t.topic.0.as_str()).cloned()
        };
        let name: Arc<str> = meta
            .as_ref()
            .map_or_else(|| t.topic.0.as_str().into(), |m| m.name.clone());
        let denied = follower_denied || (replica.is_none() && !access.topic(Operation::Read, &name));
        layout.push((name, t.topic_id, t.partitions.len()));
        for p in &t.partitions {
            let error = match &meta {
                _ if denied => Some(ErrorCode::TopicAuthorizationFailed),
                _ if replica_error.is_some() => replica_error,
                None if ctx.version >= 13 => Some(ErrorCode::UnknownTopicId),
                None => Some(ErrorCode::UnknownTopicOrPartition),
                Some(m) if p.partition < 0 || p.partition >= m.partitions => Some(ErrorCode::UnknownTopicOrPartition),
                Some(m) if m.leader(p.partition) != Some(ctx.shard.config().node_id) => {
                    Some(ErrorCode::NotLeaderOrFollower)
                }
                Some(_) => None,
            };
            wanted.push(Wanted {
                topic: meta.as_ref().map(|m| m.name.clone()),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: u64::try_from(p.partition_max_bytes).unwrap_or(0),
                current_leader_epoch: if ctx.version >= 9 { p.current_leader_epoch } else { -1 },
                last_fetched_epoch: if ctx.version >= 12 { p.last_fetched_epoch } else { -1 },
                error,
            });
        }
    }
    (layout, wanted)
}

/// The response: the results in request order, with leader hints where
/// a partition moved (v12+), and the bytes sent to consumers counted.
fn answer(ctx: &Ctx, layout: Vec<Layout>, results: Vec<PartitionData>, consumer: bool) -> Outcome {
    let metrics = &ctx.shard.metrics;
    let mut results = results.into_iter();
    let mut topics = Vec::with_capacity(layout.len());
    let mut hinted = Vec::new();
    let mut now = None;
    for (name, topic_id, count) in layout {
        let mut partitions: Vec<PartitionData> = results.by_ref().take(count).collect();
        let mut bytes = 0;
        for p in &mut partitions {
            if ctx.version >= 12
                && (p.error_code == ErrorCode::NotLeaderOrFollower.code()
                    || p.error_code == ErrorCode::FencedLeaderEpoch.code())
            {
                let snapshot = now.get_or_insert_with(|| ctx.shard.meta());
                let ids = if consumer {
                    super::ids::Ids::new(snapshot, ctx.shard.config(), &ctx.conn.listener)
                } else {
                    super::ids::Ids::nodes(snapshot, &ctx.conn.listener)
                };
                p.current_leader =
                    super::leader_hint(ids, &name, p.partition_index, ctx.shard.config().node_id, &mut hinted);
            }
            metrics.error(ctx.key as i16, p.error_code);
            bytes += p.records.as_ref().map_or(0, |s| s.len);
        }
        if consumer && bytes > 0 {
            metrics.sent(&name, bytes);
        }
        topics.push(TopicData {
            name,
            topic_id,
            partitions,
        });
    }
    let top = Top {
        throttle_time_ms: 0,
        error_code: 0,
        session_id: 0,
    };
    Outcome::Respond(codec::encode(
        ctx.version,
        ctx.header.correlation_id,
        top,
        &topics,
        &hinted,
    ))
}

fn failed(partition: i32, code: ErrorCode) -> PartitionData {
    PartitionData {
        partition_index: partition,
        error_code: code.code(),
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        aborted: None,
        records: None,
        diverging_epoch: None,
        current_leader: None,
    }
}

/// One partition to read on its owner, and its place in the request.
#[derive(Debug)]
struct Read {
    slot: usize,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    max_bytes: u64,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
    reader: Reader,
}

/// Reads every wanted partition on its owner (one synchronous job per
/// owner shard), then keeps slices in request order while they fit in
/// `max_bytes` (the first non-empty one always fits, as in Kafka, so a
/// consumer is never stuck behind a large batch).
async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted], max_bytes: u64, reader: Reader) -> Vec<PartitionData> {
    let mut results: Vec<Option<PartitionData>> = Vec::with_capacity(wanted.len());
    let mut by_owner = ByOwner::new(shard.shard_count());
    for (slot, w) in wanted.iter().enumerate() {
        match (&w.topic, w.error) {
            (Some(topic), None) => {
                let owner = shard.owner_of(topic, w.partition);
                by_owner.push(
                    owner,
                    Read {
                        slot,
                        topic: topic.clone(),
                        partition: w.partition,
                        offset: w.offset,
                        max_bytes: w.max_bytes.min(max_bytes),
                        current_leader_epoch: w.current_leader_epoch,
                        last_fetched_epoch: w.last_fetched_epoch,
                        reader,
                    },
                );
                results.push(None);
            }
            _ => results.push(Some(failed(
                w.partition,
                w.error.unwrap_or(ErrorCode::UnknownTopicOrPartition),
            ))),
        }
    }
    let reads: Vec<_> = by_owner
        .into_jobs()
        .map(|(owner, items)| {
            shard.call(owner, move |s| {
                items
                    .into_iter()
                    .map(|r| (r.slot, read_partition(s, &r)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for read in reads {
        // A shard gone (shutdown) answers nothing; its slots stay empty.
        if let Ok(read) = read.await {
            for (slot, data) in read {
                results[slot] = Some(data);
            }
        }
    }
    let mut results: Vec<PartitionData> = results
        .into_iter()
        .zip(wanted)
        .map(|(r, w)| r.unwrap_or_else(|| failed(w.partition, ErrorCode::NotLeaderOrFollower)))
        .collect();
    let mut total = 0u64;
    for r in &mut results {
        if let Some(slice) = &r.records {
            if total > 0 && total + slice.len > max_bytes {
                r.records = None;
            } else {
                total += slice.len;
            }
        }
    }
    results
}

fn read_partition(shard: &Rc<Shard>, r: &Read) -> PartitionData {
    let (partition, offset, max_bytes) = (r.partition, r.offset, r.max_bytes);
    let p = match super::leader_replica(shard, &r.topic, partition, r.current_leader_epoch) {
        Ok(p) => p,
        Err(code) => return failed(partition, code),
    };
    if let Some(diverged) = diverging(&p, r) {
        return diverged;
    }
    // Taken before the read: the records it returns end at or before it.
    let lso = p.last_stable_offset();
    let bound = match r.reader {
        Reader::Replica(follower) if !p.replica.borrow().replicas.contains(&follower) => {
            return failed(partition, ErrorCode::NotLeaderOrFollower);
        }
        Reader::Replica(follower) => {
            if let Some(isr) = p.follower_fetched(follower, offset, crate::base::clock::now_ms_u64()) {
                crate::replication::propose_isr(shard, &p, isr);
            }
            ReadBound::LogEnd
        }
        Reader::Uncommitted => ReadBound::HighWatermark,
        Reader::Committed => ReadBound::Stable(lso),
    };
    // A follower copies every batch; a consumer's answer starts at a
    // batch holding records (`Log::read_records`).
    let read = match r.reader {
        Reader::Replica(_) => p.log.read(offset, max_bytes.max(1), bound),
        Reader::Uncommitted | Reader::Committed => p.log.read_records(offset, max_bytes.max(1), bound),
    };
    match read {
        Ok(read) => {
            // The aborted transactions up to the stable offset (the records
            // sent end at or before it): a client drops their records.
            let aborted = (r.reader == Reader::Committed).then(|| {
                if read.slice.as_ref().is_some_and(|s| s.len > 0) {
                    p.producers.borrow().aborted_between(offset, lso)
                } else {
                    Vec::new()
                }
            });
            PartitionData {
                partition_index: partition,
                error_code: 0,
                high_watermark: read.high_watermark,
                last_stable_offset: lso,
                log_start_offset: read.log_start_offset,
                aborted,
                records: read.slice.filter(|s: &FileSlice| s.len > 0),
                diverging_epoch: None,
                current_leader: None,
            }
        }
        Err(e @ LogError::OffsetOutOfRange { .. }) => PartitionData {
            high_watermark: p.log.high_watermark(),
            last_stable_offset: lso,
            log_start_offset: p.log.log_start_offset(),
            ..failed(partition, error_codes::for_log_error(&e))
        },
        Err(e) => failed(partition, error_codes::for_log_error(&e)),
    }
}

/// A fetcher whose last fetched epoch ends earlier here holds a tail this
/// log does not: it must truncate first (the answer names where the epoch
/// ends). When this log knows no epoch at all, the fetch offset is out of
/// range (the fetcher then truncates to its high watermark).
fn diverging(p: &Partition, r: &Read) -> Option<PartitionData> {
    if r.last_fetched_epoch < 0 {
        return None;
    }
    let end = p.log.epoch_end(r.last_fetched_epoch);
    if end.epoch < 0 || end.end_offset < 0 {
        return Some(failed(r.partition, ErrorCode::OffsetOutOfRange));
    }
    (end.epoch < r.last_fetched_epoch || end.end_offset < r.offset).then(|| PartitionData {
        partition_index: r.partition,
        error_code: 0,
        high_watermark: p.log.high_watermark(),
        last_stable_offset: p.last_stable_offset(),
        log_start_offset: p.log.log_start_offset(),
        aborted: None,
        records: None,
        diverging_epoch: Some((end.epoch, end.end_offset)),
        current_leader: None,
    })
}

/// On the owner of every partition in `items` (topic, partition, the high
/// watermark the last read saw, and for a follower its fetch offset):
/// returns a future that completes when one of them has its high watermark
/// above what was seen (or, for a follower, its log end past the fetch
/// offset), when one of their logs changes in any way (a flush round, a
/// roll, a poisoning), or at the deadline.
fn wait_for_data(
    shard: &Rc<Shard>,
    items: Vec<(Arc<str>, i32, i64, i64)>,
    deadline: Instant,
) -> impl std::future::Future<Output = ()> + use<> {
    let parts: Vec<_> = items
        .iter()
        .filter_map(|(topic, partition, seen, end)| Some((shard.partition(topic, *partition)?, *seen, *end)))
        .collect();
    let shard = shard.clone();
    async move {
        if parts.is_empty()
            || parts
                .iter()
                .any(|(p, seen, end)| p.log.high_watermark() > *seen || p.log.log_end_offset() > *end)
        {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let changed = futures_util::future::select_all(parts.iter().map(|(p, _, _)| Box::pin(p.log.listen())));
        let _ = race(race(changed, compio::runtime::time::sleep(left)), shard.stopping.wait()).await;
    }
}
