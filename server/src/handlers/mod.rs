//! Kafka API handlers, one module per API family, and the one table of
//! supported APIs ([`APIS`]) that ApiVersions advertises and dispatch obeys.

/// Decodes a crate request body, or returns the handler's `Outcome` (a
/// closed connection) when it does not parse.
macro_rules! decode_or_return {
    ($ctx:expr, $body:expr) => {
        match $ctx.decode($body) {
            Ok(r) => r,
            Err(o) => return o,
        }
    };
}

pub mod admin;
pub mod configs;
pub mod fetch;
pub mod groups;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::error_codes::ErrorCode;
use crate::node::Shard;
use crate::protocol::{self, RequestHeader, Response};

/// Every API the broker answers, with the versions it supports: all the
/// versions the `kafka-protocol` crate knows for each, and for Produce and
/// Fetch the versions of the hand-written codec.
pub const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (
        ApiKey::Fetch,
        protocol::fetch::MIN_VERSION,
        protocol::fetch::MAX_VERSION,
    ),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // The crate's response goes to v6 but its request decoder stops at v5.
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeTopicPartitions, 0, 0),
];

/// The replica of `topic`-`partition` this broker leads, for the requests
/// only a leader answers (Fetch, ListOffsets, OffsetForLeaderEpoch,
/// DeleteRecords), marked as used. Checked against the client's current
/// leader epoch (-1: none): a client that knows a newer epoch than this
/// replica's is ahead of it (UNKNOWN_LEADER_EPOCH, retry); an older one is
/// fenced (FENCED_LEADER_EPOCH). A partition this shard has not opened
/// exists elsewhere (NOT_LEADER_OR_FOLLOWER) or not at all.
pub(crate) fn leader_replica(
    shard: &Shard,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> Result<Rc<crate::partition::Partition>, ErrorCode> {
    let Some(p) = shard.partition(topic, partition) else {
        return Err(match shard.meta().topic(topic).and_then(|t| t.leader(partition)) {
            Some(_) => ErrorCode::NotLeaderOrFollower,
            None => ErrorCode::UnknownTopicOrPartition,
        });
    };
    shard.touch(&p);
    let mine = p.leader_epoch();
    if current_leader_epoch >= 0 && current_leader_epoch != mine {
        return Err(if current_leader_epoch > mine {
            ErrorCode::UnknownLeaderEpoch
        } else {
            ErrorCode::FencedLeaderEpoch
        });
    }
    if !p.is_leader() {
        return Err(ErrorCode::NotLeaderOrFollower);
    }
    Ok(p)
}

/// Kafka's KIP-951 (Produce v10+, Fetch v12+): an answer that this broker
/// does not lead `topic`-`index` names the current leader and epoch, and
/// the response carries that broker's endpoint (`hinted`, each broker
/// once), so the client goes there at once instead of after a metadata
/// refresh. `None` when no live broker other than `me` leads it.
pub(crate) fn leader_hint(
    snapshot: &crate::meta::Snapshot,
    topic: &str,
    index: i32,
    me: i32,
    hinted: &mut Vec<crate::image::BrokerMeta>,
) -> Option<(i32, i32)> {
    let state = snapshot
        .topic(topic)
        .and_then(|t| usize::try_from(index).ok().and_then(|i| t.partition_states.get(i)))?;
    let b = snapshot
        .brokers
        .get(&state.leader)
        .filter(|b| !b.fenced && b.id != me)?;
    if !hinted.iter().any(|h| h.id == b.id) {
        hinted.push(b.clone());
    }
    Some((b.id, state.leader_epoch))
}

/// Kafka's value for "authorized operations not requested".
pub const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// The supported version range of an API, if it is supported.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter().find(|(k, _, _)| *k == key).map(|&(_, lo, hi)| (lo, hi))
}

/// What becomes of a request.
#[derive(Debug)]
pub enum Outcome {
    Respond(Response),
    /// acks=0 produce: Kafka sends nothing back.
    Silent,
    /// The request cannot be answered in the protocol: close the
    /// connection after the responses before it.
    Close(String),
}

/// Everything a handler needs about its request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    /// The client's address as Kafka reports it (`/127.0.0.1`).
    pub peer: Rc<str>,
    /// The request header's bytes.
    pub header_bytes: Bytes,
}

