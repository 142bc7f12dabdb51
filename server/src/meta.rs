//! Cluster metadata: topics, their ids, partition counts and config
//! overrides.
//!
//! One writer: the controller shard (shard 0) owns the [`MetaStore`], applies
//! admin changes, persists them, and publishes each result as an immutable
//! [`Snapshot`] to every shard. Shards read their snapshot without locks.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_engine::{FlushPolicy, LogConfig};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::error_codes::ErrorCode;

/// One topic. Immutable; replaced as a whole when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: Arc<str>,
    /// Kafka topic id (Metadata v10+, Fetch v13+); persisted with the topic.
    pub id: Uuid,
    pub partitions: i32,
    /// Topic-level config overrides by Kafka name (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
}

/// Everything shards need to route and answer metadata. Immutable snapshot
/// shared by all shards; `version` grows with every change.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    pub topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    pub ids: HashMap<Uuid, Arc<str>>,
}

impl Snapshot {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.ids.get(id).and_then(|n| self.topics.get(n))
    }

    fn build(version: u64, topics: impl IntoIterator<Item = Arc<TopicMeta>>) -> Self {
        let topics: BTreeMap<_, _> = topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        let ids = topics.values().map(|t| (t.id, t.name.clone())).collect();
        Self { version, topics, ids }
    }
}

/// The internal topic that holds committed offsets of consumer groups.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Topics the broker writes itself: clients may read them but not produce
/// to them, delete them or add partitions.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

