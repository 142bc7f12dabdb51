//! Transactions, a partition leader's side: WriteTxnMarkers, which a
//! transaction coordinator sends to the leaders of the partitions a
//! transaction wrote to, to end it there with a COMMIT or ABORT marker.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ProducerId, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use sluice_engine::batch::Marker;

use super::produce::{Answer, after_append, settle};
use super::{Ctx, Outcome};
use crate::error_codes::{self, ErrorCode};
use crate::node::Shard;
use crate::shard::ByOwner;

/// One partition's marker, bound for the shard that owns the partition.
#[derive(Debug)]
struct Mark {
    topic: Arc<str>,
    partition: i32,
    producer_id: i64,
    epoch: i16,
    marker: Marker,
    coordinator_epoch: i32,
}

pub async fn write_txn_markers(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: WriteTxnMarkersRequest = decode_or_return!(ctx, body);
    let deadline = Instant::now() + Duration::from_millis(ctx.shard.config().transactions.marker_timeout_ms);
    let now_ms = crate::base::clock::now_ms();
    let mut by_owner = ByOwner::new(ctx.shard.shard_count());
    let mut count = 0;
    for m in &req.markers {
        let marker = if m.transaction_result {
            Marker::Commit
        } else {
            Marker::Abort
        };
        for t in &m.topics {
            let topic: Arc<str> = t.name.0.as_str().into();
            for &partition in &t.partition_indexes {
                let owner = ctx.shard.owner_of(&topic, partition);
                let mark = Mark {
                    topic: topic.clone(),
                    partition,
                    producer_id: m.producer_id.0,
                    epoch: m.producer_epoch,
                    marker,
                    coordinator_epoch: m.coordinator_epoch,
                };
                by_owner.push(owner, (count, mark));
                count += 1;
            }
        }
    }
    let mut codes = vec![ErrorCode::NotLeaderOrFollower.code(); count];
    let pending: Vec<_> = by_owner
        .into_jobs()
        .map(|(owner, items)| {
            let slots: Vec<usize> = items.iter().map(|(slot, _)| *slot).collect();
            let marks = items.into_iter().map(|(_, m)| m).collect();
            let answer = Box::pin(
                ctx.shard
                    .run_on(owner, move |s| mark_partitions(s, marks, now_ms, deadline)),
            );
            (slots, answer)
        })
        .collect();
    for (slots, answer) in pending {
        // A shard gone (shutdown) leaves NOT_LEADER_OR_FOLLOWER: the
        // coordinator retries at the partition's next leader.
        if let Ok(answers) = answer.await {
            for (slot, code) in slots.into_iter().zip(answers) {
                codes[slot] = code;
            }
        }
    }
    let mut codes = codes.into_iter();
    let mut resp = WriteTxnMarkersResponse::default();
    for m in &req.markers {
        let mut result = WritableTxnMarkerResult::default().with_producer_id(ProducerId(m.producer_id.0));
        for t in &m.topics {
            let mut topic = WritableTxnMarkerTopicResult::default().with_name(t.name.clone());
            for &partition in &t.partition_indexes {
                let code = codes.next().unwrap_or(ErrorCode::UnknownServerError.code());
                ctx.shard.metrics.error(ctx.key as i16, code);
                topic.partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(partition)
                        .with_error_code(code),
                );
            }
            result.topics.push(topic);
        }
        resp.markers.push(result);
    }
    ctx.respond(&resp)
}

/// Runs on the owner of every partition in `marks`: writes each marker
/// now, in order, and returns a future of the error codes that waits for
/// each marker to be on the partition's in-sync replicas (as acks=all).
fn mark_partitions(
    shard: &Rc<Shard>,
    marks: Vec<Mark>,
    now_ms: i64,
    deadline: Instant,
) -> impl std::future::Future<Output = Vec<i16>> + use<> {
    let answers: Vec<Result<Answer, ErrorCode>> = marks.into_iter().map(|m| mark(shard, m, now_ms, deadline)).collect();
    async move {
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            out.push(match a {
                Err(code) => code.code(),
                Ok(answer) => error_codes::code(settle(answer).await.error),
            });
        }
        out
    }
}

fn mark(shard: &Shard, m: Mark, now_ms: i64, deadline: Instant) -> Result<Answer, ErrorCode> {
    let p = shard
        .partition(&m.topic, m.partition)
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    if !p.is_leader() {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    p.check_min_isr().map_err(|r| r.code)?;
    let epoch = p.leader_epoch();
    let appended = p
        .append_marker(m.producer_id, m.epoch, m.marker, m.coordinator_epoch, now_ms)
        .map_err(|r| {
            tracing::info!(topic = %m.topic, partition = m.partition, producer = m.producer_id, error = %r.message, "transaction marker refused");
            r.code
        })?;
    Ok(after_append(shard, p, appended, -1, epoch, deadline))
}
