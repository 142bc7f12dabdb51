//! Transaction markers: a leader writing one into its partition, and a
//! coordinator getting every partition of an ended transaction marked,
//! here (through the partition's owner shard) or on the broker that leads
//! it (WriteTxnMarkers).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::Marker;

use super::TxnHost;
use super::state::{Status, TxnMeta, TxnPartition};
use crate::error_codes::ErrorCode;
use crate::groups::GroupHost;
use crate::image::NO_LEADER;
use crate::meta::OFFSETS_TOPIC;
use crate::protocol::peer::{self, Call};
use crate::shard::Shard;

/// One marker for one partition.
#[derive(Debug, Clone)]
pub struct Mark {
    pub topic: Arc<str>,
    pub partition: i32,
    pub producer_id: i64,
    pub epoch: i16,
    pub marker: Marker,
    pub coordinator_epoch: i32,
}

/// On the partition's owner: writes the marker now and returns a future
/// that waits until the partition's in-sync replicas have it (as an
/// acks=all produce does), or the error that refused it. In an offsets
/// partition, the producer's pending transactional offsets are then
/// applied or dropped.
pub fn write_local<S: GroupHost>(
    shard: &Rc<Shard<S>>,
    m: Mark,
    deadline: Instant,
) -> impl std::future::Future<Output = Result<(), ErrorCode>> + use<S> {
    let shard = shard.clone();
    let offsets = (&*m.topic == OFFSETS_TOPIC).then_some((m.partition, m.producer_id, m.marker == Marker::Commit));
    let written = (|| {
        let p = shard
            .partition(&m.topic, m.partition)
            .ok_or(ErrorCode::UnknownTopicOrPartition)?;
        if !p.is_leader() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        p.check_min_isr().map_err(|r| r.code)?;
        let epoch = p.leader_epoch();
        let appended = p
            .append_marker(m.producer_id, m.epoch, m.marker, m.coordinator_epoch, crate::base::clock::now_ms())
            .map_err(|r| {
                tracing::info!(topic = %m.topic, partition = m.partition, producer = m.producer_id, error = %r.message, "transaction marker refused");
                r.code
            })?;
        let fsync = shard.config().replica_fsync_before_ack;
        let wait = p.ack_wait(-1, appended.end_offset, epoch, deadline, fsync, true);
        Ok((p, wait))
    })();
    async move {
        let (p, wait) = written?;
        if let Some(wait) = wait {
            p.acked(wait).await.map_err(|r| r.code)?;
        }
        if let Some((partition, producer_id, commit)) = offsets {
            crate::groups::complete_txn(&shard, partition, producer_id, commit);
        }
        Ok(())
    }
}

/// How long a round of markers waits before asking again for the
/// partitions it could not mark.
const RETRY: Duration = Duration::from_millis(100);

