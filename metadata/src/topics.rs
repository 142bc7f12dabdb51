//! Topics as the metadata image holds them: their ids, partition counts,
//! replica states and config overrides; the snapshot published to every
//! shard; the topic-level settings and how they map to a log's settings.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_protocol::ResponseError as ErrorCode;
use serde::{Deserialize, Serialize};
use sluice_engine::{FlushPolicy, LogConfig};
use uuid::Uuid;

use crate::image::{BrokerMeta, PartitionState};

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
    pub topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    pub ids: HashMap<Uuid, Arc<str>>,
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// The active controller (the quorum's leader) when this snapshot was
    /// made; -1 when none was known.
    pub controller_id: i32,
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
    /// unchanged topic is the same `Arc` in both. Sorted.
    pub fn changed_topics(&self, old: &Snapshot) -> Vec<Arc<str>> {
        // Both maps are in name order: one walk over the two, no lookups.
        let mut out = Vec::new();
        let (mut new, mut old) = (self.topics.iter().peekable(), old.topics.iter().peekable());
        loop {
            match (new.peek(), old.peek()) {
                (Some((n, t)), Some((o, u))) => match n.cmp(o) {
                    std::cmp::Ordering::Less => {
                        out.push((*n).clone());
                        new.next();
                    }
                    std::cmp::Ordering::Greater => {
                        out.push((*o).clone());
                        old.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(t, u) {
                            out.push((*n).clone());
                        }
                        new.next();
                        old.next();
                    }
                },
                (Some((n, _)), None) => {
                    out.push((*n).clone());
                    new.next();
                }
                (None, Some((o, _))) => {
                    out.push((*o).clone());
                    old.next();
                }
                (None, None) => return out,
            }
        }
    }

    pub fn build(
        version: u64,
        topics: impl IntoIterator<Item = Arc<TopicMeta>>,
        brokers: BTreeMap<i32, BrokerMeta>,
    ) -> Self {
        let topics: BTreeMap<_, _> = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let ids = topics.values().map(|t| (t.id, t.name.clone())).collect();
        Self {
            version,
            made: MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            topics,
            ids,
            brokers,
            controller_id: -1,
        }
    }
}

/// The count `Snapshot::made` takes from.
static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The internal topic that holds committed offsets of consumer groups.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics the broker writes itself: clients may read them but not produce
/// to them, delete them or add partitions.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

/// Topic-level configs the broker accepts, with the broker setting each one
/// defaults to.
pub const TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "max.message.bytes",
    "flush.ms",
    "min.insync.replicas",
];

/// Checks a topic config value; the error is the message for the client.
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| -> Result<(), String> {
        match value.trim().parse::<i64>() {
            Ok(v) if v >= min => Ok(()),
            _ => Err(format!(
                "invalid value `{value}` for {key}: expected an integer >= {min}"
            )),
        }
    };
    match key {
        "cleanup.policy" => match value {
            "delete" => Ok(()),
            _ => Err(format!("cleanup.policy `{value}` is not supported: only `delete`")),
        },
        "retention.ms" | "retention.bytes" | "flush.ms" => int(-1),
        "min.insync.replicas" => int(1).and_then(|()| match value.trim().parse::<i64>() {
            Ok(v) if v <= i64::from(i16::MAX) => Ok(()),
            _ => Err(format!("min.insync.replicas `{value}` above {}", i16::MAX)),
        }),
        "segment.bytes" => int(1024).and_then(|()| match value.trim().parse::<i64>() {
            Ok(v) if v <= i64::from(i32::MAX) => Ok(()),
            _ => Err(format!("segment.bytes `{value}` above 2147483647")),
        }),
        "segment.ms" => int(1),
        "max.message.bytes" => {
            int(sluice_engine::batch::HEADER_BYTES as i64).and_then(|()| match value.trim().parse::<i64>() {
                Ok(v) if v <= i64::from(i32::MAX) => Ok(()),
                _ => Err(format!("max.message.bytes `{value}` above 2147483647")),
            })
        }
        _ => Err(format!("unknown topic config `{key}`")),
    }
}

/// The log settings of a topic: the broker's `defaults` with the topic's
/// overrides.
pub fn log_config(defaults: LogConfig, topic: &TopicMeta) -> LogConfig {
    let mut c = defaults;
    for (k, v) in &topic.configs {
        let n = v.trim().parse::<i64>().ok();
        match (k.as_str(), n) {
            ("retention.ms", Some(n)) => c.retention_ms = u64::try_from(n).ok(),
            ("retention.bytes", Some(n)) => c.retention_bytes = u64::try_from(n).ok(),
            ("segment.bytes", Some(n)) => c.segment_bytes = n.max(1024) as u64,
            ("segment.ms", Some(n)) => c.segment_ms = n.max(1) as u64,
            ("max.message.bytes", Some(n)) => c.max_batch_bytes = u32::try_from(n).unwrap_or(u32::MAX),
            ("flush.ms", Some(n)) => {
                c.flush = match n {
                    n if n < 0 => FlushPolicy::Never,
                    0 => FlushPolicy::Always,
                    n => FlushPolicy::IntervalMs(n as u64),
                }
            }
            _ => {}
        }
    }
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
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
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
