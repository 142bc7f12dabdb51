//! ListOffsets (earliest, latest, by timestamp, max timestamp) and
//! DeleteRecords, each answered by the partition's owner.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use kafka_protocol::records::RecordBatchDecoder;
use sluice_engine::{Log, batch};

use futures_util::future::{Either, ready};
use sluice_metadata::security::Operation;

use super::{Ctx, Outcome};
use crate::error_codes::{self, ErrorCode};
use crate::node::Shard;

/// Special timestamps of ListOffsets.
pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;
pub const EARLIEST_LOCAL: i64 = -4;
pub const EARLIEST_PENDING_UPLOAD: i64 = -5;

/// Runs `f(shard, topic, partition, arg)` on the partition's owner, which
/// answers unknown partitions itself; `gone` when the owner stopped first.
async fn on_owner<A: Send + 'static, T: Send + 'static>(
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    arg: A,
    f: fn(&Shard, &str, i32, A) -> T,
    gone: T,
) -> T {
    let topic: Arc<str> = topic.into();
    let owner = ctx.shard.owner_of(&topic, partition);
    ctx.shard
        .submit_to(owner, move |s| async move { f(&s, &topic, partition, arg) })
        .await
        .unwrap_or(gone)
}

pub async fn list_offsets(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: ListOffsetsRequest = decode_or_return!(ctx, body);
    // read_committed (isolation level 1) sees up to the last stable offset.
    let committed = version_isolation(ctx.version, req.isolation_level);
    let gone = (ErrorCode::NotLeaderOrFollower.code(), -1, -1, -1);
    let version = ctx.version;
    // Kafka's authorization: DESCRIBE on each topic.
    let access = ctx.access();
    let futs = req.topics.iter().flat_map(|t| {
        let ctx = &ctx;
        let denied = !access.topic(Operation::Describe, t.name.0.as_str());
        t.partitions.iter().map(move |p| {
            let epoch = if version >= 4 { p.current_leader_epoch } else { -1 };
            if denied {
                return Either::Left(ready((ErrorCode::TopicAuthorizationFailed.code(), -1, -1, -1)));
            }
            Either::Right(on_owner(
                ctx,
                t.name.0.as_str(),
                p.partition_index,
                (p.timestamp, epoch, committed),
                lookup,
                gone,
            ))
        })
    });
    let answers = futures_util::future::join_all(futs).await;
    let mut answers = answers.into_iter();
    let mut resp = ListOffsetsResponse::default();
    for t in &req.topics {
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let (code, offset, timestamp, leader_epoch) =
                answers
                    .next()
                    .unwrap_or((ErrorCode::UnknownServerError.code(), -1, -1, -1));
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_code = code;
            pr.offset = offset;
            pr.timestamp = timestamp;
            if ctx.version >= 4 {
                pr.leader_epoch = if code == 0 { leader_epoch } else { -1 };
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    ctx.respond(&resp)
}

/// Whether a ListOffsets request reads committed records only (v2+).
fn version_isolation(version: i16, isolation_level: i8) -> bool {
    version >= 2 && isolation_level == 1
}

/// `(error_code, offset, timestamp, leader_epoch)` for one partition,
/// asked with the client's current leader epoch (-1: none); with
/// `committed`, latest is the last stable offset and a lookup by time
/// finds nothing at or past it.
fn lookup(
    shard: &Shard,
    topic: &str,
    partition: i32,
    (ts, current_epoch, committed): (i64, i32, bool),
) -> (i16, i64, i64, i32) {
    let p = match super::leader_replica(shard, topic, partition, current_epoch) {
        Ok(p) => p,
        Err(code) => return (code.code(), -1, -1, -1),
    };
    let epoch = p.leader_epoch().max(0);
    let log = &p.log;
    // Until then "latest" could go back.
    let settled = p.epoch_settled();
    let found = match ts {
        LATEST if !settled => return (ErrorCode::OffsetNotAvailable.code(), -1, -1, -1),
        LATEST if committed => return (0, p.last_stable_offset(), -1, epoch),
        LATEST => return (0, log.high_watermark(), -1, epoch),
        EARLIEST | EARLIEST_LOCAL | EARLIEST_PENDING_UPLOAD => return (0, log.log_start_offset(), -1, epoch),
        MAX_TIMESTAMP => max_timestamp_record(log),
        ts if ts < 0 => return (ErrorCode::InvalidRequest.code(), -1, -1, -1),
        ts => record_at_or_after(log, ts),
    };
    match found {
        Ok(Some((offset, _))) if committed && offset >= p.last_stable_offset() => (0, -1, -1, epoch),
        Ok(Some((offset, timestamp))) => (0, offset, timestamp, epoch),
        Ok(None) => (0, -1, -1, epoch),
        Err(code) => (code.code(), -1, -1, -1),
    }
}

/// `(offset, timestamp)` of every record of the one stored batch at the
/// start of `bytes`, decompressed if need be. Under LogAppendTime every
/// record carries the batch's maxTimestamp, as in Kafka.
fn record_times(bytes: bytes::Bytes) -> Result<Vec<(i64, i64)>, ErrorCode> {
    let header = batch::BatchHeader::parse(&bytes).map_err(|_| ErrorCode::CorruptMessage)?;
    let len = header.total_len().ok_or(ErrorCode::CorruptMessage)?;
    let log_append_time = header.attributes() & 0x08 != 0;
    let max_timestamp = header.max_timestamp();
    let mut one = bytes.slice(..len.min(bytes.len()));
    let set = RecordBatchDecoder::decode(&mut one).map_err(|e| {
        tracing::warn!(error = %e, "decoding a stored batch for a timestamp lookup");
        ErrorCode::CorruptMessage
    })?;
    Ok(set
        .records
        .iter()
        .map(|r| (r.offset, if log_append_time { max_timestamp } else { r.timestamp }))
        .collect())
}

/// The stored batch holding `offset` (at least one whole batch).
fn batch_at(log: &Log, offset: i64) -> Result<bytes::Bytes, ErrorCode> {
    log.read_bytes(offset, 1).map_err(|e| error_codes::for_log_error(&e))
}

/// ListOffsets by timestamp, to the record as Kafka answers: the first
/// record at or after the log start whose timestamp is at or after `ts`.
/// The engine names the batch (through the time index); only that batch is
/// read and, if compressed, inflated.
fn record_at_or_after(log: &Log, ts: i64) -> Result<Option<(i64, i64)>, ErrorCode> {
    let mut from = log.log_start_offset();
    loop {
        let Some(candidate) = log
            .offset_for_timestamp(ts, from)
            .map_err(|e| error_codes::for_log_error(&e))?
        else {
            return Ok(None);
        };
        let batch = batch_at(log, candidate.offset)?;
        let batch_last = batch::BatchHeader::parse(&batch)
            .map_or(candidate.offset, |h| h.last_offset())
            .max(candidate.offset);
        let records = record_times(batch)?;
        if let Some(&hit) = records.iter().find(|&&(o, t)| o >= candidate.offset && t >= ts) {
            return Ok(Some(hit));
        }
        // No record of the batch qualifies: its later records sat below
        // the log start, or a compacted log's cleaner removed the ones
        // with the newest timestamps (the header keeps the batch's
        // maxTimestamp and last offset). Go on after the whole batch.
        from = batch_last + 1;
    }
}

/// ListOffsets MAX_TIMESTAMP (-3): the first record holding the largest
/// timestamp, and that timestamp.
fn max_timestamp_record(log: &Log) -> Result<Option<(i64, i64)>, ErrorCode> {
    let Some(batch) = log.max_timestamp() else {
        return Ok(None);
    };
    let records = record_times(batch_at(log, batch.offset)?)?;
    Ok(records
        .iter()
        .copied()
        .filter(|&(o, _)| o >= log.log_start_offset())
        .find(|&(_, t)| t == batch.timestamp)
        .or(Some((batch.offset, batch.timestamp))))
}

pub async fn delete_records(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DeleteRecordsRequest = decode_or_return!(ctx, body);
    let gone = (ErrorCode::NotLeaderOrFollower.code(), -1);
    // Kafka's authorization: DELETE on each topic.
    let access = ctx.access();
    let futs = req.topics.iter().flat_map(|t| {
        let ctx = &ctx;
        let denied = !access.topic(Operation::Delete, t.name.0.as_str());
        t.partitions.iter().map(move |p| {
            if denied {
                return Either::Left(ready((ErrorCode::TopicAuthorizationFailed.code(), -1)));
            }
            Either::Right(on_owner(
                ctx,
                t.name.0.as_str(),
                p.partition_index,
                p.offset,
                truncate_front,
                gone,
            ))
        })
    });
    let mut answers = futures_util::future::join_all(futs).await.into_iter();
    let mut resp = DeleteRecordsResponse::default();
    for t in &req.topics {
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for p in &t.partitions {
            let (code, low) = answers.next().unwrap_or((ErrorCode::UnknownServerError.code(), -1));
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.error_code = code;
            pr.low_watermark = low;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    ctx.respond(&resp)
}

/// OffsetForLeaderEpoch (KIP-320): where each asked epoch ends in the
/// leader's log, so a consumer (or follower) can tell whether the log it
/// read was truncated under it.
pub async fn offset_for_leader_epoch(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: OffsetForLeaderEpochRequest = decode_or_return!(ctx, body);
    let gone = (ErrorCode::NotLeaderOrFollower.code(), -1, -1);
    // Kafka's authorization: a follower (replica id set, v3+) needs
    // CLUSTER_ACTION, a client DESCRIBE on each topic.
    let access = ctx.access();
    let follower = ctx.version >= 3 && req.replica_id.0 >= 0;
    let cluster_ok = !follower || access.cluster(Operation::ClusterAction);
    let futs = req.topics.iter().flat_map(|t| {
        let ctx = &ctx;
        let denied = !cluster_ok || (!follower && !access.topic(Operation::Describe, t.topic.0.as_str()));
        t.partitions.iter().map(move |p| {
            if denied {
                return Either::Left(ready((ErrorCode::TopicAuthorizationFailed.code(), -1, -1)));
            }
            Either::Right(on_owner(
                ctx,
                t.topic.0.as_str(),
                p.partition,
                (p.leader_epoch, p.current_leader_epoch),
                epoch_end,
                gone,
            ))
        })
    });
    let mut answers = futures_util::future::join_all(futs).await.into_iter();
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in &req.topics {
        let mut tr = OffsetForLeaderTopicResult::default();
        tr.topic = t.topic.clone();
        for p in &t.partitions {
            let (code, epoch, end) = answers.next().unwrap_or((ErrorCode::UnknownServerError.code(), -1, -1));
            let mut pr = EpochEndOffset::default();
            pr.partition = p.partition;
            pr.error_code = code;
            pr.leader_epoch = epoch;
            pr.end_offset = end;
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    ctx.respond(&resp)
}

/// `(error_code, epoch, end_offset)` of `epoch` in the partition's log.
fn epoch_end(shard: &Shard, topic: &str, partition: i32, (epoch, current_epoch): (i32, i32)) -> (i16, i32, i64) {
    let p = match super::leader_replica(shard, topic, partition, current_epoch) {
        Ok(p) => p,
        Err(code) => return (code.code(), -1, -1),
    };
    let end = p.log.epoch_end(epoch);
    (0, end.epoch, end.end_offset)
}

/// `(error_code, low_watermark)`; offset -1 means the high watermark.
fn truncate_front(shard: &Shard, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let p = match super::leader_replica(shard, topic, partition, -1) {
        Ok(p) => p,
        Err(code) => return (code.code(), -1),
    };
    let hw = p.log.high_watermark();
    let target = if offset == -1 { hw } else { offset };
    if target < 0 || target > hw {
        return (ErrorCode::OffsetOutOfRange.code(), p.log.log_start_offset());
    }
    match p.log.advance_log_start_offset(target) {
        Ok(low) => (0, low),
        Err(e) => (error_codes::for_log_error(&e).code(), -1),
    }
}
