//! Topics as the metadata image holds them: their ids, partition counts,
//! replica states and config overrides; the snapshot published to every
//! shard; the topic-level settings and how they map to a log's settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError as ErrorCode;
use serde::{Deserialize, Serialize};
use sluice_engine::{FlushPolicy, LogConfig};
use uuid::Uuid;

use crate::image::{BrokerMeta, PartitionState};

/// Topics by name. A persistent map: a clone shares every node with the
/// original and an insert copies only the path to its key, so the image,
/// each draft of a change and each snapshot hold the same topics without
/// copying the map, and two versions compare in the size of what differs
/// ([`Snapshot::changed_topics`]).
pub type TopicMap = imbl::OrdMap<Arc<str>, Arc<TopicMeta>>;

/// Topic names by topic id, persistent as [`TopicMap`].
pub type TopicIds = imbl::HashMap<Uuid, Arc<str>>;

/// One topic. Immutable; replaced as a whole when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: Arc<str>,
    /// Kafka topic id (Metadata v10+, Fetch v13+); persisted with the topic.
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides by Kafka name (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
    /// Replicas, ISR and leader of each partition; `partitions` long.
    pub partition_states: Vec<PartitionState>,
}

impl TopicMeta {
    /// The broker leading partition `index` (-1 for none); `None` when
    /// the topic has no such partition.
    pub fn leader(&self, index: i32) -> Option<i32> {
        let i = usize::try_from(index).ok()?;
        self.partition_states.get(i).map(|p| p.leader)
    }

    /// Whether `node` holds a replica of partition `index`.
    pub fn has_replica(&self, index: i32, node: i32) -> bool {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partition_states.get(i))
            .is_some_and(|p| p.replicas.contains(&node))
    }
}

/// Everything shards need to route and answer metadata. Immutable snapshot
/// shared by all shards; `version` grows with every change.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    /// When this snapshot was made, in a count that only grows within this
    /// process (0 for the empty one a shard starts with). Snapshots are made
    /// from the one metadata image, so the later made is never older; two
    /// made at the same `version` differ in the controller they name. A
    /// shard installs only snapshots made no earlier than the one it has.
    pub made: u64,
    pub topics: TopicMap,
    pub ids: TopicIds,
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// The active controller (the quorum's leader) when this snapshot was
    /// made; -1 when none was known.
    pub controller_id: i32,
    /// Credentials, shared with the image.
    pub security: Arc<crate::security::SecurityImage>,
}

impl Snapshot {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.ids.get(id).and_then(|n| self.topics.get(n))
    }

    /// The names of the topics created, changed or deleted since `old`:
    /// a topic's metadata is replaced as a whole when it changes, so an
    /// unchanged topic is the same `Arc` in both, and snapshots made from
    /// one image share the map's nodes that hold only unchanged topics:
    /// the walk skips those, so it costs in the size of the change, not
    /// of the cluster. Sorted.
    pub fn changed_topics(&self, old: &Snapshot) -> Vec<Arc<str>> {
        use imbl::ordmap::DiffItem;
        old.topics
            .diff(&self.topics)
            .map(|d| match d {
                DiffItem::Add(name, _) | DiffItem::Remove(name, _) => name.clone(),
                DiffItem::Update { new: (name, _), .. } => name.clone(),
            })
            .collect()
    }

    /// A snapshot of `topics` (and the index of their ids) at `version`.
    pub fn of(version: u64, topics: TopicMap, ids: TopicIds, brokers: BTreeMap<i32, BrokerMeta>) -> Self {
        Self {
            version,
            made: MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            topics,
            ids,
            brokers,
            controller_id: -1,
            security: Arc::default(),
        }
    }

    /// A snapshot of `topics` at `version`, its maps built anew.
    pub fn build(
        version: u64,
        topics: impl IntoIterator<Item = Arc<TopicMeta>>,
        brokers: BTreeMap<i32, BrokerMeta>,
    ) -> Self {
        let topics: TopicMap = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let ids = topics.values().map(|t| (t.id, t.name.clone())).collect();
        Self::of(version, topics, ids, brokers)
    }
}

/// The count `Snapshot::made` takes from.
static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The internal topic that holds committed offsets of consumer groups.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The internal topic that holds the state of transactional ids.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Topics the broker writes itself: clients may read them but not produce
/// to them, delete them or add partitions.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TRANSACTION_STATE_TOPIC
}

