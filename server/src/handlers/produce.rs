//! Produce and InitProducerId.
//!
//! The connection's shard parses the request by hand (records stay in the
//! frame's buffer), sends each partition's batches to the owning shard, and
//! gathers the answers. The owner checks producer sequences, assigns offsets
//! in place, appends, and waits for the durability `acks` asks for:
//! acks=-1 on a partition with one replica waits for the group-committed
//! fdatasync; on a replicated partition it is refused up front while the
//! ISR is below `min.insync.replicas`, and answers once the high watermark
//! passes the batch (every in-sync replica has it; with
//! `sluice.replica.fsync.before.ack`, synced on each). acks=1 waits for the
//! leader's write to the page cache (or the sync, under
//! `log.flush.interval.ms=0`), acks=0 for nothing and gets no response.

use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    BrokerId, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse, ProducerId, TopicName,
};

use sluice_metadata::security::Operation;

use super::{Ctx, Outcome, str_bytes};
use crate::error_codes::{self, ErrorCode};
use crate::node::Shard;
use crate::partition::{AckWait, Partition, Txn};
use crate::protocol::produce::ProduceRequest;
use crate::shard::{ByOwner, ShardId};

/// One partition's answer.
#[derive(Debug, Clone)]
pub struct PartitionResult {
    pub error: Option<ErrorCode>,
    pub message: Option<String>,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

impl PartitionResult {
    fn ok(base_offset: i64, p: &Partition) -> Self {
        Self {
            error: None,
            message: None,
            base_offset,
            log_start_offset: p.log.log_start_offset(),
        }
    }

    pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: Some(code),
            message: Some(message.into()),
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

pub async fn handle(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: ProduceRequest = match crate::protocol::produce::parse(body, ctx.version) {
        Ok(r) => r,
        Err(e) => return Outcome::Close(format!("Produce v{}: {e}", ctx.version)),
    };
    let acks = req.acks;
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(u64::try_from(req.timeout_ms).unwrap_or(0));
    // A transactional producer's requests reach the owners in the order
    // they came, also when one waits for its coordinator's verification.
    let txn_id: Option<Arc<str>> = req.transactional_id.as_deref().filter(|t| !t.is_empty()).map(Arc::from);
    let ticket = txn_id.as_ref().map(|_| ctx.conn.txn_produce.ticket());
    let txn = if txn_id.is_some() {
        Txn::Member { verified: false }
    } else {
        Txn::None
    };
    // Kafka's authorization: WRITE on the transactional id (else every
    // partition is refused TRANSACTIONAL_ID_AUTHORIZATION_FAILED), WRITE on
    // each topic (TOPIC_AUTHORIZATION_FAILED).
    let access = ctx.access();
    let txn_denied = txn_id
        .as_ref()
        .is_some_and(|id| !access.transactional_id(Operation::Write, id));
    let Routed {
        mut results,
        mut by_owner,
        layout,
    } = route(&ctx, req.topics, acks, txn, &access, txn_denied);
    if let (Some(id), Some(ticket)) = (&txn_id, &ticket) {
        ticket.wait().await;
        super::verify::verify_transactional(&ctx, id, &mut by_owner, &mut results).await;
    }
    let pending = send_to_owners(&ctx, by_owner, acks, deadline);
    drop(ticket);
    gather(pending, &mut results).await;
    let results: Vec<PartitionResult> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| PartitionResult::error(ErrorCode::UnknownServerError, "no answer")))
        .collect();
    if acks == 0 {
        // Kafka closes the connection when an acks=0 produce fails, the only
        // way the client can notice.
        if let Some(r) = results.iter().find(|r| r.error.is_some()) {
            return Outcome::Close(format!(
                "acks=0 produce failed: {}",
                r.message.as_deref().unwrap_or("error")
            ));
        }
        return Outcome::Silent;
    }
    ctx.respond(&response(&ctx, layout, results))
}

/// A Produce request's partitions sorted out: one answer slot per
/// partition in request order (filled now for those refused before their
/// owner), the rest gathered per owner shard (one cross-shard message per
/// shard the request touches, not one per partition), and the response's
/// layout.
struct Routed {
    results: Vec<Option<PartitionResult>>,
    by_owner: ByOwner<Append>,
    layout: Vec<(TopicName, uuid::Uuid, Vec<i32>)>,
}

