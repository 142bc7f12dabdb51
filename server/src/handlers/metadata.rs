//! Metadata (with auto-creation of unknown topics) and DescribeCluster. This
//! broker is the only broker, the controller and every partition's leader.

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName,
};

use super::{Ctx, OPS_NOT_REQUESTED, Outcome, admin, str_bytes};
use crate::error_codes::ErrorCode;
use crate::meta::{TopicMeta, validate_topic_name};

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
    if let Some(topics) = &requested
        && auto_create
    {
        let missing: Vec<String> = topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| snapshot.topic(n).is_none() && validate_topic_name(n).is_ok())
            .collect();
        if !missing.is_empty() {
            let partitions = config.num_partitions;
            let _ = admin::controller(&ctx.shard, move |store| {
                for name in missing {
                    if let Err(e) = store.create_topic(&name, partitions, Default::default())
                        && e.code != ErrorCode::TopicAlreadyExists
                    {
                        tracing::warn!(topic = %name, error = %e.message, "auto-creating topic");
                    }
                }
            })
            .await;
            snapshot = ctx.shard.meta();
        }
    }
    let mut resp = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(config.node_id);
    broker.host = str_bytes(&config.advertised_host);
    broker.port = i32::from(config.advertised_port);
    resp.brokers = vec![broker];
    resp.cluster_id = Some(str_bytes(&config.cluster_id));
    resp.controller_id = BrokerId(config.node_id);
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;
    let describe = |t: &TopicMeta| -> MetadataResponseTopic {
        let mut out = MetadataResponseTopic::default();
        out.name = Some(TopicName(str_bytes(&t.name)));
        out.topic_id = t.id;
        out.is_internal = crate::meta::is_internal(&t.name);
        out.topic_authorized_operations = OPS_NOT_REQUESTED;
        out.partitions = (0..t.partitions)
            .map(|i| {
                let mut p = MetadataResponsePartition::default();
                p.partition_index = i;
                p.leader_id = BrokerId(config.node_id);
                p.leader_epoch = 0;
                p.replica_nodes = vec![BrokerId(config.node_id)];
                p.isr_nodes = vec![BrokerId(config.node_id)];
                p
            })
            .collect();
        out
    };
    match requested {
        None => resp.topics = snapshot.topics.values().map(|t| describe(t)).collect(),
        Some(topics) => {
            for t in topics {
                let found: Option<&Arc<TopicMeta>> = match &t.name {
                    Some(n) => snapshot.topic(n.0.as_str()),
                    None => snapshot.topic_by_id(&t.topic_id),
                };
                let entry = match found {
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
    let _req: DescribeClusterRequest = decode_or_return!(ctx, body);
    let config = ctx.shard.config();
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str_bytes(&config.cluster_id);
    resp.controller_id = BrokerId(config.node_id);
    resp.endpoint_type = 1;
    resp.cluster_authorized_operations = OPS_NOT_REQUESTED;
    let mut b = DescribeClusterBroker::default();
    b.broker_id = BrokerId(config.node_id);
    b.host = str_bytes(&config.advertised_host);
    b.port = i32::from(config.advertised_port);
    resp.brokers = vec![b];
    ctx.respond(&resp)
}