/// One topic-level config: Kafka's name, the broker setting whose value a
/// topic without an override takes, the values it accepts, and what it
/// changes in the topic's logs. [`TOPIC_CONFIGS`] is the one list: the
/// image validates overrides with it, logs take their settings from it,
/// DescribeConfigs lists it.
#[derive(Debug)]
pub struct TopicConfig {
    pub key: &'static str,
    pub broker_setting: &'static str,
    pub values: Values,
    /// Sets the parsed value in a log's settings; `None` for a config read
    /// elsewhere (`min.insync.replicas`, by replication; `cleanup.policy`,
    /// whose one value is the default).
    log: Option<fn(&mut LogConfig, i64)>,
}

/// The values a topic config accepts.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A decimal number in `0..=1`.
    Ratio,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

const fn int(min: i64, max: i64) -> Values {
    Values::Int { min, max }
}

/// Topic-level configs the broker accepts, with the broker setting each
/// one overrides.
pub const TOPIC_CONFIGS: &[TopicConfig] = &[
    TopicConfig {
        key: "cleanup.policy",
        broker_setting: "log.cleanup.policy",
        values: Values::OneOf(CLEANUP_POLICIES),
        log: None,
    },
    TopicConfig {
        key: "min.cleanable.dirty.ratio",
        broker_setting: "log.cleaner.min.cleanable.ratio",
        values: Values::Ratio,
        log: None,
    },
    TopicConfig {
        key: "min.compaction.lag.ms",
        broker_setting: "log.cleaner.min.compaction.lag.ms",
        values: int(0, i64::MAX),
        log: None,
    },
    TopicConfig {
        key: "max.compaction.lag.ms",
        broker_setting: "log.cleaner.max.compaction.lag.ms",
        values: int(1, i64::MAX),
        log: None,
    },
    TopicConfig {
        key: "delete.retention.ms",
        broker_setting: "log.cleaner.delete.retention.ms",
        values: int(0, i64::MAX),
        log: None,
    },
    TopicConfig {
        key: "retention.ms",
        broker_setting: "log.retention.ms",
        values: int(-1, i64::MAX),
        log: Some(|c, n| c.retention_ms = u64::try_from(n).ok()),
    },
    TopicConfig {
        key: "retention.bytes",
        broker_setting: "log.retention.bytes",
        values: int(-1, i64::MAX),
        log: Some(|c, n| c.retention_bytes = u64::try_from(n).ok()),
    },
    TopicConfig {
        key: "segment.bytes",
        broker_setting: "log.segment.bytes",
        values: int(1024, i32::MAX as i64),
        log: Some(|c, n| c.segment_bytes = n.max(1024) as u64),
    },
    TopicConfig {
        key: "segment.ms",
        broker_setting: "log.roll.ms",
        values: int(1, i64::MAX),
        log: Some(|c, n| c.segment_ms = n.max(1) as u64),
    },
    TopicConfig {
        key: "max.message.bytes",
        broker_setting: "message.max.bytes",
        values: int(sluice_engine::batch::HEADER_BYTES as i64, i32::MAX as i64),
        log: Some(|c, n| c.max_batch_bytes = u32::try_from(n).unwrap_or(u32::MAX)),
    },
    TopicConfig {
        key: "flush.ms",
        broker_setting: "log.flush.interval.ms",
        values: int(-1, i64::MAX),
        log: Some(|c, n| c.flush = FlushPolicy::from_interval_ms(n)),
    },
    TopicConfig {
        key: "min.insync.replicas",
        broker_setting: "min.insync.replicas",
        values: int(1, i16::MAX as i64),
        log: None,
    },
];

/// The topic config named `key`, if the broker accepts it.
pub fn topic_config(key: &str) -> Option<&'static TopicConfig> {
    TOPIC_CONFIGS.iter().find(|c| c.key == key)
}

/// Checks a topic config value; the error is the message for the client.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let config = topic_config(key).ok_or_else(|| format!("unknown topic config `{key}`"))?;
    match config.values {
        Values::Int { min, max } => match value.trim().parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            _ => Err(format!(
                "invalid value `{value}` for {key}: expected an integer from {min} to {max}"
            )),
        },
        Values::Ratio => match value.trim().parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!(
                "invalid value `{value}` for {key}: expected a number from 0 to 1"
            )),
        },
        Values::OneOf(words) if words.contains(&value) => Ok(()),
        Values::OneOf(words) => Err(format!("{key} `{value}` is not supported: one of {}", words.join(", "))),
    }
}

