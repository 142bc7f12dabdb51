//! Transactions: the coordinator's APIs (AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn; InitProducerId and FindCoordinator live with
//! their idempotent and group forms) and a partition leader's side,
//! WriteTxnMarkers, which a coordinator sends to end a transaction in the
//! partitions it wrote to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName,
    TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
    describe_producers_response, describe_transactions_response, list_transactions_response,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::Marker;

use sluice_metadata::security::Operation;

use super::produce::fenced_for_version;
use super::{Ctx, Outcome};
use crate::error_codes::ErrorCode;
use crate::meta::OFFSETS_TOPIC;
use crate::shard::ByOwner;
use crate::txn::markers::{Mark, write_local};
use crate::txn::state::TxnPartition;

/// AddPartitionsToTxn v2+, AddOffsetsToTxn v2+ and EndTxn v2+ know
/// PRODUCER_FENCED.
const FENCED_SINCE: i16 = 2;

/// The partitions of one transaction in an AddPartitionsToTxn request,
/// each with its answer: all added (or verified), or each refused.
async fn add_one(
    ctx: &Ctx,
    id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let (parts, unknown) = txn_partitions(ctx, topics);
    // Kafka's authorization: a broker's verification needs CLUSTER_ACTION;
    // a producer WRITE on the transactional id (else every partition is
    // TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and on each topic (else its
    // partitions are TOPIC_AUTHORIZATION_FAILED and nothing is added).
    let access = ctx.access();
    let all_denied = if verify_only {
        (!access.cluster(Operation::ClusterAction)).then_some(ErrorCode::ClusterAuthorizationFailed)
    } else {
        (!access.transactional_id(Operation::Write, id)).then_some(ErrorCode::TransactionalIdAuthorizationFailed)
    };
    let topic_denied: Vec<bool> = parts
        .iter()
        .map(|p| !verify_only && !access.topic(Operation::Write, &p.0))
        .collect();
    // One code per partition, in request order.
    let codes: Vec<i16> = if let Some(code) = all_denied {
        parts.iter().map(|_| code.code()).collect()
    } else if topic_denied.iter().any(|d| *d) {
        topic_denied
            .iter()
            .map(|d| {
                if *d {
                    ErrorCode::TopicAuthorizationFailed.code()
                } else {
                    ErrorCode::OperationNotAttempted.code()
                }
            })
            .collect()
    } else if !unknown.is_empty() {
        // Nothing is added when a partition is unknown, as in Kafka.
        parts
            .iter()
            .map(|p| {
                if unknown.contains(p) {
                    ErrorCode::UnknownTopicOrPartition.code()
                } else {
                    ErrorCode::OperationNotAttempted.code()
                }
            })
            .collect()
    } else if verify_only {
        verify_partitions(ctx, id, producer_id, epoch, parts).await
    } else {
        let (key, n) = (Arc::<str>::from(id), parts.len());
        let answer = crate::txn::on_coordinator(&ctx.shard, &key.clone(), move |s, partition| {
            crate::txn::add_partitions(s, partition, key, producer_id, epoch, parts)
        })
        .await;
        let code = answer
            .err()
            .map_or(0, |e| fenced_for_version(e, ctx.version, FENCED_SINCE));
        vec![code; n]
    };
    add_partitions_results(ctx, topics, codes)
}

/// The partitions an AddPartitionsToTxn names, in request order, and
/// those of them that do not exist.
fn txn_partitions(ctx: &Ctx, topics: &[AddPartitionsToTxnTopic]) -> (Vec<TxnPartition>, Vec<TxnPartition>) {
    let snapshot = ctx.shard.meta();
    let mut parts: Vec<TxnPartition> = Vec::new();
    let mut unknown = Vec::new();
    for t in topics {
        let meta = snapshot.topic(t.name.0.as_str());
        for &p in &t.partitions {
            let part: TxnPartition = (t.name.0.as_str().into(), p);
            if meta.is_none_or(|m| p < 0 || p >= m.partitions) {
                unknown.push(part.clone());
            }
            parts.push(part);
        }
    }
    (parts, unknown)
}