fn route(
    ctx: &Ctx,
    topics: Vec<crate::protocol::produce::ProduceTopic>,
    acks: i16,
    txn: Txn,
    access: &super::Access,
    txn_denied: bool,
) -> Routed {
    let snapshot = ctx.shard.meta();
    let mut results: Vec<Option<PartitionResult>> = Vec::new();
    let mut by_owner = ByOwner::new(ctx.shard.shard_count());
    let mut layout = Vec::with_capacity(topics.len());
    for topic in topics {
        let meta = if ctx.version >= 13 {
            snapshot.topic_by_id(&topic.topic_id).cloned()
        } else {
            snapshot.topic(&topic.name).cloned()
        };
        let name = meta.as_ref().map_or_else(|| topic.name.clone(), |m| m.name.to_string());
        let mut indexes = Vec::with_capacity(topic.partitions.len());
        for part in topic.partitions {
            indexes.push(part.index);
            let slot = results.len();
            let refused = if txn_denied {
                Some(PartitionResult::error(
                    ErrorCode::TransactionalIdAuthorizationFailed,
                    "Transactional Id authorization failed",
                ))
            } else if !access.topic(Operation::Write, &name) {
                Some(PartitionResult::error(
                    ErrorCode::TopicAuthorizationFailed,
                    "Topic authorization failed",
                ))
            } else {
                refusal(ctx, acks, &meta, &topic.name, part.index)
            };
            if let (None, Some(m)) = (&refused, &meta) {
                let append = Append {
                    slot,
                    topic: m.name.clone(),
                    index: part.index,
                    records: part.records,
                    txn,
                };
                by_owner.push(ctx.shard.owner_of(&m.name, part.index), append);
            }
            results.push(refused);
        }
        layout.push((TopicName(str_bytes(&name)), topic.topic_id, indexes));
    }
    Routed {
        results,
        by_owner,
        layout,
    }
}

/// Why partition `index` of `topic` is refused before it reaches its
/// owner (`meta`: the topic as this broker's snapshot has it), or `None`
/// when it goes to its owner.
fn refusal(
    ctx: &Ctx,
    acks: i16,
    meta: &Option<Arc<crate::meta::TopicMeta>>,
    topic: &str,
    index: i32,
) -> Option<PartitionResult> {
    let me = ctx.shard.config().node_id;
    if !matches!(acks, -1..=1) {
        return Some(PartitionResult::error(
            ErrorCode::InvalidRequiredAcks,
            format!("acks={acks}: expected -1, 0 or 1"),
        ));
    }
    match meta {
        None if ctx.version >= 13 => Some(PartitionResult::error(ErrorCode::UnknownTopicId, "unknown topic id")),
        None => Some(PartitionResult::error(
            ErrorCode::UnknownTopicOrPartition,
            format!("unknown topic `{topic}`"),
        )),
        Some(m) if crate::meta::is_internal(&m.name) => Some(PartitionResult::error(
            ErrorCode::InvalidTopicException,
            format!("`{}` is an internal topic; clients cannot produce to it", m.name),
        )),
        Some(m) if index < 0 || index >= m.partitions => Some(PartitionResult::error(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic `{}` has no partition {index}", m.name),
        )),
        Some(m) if m.leader(index) != Some(me) => Some(PartitionResult::error(
            ErrorCode::NotLeaderOrFollower,
            format!("broker {me} does not lead {}-{index}", m.name),
        )),
        Some(_) => None,
    }
}

/// The answers of one owner shard: the slots they fill, and the future of
/// its answers.
type Pending = Vec<(
    Vec<usize>,
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<PartitionResult>, crate::shard::ShardGone>>>>,
)>;

/// Sends each owner shard its partitions, now: the appends of one
/// connection's requests reach each log in request order.
fn send_to_owners(ctx: &Ctx, by_owner: ByOwner<Append>, acks: i16, deadline: std::time::Instant) -> Pending {
    by_owner
        .into_jobs()
        .map(|(owner, items)| {
            let slots: Vec<usize> = items.iter().map(|a| a.slot).collect();
            // Boxed: the answers are awaited one by one, and the handler's
            // future should not carry the largest of them inline.
            let answer: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> = Box::pin(
                ctx.shard
                    .run_on(owner, move |s| append_partitions(s, items, acks, deadline)),
            );
            (slots, answer)
        })
        .collect()
}

/// Waits for every owner's answers and puts each in its slot of `results`.
async fn gather(pending: Pending, results: &mut [Option<PartitionResult>]) {
    for (slots, answer) in pending {
        match answer.await {
            Ok(answers) => {
                for (slot, r) in slots.into_iter().zip(answers) {
                    results[slot] = Some(r);
                }
            }
            Err(_) => {
                for slot in slots {
                    results[slot] = Some(PartitionResult::error(
                        ErrorCode::NotLeaderOrFollower,
                        "broker shutting down",
                    ));
                }
            }
        }
    }
}