/// The log settings of a topic: the broker's `defaults` with the topic's
/// overrides.
pub fn log_config(defaults: LogConfig, topic: &TopicMeta) -> LogConfig {
    let mut c = defaults;
    for (k, v) in &topic.configs {
        if let (Some(set), Ok(n)) = (topic_config(k).and_then(|t| t.log), v.trim().parse::<i64>()) {
            set(&mut c, n);
        }
    }
    c
}

/// The values `cleanup.policy` takes, as Kafka spells them.
pub const CLEANUP_POLICIES: &[&str] = &["delete", "compact", "compact,delete", "delete,compact"];

/// A topic's `cleanup.policy`: old segments deleted (by retention), the
/// log compacted, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleanup {
    pub delete: bool,
    pub compact: bool,
}

impl Cleanup {
    pub const DELETE: Self = Self {
        delete: true,
        compact: false,
    };

    /// One of [`CLEANUP_POLICIES`].
    pub fn parse(value: &str) -> Option<Self> {
        let mut c = Self {
            delete: false,
            compact: false,
        };
        for word in value.split(',') {
            match word.trim() {
                "delete" => c.delete = true,
                "compact" => c.compact = true,
                _ => return None,
            }
        }
        (c.delete || c.compact).then_some(c)
    }
}

/// What the cleaner reads of a topic's configs, with Kafka's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    pub cleanup: Cleanup,
    /// `min.cleanable.dirty.ratio`: the share of the log not yet cleaned
    /// at which a pass runs.
    pub min_cleanable_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this stay uncleaned.
    pub min_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record older than this is cleaned
    /// whatever the dirty ratio.
    pub max_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays readable.
    pub delete_retention_ms: i64,
}

impl Default for Compaction {
    fn default() -> Self {
        Self {
            cleanup: Cleanup::DELETE,
            min_cleanable_ratio: 0.5,
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// The compaction settings of a topic: `defaults` (the broker's) with the
/// topic's overrides.
pub fn topic_compaction(defaults: Compaction, topic: &TopicMeta) -> Compaction {
    let mut c = defaults;
    let configs = &topic.configs;
    let int = |k: &str| configs.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    if let Some(p) = configs.get("cleanup.policy").and_then(|v| Cleanup::parse(v)) {
        c.cleanup = p;
    }
    if let Some(r) = configs
        .get("min.cleanable.dirty.ratio")
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        c.min_cleanable_ratio = r;
    }
    c.min_lag_ms = int("min.compaction.lag.ms").unwrap_or(c.min_lag_ms);
    c.max_lag_ms = int("max.compaction.lag.ms").unwrap_or(c.max_lag_ms);
    c.delete_retention_ms = int("delete.retention.ms").unwrap_or(c.delete_retention_ms);
    c
}

/// The `min.insync.replicas` of a topic: its override, else `default`.
pub fn topic_min_insync_replicas(default: usize, topic: &TopicMeta) -> usize {
    topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(default)
        .max(1)
}

/// The in-sync replicas a partition of `replicas` replicas needs, as
/// Kafka's partition takes it (`effectiveMinIsr`): `min.insync.replicas`,
/// but never more than the partition has replicas. An RF=1 topic under a
/// broker default of 2 takes acks=all writes; its one replica is all of
/// its ISR. At least 1.
pub fn effective_min_isr(min_insync_replicas: usize, replicas: usize) -> usize {
    min_insync_replicas.min(replicas).max(1)
}

/// Why a topic name is refused, as Kafka words it.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name `{name}` is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters, above the limit of 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name `{name}` contains `{c}`; only ASCII letters, digits, `.`, `_` and `-` are allowed"
        ));
    }
    Ok(())
}

/// An admin change that could not be applied; the code goes to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaError {
    #[serde(with = "wire_code")]
    pub code: ErrorCode,
    pub message: String,
}

/// An error code as its Kafka number in the metadata log.
mod wire_code {
    use serde::{Deserialize, Deserializer, Serializer};

    use kafka_protocol::ResponseError as ErrorCode;