/// Marks every partition of the prepared transaction `m`, asking again
/// (with the metadata of the moment) until each is marked, its topic is
/// gone, or `still_coordinator` says this broker no longer coordinates
/// the id (its successor marks them then). `true` when all are marked.
pub async fn mark_all<S: TxnHost>(
    shard: &Rc<Shard<S>>,
    m: &TxnMeta,
    coordinator_epoch: i32,
    still_coordinator: impl Fn() -> bool,
) -> bool {
    let marker = match m.status {
        Status::PrepareCommit => Marker::Commit,
        Status::PrepareAbort => Marker::Abort,
        other => panic!("markers for {} in state {other:?}", m.id),
    };
    let mut left: Vec<TxnPartition> = m.partitions.iter().cloned().collect();
    let mut conns: BTreeMap<i32, Option<crate::protocol::link::Link>> = BTreeMap::new();
    let mut round = 0u32;
    while !left.is_empty() {
        if !still_coordinator() {
            return false;
        }
        if round > 0 {
            compio::runtime::time::sleep(RETRY).await;
        }
        round += 1;
        let meta = shard.meta();
        let me = shard.config().node_id;
        let mut by_leader: BTreeMap<i32, Vec<TxnPartition>> = BTreeMap::new();
        let mut waiting = Vec::new();
        for (topic, partition) in left.drain(..) {
            match meta.topic(&topic).map(|t| t.leader(partition)) {
                // The topic or partition is gone: nothing to mark.
                None | Some(None) => {}
                Some(Some(NO_LEADER)) => waiting.push((topic, partition)),
                Some(Some(leader)) => by_leader.entry(leader).or_default().push((topic, partition)),
            }
        }
        left = waiting;
        let timeout = Duration::from_millis(shard.config().transactions.marker_timeout_ms);
        for (leader, parts) in by_leader {
            let results = if leader == me {
                mark_here(shard, m, marker, coordinator_epoch, &parts, timeout).await
            } else {
                let Some(addr) = meta.brokers.get(&leader).map(|b| format!("{}:{}", b.host, b.port)) else {
                    left.extend(parts);
                    continue;
                };
                let conn = conns.entry(leader).or_default();
                let security = &shard.common.peers;
                let r = mark_there(conn, &addr, me, m, marker, coordinator_epoch, &parts, timeout, security).await;
                if r.is_err() {
                    *conn = None;
                }
                r.unwrap_or_else(|e| {
                    tracing::info!(leader, error = %e, transactional_id = %m.id, "sending transaction markers; will retry");
                    vec![Some(ErrorCode::NotLeaderOrFollower); parts.len()]
                })
            };
            for (part, code) in parts.into_iter().zip(results) {
                match code {
                    None => {}
                    // Gone since, or a marker that can never be written:
                    // asking again would loop forever.
                    Some(code @ (ErrorCode::UnknownTopicOrPartition | ErrorCode::InvalidProducerEpoch)) => {
                        tracing::warn!(topic = %part.0, partition = part.1, transactional_id = %m.id, code = ?code, "transaction marker dropped");
                    }
                    Some(_) => left.push(part),
                }
            }
        }
    }
    true
}

/// Marks `parts`, which this broker leads, through their owner shards.
async fn mark_here<S: TxnHost>(
    shard: &Rc<Shard<S>>,
    m: &TxnMeta,
    marker: Marker,
    coordinator_epoch: i32,
    parts: &[TxnPartition],
    timeout: Duration,
) -> Vec<Option<ErrorCode>> {
    let deadline = Instant::now() + timeout;
    let pending: Vec<_> = parts
        .iter()
        .map(|(topic, partition)| {
            let mark = Mark {
                topic: topic.clone(),
                partition: *partition,
                producer_id: m.producer_id,
                epoch: m.epoch,
                marker,
                coordinator_epoch,
            };
            let owner = shard.owner_of(topic, *partition);
            Box::pin(shard.run_on(owner, move |s| write_local(s, mark, deadline)))
        })
        .collect();
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        out.push(match p.await {
            Ok(written) => written.err(),
            Err(_) => Some(ErrorCode::NotLeaderOrFollower),
        });
    }
    out
}

/// Sends WriteTxnMarkers for `parts` to the broker at `addr`.
#[allow(clippy::too_many_arguments)]
async fn mark_there(
    conn: &mut Option<crate::protocol::link::Link>,
    addr: &str,
    me: i32,
    m: &TxnMeta,
    marker: Marker,
    coordinator_epoch: i32,
    parts: &[TxnPartition],
    timeout: Duration,
    security: &crate::protocol::peer::PeerSecurity,
) -> Result<Vec<Option<ErrorCode>>, String> {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (topic, partition) in parts {
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == &**topic => t.partition_indexes.push(*partition),
            _ => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_indexes(vec![*partition]),
            ),
        }
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.epoch)
            .with_transaction_result(marker == Marker::Commit)
            .with_topics(topics)
            .with_coordinator_epoch(coordinator_epoch),
    ]);
    let client_id = format!("sluice-txn-coordinator-{me}");
    let call = Call {
        security,
        key: ApiKey::WriteTxnMarkers,
        version: 1,
        client_id: &client_id,
        correlation: 1,
        max_answer_bytes: 1 << 20,
        // The leader waits up to the same timeout for its ISR.
        timeout: timeout + Duration::from_secs(1),
    };
    let resp: WriteTxnMarkersResponse = peer::call(conn, addr, call, &req).await?;
    let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for r in &resp.markers {
        for t in &r.topics {
            for p in &t.partitions {
                codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
            }
        }
    }
    Ok(parts
        .iter()
        .map(|(t, p)| {
            codes
                .get(&(t.to_string(), *p))
                .map_or(Some(ErrorCode::UnknownServerError), |&c| ErrorCode::try_from_code(c))
        })
        .collect())
}
