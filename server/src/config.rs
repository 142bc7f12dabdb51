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
    /// `listeners`: address every shard binds with SO_REUSEPORT.
    pub listen: SocketAddr,
    /// `advertised.listeners`: host and port written into Metadata; the
    /// listen address when unset.
    pub advertised_host: String,
    pub advertised_port: u16,
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
}

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
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_host: String::new(),
            advertised_port: 0,
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
        }
    }
}

/// The settings accepted in the TOML file and by `-o`, with their meaning.
pub const SETTINGS: &[(&str, &str)] = &[
    ("listeners", "host:port to listen on (default 127.0.0.1:9092)"),
    (
        "advertised.listeners",
        "host:port given to clients (default: the listen address)",
    ),
    ("log.dirs", "data directory (default ./sluice-data)"),
    ("num.cores", "shards, one pinned thread each (default: all cores)"),
    ("node.id", "broker id (default 0)"),
    ("cluster.id", "cluster id reported to clients (default sluice-cluster)"),
    ("num.partitions", "partitions of auto-created topics (default 1)"),
    (
        "auto.create.topics.enable",
        "create unknown topics on Metadata/Produce (default true)",
    ),
    ("message.max.bytes", "largest record batch (default 1048588)"),
    ("log.segment.bytes", "segment size before a roll (default 1 GiB)"),
    ("log.roll.ms", "segment age before a roll (default 7 days)"),
    (
        "log.retention.ms",
        "delete segments older than this, -1 = never (default 7 days)",
    ),
    (
        "log.retention.bytes",
        "delete oldest segments above this size, -1 = never (default -1)",
    ),
    (
        "log.retention.check.interval.ms",
        "how often retention runs (default 300000)",
    ),
    (
        "log.flush.interval.ms",
        "fdatasync cadence for acks=0/1 data: unset = page cache only, 0 = every write (default unset)",
    ),
    ("socket.request.max.bytes", "largest request frame (default 104857600)"),
    ("max.connections", "connections across all shards (default 10000)"),
    (
        "queued.max.request.bytes",
        "request bytes in flight per shard before reads pause (default 268435456)",
    ),
    (
        "max.inflight.requests.per.connection",
        "pipelined requests processed at once (default 32)",
    ),
    ("fetch.max.bytes", "cap on one Fetch response (default 57671680)"),
    (
        "sluice.fetch.max.wait.ms",
        "longest a Fetch long-polls, whatever it asks for (default 30000)",
    ),
    ("sluice.fetch.zero.copy", "splice log bytes to sockets (default true)"),
    (
        "sluice.log.preallocate.bytes",
        "disk blocks a busy segment reserves ahead of its end, 0 = none (default 67108864)",
    ),
    (
        "sluice.log.inline.write.bytes",
        "flush rounds up to this size are written by the shard thread, larger ones by io_uring; 0 = always io_uring (default 65536)",
    ),
    (
        "sluice.log.writeback.bytes",
        "start a background fdatasync once this many bytes are written since the last, so a segment roll has little to sync; 0 = off (default 33554432)",
    ),
    (
        "max.request.partition.size.limit",
        "partitions in one DescribeTopicPartitions response (default 2000)",
    ),
    (
        "sluice.max.partitions",
        "partitions of all topics together; more are refused with POLICY_VIOLATION (default 100000)",
    ),
    (
        "process.roles",
        "`broker,controller` (default) or `broker` (follows the voters of controller.quorum.voters): what this node runs",
    ),
    (
        "controller.quorum.voters",
        "id@host:port of every controller quorum voter, comma-separated (default: this node alone)",
    ),
    (
        "broker.heartbeat.interval.ms",
        "how often a broker tells the controller it is alive (default 2000)",
    ),
    (
        "broker.session.timeout.ms",
        "a broker without a heartbeat for this long is fenced (default 9000)",
    ),
    (
        "min.insync.replicas",
        "in-sync replicas an acks=all write needs; a topic may override it (default 1)",
    ),
    (
        "replica.lag.time.max.ms",
        "a follower that has not caught up with its leader for this long leaves the ISR (default 30000)",
    ),
    (
        "replica.fetch.wait.max.ms",
        "how long a follower's fetch waits at the leader for new data (default 500)",
    ),
    (
        "replica.fetch.max.bytes",
        "bytes per partition in one follower fetch (default 1048576)",
    ),
    (
        "replica.fetch.response.max.bytes",
        "bytes in one follower fetch answer (default 10485760)",
    ),
    (
        "replica.fetch.backoff.ms",
        "a follower's pause after a failed fetch (default 1000)",
    ),
    (
        "replica.high.watermark.checkpoint.interval.ms",
        "how often each replica writes its high watermark to disk (default 5000)",
    ),
    (
        "sluice.replica.fsync.before.ack",
        "acks=all answers only once every in-sync replica has fdatasynced the batch (default false)",
    ),
    (
        "sluice.replica.direct.writes",
        "a follower writes what it fetches past the page cache with O_DIRECT, where the filesystem has it (default true)",
    ),
    (
        "sluice.replica.direct.writes.min.bytes",
        "8 follower writes in a row of at least this many bytes switch it to O_DIRECT; 32 smaller ones in a row switch it back (default 65536; 0: always)",
    ),
    (
        "sluice.admin.listen",
        "HTTP listener for operators: /metrics, /health, /ready (default 127.0.0.1:9644; empty turns it off)",
    ),
    (
        "sluice.outbound.address",
        "local IP address connections to other nodes start from (default: the system's choice)",
    ),
    (
        "sluice.unsafe.ack.before.replication",
        "BROKEN ON PURPOSE, for testing the history checker: acks=all answers before the ISR has the batch; only in builds with the cargo feature test-switches, refused by release builds (default false)",
    ),
    (
        "unclean.leader.election.enable",
        "elect a replica outside the ISR when no ISR member is alive (default false)",
    ),
    (
        "default.replication.factor",
        "replicas of a topic created without a replication factor (default 1)",
    ),
    (
        "sluice.metadata.snapshot.records",
        "metadata log entries between snapshots of the cluster image (default 1000)",
    ),
    (
        "sluice.controller.write.timeout.ms",
        "how long a metadata change waits for the controller quorum to commit it (default 30000)",
    ),
    (
        "sluice.max.open.files",
        "files partition logs keep open; idle ones close first, 0 = half the open-file limit (default 0)",
    ),
    (
        "sluice.storage.min.free.bytes",
        "free disk space below which produce is refused, 0 = none (default 1073741824)",
    ),
    (
        "sluice.shutdown.drain.ms",
        "how long shutdown waits for in-flight requests (default 10000)",
    ),
    (
        "sluice.shutdown.close.ms",
        "how long shutdown then waits for logs to close before exiting anyway (default 30000)",
    ),
    (
        "sluice.broker.fence.when.gone",
        "fence a broker once its heartbeat connection closed and its address refuses connections, before its session ends (default true)",
    ),
    (
        "sluice.shutdown.linger.ms",
        "in a cluster, how long a broker keeps answering after handing its leadership over, pointing clients to the new leaders (default 500)",
    ),
    (
        "offsets.topic.num.partitions",
        "partitions of __consumer_offsets, fixed once created (default 50)",
    ),
    (
        "offsets.topic.segment.bytes",
        "segment size of __consumer_offsets (default 104857600)",
    ),
    (
        "offsets.topic.replication.factor",
        "replicas of __consumer_offsets, created once that many brokers are live (default 3, or the number of controller voters if fewer)",
    ),
    (
        "offsets.commit.timeout.ms",
        "how long an offset commit waits for the offsets partition's in-sync replicas (default 5000)",
    ),
    (
        "offsets.retention.minutes",
        "how long an empty group keeps its offsets (default 10080)",
    ),
    (
        "offsets.retention.check.interval.ms",
        "how often expired offsets are removed (default 600000)",
    ),
    (
        "offset.metadata.max.bytes",
        "longest offset commit metadata (default 4096)",
    ),
    (
        "group.min.session.timeout.ms",
        "shortest session timeout allowed (default 6000)",
    ),
    (
        "group.max.session.timeout.ms",
        "longest session timeout allowed (default 1800000)",
    ),
    (
        "group.initial.rebalance.delay.ms",
        "wait for more members before a new group's first rebalance (default 3000)",
    ),
    ("group.max.size", "members per group (default 2147483647)"),
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
        match key {
            "listeners" | "listen" => {
                let (host, port) = parse_host_port(key, value)?;
                let host = if host.is_empty() { "0.0.0.0".to_string() } else { host };
                let addr = if host == "localhost" {
                    "127.0.0.1".to_string()
                } else {
                    host
                };
                self.listen = format!("{}:{port}", if addr.contains(':') { format!("[{addr}]") } else { addr })
                    .parse()
                    .map_err(|e: std::net::AddrParseError| invalid(key, e.to_string()))?;
            }
            "advertised.listeners" | "advertised" => {
                let (host, port) = parse_host_port(key, value)?;
                self.advertised_host = host;
                self.advertised_port = port;
            }
            "log.dirs" | "log.dir" | "data.dir" => self.data_dir = PathBuf::from(value.trim()),
            "num.cores" => self.cores = Some(parse_at_least_one::<usize>(key, value)?),
            "node.id" | "broker.id" => self.node_id = parse_num(key, value)?,
            "cluster.id" => self.cluster_id = value.trim().to_string(),
            "num.partitions" => self.num_partitions = parse_at_least_one::<i32>(key, value)?,
            "auto.create.topics.enable" => self.auto_create_topics = parse_bool(key, value)?,
            "message.max.bytes" => self.message_max_bytes = parse_num(key, value)?,
            "log.segment.bytes" => self.log_segment_bytes = parse_num(key, value)?,
            "log.roll.ms" => self.log_roll_ms = parse_num(key, value)?,
            "log.retention.ms" => self.log_retention_ms = parse_num(key, value)?,
            "log.retention.hours" => self.log_retention_ms = parse_num::<i64>(key, value)?.saturating_mul(3_600_000),
            "log.retention.bytes" => self.log_retention_bytes = parse_num(key, value)?,
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval_ms = parse_num(key, value)?;
                if self.log_retention_check_interval_ms == 0 {
                    return Err(invalid(key, "must be positive"));
                }
            }
            "log.flush.interval.ms" => {
                let v = value.trim();
                self.log_flush_interval_ms = if v.is_empty() || v == "none" || v == "-1" {
                    None
                } else {
                    Some(parse_num(key, v)?)
                };
            }
            "socket.request.max.bytes" => {
                let n: u32 = parse_num(key, value)?;
                if n < 1024 || n > i32::MAX as u32 {
                    return Err(invalid(key, "must be in [1024, 2147483647]"));
                }
                self.socket_request_max_bytes = n;
            }
            "max.connections" => self.max_connections = parse_num(key, value)?,
            "queued.max.request.bytes" => self.queued_max_request_bytes = parse_num(key, value)?,
            "max.inflight.requests.per.connection" => {
                self.max_inflight_requests_per_connection = parse_at_least_one::<usize>(key, value)?
            }
            "fetch.max.bytes" => self.fetch_max_bytes = parse_num(key, value)?,
            "sluice.fetch.max.wait.ms" => self.fetch_max_wait_ms = parse_num(key, value)?,
            "sluice.fetch.zero.copy" => self.fetch_zero_copy = parse_bool(key, value)?,
            "sluice.log.preallocate.bytes" => self.log_preallocate_bytes = parse_num(key, value)?,
            "sluice.log.inline.write.bytes" => self.log_inline_write_bytes = parse_num(key, value)?,
            "sluice.log.writeback.bytes" => self.log_writeback_bytes = parse_num(key, value)?,
            "max.request.partition.size.limit" => {
                self.max_request_partition_size_limit = parse_at_least_one::<usize>(key, value)?
            }
            "sluice.max.partitions" => self.max_partitions = parse_num(key, value)?,
            "sluice.max.open.files" => self.max_open_files = parse_num(key, value)?,
            "default.replication.factor" => self.default_replication_factor = parse_at_least_one::<i16>(key, value)?,
            "process.roles" => self.roles = Roles::parse(value).map_err(|e| invalid(key, e))?,
            "controller.quorum.voters" => self.quorum_voters = parse_voters(value).map_err(|e| invalid(key, e))?,
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = parse_at_least_one::<u64>(key, value)?
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = parse_at_least_one::<u64>(key, value)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_at_least_one::<i32>(key, value)?,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = parse_at_least_one::<u64>(key, value)?,
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms = parse_num(key, value)?,
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes = parse_at_least_one::<u32>(key, value)?,
            "replica.fetch.response.max.bytes" => {
                self.replica_fetch_response_max_bytes = parse_at_least_one::<u32>(key, value)?
            }
            "replica.fetch.backoff.ms" => self.replica_fetch_backoff_ms = parse_num(key, value)?,
            "replica.high.watermark.checkpoint.interval.ms" => {
                self.replica_hw_checkpoint_interval_ms = parse_at_least_one::<u64>(key, value)?
            }
            "sluice.replica.fsync.before.ack" => self.replica_fsync_before_ack = parse_bool(key, value)?,
            "sluice.replica.direct.writes" => self.replica_direct_writes = parse_bool(key, value)?,
            "sluice.replica.direct.writes.min.bytes" => self.replica_direct_writes_min_bytes = parse_num(key, value)?,
            "sluice.unsafe.ack.before.replication" => {
                if !cfg!(feature = "test-switches") {
                    return Err(invalid(
                        key,
                        "exists only in test builds (cargo feature `test-switches`), never in a release",
                    ));
                }
                self.unsafe_ack_before_replication = parse_bool(key, value)?
            }
            "sluice.admin.listen" => {
                self.admin_listen_chosen = true;
                self.admin_listen = if value.trim().is_empty() {
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
                }
            }
            "sluice.outbound.address" => {
                self.outbound_address = if value.is_empty() {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|_| invalid(key, format!("`{value}` is not an IP address")))?,
                    )
                }
            }
            "unclean.leader.election.enable" => self.unclean_leader_election = parse_bool(key, value)?,
            "sluice.metadata.snapshot.records" => {
                self.metadata_snapshot_records = parse_at_least_one::<u64>(key, value)?
            }
            "sluice.controller.write.timeout.ms" => {
                self.controller_write_timeout_ms = parse_at_least_one::<u64>(key, value)?
            }
            "sluice.storage.min.free.bytes" => self.storage_min_free_bytes = parse_num(key, value)?,
            "sluice.shutdown.drain.ms" => self.shutdown_drain_ms = parse_num(key, value)?,
            "sluice.shutdown.close.ms" => self.shutdown_close_ms = parse_num(key, value)?,
            "sluice.shutdown.linger.ms" => self.shutdown_linger_ms = parse_num(key, value)?,
            "sluice.broker.fence.when.gone" => self.fence_gone_brokers = parse_bool(key, value)?,
            "offsets.topic.num.partitions" => self.groups.offsets_partitions = parse_at_least_one::<i32>(key, value)?,
            "offsets.topic.segment.bytes" => self.groups.offsets_segment_bytes = parse_num(key, value)?,
            "offsets.topic.replication.factor" => {
                self.groups.offsets_replication_factor = Some(parse_at_least_one::<i16>(key, value)?)
            }
            "offsets.commit.timeout.ms" => {
                self.groups.offsets_commit_timeout_ms = parse_at_least_one::<u64>(key, value)?
            }
            "offsets.retention.minutes" => {
                self.groups.offsets_retention_ms = parse_at_least_one::<i64>(key, value)?.saturating_mul(60_000)
            }
            "offsets.retention.check.interval.ms" => {
                let n: u64 = parse_num(key, value)?;
                if n == 0 {
                    return Err(invalid(key, "must be positive"));
                }
                self.groups.offsets_retention_check_interval_ms = n;
            }
            "offset.metadata.max.bytes" => self.groups.offset_metadata_max_bytes = parse_num(key, value)?,
            "group.min.session.timeout.ms" => self.groups.min_session_timeout_ms = parse_num(key, value)?,
            "group.max.session.timeout.ms" => self.groups.max_session_timeout_ms = parse_num(key, value)?,
            "group.initial.rebalance.delay.ms" => {
                let n: i32 = parse_num(key, value)?;
                if n < 0 {
                    return Err(invalid(key, "must not be negative"));
                }
                self.groups.initial_rebalance_delay_ms = n;
            }
            "group.max.size" => self.groups.max_size = parse_at_least_one::<usize>(key, value)?,
            other => return Err(ConfigError::Unknown(other.to_string())),
        }
        Ok(())
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
        let by_var: BTreeMap<String, &str> = SETTINGS.iter().map(|(k, _)| (env_name(k), *k)).collect();
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
        if self.advertised_host.is_empty() {
            self.advertised_host = match self.listen.ip() {
                ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                ip => ip.to_string(),
            };
        }
        if self.advertised_port == 0 {
            self.advertised_port = self.listen.port();
        }
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
        for (key, doc) in SETTINGS {
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
        let names: std::collections::BTreeSet<String> = SETTINGS.iter().map(|(k, _)| env_name(k)).collect();
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
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!((c.advertised_host.as_str(), c.advertised_port), ("127.0.0.1", 9092));
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
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.advertised_host, "127.0.0.1");
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