/// The Produce response: each partition's result in request order, with
/// the new leader and its endpoint where leadership moved (KIP-951).
fn response(
    ctx: &Ctx,
    layout: Vec<(TopicName, uuid::Uuid, Vec<i32>)>,
    results: Vec<PartitionResult>,
) -> ProduceResponse {
    let mut results = results.into_iter();
    let mut resp = ProduceResponse::default();
    // The image as it is now, after any wait (where leadership went),
    // taken only for an answer that needs it.
    let mut now = None;
    let mut hinted = Vec::new();
    for (name, topic_id, indexes) in layout {
        let mut t = TopicProduceResponse::default();
        t.name = name;
        t.topic_id = topic_id;
        for index in indexes {
            let r = results
                .next()
                .unwrap_or_else(|| PartitionResult::error(ErrorCode::UnknownServerError, ""));
            let mut p = PartitionProduceResponse::default();
            p.index = index;
            p.error_code = error_codes::code(r.error);
            ctx.shard.metrics.error(ctx.key as i16, p.error_code);
            p.base_offset = r.base_offset;
            p.log_append_time_ms = -1;
            p.log_start_offset = r.log_start_offset;
            if r.error.is_some() {
                p.error_message = r.message.as_deref().map(str_bytes);
            }
            if r.error == Some(ErrorCode::NotLeaderOrFollower)
                && ctx.version >= 10
                && let Some((leader, epoch)) = super::leader_hint(
                    super::ids::Ids::new(
                        now.get_or_insert_with(|| ctx.shard.meta()),
                        ctx.shard.config(),
                        &ctx.conn.listener,
                    ),
                    &t.name.0,
                    index,
                    ctx.shard.config().node_id,
                    &mut hinted,
                )
            {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
            t.partition_responses.push(p);
        }
        resp.responses.push(t);
    }
    resp.node_endpoints = hinted
        .iter()
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(&b.host))
                .with_port(i32::from(b.port))
        })
        .collect();
    resp
}

/// One partition's batches, bound for the shard that owns the partition.
#[derive(Debug)]
pub(super) struct Append {
    /// Its place among the request's partitions.
    pub slot: usize,
    pub topic: Arc<str>,
    pub index: i32,
    pub records: Option<BytesMut>,
    /// Whether the request came from a transactional producer, and its
    /// coordinator confirmed the partition is in its transaction.
    pub txn: Txn,
}

/// Runs on the owner of every partition in `items`: appends each
/// partition's batches now, in order (nothing here awaits before the
/// appends), and returns a future of the answers, in `items` order, that
/// waits for the durability `acks` asks for.
fn append_partitions(
    shard: &Rc<Shard>,
    items: Vec<Append>,
    acks: i16,
    deadline: std::time::Instant,
) -> impl std::future::Future<Output = Vec<PartitionResult>> + use<> {
    let answers: Vec<Answer> = items
        .into_iter()
        .map(|a| append_partition(shard, a, acks, deadline))
        .collect();
    async move {
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            out.push(settle(a).await);
        }
        out
    }
}

/// The answer once the durability it waits for is reached.
async fn settle(answer: Answer) -> PartitionResult {
    match answer {
        Answer::Now(r) => r,
        Answer::AfterWait {
            partition,
            base_offset,
            wait,
        } => match partition.acked(wait).await {
            Ok(()) => PartitionResult::ok(base_offset, &partition),
            Err(r) => PartitionResult::error(r.code, r.message),
        },
    }
}

/// A partition's answer once its batches are appended: final now, or
/// after waiting for what `acks` asks for.
enum Answer {
    Now(PartitionResult),
    AfterWait {
        partition: Rc<Partition>,
        base_offset: i64,
        wait: AckWait,
    },
}

/// Checks producer sequences and appends one partition's batches, on its
/// owner, synchronously.
fn append_partition(shard: &Shard, item: Append, acks: i16, deadline: std::time::Instant) -> Answer {
    let done = Answer::Now;
    let Append {
        topic,
        index,
        records,
        txn,
        ..
    } = item;
    let Some(p) = shard.partition(&topic, index) else {
        return done(PartitionResult::error(
            ErrorCode::UnknownTopicOrPartition,
            format!("partition {topic}-{index} is not open"),
        ));
    };
    shard.touch(&p);
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return done(PartitionResult::error(ErrorCode::CorruptMessage, "no record batches"));
    };
    if let Err(free) = shard.disk.admit(records.len() as u64) {
        return done(PartitionResult::error(
            ErrorCode::KafkaStorageError,
            format!(
                "the broker's disk has {free} bytes free, below sluice.storage.min.free.bytes ({})",
                shard.disk.min_free_bytes()
            ),
        ));
    }
    if !p.is_leader() {
        return done(PartitionResult::error(
            ErrorCode::NotLeaderOrFollower,
            format!("broker {} does not lead {topic}-{index}", shard.config().node_id),
        ));
    }
    if acks == -1
        && let Err(r) = p.check_min_isr()
    {
        return done(PartitionResult::error(r.code, r.message));
    }
    let epoch = p.leader_epoch();
    let appended = match p.append_records(records, txn) {
        Ok(a) => a,
        Err(r) => return done(PartitionResult::error(r.code, r.message)),
    };
    after_append(shard, p, appended, acks, epoch, deadline)
}

