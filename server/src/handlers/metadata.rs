//! Metadata (with auto-creation of unknown topics), DescribeCluster and
//! DescribeTopicPartitions, from the shard's snapshot of the cluster image:
//! the live brokers, and each partition's leader, epoch, replicas and ISR.
//! The controller id is the controller quorum's leader as this node last
//! saw it.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, MetadataRequest, MetadataResponse, TopicName,
};

use sluice_metadata::security::Operation;

use super::ids::Ids;
use super::{Ctx, OPS_NOT_REQUESTED, Outcome, str_bytes};
use crate::error_codes::ErrorCode;
use crate::image::NO_LEADER;
use crate::meta::{Snapshot, TopicMeta, validate_topic_name};

pub async fn metadata(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: MetadataRequest = decode_or_return!(ctx, body);
    let config = ctx.shard.config();
    // v0 sends an empty list for "all topics"; later versions send null.
    let requested = match req.topics {
        Some(t) if !(t.is_empty() && ctx.version == 0) => Some(t),
        _ => None,
    };
    let auto_create = config.auto_create_topics && (ctx.version < 4 || req.allow_auto_topic_creation);
    let mut snapshot = ctx.shard.meta();
    // Kafka's authorization: a topic is listed only with DESCRIBE on it,
    // and created only with CREATE on the cluster or on the topic.
    let access = ctx.access();
    let may_create_any = access.cluster(Operation::Create);
    if let Some(topics) = &requested
        && auto_create
    {
        let missing: Vec<String> = topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| snapshot.topic(n).is_none() && validate_topic_name(n).is_ok())
            .filter(|n| may_create_any || access.topic(Operation::Create, n))
            .collect();
        if !missing.is_empty() {
            let partitions = config.num_partitions;
            let requests = missing
                .iter()
                .map(|name| {
                    Ok(crate::controller::ControllerRequest::CreateTopic {
                        name: name.clone(),
                        partitions,
                        replication_factor: -1,
                        assignments: Vec::new(),
                        configs: Default::default(),
                        validate_only: false,
                    })
                })
                .collect();
            let answers = crate::controller::ask(&ctx.shard, requests).await;
            for (name, answer) in missing.iter().zip(answers) {
                if let Err(e) = answer
                    && e.code != ErrorCode::TopicAlreadyExists
                {
                    tracing::warn!(topic = %name, error = %e.message, "auto-creating topic");
                }
            }
            snapshot = ctx.shard.meta();
        }
    }
    let ids = Ids::new(&snapshot, config, &ctx.conn.listener);
    let mut resp = MetadataResponse::default();
    resp.brokers = live_brokers(&snapshot, config, ids, &ctx.conn.listener)
        .map(|(id, host, port)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = BrokerId(id);
            b.host = str_bytes(host);
            b.port = i32::from(port);
            b
        })
        .collect();
    resp.cluster_id = Some(str_bytes(&config.cluster_id));
    resp.controller_id = BrokerId(ids.node(snapshot.controller_id));
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;
    let describe = |t: &TopicMeta| -> MetadataResponseTopic {
        let mut out = MetadataResponseTopic::default();
        out.name = Some(TopicName(str_bytes(&t.name)));
        out.topic_id = t.id;
        out.is_internal = crate::meta::is_internal(&t.name);
        out.topic_authorized_operations = OPS_NOT_REQUESTED;
        out.partitions = (0..t.partitions)
            .map(|i| {
                let v = PartitionView::of(&snapshot, t, i, ids);
                let mut p = MetadataResponsePartition::default();
                p.partition_index = i;
                p.error_code = v.error;
                p.leader_id = v.leader;
                p.leader_epoch = v.leader_epoch;
                p.replica_nodes = v.replicas;
                p.isr_nodes = v.isr;
                p.offline_replicas = v.offline;
                p
            })
            .collect();
        out
    };
    match requested {
        None => {
            resp.topics = snapshot
                .topics
                .values()
                .filter(|t| access.topic(Operation::Describe, &t.name))
                .map(|t| describe(t))
                .collect()
        }
        Some(topics) => {
            for t in topics {
                let found: Option<&Arc<TopicMeta>> = match &t.name {
                    Some(n) => snapshot.topic(n.0.as_str()),
                    None => snapshot.topic_by_id(&t.topic_id),
                };
                let name = t
                    .name
                    .as_ref()
                    .map(|n| n.0.to_string())
                    .or_else(|| found.map(|m| m.name.to_string()))
                    .unwrap_or_default();
                let entry = match found {
                    _ if !access.topic(Operation::Describe, &name) => {
                        let mut out = MetadataResponseTopic::default();
                        out.name = t.name.clone();
                        out.topic_id = t.topic_id;
                        out.topic_authorized_operations = OPS_NOT_REQUESTED;
                        out.error_code = ErrorCode::TopicAuthorizationFailed.code();
                        out
                    }
                    Some(meta) => describe(meta),
                    None => {
                        let mut out = MetadataResponseTopic::default();
                        out.name = t.name.clone();
                        out.topic_id = t.topic_id;
                        out.topic_authorized_operations = OPS_NOT_REQUESTED;
                        out.error_code = match &t.name {
                            Some(n) if validate_topic_name(n.0.as_str()).is_err() => {
                                ErrorCode::InvalidTopicException.code()
                            }
                            Some(_) => ErrorCode::UnknownTopicOrPartition.code(),
                            None => ErrorCode::UnknownTopicId.code(),
                        };
                        out
                    }
                };
                resp.topics.push(entry);
            }
        }
    }
    ctx.respond(&resp)
}