fn refuse_internal(name: &str) -> Result<(), MetaError> {
    if is_internal(name) {
        return Err(MetaError::new(
            ErrorCode::InvalidTopicException,
            format!("`{name}` is an internal topic"),
        ));
    }
    Ok(())
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

/// The log settings of a topic: broker defaults with the topic's overrides.
pub fn log_config(broker: &BrokerConfig, topic: &TopicMeta) -> LogConfig {
    let mut c = broker.default_log_config();
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

/// Directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[derive(Serialize, Deserialize)]
struct TopicsFile {
    format: u32,
    topics: Vec<TopicMeta>,
}

/// The controller's copy of the metadata and its file. Lives on shard 0 only.
#[derive(Debug)]
pub struct MetaStore {
    path: PathBuf,
    version: u64,
    topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    /// Next producer id to hand out, and the end of the block reserved on
    /// disk: ids below the reserved end are never handed out twice, even
    /// after a crash.
    next_producer_id: i64,
    reserved_producer_id_end: i64,
    /// `sluice.max.partitions`: partitions of all topics together.
    max_partitions: i64,
}

/// Producer ids reserved on disk at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// An admin change that could not be applied; the code goes to the client.
#[derive(Debug, Clone)]
pub struct MetaError {
    pub code: ErrorCode,
    pub message: String,
}

impl MetaError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl MetaStore {
    /// Loads `data_dir/meta/topics.json`, or starts empty.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("meta");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("topics.json");
        let topics = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TopicsFile = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))
                })?;
                file.topics.into_iter().map(|t| (t.name.clone(), Arc::new(t))).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        let reserved = match std::fs::read_to_string(dir.join("producer-ids")) {
            Ok(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("meta/producer-ids: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            version: 1,
            topics,
            next_producer_id: reserved,
            reserved_producer_id_end: reserved,
            max_partitions: i64::MAX,
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Caps the partitions of all topics together; changes past it are
    /// refused with POLICY_VIOLATION.
    pub fn set_max_partitions(&mut self, max: u64) {
        self.max_partitions = i64::try_from(max).unwrap_or(i64::MAX);
    }

    /// Refuses a change that adds `more` partitions past the cap.
    fn check_room(&self, more: i32) -> Result<(), MetaError> {
        let total: i64 = self.topics.values().map(|t| i64::from(t.partitions)).sum();
        if total + i64::from(more) > self.max_partitions {
            return Err(MetaError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "the broker has {total} partitions; {more} more would pass sluice.max.partitions ({})",
                    self.max_partitions
                ),
            ));
        }
        Ok(())
    }

    /// The topics as they stand, to hand back to [`MetaStore::restore`].
    pub fn topics(&self) -> BTreeMap<Arc<str>, Arc<TopicMeta>> {
        self.topics.clone()
    }

    /// Undoes a change whose partitions could not be opened: puts `topics`
    /// back and persists them.
    pub fn restore(&mut self, topics: BTreeMap<Arc<str>, Arc<TopicMeta>>) -> Result<(), MetaError> {
        let changed = std::mem::replace(&mut self.topics, topics);
        self.commit(changed)
    }

    /// Hands out a producer id never given before on this broker.
    pub fn allocate_producer_id(&mut self) -> std::io::Result<i64> {
        if self.next_producer_id >= self.reserved_producer_id_end {
            let end = self.next_producer_id + PRODUCER_ID_BLOCK;
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let tmp = dir.join("producer-ids.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(end.to_string().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join("producer-ids"))?;
            std::fs::File::open(dir)?.sync_all()?;
            self.reserved_producer_id_end = end;
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        Ok(id)
    }

    /// Creates `__consumer_offsets` if it does not exist yet. Its partition
    /// count never changes afterwards: it decides which partition, and so
    /// which shard, coordinates each group.
    pub fn ensure_offsets_topic(&mut self, groups: &crate::config::GroupConfig) -> Result<(), MetaError> {
        if self.topics.contains_key(OFFSETS_TOPIC) {
            return Ok(());
        }
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
            (
                "segment.bytes".to_string(),
                groups.offsets_segment_bytes.clamp(1024, i32::MAX as u64).to_string(),
            ),
        ]);
        self.create_topic(OFFSETS_TOPIC, groups.offsets_partitions, configs)
            .map(|_| ())
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot::build(self.version, self.topics.values().cloned())
    }

    /// Writes the topics to a temporary file, syncs it, renames it over the
    /// old one and syncs the directory: a crash leaves the old or the new
    /// file, never a mix.
    fn persist(&self) -> std::io::Result<()> {
        let file = TopicsFile {
            format: 1,
            topics: self.topics.values().map(|t| (**t).clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    fn commit(&mut self, old: BTreeMap<Arc<str>, Arc<TopicMeta>>) -> Result<(), MetaError> {
        if let Err(e) = self.persist() {
            self.topics = old;
            return Err(MetaError::new(
                ErrorCode::KafkaStorageError,
                format!("persisting metadata: {e}"),
            ));
        }
        self.version += 1;
        Ok(())
    }

    /// Checks a topic creation without applying it.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<(), MetaError> {
        validate_topic_name(name).map_err(|m| MetaError::new(ErrorCode::InvalidTopicException, m))?;
        if self.topics.contains_key(name) {
            return Err(MetaError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic `{name}` already exists"),
            ));
        }
        if partitions < 1 {
            return Err(MetaError::new(
                ErrorCode::InvalidPartitions,
                format!("partition count {partitions} is below 1"),
            ));
        }
        self.check_room(partitions)?;
        for (k, v) in configs {
            validate_topic_config(k, v).map_err(|m| MetaError::new(ErrorCode::InvalidConfig, m))?;
        }
        Ok(())
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        self.check_create(name, partitions, &configs)?;
        let old = self.topics.clone();
        let topic = Arc::new(TopicMeta {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        });
        self.topics.insert(topic.name.clone(), topic.clone());
        self.commit(old)?;
        Ok(topic)
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<Arc<TopicMeta>, MetaError> {
        refuse_internal(name)?;
        let old = self.topics.clone();
        let topic = self.topics.remove(name).ok_or_else(|| {
            MetaError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic `{name}` does not exist"),
            )
        })?;
        self.commit(old)?;
        Ok(topic)
    }

    pub fn check_partitions(&self, name: &str, count: i32) -> Result<Arc<TopicMeta>, MetaError> {
        refuse_internal(name)?;
        let topic = self.topics.get(name).ok_or_else(|| {
            MetaError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic `{name}` does not exist"),
            )
        })?;
        if count < topic.partitions {
            return Err(MetaError::new(
                ErrorCode::InvalidPartitions,
                format!("topic has {} partitions; the count can only grow", topic.partitions),
            ));
        }
        if count == topic.partitions {
            return Err(MetaError::new(
                ErrorCode::InvalidPartitions,
                format!("topic already has {count} partitions"),
            ));
        }
        self.check_room(count - topic.partitions)?;
        Ok(topic.clone())
    }

    pub fn create_partitions(&mut self, name: &str, count: i32) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.check_partitions(name, count)?;
        let old = self.topics.clone();
        let new = Arc::new(TopicMeta {
            partitions: count,
            ..(*topic).clone()
        });
        self.topics.insert(new.name.clone(), new.clone());
        self.commit(old)?;
        Ok(new)
    }

    /// Replaces (`incremental == false`) or edits a topic's overrides. Each
    /// change is `(key, Some(value))` to set or `(key, None)` to remove.
    pub fn alter_configs(
        &mut self,
        name: &str,
        changes: &[(String, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.topics.get(name).cloned().ok_or_else(|| {
            MetaError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic `{name}` does not exist"),
            )
        })?;
        let mut configs = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    validate_topic_config(k, v).map_err(|m| MetaError::new(ErrorCode::InvalidConfig, m))?;
                    configs.insert(k.clone(), v.clone());
                }
                None => {
                    if !TOPIC_CONFIGS.contains(&k.as_str()) {
                        return Err(MetaError::new(
                            ErrorCode::InvalidConfig,
                            format!("unknown topic config `{k}`"),
                        ));
                    }
                    configs.remove(k);
                }
            }
        }
        if validate_only {
            return Ok(topic);
        }
        let old = self.topics.clone();
        let new = Arc::new(TopicMeta {
            configs,
            ..(*topic).clone()
        });
        self.topics.insert(new.name.clone(), new.clone());
        self.commit(old)?;
        Ok(new)
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

    #[test]
    fn topics_and_ids_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        let t = store.create_topic("a", 3, BTreeMap::new()).unwrap();
        store.create_partitions("a", 5).unwrap();
        let changes = [("retention.ms".to_string(), Some("1000".to_string()))];
        store.alter_configs("a", &changes, true, false).unwrap();
        let again = MetaStore::open(dir.path()).unwrap().snapshot();
        let a = again.topic("a").unwrap();
        assert_eq!((a.id, a.partitions), (t.id, 5));
        assert_eq!(a.configs.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(again.topic_by_id(&t.id).unwrap().name.as_ref(), "a");
    }

    #[test]
    fn producer_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        let a = store.allocate_producer_id().unwrap();
        let b = store.allocate_producer_id().unwrap();
        assert_eq!(b, a + 1);
        let mut again = MetaStore::open(dir.path()).unwrap();
        assert!(again.allocate_producer_id().unwrap() > b);
    }

    #[test]
    fn admin_errors_carry_kafka_codes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetaStore::open(dir.path()).unwrap();
        store.create_topic("a", 2, BTreeMap::new()).unwrap();
        let code = |r: Result<Arc<TopicMeta>, MetaError>| r.unwrap_err().code;
        assert_eq!(
            code(store.create_topic("a", 1, BTreeMap::new())),
            ErrorCode::TopicAlreadyExists
        );
        assert_eq!(
            code(store.create_topic("a b", 1, BTreeMap::new())),
            ErrorCode::InvalidTopicException
        );
        assert_eq!(code(store.create_partitions("a", 1)), ErrorCode::InvalidPartitions);
        assert_eq!(code(store.delete_topic("zz")), ErrorCode::UnknownTopicOrPartition);
        // The broker-wide cap counts every topic's partitions.
        let total: i32 = store.snapshot().topics.values().map(|t| t.partitions).sum();
        store.set_max_partitions(total as u64 + 3);
        assert_eq!(
            code(store.create_topic("big", 4, BTreeMap::new())),
            ErrorCode::PolicyViolation
        );
        assert!(store.create_topic("fits", 2, BTreeMap::new()).is_ok());
        let a = store.snapshot().topic("a").unwrap().partitions;
        assert_eq!(code(store.create_partitions("a", a + 2)), ErrorCode::PolicyViolation);
        assert!(store.create_partitions("a", a + 1).is_ok());
        let bad = [("cleanup.policy".to_string(), Some("compact".to_string()))];
        assert_eq!(
            code(store.alter_configs("a", &bad, true, false)),
            ErrorCode::InvalidConfig
        );
    }
}
