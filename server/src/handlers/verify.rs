//! A transactional producer's first batch in a partition (KIP-890 part 1):
//! before it is appended, the producer's transaction coordinator confirms
//! that the open transaction holds the partition, so a late batch of a
//! transaction that already ended cannot open one that never ends.
//! Batches of a transaction already open in the partition need no word.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::BatchHeader;

use super::Ctx;
use super::produce::{Append, PartitionResult};
use crate::error_codes::ErrorCode;
use crate::partition::Txn;
use crate::protocol::peer::{self, Call};
use crate::shard::ByOwner;
use crate::txn::state::TxnPartition;

/// AddPartitionsToTxn's version for verification (v4: batched, verify-only).
const VERIFY_VERSION: i16 = 4;

/// The producer of a partition's batches: id and epoch of the first
/// batch, when it is transactional.
fn transactional_producer(a: &Append) -> Option<(i64, i16)> {
    let h = BatchHeader::parse(a.records.as_deref()?).ok()?;
    h.is_transactional().then(|| (h.producer_id(), h.producer_epoch()))
}

/// Marks verified the partitions of `appends` whose transaction the
/// coordinator of `id` confirms, and takes out (with their answer in
/// `results`) those it does not; partitions where the producer's
/// transaction is open already are left as they are.
pub(super) async fn verify_transactional(
    ctx: &Ctx,
    id: &Arc<str>,
    appends: &mut ByOwner<Append>,
    results: &mut [Option<PartitionResult>],
) {
    // Which partitions already have the producer's transaction open: one
    // question per owner shard. Partitions are named by their slot.
    let mut unknown: Vec<(usize, TxnPartition)> = Vec::new();
    let mut producer = None;
    for (owner, items) in appends.owners() {
        let asked: Vec<(usize, Arc<str>, i32, i64)> = items
            .iter()
            .filter_map(|a| {
                transactional_producer(a).map(|(pid, epoch)| {
                    producer = Some((pid, epoch));
                    (a.slot, a.topic.clone(), a.index, pid)
                })
            })
            .collect();
        if asked.is_empty() {
            continue;
        }
        let parts: Vec<(usize, TxnPartition)> = asked.iter().map(|(slot, t, i, _)| (*slot, (t.clone(), *i))).collect();
        let open = ctx
            .shard
            .call(owner, move |s| {
                asked
                    .iter()
                    .map(|(_, topic, index, pid)| {
                        s.partition(topic, *index)
                            .is_some_and(|p| p.producers.borrow().has_open_txn(*pid))
                    })
                    .collect::<Vec<bool>>()
            })
            .await
            .unwrap_or_default();
        unknown.extend(
            parts
                .into_iter()
                .enumerate()
                .filter(|(k, _)| !open.get(*k).copied().unwrap_or(false))
                .map(|(_, part)| part),
        );
    }
    let Some((pid, epoch)) = producer.filter(|_| !unknown.is_empty()) else {
        return;
    };
    let parts: Vec<TxnPartition> = unknown.iter().map(|(_, part)| part.clone()).collect();
    let codes = ask_coordinator(ctx, id, pid, epoch, &parts).await;
    let verdicts: std::collections::HashMap<usize, Option<ErrorCode>> =
        unknown.iter().map(|(slot, _)| *slot).zip(codes).collect();
    for a in appends.items_mut() {
        if verdicts.get(&a.slot) == Some(&None) {
            a.txn = Txn::Member { verified: true };
        }
    }
    appends.retain(|a| {
        let Some(&Some(code)) = verdicts.get(&a.slot) else {
            return true;
        };
        results[a.slot] = Some(PartitionResult::error(
            code,
            format!(
                "the transaction coordinator did not confirm {}-{} in the transaction",
                a.topic, a.index
            ),
        ));
        false
    });
}

/// What the coordinator of `id` says of each partition: `None` when it is
/// in the producer's open transaction, else the produce error (a
/// coordinator that cannot answer now is NOT_ENOUGH_REPLICAS, which
/// producers retry, as in Kafka).
pub(super) async fn ask_coordinator(
    ctx: &Ctx,
    id: &Arc<str>,
    pid: i64,
    epoch: i16,
    parts: &[TxnPartition],
) -> Vec<Option<ErrorCode>> {
    let snapshot = ctx.shard.meta();
    let me = ctx.shard.config().node_id;
    let answer: Result<Vec<Option<ErrorCode>>, ErrorCode> = match crate::txn::coordinator_broker(&snapshot, id) {
        None => Err(ErrorCode::CoordinatorNotAvailable),
        Some((b, _)) if b.id == me => {
            let (key, asked) = (id.clone(), parts.to_vec());
            crate::txn::on_coordinator(&ctx.shard, id, move |s, _| async move {
                Ok(asked
                    .iter()
                    .map(|p| crate::txn::verify(&s, &key, pid, epoch, p).err())
                    .collect())
            })
            .await
        }
        Some((b, _)) => {
            let addr = format!("{}:{}", b.host, b.port);
            let timeout = Duration::from_millis(ctx.shard.config().transactions.marker_timeout_ms);
            ask_remote(&addr, me, id, (pid, epoch), parts, timeout, &ctx.shard.common.peers)
                .await
                .map_err(|e| {
                    tracing::info!(coordinator = b.id, error = %e, "verifying a transactional produce");
                    ErrorCode::CoordinatorNotAvailable
                })
        }
    };
    let retriable = |e: ErrorCode| match e {
        ErrorCode::NotCoordinator
        | ErrorCode::CoordinatorNotAvailable
        | ErrorCode::CoordinatorLoadInProgress
        | ErrorCode::ConcurrentTransactions => ErrorCode::NotEnoughReplicas,
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        other => other,
    };
    match answer {
        Ok(codes) => codes.into_iter().map(|c| c.map(retriable)).collect(),
        Err(e) => vec![Some(retriable(e)); parts.len()],
    }
}

/// AddPartitionsToTxn v4, verify-only, to the coordinator at `addr`.
async fn ask_remote(
    addr: &str,
    me: i32,
    id: &str,
    (pid, epoch): (i64, i16),
    parts: &[TxnPartition],
    timeout: Duration,
    security: &crate::protocol::peer::PeerSecurity,
) -> Result<Vec<Option<ErrorCode>>, String> {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (topic, partition) in parts {
        match topics.iter_mut().find(|t| t.name.0.as_str() == &**topic) {
            Some(t) => t.partitions.push(*partition),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(topics),
    ]);
    let client_id = format!("sluice-broker-{me}");
    let call = Call {
        security,
        key: ApiKey::AddPartitionsToTxn,
        version: VERIFY_VERSION,
        client_id: &client_id,
        correlation: 1,
        max_answer_bytes: 1 << 20,
        timeout,
    };
    let mut conn = None;
    let resp: AddPartitionsToTxnResponse = peer::call(&mut conn, addr, call, &req).await?;
    if resp.error_code != 0 {
        return Ok(vec![ErrorCode::try_from_code(resp.error_code); parts.len()]);
    }
    let result = resp
        .results_by_transaction
        .first()
        .ok_or("no transaction in the answer")?;
    Ok(parts
        .iter()
        .map(|(topic, partition)| {
            result
                .topic_results
                .iter()
                .filter(|t| t.name.0.as_str() == &**topic)
                .flat_map(|t| &t.results_by_partition)
                .find(|p| p.partition_index == *partition)
                .map_or(Some(ErrorCode::UnknownServerError), |p| {
                    ErrorCode::try_from_code(p.partition_error_code)
                })
        })
        .collect())
}
