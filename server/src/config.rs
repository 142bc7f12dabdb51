//! Broker settings: command-line flags, an optional TOML file and `-o key=value`
//! overrides, named after the Kafka broker settings users already know.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `-o` overrides,
//! dedicated flags (`--listen`, `--data-dir`, ...). Every limit the broker
//! enforces is one of these settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use sluice_engine::{FlushPolicy, LogConfig};

pub mod listeners;
pub mod security;

pub use listeners::{Listener, ListenerSettings, SecurityProtocol};
pub use security::SecurityConfig;

/// Errors in the configuration; startup stops with the message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown setting `{0}` (see `sluice --help-settings`)")]
    Unknown(String),
    #[error("setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Everything the broker runs with. Immutable after startup; shared by all
/// shards behind an `Arc`.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `listeners`, `advertised.listeners`, `listener.security.protocol.map`
    /// and `inter.broker.listener.name` as given; [`BrokerConfig::finish`]
    /// resolves them into `listeners`.
    pub listener_settings: ListenerSettings,
    /// The listeners every shard accepts on, the inter-broker one first
    /// (its advertised address is what the broker registers for other
    /// brokers). Start-up replaces a port 0 with the port bound.
    pub listeners: Vec<Listener>,
    /// The controller quorum's listener (`controller.listener.names`).
    pub controller_listener: listeners::ControllerListener,
    /// `log.dirs`: one directory for all partitions and broker metadata.
    pub data_dir: PathBuf,
    /// Shards (threads pinned to cores); all cores when `None`.
    pub cores: Option<usize>,
    /// `node.id`.
    pub node_id: i32,
    /// `num.partitions`: partitions of an auto-created topic.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `message.max.bytes`: largest record batch accepted.
    pub message_max_bytes: u32,
    /// `log.segment.bytes`.
    pub log_segment_bytes: u64,
    /// `log.roll.ms`.
    pub log_roll_ms: u64,
    /// `log.retention.ms`; -1 keeps data forever.
    pub log_retention_ms: i64,
    /// `log.retention.bytes`; -1 is unlimited.
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// `log.flush.interval.ms`: unset (`None`) leaves acks=1 data to the
    /// page cache, 0 syncs every flush round, N bounds the unsynced window.
    pub log_flush_interval_ms: Option<u64>,
    /// `socket.request.max.bytes`: larger frames close the connection.
    pub socket_request_max_bytes: u32,
    /// `max.connections`: across all shards; more are accepted and closed.
    pub max_connections: usize,
    /// `queued.max.request.bytes`: bytes of requests in flight per shard
    /// before it stops reading from its sockets.
    pub queued_max_request_bytes: u64,
    /// `max.inflight.requests.per.connection`: pipelined requests per
    /// connection being processed at once.
    pub max_inflight_requests_per_connection: usize,
    /// `fetch.max.bytes`: cap on one Fetch response.
    pub fetch_max_bytes: u32,
    /// `sluice.fetch.max.wait.ms`: the longest a Fetch long-polls, whatever
    /// its `max_wait_ms` asks for.
    pub fetch_max_wait_ms: u64,
    /// `sluice.fetch.zero.copy`: splice file parts to the socket; false
    /// copies them through memory (for comparison benchmarks).
    pub fetch_zero_copy: bool,
    /// `sluice.shard.listeners`: each shard also accepts on its own port of
    /// every listener and is advertised to clients as a broker of its own
    /// (id `node.id` × [`SHARD_ID_STRIDE`] + shard).
    pub shard_listeners: bool,
    /// `sluice.shard.listeners.port.offset`: shard s of a listener on port
    /// P listens on P + offset + s (a listener on port 0: a free port each).
    pub shard_port_offset: u16,
    /// `sluice.log.preallocate.bytes`: the most disk a partition's active
    /// segment reserves ahead of its end (0 = no reserve).
    pub log_preallocate_bytes: u64,
    /// `sluice.log.inline.write.bytes`: flush rounds up to this size are
    /// written by the shard thread itself, larger ones through io_uring.
    pub log_inline_write_bytes: u64,
    /// `sluice.log.writeback.bytes`: see [`LogConfig::writeback_bytes`].
    pub log_writeback_bytes: u64,
    /// `max.request.partition.size.limit`: partitions in one
    /// DescribeTopicPartitions response.
    pub max_request_partition_size_limit: usize,
    /// `sluice.max.partitions`: partitions of all topics together (internal
    /// ones included); CreateTopics and CreatePartitions past it are
    /// refused.
    pub max_partitions: u64,
    /// `sluice.max.open.files`: files the partition logs may hold open
    /// across all shards; 0 = half the process's open-file limit.
    pub max_open_files: usize,
    /// `sluice.storage.min.free.bytes`: free space of the data directory's
    /// filesystem below which produce is refused (0 = no reserve).
    pub storage_min_free_bytes: u64,
    /// `sluice.shutdown.drain.ms`: how long shutdown waits for connections
    /// to finish their in-flight requests.
    pub shutdown_drain_ms: u64,
    /// `sluice.shutdown.close.ms`: how long shutdown then waits for the
    /// shards to flush and close their logs before it gives up on them.
    pub shutdown_close_ms: u64,
    /// `sluice.shutdown.linger.ms`: in a cluster, how long a broker keeps
    /// serving after its controlled shutdown moved its leadership away, so
    /// that clients still sending to it are told where each partition went
    /// (NOT_LEADER_OR_FOLLOWER with the new leader) instead of finding the
    /// connection closed.
    pub shutdown_linger_ms: u64,
    /// `sluice.broker.fence.when.gone`: the controller fences a broker as
    /// soon as the connection carrying its heartbeats closes and its
    /// address refuses connections (its process died), instead of after
    /// `broker.session.timeout.ms`.
    pub fence_gone_brokers: bool,
    /// `cluster.id` reported in Metadata and DescribeCluster.
    pub cluster_id: String,
    /// `default.replication.factor`: replicas of a topic created without
    /// one (auto-created, or CreateTopics with -1).
    pub default_replication_factor: i16,
    /// `process.roles`: what this node runs.
    pub roles: Roles,
    /// `controller.quorum.voters`: `id@host:port` of every voter of the
    /// controller quorum; a voter serves controller traffic on its own
    /// entry. Empty: one voter, this node, in this process.
    pub quorum_voters: Vec<(i32, String)>,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker without a heartbeat for this
    /// long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `min.insync.replicas`: in-sync replicas an acks=all write needs (a
    /// topic may override it).
    pub min_insync_replicas: i32,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with
    /// its leader for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at
    /// the leader for new data.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.max.bytes`: bytes per partition in one follower fetch.
    pub replica_fetch_max_bytes: u32,
    /// `replica.fetch.response.max.bytes`: bytes in one follower fetch.
    pub replica_fetch_response_max_bytes: u32,
    /// `replica.fetch.backoff.ms`: a follower's pause after a failed fetch.
    pub replica_fetch_backoff_ms: u64,
    /// `replica.high.watermark.checkpoint.interval.ms`.
    pub replica_hw_checkpoint_interval_ms: u64,
    /// `sluice.replica.fsync.before.ack`: followers fdatasync what they
    /// fetched before fetching again, and a leader syncs before it answers
    /// acks=all, so an acknowledged write is on every ISR member's disk.
    pub replica_fsync_before_ack: bool,
    /// `sluice.replica.direct.writes`: a follower appends past the page
    /// cache (`O_DIRECT`); its log is read only once it leads (ADR 0017).
    pub replica_direct_writes: bool,
    /// `sluice.replica.direct.writes.min.bytes`: see
    /// [`LogConfig::direct_write_min_bytes`].
    pub replica_direct_writes_min_bytes: u64,
    /// `sluice.unsafe.ack.before.replication`: a deliberately broken
    /// setting for testing the history checker: acks=all is answered once
    /// the leader has written the batch, before the ISR has it. Only a build
    /// with the cargo feature `test-switches` accepts it; release builds
    /// refuse the key.
    pub unsafe_ack_before_replication: bool,
    /// `sluice.outbound.address`: the local IP address this node's own
    /// connections to other nodes (replica fetches, controller traffic)
    /// start from; `None` lets the operating system choose. Lets a fault
    /// test cut the link between two nodes on one host by address.
    pub outbound_address: Option<std::net::IpAddr>,
    /// `sluice.admin.listen`: the operators' HTTP listener (`/metrics`,
    /// `/health`, `/ready`); `None` turns it off.
    pub admin_listen: Option<SocketAddr>,
    /// Whether `admin_listen` was set rather than left at its default: a
    /// default address already in use turns the listener off with a
    /// warning, a chosen one refuses the start.
    pub admin_listen_chosen: bool,
    /// `unclean.leader.election.enable`: elect a replica outside the ISR
    /// when no ISR member is alive (may lose acknowledged writes).
    pub unclean_leader_election: bool,
    /// `sluice.metadata.snapshot.records`: metadata log entries between
    /// snapshots of the cluster image.
    pub metadata_snapshot_records: u64,
    /// `sluice.controller.write.timeout.ms`: how long a metadata change
    /// waits for the controller quorum to commit it.
    pub controller_write_timeout_ms: u64,
    /// Consumer-group coordinator settings.
    pub groups: GroupConfig,
    /// Transaction settings.
    pub transactions: TransactionConfig,
    /// The log cleaner of compacted topics.
    pub cleaner: CleanerConfig,
    /// Authentication.
    pub security: SecurityConfig,
}