/// What an append of `p` at leader `epoch` waits for: the durability
/// `acks` asks for, and with acks=all on a replicated partition the ISR,
/// until `deadline`.
fn after_append(
    shard: &Shard,
    p: Rc<Partition>,
    appended: crate::partition::Appended,
    acks: i16,
    epoch: i32,
    deadline: std::time::Instant,
) -> Answer {
    let config = shard.config();
    let isr_wait = !(cfg!(feature = "test-switches") && config.unsafe_ack_before_replication);
    match p.ack_wait(
        acks,
        appended.end_offset,
        epoch,
        deadline,
        config.replica_fsync_before_ack,
        isr_wait,
    ) {
        Some(wait) => Answer::AfterWait {
            partition: p,
            base_offset: appended.base_offset,
            wait,
        },
        None => Answer::Now(PartitionResult::ok(appended.base_offset, &p)),
    }
}

pub async fn init_producer_id(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: InitProducerIdRequest = decode_or_return!(ctx, body);
    let mut resp = InitProducerIdResponse::default();
    resp.producer_id = ProducerId(-1);
    resp.producer_epoch = -1;
    // Kafka's authorization: WRITE on the transactional id; an idempotent
    // producer IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    let access = ctx.access();
    let denied = match req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        Some(id) => (!access.transactional_id(Operation::Write, id.0.as_str()))
            .then_some(ErrorCode::TransactionalIdAuthorizationFailed),
        None => (!access.cluster(Operation::IdempotentWrite)
            && !access.some(Operation::Write, sluice_metadata::security::ResourceType::Topic))
        .then_some(ErrorCode::ClusterAuthorizationFailed),
    };
    if let Some(code) = denied {
        resp.error_code = code.code();
        return ctx.respond(&resp);
    }
    if let Some(id) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        // A transactional producer: its coordinator hands out the id and
        // the epoch, fencing older producers of the same transactional id.
        let id: Arc<str> = id.0.as_str().into();
        let (timeout, expected) = (req.transaction_timeout_ms, (req.producer_id.0, req.producer_epoch));
        let key = id.clone();
        let answer = crate::txn::on_coordinator(&ctx.shard, &key, move |s, partition| {
            crate::txn::init_producer_id(s, partition, id, timeout, expected)
        })
        .await;
        match answer {
            Ok((producer_id, epoch)) => {
                resp.producer_id = ProducerId(producer_id);
                resp.producer_epoch = epoch;
            }
            Err(code) => resp.error_code = fenced_for_version(code, ctx.version, 4),
        }
        ctx.shard.metrics.error(ctx.key as i16, resp.error_code);
        return ctx.respond(&resp);
    }
    // An idempotent producer asking for an epoch bump (KIP-360) keeps its
    // id; once the epoch is exhausted it gets a fresh id below.
    if req.producer_id.0 >= 0 && req.producer_epoch < i16::MAX {
        resp.producer_id = req.producer_id;
        resp.producer_epoch = (req.producer_epoch + 1).max(0);
        return ctx.respond(&resp);
    }
    match ctx
        .shard
        .submit_to(ShardId(0), |ctl| async move {
            crate::controller::allocate_producer_id(&ctl).await
        })
        .await
    {
        Ok(Ok(id)) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = 0;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "allocating a producer id");
            resp.error_code = ErrorCode::KafkaStorageError.code();
        }
        Err(_) => resp.error_code = ErrorCode::CoordinatorNotAvailable.code(),
    }
    ctx.respond(&resp)
}

/// PRODUCER_FENCED as the version knows it: versions before KIP-588
/// (`since`: InitProducerId v4, AddPartitionsToTxn, AddOffsetsToTxn and
/// EndTxn v2, TxnOffsetCommit v3) know INVALID_PRODUCER_EPOCH only.
pub fn fenced_for_version(code: ErrorCode, version: i16, since: i16) -> i16 {
    match code {
        ErrorCode::ProducerFenced if version < since => ErrorCode::InvalidProducerEpoch.code(),
        other => other.code(),
    }
}
