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

pub mod acls;
pub mod admin;
pub mod configs;
pub mod consumer_groups;
pub mod fetch;
pub mod groups;
pub mod ids;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod sasl;
pub mod txn;
mod verify;

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::error_codes::ErrorCode;
use crate::node::Shard;
use crate::protocol::{self, RequestHeader, Response};

/// A handler whose answer waits: its future boxed.
macro_rules! later {
    ($f:path) => {
        Handler::Later(|ctx, body| Box::pin($f(ctx, body)))
    };
}

/// Every API the broker answers, with the versions it supports: all the
/// versions the `kafka-protocol` crate knows for each, and for Produce and
/// Fetch the versions of the hand-written codec; and how each is answered.
/// ApiVersions advertises this list and dispatch obeys it.
pub const APIS: &[Api] = &[
    api(ApiKey::Produce, 3, 13, Handler::Produce),
    api(
        ApiKey::Fetch,
        protocol::fetch::MIN_VERSION,
        protocol::fetch::MAX_VERSION,
        Handler::Fetch,
    ),
    api(ApiKey::ListOffsets, 1, 10, later!(offsets::list_offsets)),
    api(ApiKey::Metadata, 0, 13, later!(metadata::metadata)),
    api(ApiKey::ApiVersions, 0, 4, Handler::ApiVersions),
    api(ApiKey::CreateTopics, 2, 7, later!(admin::create_topics)),
    api(ApiKey::DeleteTopics, 1, 6, later!(admin::delete_topics)),
    api(ApiKey::DeleteRecords, 0, 2, later!(offsets::delete_records)),
    api(
        ApiKey::OffsetForLeaderEpoch,
        2,
        4,
        later!(offsets::offset_for_leader_epoch),
    ),
    // The crate's response goes to v6 but its request decoder stops at v5.
    api(ApiKey::InitProducerId, 0, 5, later!(produce::init_producer_id)),
    api(ApiKey::AddPartitionsToTxn, 0, 4, later!(txn::add_partitions_to_txn)),
    api(ApiKey::AddOffsetsToTxn, 0, 3, later!(txn::add_offsets_to_txn)),
    api(ApiKey::EndTxn, 0, 4, later!(txn::end_txn)),
    api(ApiKey::WriteTxnMarkers, 1, 1, later!(txn::write_txn_markers)),
    api(ApiKey::TxnOffsetCommit, 0, 3, later!(txn::txn_offset_commit)),
    api(ApiKey::DescribeProducers, 0, 0, later!(txn::describe_producers)),
    api(ApiKey::DescribeTransactions, 0, 0, later!(txn::describe_transactions)),
    api(ApiKey::ListTransactions, 0, 1, later!(txn::list_transactions)),
    api(ApiKey::DescribeConfigs, 1, 4, Handler::Now(configs::describe_configs)),
    api(ApiKey::AlterConfigs, 0, 2, later!(configs::alter_configs)),
    api(ApiKey::CreatePartitions, 0, 3, later!(admin::create_partitions)),
    api(
        ApiKey::IncrementalAlterConfigs,
        0,
        1,
        later!(configs::incremental_alter_configs),
    ),
    api(ApiKey::DescribeCluster, 0, 2, Handler::Now(metadata::describe_cluster)),
    api(ApiKey::FindCoordinator, 0, 6, Handler::Now(groups::find_coordinator)),
    api(ApiKey::JoinGroup, 0, 9, later!(groups::join_group)),
    api(ApiKey::SyncGroup, 0, 5, later!(groups::sync_group)),
    api(ApiKey::Heartbeat, 0, 4, later!(groups::heartbeat)),
    api(ApiKey::LeaveGroup, 0, 5, later!(groups::leave_group)),
    api(ApiKey::OffsetCommit, 2, 9, later!(groups::offset_commit)),
    api(ApiKey::OffsetFetch, 1, 9, later!(groups::offset_fetch)),
    api(ApiKey::OffsetDelete, 0, 0, later!(groups::offset_delete)),
    api(ApiKey::ListGroups, 0, 5, later!(groups::list_groups)),
    api(ApiKey::DescribeGroups, 0, 6, later!(groups::describe_groups)),
    api(ApiKey::DeleteGroups, 0, 2, later!(groups::delete_groups)),
    api(
        ApiKey::ConsumerGroupHeartbeat,
        0,
        1,
        later!(consumer_groups::consumer_group_heartbeat),
    ),
    api(
        ApiKey::ConsumerGroupDescribe,
        0,
        1,
        later!(consumer_groups::consumer_group_describe),
    ),
    api(ApiKey::DescribeLogDirs, 1, 4, later!(log_dirs::describe_log_dirs)),
    api(ApiKey::SaslHandshake, 0, 1, Handler::Now(sasl::sasl_handshake)),
    api(ApiKey::CreateAcls, 1, 3, later!(acls::create_acls)),
    api(ApiKey::DescribeAcls, 1, 3, Handler::Now(acls::describe_acls)),
    api(ApiKey::DeleteAcls, 1, 3, later!(acls::delete_acls)),
    api(ApiKey::SaslAuthenticate, 0, 2, later!(sasl::sasl_authenticate)),
    api(
        ApiKey::AlterUserScramCredentials,
        0,
        0,
        later!(sasl::alter_user_scram_credentials),
    ),
    api(
        ApiKey::DescribeUserScramCredentials,
        0,
        0,
        Handler::Now(sasl::describe_user_scram_credentials),
    ),
    api(
        ApiKey::DescribeTopicPartitions,
        0,
        0,
        Handler::Now(metadata::describe_topic_partitions),
    ),
];