pub fn describe_cluster(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeClusterRequest = decode_or_return!(ctx, body);
    let config = ctx.shard.config();
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&config.cluster_id);
    let snapshot = ctx.shard.meta();
    let ids = Ids::new(&snapshot, config, &ctx.conn.listener);
    resp.controller_id = BrokerId(ids.node(snapshot.controller_id));
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;
    resp.brokers = live_brokers(&snapshot, config, ids, &ctx.conn.listener)
        .map(|(id, host, port)| {
            let mut b = DescribeClusterBroker::default();
            b.broker_id = BrokerId(id);
            b.host = str_bytes(host);
            b.port = i32::from(port);
            b
        })
        .collect();
    // v2 may ask for the fenced brokers too, marked as such.
    if ctx.version >= 2 && req.include_fenced_brokers {
        for b in snapshot.brokers.values().filter(|b| b.fenced) {
            for (id, host, port) in ids.brokers(b) {
                if resp.brokers.iter().any(|l| l.broker_id.0 == id) {
                    continue;
                }
                let mut d = DescribeClusterBroker::default();
                d.broker_id = BrokerId(id);
                d.host = str_bytes(host);
                d.port = i32::from(port);
                d.is_fenced = true;
                resp.brokers.push(d);
            }
        }
    }
    ctx.respond(&resp)
}