/// Settings of the log cleaner (compacted topics), with Kafka's names
/// and defaults. Each shard cleans the logs it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.backoff.ms`: how often a shard looks for logs to clean.
    pub backoff_ms: u64,
    /// `log.cleaner.dedupe.buffer.size`: the offset map's budget, per shard.
    pub dedupe_buffer_bytes: u64,
    /// `log.cleaner.io.max.bytes.per.second`: what one shard's cleaner
    /// reads and writes, at most.
    pub io_max_bytes_per_second: f64,
    /// The topic defaults: `log.cleanup.policy`,
    /// `log.cleaner.min.cleanable.ratio`, `log.cleaner.min.compaction.lag.ms`,
    /// `log.cleaner.max.compaction.lag.ms`, `log.cleaner.delete.retention.ms`.
    pub defaults: sluice_metadata::topics::Compaction,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            enable: true,
            backoff_ms: 15_000,
            dedupe_buffer_bytes: 128 * 1024 * 1024,
            io_max_bytes_per_second: f64::MAX,
            defaults: sluice_metadata::topics::Compaction::default(),
        }
    }
}

/// Settings of the transaction coordinator and of transaction markers,
/// with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionConfig {
    /// `transaction.state.log.num.partitions`: partitions of
    /// `__transaction_state` when it is created; a transactional id's
    /// coordinator leads the partition its id hashes to.
    pub log_partitions: i32,
    /// `transaction.state.log.replication.factor`; `None`: 3, or the
    /// number of controller voters when fewer.
    pub log_replication_factor: Option<i16>,
    /// `transaction.state.log.segment.bytes`.
    pub log_segment_bytes: u64,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms`
    /// a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: an id with no transaction for
    /// this long is forgotten.
    pub id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_check_interval_ms: u64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expire_check_interval_ms: u64,
    /// `sluice.transaction.marker.timeout.ms`: how long a partition leader
    /// waits for its in-sync replicas to have a transaction marker before
    /// WriteTxnMarkers answers REQUEST_TIMED_OUT for it; also how long the
    /// coordinator waits for a leader's answer before it asks again.
    pub marker_timeout_ms: u64,
    /// `sluice.transaction.busy.wait.ms`: how long a request for a
    /// transactional id whose markers or state write are in flight waits
    /// for them before it is answered CONCURRENT_TRANSACTIONS.
    pub busy_wait_ms: u64,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            log_partitions: 50,
            log_replication_factor: None,
            log_segment_bytes: 100 * 1024 * 1024,
            max_timeout_ms: 900_000,
            id_expiration_ms: 7 * 24 * 3_600_000,
            abort_check_interval_ms: 10_000,
            expire_check_interval_ms: 3_600_000,
            marker_timeout_ms: 30_000,
            busy_wait_ms: 1_000,
        }
    }
}

/// `process.roles`: which parts of Sluice a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl Roles {
    fn parse(value: &str) -> Result<Self, String> {
        let mut roles = Self {
            broker: false,
            controller: false,
        };
        for role in value.split(',').map(str::trim) {
            match role {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => return Err(format!("unknown role `{other}`: expected `broker` or `controller`")),
            }
        }
        if !roles.broker {
            return Err("controller-only nodes are not supported: every node is a broker".into());
        }
        Ok(roles)
    }
}

/// Parses `1@127.0.0.1:19093,2@127.0.0.1:29093`.
fn parse_voters(value: &str) -> Result<Vec<(i32, String)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            let (id, addr) = v
                .split_once('@')
                .ok_or_else(|| format!("`{v}`: expected id@host:port"))?;
            let id: i32 = id
                .trim()
                .parse()
                .map_err(|_| format!("`{v}`: `{id}` is not a node id"))?;
            if id < 0 {
                return Err(format!("`{v}`: node ids are not negative"));
            }
            addr.parse::<SocketAddr>()
                .map_err(|e| format!("`{v}`: `{addr}` is not an ip:port address ({e})"))?;
            Ok((id, addr.to_string()))
        })
        .collect()
}

/// Settings of the consumer-group coordinator, with Kafka's names and
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`
    /// when it is created; a group's coordinator is the owner of the
    /// partition its id hashes to. Fixed once the topic exists.
    pub offsets_partitions: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_segment_bytes: u64,
    /// `offsets.topic.replication.factor`; unset: 3, or the number of
    /// controller voters when there are fewer (1 on a single node). The
    /// topic is created once that many brokers are live.
    pub offsets_replication_factor: Option<i16>,
    /// `offsets.commit.timeout.ms`: how long a commit waits for the
    /// offsets partition's in-sync replicas.
    pub offsets_commit_timeout_ms: u64,
    /// `offsets.retention.minutes`: how long an empty group keeps its
    /// committed offsets.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `offset.metadata.max.bytes`: longest commit metadata string.
    pub offset_metadata_max_bytes: usize,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`:
    /// the session timeouts a JoinGroup may ask for.
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of
    /// an empty group waits for more members.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members per group.
    pub max_size: usize,
    /// `group.coordinator.rebalance.protocols`: whether the consumer
    /// protocol (KIP-848) is served; the classic one always is.
    pub consumer_protocol: bool,
    /// `group.consumer.session.timeout.ms`: a consumer-protocol member
    /// without a heartbeat for this long is removed.
    pub consumer_session_timeout_ms: u64,
    /// `group.consumer.heartbeat.interval.ms`: how often consumer-protocol
    /// members heartbeat.
    pub consumer_heartbeat_interval_ms: u64,
    /// `group.consumer.max.size`: members per consumer-protocol group.
    pub consumer_max_size: usize,
    /// `group.consumer.assignors`: the server-side assignors members may
    /// ask for; the first is the default.
    pub consumer_assignors: Vec<String>,
}

/// The server-side assignors of consumer-protocol groups, by Kafka's
/// names (`groups::assignors`).
pub const CONSUMER_ASSIGNORS: &[&str] = &["uniform", "range"];

/// With `sluice.shard.listeners`, shard s of node n is broker
/// n × `SHARD_ID_STRIDE` + s to clients.
pub const SHARD_ID_STRIDE: i32 = 1024;

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            offsets_partitions: 50,
            offsets_segment_bytes: 100 * 1024 * 1024,
            offsets_replication_factor: None,
            offsets_commit_timeout_ms: 5000,
            offsets_retention_ms: 7 * 24 * 3_600_000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            consumer_protocol: true,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_max_size: i32::MAX as usize,
            consumer_assignors: vec!["uniform".into(), "range".into()],
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            security: SecurityConfig::default(),
            listener_settings: ListenerSettings::default(),
            listeners: listeners::resolve(&ListenerSettings::default()).unwrap_or_default(),
            controller_listener: listeners::ControllerListener::default(),
            data_dir: PathBuf::from("./sluice-data"),
            cores: None,
            node_id: 0,
            num_partitions: 1,
            auto_create_topics: true,
            message_max_bytes: 1_048_588,
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * 24 * 3_600_000,
            log_retention_ms: 7 * 24 * 3_600_000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 300_000,
            log_flush_interval_ms: None,
            socket_request_max_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            queued_max_request_bytes: 256 * 1024 * 1024,
            max_inflight_requests_per_connection: 32,
            fetch_max_bytes: 55 * 1024 * 1024,
            fetch_max_wait_ms: 30_000,
            fetch_zero_copy: true,
            shard_listeners: false,
            shard_port_offset: 100,
            log_preallocate_bytes: LogConfig::default().preallocate_bytes,
            log_inline_write_bytes: LogConfig::default().inline_write_bytes,
            log_writeback_bytes: LogConfig::default().writeback_bytes,
            max_open_files: 0,
            max_partitions: 100_000,
            max_request_partition_size_limit: 2000,
            storage_min_free_bytes: 1 << 30,
            shutdown_drain_ms: 10_000,
            shutdown_close_ms: 30_000,
            shutdown_linger_ms: 500,
            fence_gone_brokers: true,
            cluster_id: "sluice-cluster".into(),
            default_replication_factor: 1,
            roles: Roles {
                broker: true,
                controller: true,
            },
            quorum_voters: Vec::new(),
            broker_heartbeat_interval_ms: 2000,
            broker_session_timeout_ms: 9000,
            min_insync_replicas: 1,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_response_max_bytes: 10 << 20,
            replica_fetch_backoff_ms: 1000,
            replica_hw_checkpoint_interval_ms: 5000,
            replica_fsync_before_ack: false,
            replica_direct_writes: true,
            replica_direct_writes_min_bytes: LogConfig::default().direct_write_min_bytes,
            unsafe_ack_before_replication: false,
            outbound_address: None,
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9644))),
            admin_listen_chosen: false,
            unclean_leader_election: false,
            metadata_snapshot_records: 1000,
            controller_write_timeout_ms: 30_000,
            groups: GroupConfig::default(),
            transactions: TransactionConfig::default(),
            cleaner: CleanerConfig::default(),
        }
    }
}

/// A setting's setter that parses the value with `$parse` into the
/// config field `$field`.
macro_rules! field {
    ($($field:ident).+, $parse:path) => {
        |c, key, value| {
            c.$($field).+ = $parse(key, value)?;
            Ok(())
        }
    };
}

/// One broker setting: its Kafka name (and the older names it also
/// takes), its description for `--help-settings` with the default it
/// documents, and how a value sets it. The parser, the environment
/// variables, `--help-settings`, `--print-config` and the defaults test
/// all read [`SETTINGS`].
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub doc: &'static str,
    set: fn(&mut BrokerConfig, &str, &str) -> Result<(), ConfigError>,
}

/// The settings accepted in the TOML file and by `-o`, with their meaning.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "listeners",
        aliases: &["listen"],
        doc: "NAME://host:port of each listener, comma-separated; a bare host:port is PLAINTEXT (default PLAINTEXT://127.0.0.1:9092)",
        set: |c, key, value| {
            c.listener_settings.listeners = listeners::parse_specs(key, value)?;
            Ok(())
        },
    },
    Setting {
        name: "advertised.listeners",
        aliases: &["advertised"],
        doc: "NAME://host:port given to clients of each listener (default: the listen address; 0.0.0.0 as 127.0.0.1)",
        set: |c, key, value| {
            c.listener_settings.advertised = listeners::parse_specs(key, value)?;
            Ok(())
        },
    },
    Setting {
        name: "listener.security.protocol.map",
        aliases: &[],
        doc: "NAME:PROTOCOL of each listener (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), comma-separated (default: each listener named after its protocol)",
        set: |c, key, value| {
            c.listener_settings.protocol_map = listeners::parse_protocol_map(key, value)?;
            Ok(())
        },
    },
    Setting {
        name: "inter.broker.listener.name",
        aliases: &[],
        doc: "the listener other brokers connect to: replica fetches, transaction markers (default: the first of listeners)",
        set: |c, key, value| {
            let name = value.trim().to_ascii_uppercase();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(invalid(key, format!("`{value}` is not a listener name")));
            }
            c.listener_settings.inter_broker = Some(name);
            Ok(())
        },
    },
    Setting {
        name: "controller.listener.names",
        aliases: &[],
        doc: "the controller quorum's listener, whose protocol listener.security.protocol.map gives; voters serve it on their controller.quorum.voters address; unset, the quorum's connections are PLAINTEXT",
        set: |c, key, value| {
            let names: Vec<String> = value
                .split(',')
                .map(|n| n.trim().to_ascii_uppercase())
                .filter(|n| !n.is_empty())
                .collect();
            match names.as_slice() {
                [name]
                    if name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') =>
                {
                    c.listener_settings.controller = Some(name.clone());
                    Ok(())
                }
                [_] => Err(invalid(key, format!("`{value}` is not a listener name"))),
                _ => Err(invalid(key, "name exactly one listener")),
            }
        },
    },
    Setting {
        name: "sasl.mechanism.controller.protocol",
        aliases: &[],
        doc: "the SASL mechanism of connections to the controllers when the controller listener is SASL: PLAIN (SCRAM's credentials live in the metadata the controllers replicate) (default PLAIN)",
        set: |c, key, value| {
            c.security.controller_mechanism = security::Mechanism::parse(value)
                .ok_or_else(|| invalid(key, format!("`{value}`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")))?;
            Ok(())
        },
    },
    Setting {
        name: "sasl.enabled.mechanisms",
        aliases: &[],
        doc: "SASL mechanisms served on SASL listeners, comma-separated (default PLAIN,SCRAM-SHA-256,SCRAM-SHA-512)",
        set: |c, key, value| {
            c.security.sasl_mechanisms = security::parse_mechanisms(key, value)?;
            Ok(())
        },
    },
    Setting {
        name: "sasl.mechanism.inter.broker.protocol",
        aliases: &[],
        doc: "the SASL mechanism of the broker's own connections when the inter-broker listener is SASL_PLAINTEXT (default PLAIN)",
        set: |c, key, value| {
            c.security.inter_broker_mechanism = security::Mechanism::parse(value)
                .ok_or_else(|| invalid(key, format!("`{value}`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")))?;
            Ok(())
        },
    },
    Setting {
        name: "sluice.sasl.plain.users.file",
        aliases: &[],
        doc: "a file of user=password lines: PLAIN's users on every SASL listener, read at start (default none; per listener: listener.name.<name>.plain.sasl.jaas.config)",
        set: |c, key, value| {
            let users = security::read_plain_users(key, value)?;
            c.security.plain_users.insert(String::new(), users);
            Ok(())
        },
    },
    Setting {
        name: "connections.max.reauth.ms",
        aliases: &[],
        doc: "how long a SASL session lasts before the client must authenticate again; 0 for ever (default 0)",
        set: |c, key, value| {
            c.security.max_reauth_ms = parse_num::<i64>(key, value)?.max(0);
            Ok(())
        },
    },
    Setting {
        name: "connection.failed.authentication.delay.ms",
        aliases: &[],
        doc: "how long the answer to a failed authentication is held before the connection closes (default 100)",
        set: field!(security.failed_authentication_delay_ms, parse_num),
    },
    Setting {
        name: "sasl.server.max.receive.size",
        aliases: &[],
        doc: "largest SASL token accepted before authentication, in bytes (default 524288)",
        set: field!(security.sasl_max_receive_size, parse_at_least_one),
    },
    Setting {
        name: "ssl.keystore.location",
        aliases: &[],
        doc: "PEM file with the certificate chain and private key of the SSL and SASL_SSL listeners, reloaded when it changes; unset by default",
        set: |c, _, value| {
            c.security.ssl.keystore = Some(PathBuf::from(value.trim()));
            Ok(())
        },
    },
    Setting {
        name: "ssl.keystore.type",
        aliases: &[],
        doc: "format of the key store: only PEM (default PEM)",
        set: only_pem,
    },
    Setting {
        name: "ssl.truststore.type",
        aliases: &[],
        doc: "format of the trust store: only PEM (default PEM)",
        set: only_pem,
    },
    Setting {
        name: "ssl.truststore.location",
        aliases: &[],
        doc: "PEM file of the certificates that sign client certificates, for ssl.client.auth; unset by default",
        set: |c, _, value| {
            c.security.ssl.truststore = Some(PathBuf::from(value.trim()));
            Ok(())
        },
    },
    Setting {
        name: "ssl.client.auth",
        aliases: &[],
        doc: "client certificates on TLS listeners: none, requested or required (default none)",
        set: |c, key, value| {
            c.security.ssl.client_auth = match value.trim() {
                "none" => security::ClientAuth::None,
                "requested" => security::ClientAuth::Requested,
                "required" => security::ClientAuth::Required,
                other => return Err(invalid(key, format!("`{other}`: expected none, requested or required"))),
            };
            Ok(())
        },
    },
    Setting {
        name: "ssl.enabled.protocols",
        aliases: &[],
        doc: "TLS versions served, comma-separated (default TLSv1.2,TLSv1.3)",
        set: |c, key, value| {
            let (mut tls12, mut tls13) = (false, false);
            for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                match v {
                    "TLSv1.2" => tls12 = true,
                    "TLSv1.3" => tls13 = true,
                    other => return Err(invalid(key, format!("`{other}`: TLSv1.2 and TLSv1.3 are served"))),
                }
            }
            c.security.ssl.tls12 = tls12;
            c.security.ssl.tls13 = tls13;
            Ok(())
        },
    },
    Setting {
        name: "ssl.principal.mapping.rules",
        aliases: &[],
        doc: "how a client certificate's subject becomes the principal: RULE:pattern/replacement/[LU] and DEFAULT, comma-separated (default DEFAULT)",
        set: |c, key, value| {
            c.security.ssl.principal_rules = security::parse_principal_rules(key, value)?;
            Ok(())
        },
    },
    Setting {
        name: "sluice.ssl.keystore.reload.check.ms",
        aliases: &[],
        doc: "at most how often a new connection looks for a changed key store file (default 10000)",
        set: |c, key, value| {
            c.security.ssl.reload_check = std::time::Duration::from_millis(parse_num(key, value)?);
            Ok(())
        },
    },
    Setting {
        name: "sluice.ssl.handshake.timeout.ms",
        aliases: &[],
        doc: "a TLS handshake not finished by then closes the connection (default 10000)",
        set: |c, key, value| {
            c.security.ssl.handshake_timeout = std::time::Duration::from_millis(parse_at_least_one(key, value)?);
            Ok(())
        },
    },
    Setting {
        name: "ssl.endpoint.identification.algorithm",
        aliases: &[],
        doc: "https checks that another broker's or controller's certificate names the host connected to; empty checks only its signature and dates (default https)",
        set: |c, key, value| {
            c.security.ssl.verify_hostname = match value.trim() {
                "" => false,
                v if v.eq_ignore_ascii_case("https") => true,
                other => return Err(invalid(key, format!("`{other}`: expected https or empty"))),
            };
            Ok(())
        },
    },
    Setting {
        name: "authorizer.class.name",
        aliases: &[],
        doc: "org.apache.kafka.metadata.authorizer.StandardAuthorizer (or kafka.security.authorizer.AclAuthorizer) enforces ACLs with Kafka's rules; empty allows everything (default empty)",
        set: |c, key, value| {
            let v = value.trim();
            c.security.authorizer.enabled = match v {
                "" => false,
                v if security::AUTHORIZERS.contains(&v) => true,
                other => {
                    return Err(invalid(
                        key,
                        format!("`{other}`: expected {} or empty", security::AUTHORIZERS.join(" or ")),
                    ));
                }
            };
            Ok(())
        },
    },
    Setting {
        name: "super.users",
        aliases: &[],
        doc: "principals allowed everything, separated by `;` (User:admin;User:ops); unset by default",
        set: |c, key, value| {
            let users: Vec<String> = value
                .split(';')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(bad) = users.iter().find(|u| !u.contains(':')) {
                return Err(invalid(key, format!("`{bad}` is not TYPE:NAME (User:admin)")));
            }
            c.security.authorizer.super_users = users;
            Ok(())
        },
    },
    Setting {
        name: "allow.everyone.if.no.acl.found",
        aliases: &[],
        doc: "with an authorizer, a resource no ACL covers is open to everyone (default false)",
        set: field!(security.authorizer.allow_if_no_acl, parse_bool),
    },
    Setting {
        name: "log.dirs",
        aliases: &["log.dir", "data.dir"],
        doc: "data directory (default ./sluice-data)",
        set: |c, _, value| {
            c.data_dir = PathBuf::from(value.trim());
            Ok(())
        },
    },
    Setting {
        name: "num.cores",
        aliases: &[],
        doc: "shards, one pinned thread each (default: all cores)",
        set: |c, key, value| {
            c.cores = Some(parse_at_least_one::<usize>(key, value)?);
            Ok(())
        },
    },
    Setting {
        name: "node.id",
        aliases: &["broker.id"],
        doc: "broker id (default 0)",
        set: field!(node_id, parse_num),
    },
    Setting {
        name: "cluster.id",
        aliases: &[],
        doc: "cluster id reported to clients (default sluice-cluster)",
        set: |c, _, value| {
            c.cluster_id = value.trim().to_string();
            Ok(())
        },
    },
    Setting {
        name: "num.partitions",
        aliases: &[],
        doc: "partitions of auto-created topics (default 1)",
        set: field!(num_partitions, parse_at_least_one::<i32>),
    },
    Setting {
        name: "auto.create.topics.enable",
        aliases: &[],
        doc: "create unknown topics on Metadata/Produce (default true)",
        set: field!(auto_create_topics, parse_bool),
    },
    Setting {
        name: "message.max.bytes",
        aliases: &[],
        doc: "largest record batch (default 1048588)",
        set: field!(message_max_bytes, parse_num),
    },
    Setting {
        name: "log.segment.bytes",
        aliases: &[],
        doc: "segment size before a roll (default 1 GiB)",
        set: field!(log_segment_bytes, parse_num),
    },
    Setting {
        name: "log.roll.ms",
        aliases: &[],
        doc: "segment age before a roll (default 7 days)",
        set: field!(log_roll_ms, parse_num),
    },
    Setting {
        name: "log.retention.ms",
        aliases: &[],
        doc: "delete segments older than this, -1 = never (default 7 days)",
        set: field!(log_retention_ms, parse_num),
    },
    Setting {
        name: "log.retention.hours",
        aliases: &[],
        doc: "log.retention.ms in hours; the one set last wins (default 168)",
        set: |c, key, value| {
            c.log_retention_ms = parse_num::<i64>(key, value)?.saturating_mul(3_600_000);
            Ok(())
        },
    },
    Setting {
        name: "log.retention.bytes",
        aliases: &[],
        doc: "delete oldest segments above this size, -1 = never (default -1)",
        set: field!(log_retention_bytes, parse_num),
    },
    Setting {
        name: "log.retention.check.interval.ms",
        aliases: &[],
        doc: "how often retention runs (default 300000)",
        set: |c, key, value| {
            c.log_retention_check_interval_ms = parse_num(key, value)?;
            if c.log_retention_check_interval_ms == 0 {
                return Err(invalid(key, "must be positive"));
            };
            Ok(())
        },
    },
    Setting {
        name: "log.flush.interval.ms",
        aliases: &[],
        doc: "fdatasync cadence for acks=0/1 data: unset = page cache only, 0 = every write (default unset)",
        set: |c, key, value| {
            let v = value.trim();
            c.log_flush_interval_ms = if v.is_empty() || v == "none" || v == "-1" {
                None
            } else {
                Some(parse_num(key, v)?)
            };
            Ok(())
        },
    },
    Setting {
        name: "socket.request.max.bytes",
        aliases: &[],
        doc: "largest request frame (default 104857600)",
        set: |c, key, value| {
            let n: u32 = parse_num(key, value)?;
            if n < 1024 || n > i32::MAX as u32 {
                return Err(invalid(key, "must be in [1024, 2147483647]"));
            }
            c.socket_request_max_bytes = n;
            Ok(())
        },
    },
    Setting {
        name: "max.connections",
        aliases: &[],
        doc: "connections across all shards (default 10000)",
        set: field!(max_connections, parse_num),
    },
    Setting {
        name: "queued.max.request.bytes",
        aliases: &[],
        doc: "request bytes in flight per shard before reads pause (default 268435456)",
        set: field!(queued_max_request_bytes, parse_num),
    },
    Setting {
        name: "max.inflight.requests.per.connection",
        aliases: &[],
        doc: "pipelined requests processed at once (default 32)",
        set: field!(max_inflight_requests_per_connection, parse_at_least_one::<usize>),
    },
    Setting {
        name: "fetch.max.bytes",
        aliases: &[],
        doc: "cap on one Fetch response (default 57671680)",
        set: field!(fetch_max_bytes, parse_num),
    },
    Setting {
        name: "sluice.fetch.max.wait.ms",
        aliases: &[],
        doc: "longest a Fetch long-polls, whatever it asks for (default 30000)",
        set: field!(fetch_max_wait_ms, parse_num),
    },
    Setting {
        name: "sluice.fetch.zero.copy",
        aliases: &[],
        doc: "splice log bytes to sockets (default true)",
        set: field!(fetch_zero_copy, parse_bool),
    },
    Setting {
        name: "sluice.shard.listeners",
        aliases: &[],
        doc: "each shard also accepts on a port of its own on every listener and clients see it as a broker of its own, id node.id x 1024 + shard, so they send each partition to the shard that owns it (default false)",
        set: field!(shard_listeners, parse_bool),
    },
    Setting {
        name: "sluice.shard.listeners.port.offset",
        aliases: &[],
        doc: "with sluice.shard.listeners, shard s of a listener on port P listens on P + offset + s; a listener on port 0 gives each shard a free port (default 100)",
        set: field!(shard_port_offset, parse_at_least_one),
    },
    Setting {
        name: "sluice.log.preallocate.bytes",
        aliases: &[],
        doc: "disk blocks a busy segment reserves ahead of its end, 0 = none (default 67108864)",
        set: field!(log_preallocate_bytes, parse_num),
    },
    Setting {
        name: "sluice.log.inline.write.bytes",
        aliases: &[],
        doc: "flush rounds up to this size are written by the shard thread, larger ones by io_uring; 0 = always io_uring (default 65536)",
        set: field!(log_inline_write_bytes, parse_num),
    },
    Setting {
        name: "sluice.log.writeback.bytes",
        aliases: &[],
        doc: "start a background fdatasync once this many bytes are written since the last, so a segment roll has little to sync; 0 = off (default 33554432)",
        set: field!(log_writeback_bytes, parse_num),
    },
    Setting {
        name: "max.request.partition.size.limit",
        aliases: &[],
        doc: "partitions in one DescribeTopicPartitions response (default 2000)",
        set: field!(max_request_partition_size_limit, parse_at_least_one::<usize>),
    },
    Setting {
        name: "sluice.max.partitions",
        aliases: &[],
        doc: "partitions of all topics together; more are refused with POLICY_VIOLATION (default 100000)",
        set: field!(max_partitions, parse_num),
    },
    Setting {
        name: "process.roles",
        aliases: &[],
        doc: "`broker,controller` (default) or `broker` (follows the voters of controller.quorum.voters): what this node runs",
        set: |c, key, value| {
            c.roles = Roles::parse(value).map_err(|e| invalid(key, e))?;
            Ok(())
        },
    },
    Setting {
        name: "controller.quorum.voters",
        aliases: &[],
        doc: "id@host:port of every controller quorum voter, comma-separated (default: this node alone)",
        set: |c, key, value| {
            c.quorum_voters = parse_voters(value).map_err(|e| invalid(key, e))?;
            Ok(())
        },
    },
    Setting {
        name: "broker.heartbeat.interval.ms",
        aliases: &[],
        doc: "how often a broker tells the controller it is alive (default 2000)",
        set: field!(broker_heartbeat_interval_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "broker.session.timeout.ms",
        aliases: &[],
        doc: "a broker without a heartbeat for this long is fenced (default 9000)",
        set: field!(broker_session_timeout_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "min.insync.replicas",
        aliases: &[],
        doc: "in-sync replicas an acks=all write needs; a topic may override it (default 1)",
        set: field!(min_insync_replicas, parse_at_least_one::<i32>),
    },
    Setting {
        name: "replica.lag.time.max.ms",
        aliases: &[],
        doc: "a follower that has not caught up with its leader for this long leaves the ISR (default 30000)",
        set: field!(replica_lag_time_max_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "replica.fetch.wait.max.ms",
        aliases: &[],
        doc: "how long a follower's fetch waits at the leader for new data (default 500)",
        set: field!(replica_fetch_wait_max_ms, parse_num),
    },
    Setting {
        name: "replica.fetch.max.bytes",
        aliases: &[],
        doc: "bytes per partition in one follower fetch (default 1048576)",
        set: field!(replica_fetch_max_bytes, parse_at_least_one::<u32>),
    },
    Setting {
        name: "replica.fetch.response.max.bytes",
        aliases: &[],
        doc: "bytes in one follower fetch answer (default 10485760)",
        set: field!(replica_fetch_response_max_bytes, parse_at_least_one::<u32>),
    },
    Setting {
        name: "replica.fetch.backoff.ms",
        aliases: &[],
        doc: "a follower's pause after a failed fetch (default 1000)",
        set: field!(replica_fetch_backoff_ms, parse_num),
    },
    Setting {
        name: "replica.high.watermark.checkpoint.interval.ms",
        aliases: &[],
        doc: "how often each replica writes its high watermark to disk (default 5000)",
        set: field!(replica_hw_checkpoint_interval_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "sluice.replica.fsync.before.ack",
        aliases: &[],
        doc: "acks=all answers only once every in-sync replica has fdatasynced the batch (default false)",
        set: field!(replica_fsync_before_ack, parse_bool),
    },
    Setting {
        name: "sluice.replica.direct.writes",
        aliases: &[],
        doc: "a follower writes what it fetches past the page cache with O_DIRECT, where the filesystem has it (default true)",
        set: field!(replica_direct_writes, parse_bool),
    },
    Setting {
        name: "sluice.replica.direct.writes.min.bytes",
        aliases: &[],
        doc: "8 follower writes in a row of at least this many bytes switch it to O_DIRECT; 32 smaller ones in a row switch it back (default 65536; 0: always)",
        set: field!(replica_direct_writes_min_bytes, parse_num),
    },
    Setting {
        name: "sluice.admin.listen",
        aliases: &[],
        doc: "HTTP listener for operators: /metrics, /health, /ready (default 127.0.0.1:9644; empty turns it off)",
        set: |c, key, value| {
            c.admin_listen_chosen = true;
            c.admin_listen = if value.trim().is_empty() {
                None
            } else {
                let (host, port) = parse_host_port(key, value)?;
                let host = match host.as_str() {
                    "" => "0.0.0.0".to_string(),
                    "localhost" => "127.0.0.1".to_string(),
                    h if h.contains(':') => format!("[{h}]"),
                    h => h.to_string(),
                };
                Some(
                    format!("{host}:{port}")
                        .parse()
                        .map_err(|e: std::net::AddrParseError| invalid(key, e.to_string()))?,
                )
            };
            Ok(())
        },
    },
    Setting {
        name: "sluice.outbound.address",
        aliases: &[],
        doc: "local IP address connections to other nodes start from (default: the system's choice)",
        set: |c, key, value| {
            c.outbound_address = if value.is_empty() {
                None
            } else {
                Some(
                    value
                        .parse()
                        .map_err(|_| invalid(key, format!("`{value}` is not an IP address")))?,
                )
            };
            Ok(())
        },
    },
    Setting {
        name: "sluice.unsafe.ack.before.replication",
        aliases: &[],
        doc: "BROKEN ON PURPOSE, for testing the history checker: acks=all answers before the ISR has the batch; only in builds with the cargo feature test-switches, refused by release builds (default false)",
        set: |c, key, value| {
            if !cfg!(feature = "test-switches") {
                return Err(invalid(
                    key,
                    "exists only in test builds (cargo feature `test-switches`), never in a release",
                ));
            }
            c.unsafe_ack_before_replication = parse_bool(key, value)?;
            Ok(())
        },
    },
    Setting {
        name: "unclean.leader.election.enable",
        aliases: &[],
        doc: "elect a replica outside the ISR when no ISR member is alive (default false)",
        set: field!(unclean_leader_election, parse_bool),
    },
    Setting {
        name: "default.replication.factor",
        aliases: &[],
        doc: "replicas of a topic created without a replication factor (default 1)",
        set: field!(default_replication_factor, parse_at_least_one::<i16>),
    },
    Setting {
        name: "sluice.metadata.snapshot.records",
        aliases: &[],
        doc: "metadata log entries between snapshots of the cluster image (default 1000)",
        set: field!(metadata_snapshot_records, parse_at_least_one::<u64>),
    },
    Setting {
        name: "sluice.controller.write.timeout.ms",
        aliases: &[],
        doc: "how long a metadata change waits for the controller quorum to commit it (default 30000)",
        set: field!(controller_write_timeout_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "sluice.max.open.files",
        aliases: &[],
        doc: "files partition logs keep open; idle ones close first, 0 = half the open-file limit (default 0)",
        set: field!(max_open_files, parse_num),
    },
    Setting {
        name: "sluice.storage.min.free.bytes",
        aliases: &[],
        doc: "free disk space below which produce is refused, 0 = none (default 1073741824)",
        set: field!(storage_min_free_bytes, parse_num),
    },
    Setting {
        name: "sluice.shutdown.drain.ms",
        aliases: &[],
        doc: "how long shutdown waits for in-flight requests (default 10000)",
        set: field!(shutdown_drain_ms, parse_num),
    },
    Setting {
        name: "sluice.shutdown.close.ms",
        aliases: &[],
        doc: "how long shutdown then waits for logs to close before exiting anyway (default 30000)",
        set: field!(shutdown_close_ms, parse_num),
    },
    Setting {
        name: "sluice.broker.fence.when.gone",
        aliases: &[],
        doc: "fence a broker once its heartbeat connection closed and its address refuses connections, before its session ends (default true)",
        set: field!(fence_gone_brokers, parse_bool),
    },
    Setting {
        name: "sluice.shutdown.linger.ms",
        aliases: &[],
        doc: "in a cluster, how long a broker keeps answering after handing its leadership over, pointing clients to the new leaders (default 500)",
        set: field!(shutdown_linger_ms, parse_num),
    },
    Setting {
        name: "offsets.topic.num.partitions",
        aliases: &[],
        doc: "partitions of __consumer_offsets, fixed once created (default 50)",
        set: field!(groups.offsets_partitions, parse_at_least_one::<i32>),
    },
    Setting {
        name: "offsets.topic.segment.bytes",
        aliases: &[],
        doc: "segment size of __consumer_offsets (default 104857600)",
        set: field!(groups.offsets_segment_bytes, parse_num),
    },
    Setting {
        name: "offsets.topic.replication.factor",
        aliases: &[],
        doc: "replicas of __consumer_offsets, created once that many brokers are live (default 3, or the number of controller voters if fewer)",
        set: |c, key, value| {
            c.groups.offsets_replication_factor = Some(parse_at_least_one::<i16>(key, value)?);
            Ok(())
        },
    },
    Setting {
        name: "offsets.commit.timeout.ms",
        aliases: &[],
        doc: "how long an offset commit waits for the offsets partition's in-sync replicas (default 5000)",
        set: field!(groups.offsets_commit_timeout_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "transaction.state.log.num.partitions",
        aliases: &[],
        doc: "partitions of __transaction_state, fixed once it exists (default 50)",
        set: field!(transactions.log_partitions, parse_at_least_one::<i32>),
    },
    Setting {
        name: "transaction.state.log.replication.factor",
        aliases: &[],
        doc: "replicas of __transaction_state (default 3, or the number of controller voters if fewer)",
        set: |c, key, value| {
            c.transactions.log_replication_factor = Some(parse_at_least_one::<i16>(key, value)?);
            Ok(())
        },
    },
    Setting {
        name: "transaction.state.log.segment.bytes",
        aliases: &[],
        doc: "segment size of __transaction_state (default 104857600)",
        set: field!(transactions.log_segment_bytes, parse_at_least_one::<u64>),
    },
    Setting {
        name: "transaction.max.timeout.ms",
        aliases: &[],
        doc: "the longest transaction.timeout.ms a producer may ask for (default 900000)",
        set: field!(transactions.max_timeout_ms, parse_at_least_one::<i32>),
    },
    Setting {
        name: "transactional.id.expiration.ms",
        aliases: &[],
        doc: "how long a transactional id with no transaction is kept (default 604800000)",
        set: field!(transactions.id_expiration_ms, parse_at_least_one::<i64>),
    },
    Setting {
        name: "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        aliases: &[],
        doc: "how often transactions past their timeout are looked for and aborted (default 10000)",
        set: field!(transactions.abort_check_interval_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "transaction.remove.expired.transaction.cleanup.interval.ms",
        aliases: &[],
        doc: "how often expired transactional ids are looked for (default 3600000)",
        set: field!(transactions.expire_check_interval_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "sluice.transaction.marker.timeout.ms",
        aliases: &[],
        doc: "how long a transaction marker waits for a partition's in-sync replicas, and the coordinator for a leader's answer (default 30000)",
        set: field!(transactions.marker_timeout_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "sluice.transaction.busy.wait.ms",
        aliases: &[],
        doc: "how long a request for a transactional id waits for its markers or state write in flight before CONCURRENT_TRANSACTIONS (default 1000)",
        set: field!(transactions.busy_wait_ms, parse_num::<u64>),
    },
    Setting {
        name: "log.cleanup.policy",
        aliases: &[],
        doc: "cleanup.policy of topics without one: delete, compact or compact,delete (default delete)",
        set: |c, key, value| {
            c.cleaner.defaults.cleanup = sluice_metadata::topics::Cleanup::parse(value)
                .ok_or_else(|| invalid(key, "expected delete, compact or compact,delete"))?;
            Ok(())
        },
    },
    Setting {
        name: "log.cleaner.enable",
        aliases: &[],
        doc: "run the log cleaner for compacted topics (default true)",
        set: field!(cleaner.enable, parse_bool),
    },
    Setting {
        name: "log.cleaner.backoff.ms",
        aliases: &[],
        doc: "how often each shard looks for compacted logs to clean (default 15000)",
        set: field!(cleaner.backoff_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "log.cleaner.dedupe.buffer.size",
        aliases: &[],
        doc: "the cleaner's offset map per shard, in bytes (default 134217728)",
        set: field!(cleaner.dedupe_buffer_bytes, parse_at_least_one::<u64>),
    },
    Setting {
        name: "log.cleaner.io.max.bytes.per.second",
        aliases: &[],
        doc: "what one shard's cleaner reads and writes per second, at most (default unlimited)",
        set: |c, key, value| {
            let v: f64 = parse_num(key, value)?;
            if v.is_nan() || v <= 0.0 {
                return Err(invalid(key, "must be positive"));
            }
            c.cleaner.io_max_bytes_per_second = v;
            Ok(())
        },
    },
    Setting {
        name: "log.cleaner.min.cleanable.ratio",
        aliases: &[],
        doc: "min.cleanable.dirty.ratio of topics without one (default 0.5)",
        set: |c, key, value| {
            let v: f64 = parse_num(key, value)?;
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, "expected a number from 0 to 1"));
            }
            c.cleaner.defaults.min_cleanable_ratio = v;
            Ok(())
        },
    },
    Setting {
        name: "log.cleaner.min.compaction.lag.ms",
        aliases: &[],
        doc: "min.compaction.lag.ms of topics without one (default 0)",
        set: field!(cleaner.defaults.min_lag_ms, parse_num::<i64>),
    },
    Setting {
        name: "log.cleaner.max.compaction.lag.ms",
        aliases: &[],
        doc: "max.compaction.lag.ms of topics without one (default 9223372036854775807)",
        set: field!(cleaner.defaults.max_lag_ms, parse_at_least_one::<i64>),
    },
    Setting {
        name: "log.cleaner.delete.retention.ms",
        aliases: &[],
        doc: "delete.retention.ms of topics without one (default 86400000)",
        set: field!(cleaner.defaults.delete_retention_ms, parse_num::<i64>),
    },
    Setting {
        name: "offsets.retention.minutes",
        aliases: &[],
        doc: "how long an empty group keeps its offsets (default 10080)",
        set: |c, key, value| {
            c.groups.offsets_retention_ms = parse_at_least_one::<i64>(key, value)?.saturating_mul(60_000);
            Ok(())
        },
    },
    Setting {
        name: "offsets.retention.check.interval.ms",
        aliases: &[],
        doc: "how often expired offsets are removed (default 600000)",
        set: |c, key, value| {
            let n: u64 = parse_num(key, value)?;
            if n == 0 {
                return Err(invalid(key, "must be positive"));
            }
            c.groups.offsets_retention_check_interval_ms = n;
            Ok(())
        },
    },
    Setting {
        name: "offset.metadata.max.bytes",
        aliases: &[],
        doc: "longest offset commit metadata (default 4096)",
        set: field!(groups.offset_metadata_max_bytes, parse_num),
    },
    Setting {
        name: "group.min.session.timeout.ms",
        aliases: &[],
        doc: "shortest session timeout allowed (default 6000)",
        set: field!(groups.min_session_timeout_ms, parse_num),
    },
    Setting {
        name: "group.max.session.timeout.ms",
        aliases: &[],
        doc: "longest session timeout allowed (default 1800000)",
        set: field!(groups.max_session_timeout_ms, parse_num),
    },
    Setting {
        name: "group.initial.rebalance.delay.ms",
        aliases: &[],
        doc: "wait for more members before a new group's first rebalance (default 3000)",
        set: |c, key, value| {
            let n: i32 = parse_num(key, value)?;
            if n < 0 {
                return Err(invalid(key, "must not be negative"));
            }
            c.groups.initial_rebalance_delay_ms = n;
            Ok(())
        },
    },
    Setting {
        name: "group.max.size",
        aliases: &[],
        doc: "members per group (default 2147483647)",
        set: field!(groups.max_size, parse_at_least_one::<usize>),
    },
    Setting {
        name: "group.coordinator.rebalance.protocols",
        aliases: &[],
        doc: "group protocols served: classic, and consumer for KIP-848 groups (default classic,consumer)",
        set: |c, key, value| {
            let mut consumer = false;
            for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match p {
                    "classic" => {}
                    "consumer" => consumer = true,
                    other => return Err(invalid(key, format!("unknown protocol `{other}` (classic, consumer)"))),
                }
            }
            if !value.split(',').any(|p| p.trim() == "classic") {
                return Err(invalid(key, "must include classic"));
            }
            c.groups.consumer_protocol = consumer;
            Ok(())
        },
    },
    Setting {
        name: "group.consumer.session.timeout.ms",
        aliases: &[],
        doc: "a consumer-protocol member without a heartbeat for this long is removed (default 45000)",
        set: field!(groups.consumer_session_timeout_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "group.consumer.heartbeat.interval.ms",
        aliases: &[],
        doc: "how often consumer-protocol members heartbeat (default 5000)",
        set: field!(groups.consumer_heartbeat_interval_ms, parse_at_least_one::<u64>),
    },
    Setting {
        name: "group.consumer.max.size",
        aliases: &[],
        doc: "members per consumer-protocol group (default 2147483647)",
        set: field!(groups.consumer_max_size, parse_at_least_one::<usize>),
    },
    Setting {
        name: "group.consumer.assignors",
        aliases: &[],
        doc: "server-side assignors members may choose, the first the default: uniform, range (default uniform,range)",
        set: |c, key, value| {
            let names: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() {
                return Err(invalid(key, "needs at least one assignor"));
            }
            if let Some(bad) = names.iter().find(|n| !CONSUMER_ASSIGNORS.contains(&n.as_str())) {
                return Err(invalid(key, format!("unknown assignor `{bad}` (uniform, range)")));
            }
            c.groups.consumer_assignors = names;
            Ok(())
        },
    },
];

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A count or duration that must be at least 1.
fn parse_at_least_one<T: std::str::FromStr + PartialOrd + From<u8>>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let n: T = parse_num(key, value)?;
    if n < T::from(1) {
        return Err(invalid(key, "must be at least 1"));
    }
    Ok(n)
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| invalid(key, e.to_string()))
}

/// `ssl.keystore.type` and `ssl.truststore.type`: PEM is the one format
/// read.
fn only_pem(_: &mut BrokerConfig, key: &str, value: &str) -> Result<(), ConfigError> {
    match value.trim() {
        "PEM" => Ok(()),
        other => Err(invalid(
            key,
            format!("`{other}`: only PEM files are read (convert JKS or PKCS12 with keytool or openssl)"),
        )),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(invalid(key, format!("expected true or false, got `{other}`"))),
    }
}

/// The default `--help-settings` documents in a setting's description:
/// the text of its `(default ...)` or `(default: ...)`, up to a `;`.
pub fn documented_default(doc: &str) -> Option<&str> {
    let start = doc.find("(default")? + "(default".len();
    let rest = &doc[start..];
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let len = rest.find([')', ';'])?;
    Some(rest[..len].trim())
}

/// The environment variable of setting `key` (see
/// [`BrokerConfig::load_env`]).
pub fn env_name(key: &str) -> String {
    let bare = key.strip_prefix("sluice.").unwrap_or(key);
    format!("SLUICE_{}", bare.to_ascii_uppercase().replace(['.', '-'], "_"))
}

/// Splits `host:port`, accepting a `PLAINTEXT://` prefix as Kafka writes it.
fn parse_host_port(key: &str, value: &str) -> Result<(String, u16), ConfigError> {
    let v = value.trim();
    let v = v.split_once("://").map_or(v, |(_, rest)| rest);
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, format!("expected host:port, got `{value}`")))?;
    let port = parse_num::<u16>(key, port)?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