impl Ctx {
    /// The client id from the request header ("" when null).
    pub fn client_id(&self) -> String {
        self.header
            .client_id
            .clone()
            .and_then(|r| self.header_bytes.get(r))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// Encodes a crate response message for this request.
    pub fn respond<M: kafka_protocol::protocol::Encodable>(&self, message: &M) -> Outcome {
        match protocol::encode(self.key, self.version, self.header.correlation_id, message) {
            Ok(r) => Outcome::Respond(r),
            Err(e) => Outcome::Close(format!("encoding {:?} v{}: {e}", self.key, self.version)),
        }
    }

    /// Decodes the body with the crate, or closes the connection.
    pub fn decode<M: Decodable>(&self, body: BytesMut) -> Result<M, Outcome> {
        // The crate trusts array lengths; check them first.
        protocol::guard::check(self.key, self.version, &body).map_err(|e| {
            let head: Vec<String> = body.iter().take(48).map(|b| format!("{b:02x}")).collect();
            Outcome::Close(format!(
                "malformed {:?} v{} request: {e}; body starts {}",
                self.key,
                self.version,
                head.join("")
            ))
        })?;
        let mut b: Bytes = body.freeze();
        M::decode(&mut b, self.version)
            .map_err(|e| Outcome::Close(format!("malformed {:?} v{} request: {e}", self.key, self.version)))
    }
}

/// The answer to an ApiVersions request.
pub fn api_versions_message(error: Option<ErrorCode>) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = crate::error_codes::code(error);
    r.api_keys = APIS
        .iter()
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

/// Checks the frame's header, then runs the API's handler. Runs as its own
/// task per request; handlers dispatch partition work before their first
/// await, which keeps per-partition order across pipelined requests.
pub async fn dispatch(shard: Rc<Shard>, frame: BytesMut, peer: Rc<str>) -> Outcome {
    let started = std::time::Instant::now();
    let key = protocol::peek(&frame).map(|(k, _, _)| k);
    let metrics = shard.clone();
    let outcome = answer(shard, frame, peer).await;
    if let Some(key) = key {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        metrics.metrics.request(key, ns);
    }
    outcome
}

/// [`dispatch`] without the counting.
async fn answer(shard: Rc<Shard>, mut frame: BytesMut, peer: Rc<str>) -> Outcome {
    let Some((raw_key, version, correlation_id)) = protocol::peek(&frame) else {
        return Outcome::Close("request shorter than its header".into());
    };
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown api key {raw_key}"));
    };
    let Some((lo, hi)) = supported(key) else {
        return Outcome::Close(format!("unsupported api {key:?}"));
    };
    if version < lo || version > hi {
        if key == ApiKey::ApiVersions {
            // Answer in v0 so any client can read which versions exist.
            let msg = api_versions_message(Some(ErrorCode::UnsupportedVersion));
            return match protocol::encode(key, 0, correlation_id, &msg) {
                Ok(r) => Outcome::Respond(r),
                Err(e) => Outcome::Close(e),
            };
        }
        return Outcome::Close(format!("{key:?} v{version} is not supported (v{lo}..=v{hi})"));
    }
    let header = match protocol::read_header(&frame, protocol::request_header_flexible(key, version)) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(e.to_string()),
    };
    let body = frame.split_off(header.len);
    let ctx = Ctx {
        shard,
        key,
        version,
        header,
        peer,
        header_bytes: frame.freeze(),
    };
    // Produce and Fetch run inline; the other handlers' futures are boxed,
    // so the one future every request spawns stays small (it is moved
    // into its task).
    match key {
        ApiKey::ApiVersions => {
            let mut msg = api_versions_message(None);
            if version >= 3 {
                msg.finalized_features_epoch = -1;
            }
            ctx.respond(&msg)
        }
        ApiKey::Produce => produce::handle(ctx, body).await,
        ApiKey::Fetch => fetch::handle(ctx, body).await,
        ApiKey::ListOffsets => Box::pin(offsets::list_offsets(ctx, body)).await,
        ApiKey::DeleteRecords => Box::pin(offsets::delete_records(ctx, body)).await,
        ApiKey::OffsetForLeaderEpoch => Box::pin(offsets::offset_for_leader_epoch(ctx, body)).await,
        ApiKey::Metadata => Box::pin(metadata::metadata(ctx, body)).await,
        ApiKey::DescribeCluster => metadata::describe_cluster(ctx, body),
        ApiKey::CreateTopics => Box::pin(admin::create_topics(ctx, body)).await,
        ApiKey::DeleteTopics => Box::pin(admin::delete_topics(ctx, body)).await,
        ApiKey::CreatePartitions => Box::pin(admin::create_partitions(ctx, body)).await,
        ApiKey::InitProducerId => Box::pin(produce::init_producer_id(ctx, body)).await,
        ApiKey::DescribeConfigs => configs::describe_configs(ctx, body),
        ApiKey::AlterConfigs => Box::pin(configs::alter_configs(ctx, body)).await,
        ApiKey::IncrementalAlterConfigs => Box::pin(configs::incremental_alter_configs(ctx, body)).await,
        ApiKey::FindCoordinator => groups::find_coordinator(ctx, body),
        ApiKey::JoinGroup => Box::pin(groups::join_group(ctx, body)).await,
        ApiKey::SyncGroup => Box::pin(groups::sync_group(ctx, body)).await,
        ApiKey::Heartbeat => Box::pin(groups::heartbeat(ctx, body)).await,
        ApiKey::LeaveGroup => Box::pin(groups::leave_group(ctx, body)).await,
        ApiKey::OffsetCommit => Box::pin(groups::offset_commit(ctx, body)).await,
        ApiKey::OffsetFetch => Box::pin(groups::offset_fetch(ctx, body)).await,
        ApiKey::OffsetDelete => Box::pin(groups::offset_delete(ctx, body)).await,
        ApiKey::ListGroups => Box::pin(groups::list_groups(ctx, body)).await,
        ApiKey::DescribeGroups => Box::pin(groups::describe_groups(ctx, body)).await,
        ApiKey::DeleteGroups => Box::pin(groups::delete_groups(ctx, body)).await,
        ApiKey::DescribeLogDirs => Box::pin(log_dirs::describe_log_dirs(ctx, body)).await,
        ApiKey::DescribeTopicPartitions => metadata::describe_topic_partitions(ctx, body),
        other => Outcome::Close(format!("no handler for {other:?}")),
    }
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::image::{BrokerMeta, PartitionState};
    use crate::meta::{Snapshot, TopicMeta};
    use kafka_protocol::protocol::Message;

    fn snapshot(leader: i32, fenced: bool) -> Snapshot {
        let broker = |id: i32| BrokerMeta {
            id,
            incarnation: uuid::Uuid::nil(),
            epoch: i64::from(id),
            host: format!("10.0.0.{id}"),
            port: 9092,
            shards: 1,
            fenced: fenced && id == leader,
            registered_ms: 0,
            shut_down: false,
            clean_start: false,
        };
        let mut state = PartitionState::new(vec![1, 2, 3]);
        state.leader = leader;
        state.leader_epoch = 7;
        let topic = TopicMeta {
            name: "t".into(),
            id: uuid::Uuid::from_u128(1),
            partitions: 1,
            configs: BTreeMap::new(),
            partition_states: vec![state],
        };
        Snapshot::build(1, [Arc::new(topic)], (1..=3).map(|id| (id, broker(id))).collect())
    }

    #[test]
    fn not_leader_names_the_new_leader_and_its_endpoint() {
        let mut endpoints = Vec::new();
        let hint = leader_hint(&snapshot(2, false), "t", 0, 1, &mut endpoints);
        assert_eq!(hint, Some((2, 7)));
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            (endpoints[0].id, &*endpoints[0].host, endpoints[0].port),
            (2, "10.0.0.2", 9092)
        );
        // A second partition led by the same broker adds no endpoint.
        leader_hint(&snapshot(2, false), "t", 0, 1, &mut endpoints);
        assert_eq!(endpoints.len(), 1);
        // No live leader elsewhere: nothing to point at.
        for (leader, fenced, me) in [(-1, false, 1), (2, true, 1), (1, false, 1)] {
            let mut e = Vec::new();
            let hint = leader_hint(&snapshot(leader, fenced), "t", 0, me, &mut e);
            assert_eq!(hint, None, "{leader} {fenced}");
            assert!(e.is_empty());
        }
    }

    /// The table advertises exactly what the crate can decode (or, for
    /// Produce and Fetch, what the hand-written codec covers).
    #[test]
    fn advertised_versions_are_within_the_codecs() {
        for &(key, lo, hi) in APIS {
            let crate_range = key.valid_versions();
            assert!(lo >= crate_range.min && hi <= crate_range.max, "{key:?}");
            assert!(lo <= hi);
        }
        let fetch = kafka_protocol::messages::FetchRequest::VERSIONS;
        assert_eq!(
            (fetch.min, fetch.max),
            (protocol::fetch::MIN_VERSION, protocol::fetch::MAX_VERSION)
        );
    }
}