/// Every topic operation allowed: there are no ACLs yet. READ, WRITE,
/// CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS and ALTER_CONFIGS.
const TOPIC_OPS_ALL: i32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// DescribeTopicPartitions (KIP-966): Metadata's partition view of the
/// named topics (all when none are named), sorted by name, paged by
/// `response_partition_limit` (at most `max.request.partition.size.limit`)
/// with a cursor.
pub fn describe_topic_partitions(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeTopicPartitionsRequest = decode_or_return!(ctx, body);
    let config = ctx.shard.config();
    let snapshot = ctx.shard.meta();
    let limit = usize::try_from(req.response_partition_limit.max(1))
        .unwrap_or(1)
        .min(config.max_request_partition_size_limit);
    let access = ctx.access();
    // (name, topic or None when unknown), sorted by name; all topics means
    // those the client may describe.
    let mut wanted: Vec<(String, Option<Arc<TopicMeta>>)> = if req.topics.is_empty() {
        snapshot
            .topics
            .values()
            .filter(|t| access.topic(Operation::Describe, &t.name))
            .map(|t| (t.name.to_string(), Some(t.clone())))
            .collect()
    } else {
        req.topics
            .iter()
            .map(|t| (t.name.0.to_string(), snapshot.topic(t.name.0.as_str()).cloned()))
            .collect()
    };
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    wanted.dedup_by(|a, b| a.0 == b.0);
    let (cursor_topic, cursor_partition) = req.cursor.as_ref().map_or((String::new(), 0), |c| {
        (c.topic_name.0.to_string(), c.partition_index.max(0))
    });
    // Where the next request starts when this response is full.
    let cursor = |name: &str, partition_index: i32| {
        let mut c = Cursor::default();
        c.topic_name = TopicName(str_bytes(name));
        c.partition_index = partition_index;
        Some(c)
    };
    let mut resp = DescribeTopicPartitionsResponse::default();
    let mut budget = limit;
    for (name, topic) in wanted.into_iter().filter(|(n, _)| *n >= cursor_topic) {
        let first = if name == cursor_topic { cursor_partition } else { 0 };
        if budget == 0 {
            resp.next_cursor = cursor(&name, first);
            break;
        }
        let mut out = DescribeTopicPartitionsResponseTopic::default();
        out.name = Some(TopicName(str_bytes(&name)));
        out.topic_authorized_operations = TOPIC_OPS_ALL;
        if !access.topic(Operation::Describe, &name) {
            out.error_code = ErrorCode::TopicAuthorizationFailed.code();
            resp.topics.push(out);
            continue;
        }
        let Some(t) = topic else {
            out.error_code = ErrorCode::UnknownTopicOrPartition.code();
            resp.topics.push(out);
            continue;
        };
        out.topic_id = t.id;
        out.is_internal = crate::meta::is_internal(&t.name);
        let mut index = first;
        while index < t.partitions {
            if budget == 0 {
                resp.next_cursor = cursor(&name, index);
                break;
            }
            let v = PartitionView::of(&snapshot, &t, index, Ids::new(&snapshot, config, &ctx.conn.listener));
            let mut p = DescribeTopicPartitionsResponsePartition::default();
            p.partition_index = index;
            p.error_code = v.error;
            p.leader_id = v.leader;
            p.leader_epoch = v.leader_epoch;
            p.replica_nodes = v.replicas;
            p.isr_nodes = v.isr;
            p.offline_replicas = v.offline;
            p.eligible_leader_replicas = Some(v.elr);
            p.last_known_elr = Some(Vec::new());
            out.partitions.push(p);
            budget -= 1;
            index += 1;
        }
        resp.topics.push(out);
        if resp.next_cursor.is_some() {
            break;
        }
    }
    ctx.respond(&resp)
}

/// The brokers clients of `listener` may talk to: registered, not fenced
/// and with an endpoint on that listener (as Kafka, a broker without one
/// is left out), as (id, host, port), each shard on its own with shard
/// endpoints ([`Ids`]). Before this broker has registered (a request in
/// the first moments of a start), itself.
fn live_brokers<'a>(
    snapshot: &'a Snapshot,
    config: &'a crate::config::BrokerConfig,
    ids: Ids<'a>,
    listener: &str,
) -> impl Iterator<Item = (i32, &'a str, u16)> + 'a {
    let live: Vec<(i32, &str, u16)> = snapshot
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .flat_map(|b| ids.brokers(b))
        .collect();
    let own = config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .filter(|_| snapshot.brokers.values().all(|b| b.fenced))
        .map(|l| (ids.node(config.node_id), l.advertised_host.as_str(), l.advertised_port));
    live.into_iter().chain(own)
}

/// One partition as Metadata and DescribeTopicPartitions show it.
struct PartitionView {
    error: i16,
    leader: BrokerId,
    leader_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    /// Replicas on brokers that are fenced or not registered.
    offline: Vec<BrokerId>,
    /// Eligible leader replicas (KIP-966).
    elr: Vec<BrokerId>,
}

impl PartitionView {
    fn of(snapshot: &Snapshot, t: &TopicMeta, index: i32, present: Ids<'_>) -> Self {
        let Some(state) = usize::try_from(index).ok().and_then(|i| t.partition_states.get(i)) else {
            return Self {
                error: ErrorCode::UnknownTopicOrPartition.code(),
                leader: BrokerId(NO_LEADER),
                leader_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                offline: Vec::new(),
                elr: Vec::new(),
            };
        };
        let ids = |v: &[i32]| {
            v.iter()
                .map(|n| BrokerId(present.replica(*n, &t.name, index)))
                .collect::<Vec<_>>()
        };
        let offline: Vec<i32> = state
            .replicas
            .iter()
            .copied()
            .filter(|b| snapshot.brokers.get(b).is_none_or(|b| b.fenced))
            .collect();
        Self {
            error: if state.leader == NO_LEADER {
                ErrorCode::LeaderNotAvailable.code()
            } else {
                0
            },
            leader: BrokerId(present.replica(state.leader, &t.name, index)),
            leader_epoch: state.leader_epoch,
            replicas: ids(&state.replicas),
            isr: ids(&state.isr),
            offline: ids(&offline),
            elr: ids(&state.elr),
        }
    }
}