impl BrokerConfig {
    /// Applies one setting by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        // Kafka's per-listener JAAS settings: PLAIN's users, and the
        // broker's own login for the listener's mechanism.
        if let Some((listener, mechanism)) = key
            .strip_prefix("listener.name.")
            .and_then(|k| k.strip_suffix(".sasl.jaas.config"))
            .and_then(|k| k.split_once('.'))
        {
            let mechanism = security::Mechanism::parse(&mechanism.to_ascii_uppercase()).ok_or_else(|| {
                invalid(
                    key,
                    format!("`{mechanism}` is not plain, scram-sha-256 or scram-sha-512"),
                )
            })?;
            let listener = listener.to_ascii_uppercase();
            if mechanism == security::Mechanism::Plain {
                let users = security::parse_plain_jaas(key, value)?;
                self.security.plain_users.insert(listener.clone(), users);
            }
            if let Some(login) = security::parse_jaas_login(key, value, mechanism)? {
                self.security
                    .logins
                    .entry(listener)
                    .or_default()
                    .insert(mechanism, login);
            }
            return Ok(());
        }
        let setting = SETTINGS
            .iter()
            .find(|s| s.name == key || s.aliases.contains(&key))
            .ok_or_else(|| ConfigError::Unknown(key.to_string()))?;
        (setting.set)(self, key, value)
    }

    /// Applies a TOML file. Keys may be written quoted (`"num.partitions" =
    /// 3`) or as TOML's dotted keys (`num.partitions = 3`); both mean the
    /// Kafka setting of that name.
    /// Applies the settings of a TOML file; returns them as applied
    /// (name, value), in name order.
    pub fn load_toml(&mut self, path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let mut flat = BTreeMap::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (k, v) in &flat {
            self.set(k, v)?;
        }
        Ok(flat.into_iter().collect())
    }

    /// Applies the settings found in `vars` (the process environment, as
    /// `std::env::vars()` gives it): `SLUICE_` and the setting's name in
    /// upper case with dots as underscores (`SLUICE_NUM_PARTITIONS=3`);
    /// a `sluice.` setting drops its own prefix (`SLUICE_ADMIN_LISTEN`).
    /// Other `SLUICE_` variables are not settings and are left alone.
    /// Returns the settings applied (name, value), in name order.
    pub fn load_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let by_var: BTreeMap<String, &str> = SETTINGS.iter().map(|s| (env_name(s.name), s.name)).collect();
        let mut found: BTreeMap<&str, String> = BTreeMap::new();
        for (var, value) in vars {
            if let Some(key) = by_var.get(&var) {
                found.insert(key, value);
            }
        }
        for (key, value) in &found {
            self.set(key, value).map_err(|e| match e {
                ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                    key: format!("{key} (from {})", env_name(&key)),
                    reason,
                },
                other => other,
            })?;
        }
        Ok(found.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// Fills in derived values and checks cross-setting constraints.
    pub fn finish(&mut self) -> Result<(), ConfigError> {
        self.listeners = listeners::resolve(&self.listener_settings)?;
        self.controller_listener = listeners::resolve_controller(&self.listener_settings)?;
        self.security.check(&self.listeners, &self.controller_listener)?;
        self.security.inter_broker = self.security.inter_broker_login(&self.listeners);
        self.security.controller_login = self.security.controller_login(&self.controller_listener);
        self.check_shard_listeners()?;
        if u64::from(self.socket_request_max_bytes) > self.queued_max_request_bytes {
            return Err(invalid(
                "queued.max.request.bytes",
                "must be at least socket.request.max.bytes, or a maximal request could never be read",
            ));
        }
        self.default_log_config()
            .validate()
            .map_err(|e| invalid("log.*", e.to_string()))?;
        if !self.quorum_voters.is_empty() {
            let ids: std::collections::BTreeSet<i32> = self.quorum_voters.iter().map(|(id, _)| *id).collect();
            if ids.len() != self.quorum_voters.len() {
                return Err(invalid("controller.quorum.voters", "names a voter id twice"));
            }
            let listed = ids.contains(&self.node_id);
            if self.roles.controller && !listed {
                return Err(invalid(
                    "controller.quorum.voters",
                    format!(
                        "node.id {} runs a controller but is not in the voter list",
                        self.node_id
                    ),
                ));
            }
            if !self.roles.controller && listed {
                return Err(invalid(
                    "process.roles",
                    format!(
                        "node.id {} is a voter but process.roles has no `controller`",
                        self.node_id
                    ),
                ));
            }
        }
        if !self.roles.controller && self.quorum_voters.is_empty() {
            return Err(invalid(
                "process.roles",
                "a broker-only node needs controller.quorum.voters to find the controllers",
            ));
        }
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            return Err(invalid(
                "broker.heartbeat.interval.ms",
                "must be below broker.session.timeout.ms",
            ));
        }
        let g = &self.groups;
        if g.min_session_timeout_ms < 1 || g.min_session_timeout_ms > g.max_session_timeout_ms {
            return Err(invalid(
                "group.min.session.timeout.ms",
                "must be positive and at most group.max.session.timeout.ms",
            ));
        }
        if g.consumer_heartbeat_interval_ms >= g.consumer_session_timeout_ms {
            return Err(invalid(
                "group.consumer.heartbeat.interval.ms",
                "must be below group.consumer.session.timeout.ms",
            ));
        }
        Ok(())
    }

    /// The listener other brokers connect to; its advertised address is
    /// the one this broker registers.
    pub fn inter_broker(&self) -> &Listener {
        assert!(
            !self.listeners.is_empty(),
            "a resolved config has at least one listener"
        );
        &self.listeners[0]
    }

    /// The shard endpoints' checks: ids that fit (node × 1024 + shard)
    /// and ports that exist.
    fn check_shard_listeners(&self) -> Result<(), ConfigError> {
        if !self.shard_listeners {
            return Ok(());
        }
        if self.node_id > i32::MAX / SHARD_ID_STRIDE - 1 {
            return Err(invalid(
                "node.id",
                format!(
                    "with sluice.shard.listeners a node id is at most {} (its shards' ids are node.id x {SHARD_ID_STRIDE} + shard)",
                    i32::MAX / SHARD_ID_STRIDE - 1
                ),
            ));
        }
        if self.shard_count() > SHARD_ID_STRIDE as usize {
            return Err(invalid(
                "sluice.shard.listeners",
                format!("at most {SHARD_ID_STRIDE} shards have ids of their own"),
            ));
        }
        for l in &self.listeners {
            let last = u32::from(l.addr.port()) + u32::from(self.shard_port_offset) + self.shard_count() as u32;
            if l.addr.port() != 0 && last > u32::from(u16::MAX) {
                return Err(invalid(
                    "sluice.shard.listeners.port.offset",
                    format!("listener `{}`'s shard ports would pass 65535", l.name),
                ));
            }
        }
        Ok(())
    }

    /// The number of shards to run.
    pub fn shard_count(&self) -> usize {
        self.cores
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Log settings of a topic with no overrides.
    pub fn default_log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_roll_ms,
            retention_ms: u64::try_from(self.log_retention_ms).ok(),
            retention_bytes: u64::try_from(self.log_retention_bytes).ok(),
            max_batch_bytes: self.message_max_bytes,
            flush: FlushPolicy::from_interval_ms(self.log_flush_interval_ms.map_or(-1, |ms| ms as i64)),
            preallocate_bytes: self.log_preallocate_bytes,
            inline_write_bytes: self.log_inline_write_bytes,
            writeback_bytes: self.log_writeback_bytes,
            direct_write_min_bytes: self.replica_direct_writes_min_bytes,
            ..LogConfig::default()
        }
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn documented_defaults_are_the_defaults() {
        // Setting a documented default that the parser takes as a value
        // must change nothing; descriptions ("7 days", "all cores") are
        // not values and are skipped.
        let plain = format!("{:?}", BrokerConfig::default());
        let mut checked = 0;
        for &Setting { name: key, doc, .. } in SETTINGS {
            let Some(value) = documented_default(doc) else { continue };
            let mut c = BrokerConfig::default();
            if c.set(key, value).is_err() {
                continue;
            }
            c.admin_listen_chosen = false;
            assert_eq!(format!("{c:?}"), plain, "`{key}` documents default `{value}`");
            checked += 1;
        }
        assert!(checked > 40, "only {checked} defaults checked");
    }

    #[test]
    fn every_name_sets_one_setting_and_an_alias_sets_what_its_name_does() {
        let mut seen = std::collections::BTreeSet::new();
        for s in SETTINGS {
            for n in std::iter::once(&s.name).chain(s.aliases) {
                assert!(seen.insert(*n), "`{n}` names two settings");
            }
            for alias in s.aliases {
                let value = match s.name {
                    "listeners" | "advertised.listeners" => "10.1.2.3:9093",
                    "log.dirs" => "/var/lib/sluice",
                    _ => "7",
                };
                let (mut by_name, mut by_alias) = (BrokerConfig::default(), BrokerConfig::default());
                by_name.set(s.name, value).unwrap();
                by_alias.set(alias, value).unwrap();
                assert_eq!(
                    format!("{by_name:?}"),
                    format!("{by_alias:?}"),
                    "{alias} and {}",
                    s.name
                );
                assert_ne!(
                    format!("{by_name:?}"),
                    format!("{:?}", BrokerConfig::default()),
                    "{}",
                    s.name
                );
            }
        }
        assert!(matches!(
            BrokerConfig::default().set("no.such.setting", "1"),
            Err(ConfigError::Unknown(_))
        ));
    }

    #[test]
    #[cfg(not(feature = "test-switches"))]
    fn a_release_build_refuses_the_switch_that_breaks_acks_all() {
        let mut c = BrokerConfig::default();
        let e = c
            .set("sluice.unsafe.ack.before.replication", "true")
            .expect_err("refused without the test-switches feature");
        assert!(e.to_string().contains("test-switches"), "{e}");
        assert!(!c.unsafe_ack_before_replication);
    }

    #[test]
    fn settings_come_from_sluice_environment_variables() {
        // Every setting has its own variable, and none is taken by the
        // tools' own variables.
        let names: std::collections::BTreeSet<String> = SETTINGS.iter().map(|s| env_name(s.name)).collect();
        assert_eq!(names.len(), SETTINGS.len());
        assert!(!names.contains("SLUICE_BIN") && !names.contains("SLUICE_BROKERS"));
        assert_eq!(env_name("num.partitions"), "SLUICE_NUM_PARTITIONS");
        assert_eq!(env_name("sluice.admin.listen"), "SLUICE_ADMIN_LISTEN");

        let mut c = BrokerConfig::default();
        let vars = [
            ("SLUICE_NUM_PARTITIONS", "6"),
            ("SLUICE_ADMIN_LISTEN", ""),
            ("SLUICE_BIN", "/not/a/setting"),
            ("NUM_PARTITIONS", "9"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let applied = c.load_env(vars).unwrap_or_default();
        let keys: Vec<&str> = applied.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, vec!["num.partitions", "sluice.admin.listen"]);
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.admin_listen, None);

        let bad = [("SLUICE_NUM_PARTITIONS".to_string(), "many".to_string())];
        let e = BrokerConfig::default().load_env(bad).unwrap_err().to_string();
        assert!(e.contains("SLUICE_NUM_PARTITIONS"), "{e}");
    }

    use super::*;

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let mut c = BrokerConfig::default();
        c.finish().unwrap();
        assert_eq!(c.inter_broker().addr.to_string(), "127.0.0.1:9092");
        assert_eq!(
            (c.inter_broker().name.as_str(), c.inter_broker().protocol),
            ("PLAINTEXT", SecurityProtocol::Plaintext)
        );
        assert_eq!(
            (
                c.inter_broker().advertised_host.as_str(),
                c.inter_broker().advertised_port
            ),
            ("127.0.0.1", 9092)
        );
        assert_eq!(c.data_dir, PathBuf::from("./sluice-data"));
        assert_eq!(c.socket_request_max_bytes, 100 * 1024 * 1024);
        assert_eq!(c.default_log_config().flush, FlushPolicy::Never);
    }

    #[test]
    fn toml_accepts_dotted_and_quoted_kafka_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "num.partitions = 6\n\"log.retention.ms\" = -1\nlisteners = \"PLAINTEXT://0.0.0.0:19092\"\n\
             log.flush.interval.ms = 0\nauto.create.topics.enable = false\n",
        )
        .unwrap();
        let mut c = BrokerConfig::default();
        c.load_toml(&path).unwrap();
        c.finish().unwrap();
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.default_log_config().retention_ms, None);
        assert_eq!(c.inter_broker().addr.port(), 19092);
        assert_eq!(c.inter_broker().advertised_host, "127.0.0.1");
        assert!(!c.auto_create_topics);
        assert_eq!(c.default_log_config().flush, FlushPolicy::Always);
    }

    #[test]
    fn unknown_and_invalid_settings_are_errors() {
        let mut c = BrokerConfig::default();
        assert!(matches!(c.set("no.such.thing", "1"), Err(ConfigError::Unknown(_))));
        assert!(matches!(c.set("num.partitions", "0"), Err(ConfigError::Invalid { .. })));
        assert!(matches!(
            c.set("message.max.bytes", "lots"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(c.set("listeners", "nohost"), Err(ConfigError::Invalid { .. })));
        c.set("queued.max.request.bytes", "10").unwrap();
        assert!(c.finish().is_err());
    }
}