/// One supported API: its key, the versions served, and its handler.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
    handler: Handler,
}

const fn api(key: ApiKey, min_version: i16, max_version: i16, handler: Handler) -> Api {
    Api {
        key,
        min_version,
        max_version,
        handler,
    }
}

/// A handler's future, boxed so the one future every request spawns
/// stays small (it is moved into its task).
type Boxed = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome>>>;

/// How a request is answered.
#[derive(Debug, Clone, Copy)]
enum Handler {
    /// At once, without waiting.
    Now(fn(Ctx, BytesMut) -> Outcome),
    /// By a future, boxed.
    Later(fn(Ctx, BytesMut) -> Boxed),
    /// The hot paths, run inline (not boxed).
    Produce,
    Fetch,
    /// Answered from this table.
    ApiVersions,
}

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
/// once, with its id, host and port as `ids` presents them), so the
/// client goes there at once instead of after a metadata refresh. `None`
/// when no live broker other than `me` leads it, or the leader has no
/// endpoint on the client's listener.
pub(crate) fn leader_hint(
    ids: ids::Ids<'_>,
    topic: &str,
    index: i32,
    me: i32,
    hinted: &mut Vec<crate::image::BrokerMeta>,
) -> Option<(i32, i32)> {
    let snapshot = ids.snapshot();
    let state = snapshot
        .topic(topic)
        .and_then(|t| usize::try_from(index).ok().and_then(|i| t.partition_states.get(i)))?;
    let b = snapshot
        .brokers
        .get(&state.leader)
        .filter(|b| !b.fenced && b.id != me)?;
    let id = ids.replica(b.id, topic, index);
    let (host, port) = ids.endpoint(id)?;
    if !hinted.iter().any(|h| h.id == id) {
        let mut endpoint = b.clone();
        endpoint.id = id;
        endpoint.host = host.to_string();
        endpoint.port = port;
        hinted.push(endpoint);
    }
    Some((id, state.leader_epoch))
}

/// Kafka's value for "authorized operations not requested".
pub const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// The supported version range of an API, if it is supported.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter()
        .find(|a| a.key == key)
        .map(|a| (a.min_version, a.max_version))
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
    /// Answer, then close the connection (a failed authentication).
    RespondThenClose(Response, String),
}

/// Everything a handler needs about its request.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    /// The connection the request came on.
    pub conn: Rc<Conn>,
    /// The request header's bytes.
    pub header_bytes: Bytes,
}