    pub fn serialize<S: Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i16(code.code())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        let n = i16::deserialize(d)?;
        Ok(ErrorCode::try_from_code(n).unwrap_or(ErrorCode::UnknownServerError))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topics_compaction_settings_are_its_overrides_over_the_defaults() {
        assert_eq!(
            Cleanup::parse("compact,delete"),
            Some(Cleanup {
                delete: true,
                compact: true
            })
        );
        assert_eq!(Cleanup::parse("delete"), Some(Cleanup::DELETE));
        assert_eq!(Cleanup::parse("shred"), None);
        let mut t = TopicMeta {
            name: "t".into(),
            id: Uuid::nil(),
            partitions: 1,
            configs: BTreeMap::new(),
            partition_states: Vec::new(),
        };
        t.configs.insert("cleanup.policy".into(), "compact".into());
        t.configs.insert("min.cleanable.dirty.ratio".into(), "0.1".into());
        t.configs.insert("delete.retention.ms".into(), "5".into());
        let c = topic_compaction(Compaction::default(), &t);
        assert_eq!(
            c.cleanup,
            Cleanup {
                delete: false,
                compact: true
            }
        );
        assert_eq!(
            (c.min_cleanable_ratio, c.delete_retention_ms, c.min_lag_ms),
            (0.1, 5, 0)
        );
        assert_eq!(c.max_lag_ms, i64::MAX);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn every_topic_config_takes_its_bounds_and_refuses_past_them() {
        for c in TOPIC_CONFIGS {
            match c.values {
                Values::Int { min, max } => {
                    assert!(validate_topic_config(c.key, &min.to_string()).is_ok(), "{}", c.key);
                    assert!(validate_topic_config(c.key, &max.to_string()).is_ok(), "{}", c.key);
                    assert!(
                        validate_topic_config(c.key, &(min - 1).to_string()).is_err(),
                        "{}",
                        c.key
                    );
                    if max < i64::MAX {
                        assert!(
                            validate_topic_config(c.key, &(max + 1).to_string()).is_err(),
                            "{}",
                            c.key
                        );
                    }
                    assert!(validate_topic_config(c.key, "ten").is_err(), "{}", c.key);
                }
                Values::OneOf(words) => {
                    assert!(words.iter().all(|w| validate_topic_config(c.key, w).is_ok()));
                    assert!(validate_topic_config(c.key, "no-such-value").is_err());
                }
                Values::Ratio => {
                    for ok in ["0", "0.5", "1"] {
                        assert!(validate_topic_config(c.key, ok).is_ok(), "{} {ok}", c.key);
                    }
                    for bad in ["-0.1", "1.01", "half"] {
                        assert!(validate_topic_config(c.key, bad).is_err(), "{} {bad}", c.key);
                    }
                }
            }
        }
        assert!(validate_topic_config("no.such.config", "1").is_err());
    }

    #[test]
    fn a_topics_overrides_set_its_log_settings() {
        let mut t = (*topic("t", 1)).clone();
        t.configs = BTreeMap::from([
            ("retention.ms".to_string(), "60000".to_string()),
            ("flush.ms".to_string(), "0".to_string()),
            ("segment.bytes".to_string(), "2048".to_string()),
            ("min.insync.replicas".to_string(), "2".to_string()),
        ]);
        let c = log_config(LogConfig::default(), &t);
        assert_eq!(c.retention_ms, Some(60_000));
        assert_eq!(c.flush, FlushPolicy::Always);
        assert_eq!(c.segment_bytes, 2048);
        // Read by replication, not by the log.
        assert_eq!(topic_min_insync_replicas(1, &t), 2);
        assert_eq!(
            LogConfig {
                retention_ms: None,
                ..c.clone()
            },
            log_config(
                c,
                &TopicMeta {
                    configs: BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]),
                    ..t
                }
            )
        );
    }

    fn topic(name: &str, partitions: i32) -> Arc<TopicMeta> {
        Arc::new(TopicMeta {
            name: name.into(),
            id: Uuid::from_u128(partitions as u128 + 1),
            partitions,
            configs: BTreeMap::new(),
            partition_states: (0..partitions).map(|_| PartitionState::new(vec![1])).collect(),
        })
    }

    #[test]
    fn a_snapshot_names_the_topics_created_changed_and_deleted_since_another() {
        let (kept, grown, gone) = (topic("kept", 1), topic("grown", 1), topic("gone", 2));
        let old = Snapshot::build(1, [kept.clone(), grown, gone], BTreeMap::new());
        let new = Snapshot::build(2, [kept, topic("grown", 2), topic("new", 1)], BTreeMap::new());
        let changed = new.changed_topics(&old);
        let names: Vec<&str> = changed.iter().map(|n| &**n).collect();
        assert_eq!(names, ["gone", "grown", "new"]);
        assert!(new.changed_topics(&new).is_empty());
    }
}