/// The verify-only form (KIP-890): whether each partition is in the
/// producer's ongoing transaction, asked of the coordinator.
async fn verify_partitions(ctx: &Ctx, id: &str, producer_id: i64, epoch: i16, parts: Vec<TxnPartition>) -> Vec<i16> {
    let (id, n) = (Arc::<str>::from(id), parts.len());
    let answer = crate::txn::on_coordinator(&ctx.shard, &id.clone(), move |s, _| async move {
        Ok(parts
            .iter()
            .map(|p| {
                crate::txn::verify(&s, &id, producer_id, epoch, p)
                    .err()
                    .map_or(0, |e| e.code())
            })
            .collect::<Vec<i16>>())
    })
    .await;
    answer.unwrap_or_else(|e| vec![e.code(); n])
}

/// The answer of each partition of `topics`, from `codes` in request
/// order.
fn add_partitions_results(
    ctx: &Ctx,
    topics: &[AddPartitionsToTxnTopic],
    codes: Vec<i16>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|&p| {
                            let code = codes.next().unwrap_or(ErrorCode::UnknownServerError.code());
                            ctx.shard.metrics.error(ctx.key as i16, code);
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect()
}

pub async fn add_partitions_to_txn(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: AddPartitionsToTxnRequest = decode_or_return!(ctx, body);
    let mut resp = AddPartitionsToTxnResponse::default();
    if ctx.version <= 3 {
        resp.results_by_topic_v3_and_below = add_one(
            &ctx,
            req.v3_and_below_transactional_id.0.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
        )
        .await;
    } else {
        for t in &req.transactions {
            let topics = add_one(
                &ctx,
                t.transactional_id.0.as_str(),
                t.producer_id.0,
                t.producer_epoch,
                &t.topics,
                t.verify_only,
            )
            .await;
            resp.results_by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id.clone())
                    .with_topic_results(topics),
            );
        }
    }
    ctx.respond(&resp)
}

pub async fn add_offsets_to_txn(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: AddOffsetsToTxnRequest = decode_or_return!(ctx, body);
    let mut resp = AddOffsetsToTxnResponse::default();
    // Kafka's authorization: WRITE on the transactional id, READ on the
    // group.
    let access = ctx.access();
    if !access.transactional_id(Operation::Write, req.transactional_id.0.as_str()) {
        resp.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
        return ctx.respond(&resp);
    }
    if !access.group(Operation::Read, req.group_id.0.as_str()) {
        resp.error_code = ErrorCode::GroupAuthorizationFailed.code();
        return ctx.respond(&resp);
    }
    // The group's offsets partition joins the transaction: its markers
    // make the group's transactional offsets committed (or not).
    let Some(n) = ctx.shard.meta().topic(OFFSETS_TOPIC).map(|t| t.partitions) else {
        resp.error_code = ErrorCode::CoordinatorNotAvailable.code();
        return ctx.respond(&resp);
    };
    let part: TxnPartition = (
        OFFSETS_TOPIC.into(),
        crate::groups::partition_for(req.group_id.0.as_str(), n),
    );
    let id: Arc<str> = req.transactional_id.0.as_str().into();
    let (producer_id, epoch) = (req.producer_id.0, req.producer_epoch);
    let answer = crate::txn::on_coordinator(&ctx.shard, &id.clone(), move |s, partition| {
        crate::txn::add_partitions(s, partition, id, producer_id, epoch, vec![part])
    })
    .await;
    resp.error_code = answer
        .err()
        .map_or(0, |e| fenced_for_version(e, ctx.version, FENCED_SINCE));
    ctx.shard.metrics.error(ctx.key as i16, resp.error_code);
    ctx.respond(&resp)
}

pub async fn end_txn(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: EndTxnRequest = decode_or_return!(ctx, body);
    if !ctx
        .access()
        .transactional_id(Operation::Write, req.transactional_id.0.as_str())
    {
        let mut resp = EndTxnResponse::default();
        resp.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
        resp.producer_id = ProducerId(-1);
        resp.producer_epoch = -1;
        return ctx.respond(&resp);
    }
    let id: Arc<str> = req.transactional_id.0.as_str().into();
    let (producer_id, epoch, commit) = (req.producer_id.0, req.producer_epoch, req.committed);
    let answer = crate::txn::on_coordinator(&ctx.shard, &id.clone(), move |s, partition| {
        crate::txn::end_txn(s, partition, id, producer_id, epoch, commit)
    })
    .await;
    let mut resp = EndTxnResponse::default();
    resp.error_code = answer
        .err()
        .map_or(0, |e| fenced_for_version(e, ctx.version, FENCED_SINCE));
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    ctx.shard.metrics.error(ctx.key as i16, resp.error_code);
    ctx.respond(&resp)
}