/// What the handlers know of one client connection.
#[derive(Debug)]
pub struct Conn {
    /// The client's address as Kafka reports it (`/127.0.0.1`).
    pub peer: Rc<str>,
    /// The name of the listener it came through (`PLAINTEXT`, ...):
    /// Metadata, FindCoordinator and leader hints give that listener's
    /// endpoints.
    pub listener: Rc<str>,
    pub protocol: crate::config::SecurityProtocol,
    /// The SASL session (on a SASL listener).
    pub sasl: std::cell::RefCell<crate::security::sasl::Session>,
    /// The principal name of the client's TLS certificate (mutual TLS).
    pub tls_principal: std::cell::RefCell<Option<String>>,
    /// The order of this connection's transactional Produce requests:
    /// each reaches the partitions' owners after the one before it, also
    /// when it waits for its transaction coordinator first.
    pub txn_produce: Rc<crate::util::Turns>,
}

impl Conn {
    /// The principal this connection acts as (`User:name`): SASL's user,
    /// else the client certificate's mapped subject, else anonymous.
    pub fn principal(&self) -> String {
        match (self.sasl.borrow().user(), self.tls_principal.borrow().as_deref()) {
            (Some(u), _) | (None, Some(u)) => format!("User:{u}"),
            (None, None) => crate::security::ANONYMOUS.to_string(),
        }
    }

    /// Whether requests other than ApiVersions and SASL's own must wait
    /// for an authentication first.
    pub fn needs_authentication(&self) -> bool {
        self.protocol.sasl() && !self.sasl.borrow().authenticated()
    }

    pub fn new(peer: Rc<str>, listener: Rc<str>, protocol: crate::config::SecurityProtocol) -> Self {
        Self {
            peer,
            listener,
            protocol,
            sasl: Default::default(),
            tls_principal: Default::default(),
            txn_produce: Rc::default(),
        }
    }
}

/// What a request may do: its requester and the ACLs it is judged by.
#[derive(Debug)]
pub struct Access {
    who: crate::security::authorizer::Requester,
    security: std::sync::Arc<sluice_metadata::security::SecurityImage>,
    config: std::sync::Arc<crate::config::BrokerConfig>,
}

pub use crate::security::authorizer::CLUSTER_RESOURCE;

impl Access {
    /// Whether `op` on resource `name` of type `rt` is allowed.
    pub fn allows(
        &self,
        op: sluice_metadata::security::Operation,
        rt: sluice_metadata::security::ResourceType,
        name: &str,
    ) -> bool {
        self.who.unrestricted
            || self
                .who
                .allows(&self.security, &self.config.security.authorizer, op, rt, name)
    }

    /// `op` on the cluster.
    pub fn cluster(&self, op: sluice_metadata::security::Operation) -> bool {
        self.allows(op, sluice_metadata::security::ResourceType::Cluster, CLUSTER_RESOURCE)
    }

    pub fn topic(&self, op: sluice_metadata::security::Operation, name: &str) -> bool {
        self.allows(op, sluice_metadata::security::ResourceType::Topic, name)
    }

    pub fn group(&self, op: sluice_metadata::security::Operation, name: &str) -> bool {
        self.allows(op, sluice_metadata::security::ResourceType::Group, name)
    }

    pub fn transactional_id(&self, op: sluice_metadata::security::Operation, name: &str) -> bool {
        self.allows(op, sluice_metadata::security::ResourceType::TransactionalId, name)
    }

    /// `op` on some resource of type `rt` (see
    /// [`crate::security::authorizer::Requester::allows_some`]).
    pub fn some(&self, op: sluice_metadata::security::Operation, rt: sluice_metadata::security::ResourceType) -> bool {
        self.who.unrestricted || self.who.allows_some(&self.security, op, rt)
    }

    /// Whether every request is allowed (no authorizer, or a super user).
    pub fn unrestricted(&self) -> bool {
        self.who.unrestricted
    }
}