/// TxnOffsetCommit (KIP-447): offsets a transactional producer commits
/// for a consumer group, which become the group's when the transaction
/// commits. The transaction must hold the group's offsets partition
/// (AddOffsetsToTxn first; its coordinator is asked, as for a first
/// produce); the member is checked as OffsetCommit checks it.
pub async fn txn_offset_commit(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: TxnOffsetCommitRequest = decode_or_return!(ctx, body);
    let group_id = req.group_id.0.to_string();
    let snapshot = ctx.shard.meta();
    let max_meta = ctx.shard.config().groups.offset_metadata_max_bytes;
    let now = crate::base::clock::now_ms();
    // Per partition: an error found here, or `None` when it goes to the
    // group's coordinator.
    let mut checked: Vec<Vec<(i32, Option<ErrorCode>)>> = Vec::new();
    let mut to_write = Vec::new();
    // Kafka's authorization: WRITE on the transactional id, READ on the
    // group and on each topic.
    let access = ctx.access();
    let all_denied = if !access.transactional_id(Operation::Write, req.transactional_id.0.as_str()) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if !group_id.is_empty() && !access.group(Operation::Read, &group_id) {
        Some(ErrorCode::GroupAuthorizationFailed)
    } else {
        None
    };
    for t in &req.topics {
        let meta = snapshot.topic(t.name.0.as_str());
        let topic_denied = !access.topic(Operation::Read, t.name.0.as_str());
        let mut parts = Vec::new();
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let refused = if group_id.is_empty() {
                Some(ErrorCode::InvalidGroupId)
            } else if all_denied.is_some() {
                all_denied
            } else if topic_denied {
                Some(ErrorCode::TopicAuthorizationFailed)
            } else if !meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                Some(ErrorCode::UnknownTopicOrPartition)
            } else if metadata.len() > max_meta {
                Some(ErrorCode::OffsetMetadataTooLarge)
            } else {
                let v = crate::groups::records::OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: if ctx.version >= 2 { p.committed_leader_epoch } else { -1 },
                    metadata,
                    commit_ms: now,
                };
                to_write.push((t.name.0.to_string(), p.partition_index, v));
                None
            };
            parts.push((p.partition_index, refused));
        }
        checked.push(parts);
    }
    let producer = (req.producer_id.0, req.producer_epoch);
    let group_error = if to_write.is_empty() {
        None
    } else {
        commit_in_txn(&ctx, &req, group_id, producer, to_write).await
    }
    .map(|e| fenced_for_version(e, ctx.version, 3));
    let mut resp = TxnOffsetCommitResponse::default();
    for (t, parts) in req.topics.iter().zip(checked) {
        let mut out = TxnOffsetCommitResponseTopic::default().with_name(t.name.clone());
        for (index, refused) in parts {
            let code = refused.map_or(group_error.unwrap_or(0), |e| e.code());
            ctx.shard.metrics.error(ctx.key as i16, code);
            out.partitions.push(
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(index)
                    .with_error_code(code),
            );
        }
        resp.topics.push(out);
    }
    ctx.respond(&resp)
}

/// The transaction's coordinator confirms the group's offsets partition is
/// in the transaction, then the group's coordinator writes the offsets.
async fn commit_in_txn(
    ctx: &Ctx,
    req: &TxnOffsetCommitRequest,
    group_id: String,
    producer: (i64, i16),
    offsets: Vec<(String, i32, crate::groups::records::OffsetValue)>,
) -> Option<ErrorCode> {
    let n = ctx.shard.meta().topic(OFFSETS_TOPIC).map(|t| t.partitions)?;
    let part: TxnPartition = (OFFSETS_TOPIC.into(), crate::groups::partition_for(&group_id, n));
    let id: Arc<str> = req.transactional_id.0.as_str().into();
    let verified = super::verify::ask_coordinator(ctx, &id, producer.0, producer.1, &[part]).await;
    if let Some(Some(e)) = verified.into_iter().next() {
        // A coordinator that cannot answer now: retried by the client.
        return Some(match e {
            ErrorCode::NotEnoughReplicas => ErrorCode::CoordinatorLoadInProgress,
            other => other,
        });
    }
    let (generation, member) = if ctx.version >= 3 {
        (req.generation_id, req.member_id.to_string())
    } else {
        (-1, String::new())
    };
    let instance = req.group_instance_id.as_ref().map(|s| s.to_string());
    crate::groups::on_coordinator(&ctx.shard, &group_id.clone(), move |shard, partition| {
        crate::groups::txn_commit(
            shard, partition, group_id, producer, generation, member, instance, offsets,
        )
    })
    .await
    .unwrap_or_else(Some)
}