impl Ctx {
    /// What this request may do. Without an authorizer it allows
    /// everything and costs a few reference counts, no allocation.
    pub fn access(&self) -> Access {
        let config = self.shard.common.config.clone();
        let authorizer = &config.security.authorizer;
        let who = if authorizer.enabled {
            crate::security::authorizer::Requester::new(
                authorizer,
                self.conn.principal(),
                self.conn.peer.trim_start_matches('/').to_string(),
            )
        } else {
            crate::security::authorizer::Requester {
                principal: String::new(),
                host: String::new(),
                unrestricted: true,
            }
        };
        let security = self.shard.meta().security.clone();
        Access { who, security, config }
    }

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
        .map(|a| {
            let mut v = ApiVersion::default();
            v.api_key = a.key as i16;
            v.min_version = a.min_version;
            v.max_version = a.max_version;
            v
        })
        .collect();
    r
}

/// Checks the frame's header, then runs the API's handler. Runs as its own
/// task per request; handlers dispatch partition work before their first
/// await, which keeps per-partition order across pipelined requests.
pub async fn dispatch(shard: Rc<Shard>, frame: BytesMut, conn: Rc<Conn>) -> Outcome {
    let started = std::time::Instant::now();
    let key = protocol::peek(&frame).map(|(k, _, _)| k);
    let metrics = shard.clone();
    let outcome = answer(shard, frame, conn).await;
    if let Some(key) = key {
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        metrics.metrics.request(key, ns);
    }
    outcome
}

/// [`dispatch`] without the counting.
async fn answer(shard: Rc<Shard>, mut frame: BytesMut, conn: Rc<Conn>) -> Outcome {
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
        conn,
        header_bytes: frame.freeze(),
    };
    let Some(api) = APIS.iter().find(|a| a.key == key) else {
        return Outcome::Close(format!("no handler for {key:?}"));
    };
    match api.handler {
        Handler::ApiVersions => {
            let mut msg = api_versions_message(None);
            if !ctx.shard.config().groups.consumer_protocol {
                // Clients learn here that the consumer protocol is off.
                msg.api_keys.retain(|a| {
                    a.api_key != ApiKey::ConsumerGroupHeartbeat as i16
                        && a.api_key != ApiKey::ConsumerGroupDescribe as i16
                });
            }
            if version >= 3 {
                msg.finalized_features_epoch = -1;
            }
            ctx.respond(&msg)
        }
        Handler::Produce => produce::handle(ctx, body).await,
        Handler::Fetch => fetch::handle(ctx, body).await,
        Handler::Now(f) => f(ctx, body),
        Handler::Later(f) => f(ctx, body).await,
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
            endpoints: Vec::new(),
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
        let s = snapshot(2, false);
        let hint = leader_hint(ids::Ids::nodes(&s, "PLAINTEXT"), "t", 0, 1, &mut endpoints);
        assert_eq!(hint, Some((2, 7)));
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            (endpoints[0].id, &*endpoints[0].host, endpoints[0].port),
            (2, "10.0.0.2", 9092)
        );
        // A second partition led by the same broker adds no endpoint.
        leader_hint(ids::Ids::nodes(&s, "PLAINTEXT"), "t", 0, 1, &mut endpoints);
        assert_eq!(endpoints.len(), 1);
        // No live leader elsewhere: nothing to point at.
        for (leader, fenced, me) in [(-1, false, 1), (2, true, 1), (1, false, 1)] {
            let mut e = Vec::new();
            let s = snapshot(leader, fenced);
            let hint = leader_hint(ids::Ids::nodes(&s, "PLAINTEXT"), "t", 0, me, &mut e);
            assert_eq!(hint, None, "{leader} {fenced}");
            assert!(e.is_empty());
        }
    }

    /// The table advertises exactly what the crate can decode (or, for
    /// Produce and Fetch, what the hand-written codec covers).
    #[test]
    fn advertised_versions_are_within_the_codecs() {
        for &Api {
            key,
            min_version: lo,
            max_version: hi,
            ..
        } in APIS
        {
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