pub async fn write_txn_markers(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: WriteTxnMarkersRequest = decode_or_return!(ctx, body);
    // Kafka's authorization: only brokers write markers (CLUSTER_ACTION).
    let codes = if ctx.access().cluster(Operation::ClusterAction) {
        write_marks(&ctx, &req).await
    } else {
        let n = req
            .markers
            .iter()
            .flat_map(|m| m.topics.iter().map(|t| t.partition_indexes.len()))
            .sum();
        vec![ErrorCode::ClusterAuthorizationFailed.code(); n]
    };
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

/// Writes every marker of the request on the shard that owns its
/// partition, each owner's markers written before any of them waits for
/// its acknowledgements; one code per marker, in request order.
async fn write_marks(ctx: &Ctx, req: &WriteTxnMarkersRequest) -> Vec<i16> {
    let deadline = Instant::now() + Duration::from_millis(ctx.shard.config().transactions.marker_timeout_ms);
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
    // A shard gone (shutdown) leaves NOT_LEADER_OR_FOLLOWER: the
    // coordinator asks again at the partition's next leader.
    let mut codes = vec![ErrorCode::NotLeaderOrFollower.code(); count];
    let pending: Vec<_> = by_owner
        .into_jobs()
        .map(|(owner, items)| {
            let slots: Vec<usize> = items.iter().map(|(slot, _)| *slot).collect();
            let answer = Box::pin(ctx.shard.run_on(owner, move |s| {
                let writes: Vec<_> = items.into_iter().map(|(_, m)| write_local(s, m, deadline)).collect();
                async move {
                    let mut out = Vec::with_capacity(writes.len());
                    for w in writes {
                        out.push(w.await.err().map_or(0, |e| e.code()));
                    }
                    out
                }
            }));
            (slots, answer)
        })
        .collect();
    for (slots, answer) in pending {
        if let Ok(answers) = answer.await {
            for (slot, code) in slots.into_iter().zip(answers) {
                codes[slot] = code;
            }
        }
    }
    codes
}

/// The states ListTransactions filters by, as Kafka names them.
const STATES: &[&str] = &[
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
];

/// ListTransactions: the transactional ids this broker coordinates (every
/// shard's), filtered by state, producer id and (v1+) how long their
/// transaction has been open.
pub async fn list_transactions(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: ListTransactionsRequest = decode_or_return!(ctx, body);
    let mut resp = ListTransactionsResponse::default();
    let states: Vec<&str> = req.state_filters.iter().map(|s| s.as_str()).collect();
    resp.unknown_state_filters = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let longer_than = if ctx.version >= 1 { req.duration_filter } else { -1 };
    let now = crate::base::clock::now_ms();
    let shards: Vec<_> = (0..ctx.shard.shard_count())
        .map(|i| {
            ctx.shard.call(crate::shard::ShardId(i), |s| {
                s.services
                    .transactions
                    .all()
                    .into_iter()
                    .map(|(m, _)| m)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Kafka's authorization: the ids the client may describe.
    let access = ctx.access();
    for shard in shards {
        let Ok(all) = shard.await else {
            continue;
        };
        for m in all {
            if !access.transactional_id(Operation::Describe, &m.id) {
                continue;
            }
            let open_for = if m.start_ms >= 0 { now - m.start_ms } else { -1 };
            if (!states.is_empty() && !states.contains(&m.status.name()))
                || (!pids.is_empty() && !pids.contains(&m.producer_id))
                || (longer_than >= 0 && open_for < longer_than)
            {
                continue;
            }
            resp.transaction_states.push(
                list_transactions_response::TransactionState::default()
                    .with_transactional_id(TransactionalId(StrBytes::from_string(m.id.to_string())))
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_transaction_state(StrBytes::from_static_str(m.status.name())),
            );
        }
    }
    resp.transaction_states
        .sort_by(|a, b| a.transactional_id.0.as_str().cmp(b.transactional_id.0.as_str()));
    ctx.respond(&resp)
}

/// DescribeTransactions: each id's state, from its coordinator (this
/// broker, or NOT_COORDINATOR).
pub async fn describe_transactions(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeTransactionsRequest = decode_or_return!(ctx, body);
    let mut resp = DescribeTransactionsResponse::default();
    let access = ctx.access();
    for id in &req.transactional_ids {
        let key: Arc<str> = id.0.as_str().into();
        if !access.transactional_id(Operation::Describe, &key) {
            resp.transaction_states.push(
                describe_transactions_response::TransactionState::default()
                    .with_transactional_id(id.clone())
                    .with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code()),
            );
            continue;
        }
        let found = crate::txn::on_coordinator(&ctx.shard, &key.clone(), move |s, _| async move {
            s.services
                .transactions
                .get(&key)
                .ok_or(ErrorCode::TransactionalIdNotFound)
        })
        .await;
        let mut out = describe_transactions_response::TransactionState::default().with_transactional_id(id.clone());
        match found {
            Err(e) => out.error_code = e.code(),
            Ok(m) => {
                out.transaction_state = StrBytes::from_static_str(m.status.name());
                out.transaction_timeout_ms = m.timeout_ms;
                out.transaction_start_time_ms = m.start_ms;
                out.producer_id = ProducerId(m.producer_id);
                out.producer_epoch = m.epoch;
                let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
                for (t, p) in &m.partitions {
                    by_topic.entry(t).or_default().push(*p);
                }
                out.topics = by_topic
                    .into_iter()
                    .map(|(t, parts)| {
                        describe_transactions_response::TopicData::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(parts)
                    })
                    .collect();
            }
        }
        ctx.shard.metrics.error(ctx.key as i16, out.error_code);
        resp.transaction_states.push(out);
    }
    ctx.respond(&resp)
}

/// DescribeProducers: the producers of each partition this broker leads,
/// from its producer table.
pub async fn describe_producers(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeProducersRequest = decode_or_return!(ctx, body);
    let mut resp = DescribeProducersResponse::default();
    let access = ctx.access();
    for t in &req.topics {
        let mut topic = describe_producers_response::TopicResponse::default().with_name(t.name.clone());
        // Kafka's authorization: READ on the topic.
        if !access.topic(Operation::Read, t.name.0.as_str()) {
            for &index in &t.partition_indexes {
                topic.partitions.push(
                    describe_producers_response::PartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(ErrorCode::TopicAuthorizationFailed.code()),
                );
            }
            resp.topics.push(topic);
            continue;
        }
        for &index in &t.partition_indexes {
            let name: Arc<str> = t.name.0.as_str().into();
            let owner = ctx.shard.owner_of(&name, index);
            let found = ctx
                .shard
                .call(owner, move |s| match s.partition(&name, index) {
                    Some(p) if p.is_leader() => Ok(p.producers.borrow().active()),
                    Some(_) => Err(ErrorCode::NotLeaderOrFollower),
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                })
                .await
                .unwrap_or(Err(ErrorCode::NotLeaderOrFollower));
            let mut out = describe_producers_response::PartitionResponse::default().with_partition_index(index);
            match found {
                Err(e) => out.error_code = e.code(),
                Ok(active) => {
                    out.active_producers = active
                        .into_iter()
                        .map(|(id, epoch, last_seq, txn_start)| {
                            describe_producers_response::ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last_seq)
                                .with_last_timestamp(-1)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(txn_start)
                        })
                        .collect();
                }
            }
            ctx.shard.metrics.error(ctx.key as i16, out.error_code);
            topic.partitions.push(out);
        }
        resp.topics.push(topic);
    }
    ctx.respond(&resp)
}
