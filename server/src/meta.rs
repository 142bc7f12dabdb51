//! Cluster metadata: topics, their ids, partition counts and config
//! overrides.
//!
//! The controller (shard 0) writes changes to the metadata log; each
//! applied batch is published as an immutable [`Snapshot`] to every shard
//! (see `controller` and `quorum`). Shards read their snapshot without
//! locks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sluice_engine::LogConfig;
use uuid::Uuid;

pub use sluice_metadata::topics::*;

use crate::config::BrokerConfig;

/// The log settings of a topic: the broker's defaults with the topic's
/// overrides.
pub fn log_config(broker: &BrokerConfig, topic: &TopicMeta) -> LogConfig {
    let mut c = sluice_metadata::topics::log_config(broker.default_log_config(), topic);
    let cleanup = compaction(broker, topic).cleanup;
    c.compacted = cleanup.compact;
    // A compacted topic that does not also delete keeps every key's latest
    // record however old, as Kafka does: no retention by time or size.
    if !cleanup.delete {
        c.retention_ms = None;
        c.retention_bytes = None;
    }
    c
}

/// The compaction settings of a topic: its overrides, else the broker's.
pub fn compaction(broker: &BrokerConfig, topic: &TopicMeta) -> sluice_metadata::topics::Compaction {
    sluice_metadata::topics::topic_compaction(broker.cleaner.defaults, topic)
}

/// The `min.insync.replicas` of a topic: its override, else the broker's.
pub fn min_insync_replicas(broker: &BrokerConfig, topic: &TopicMeta) -> usize {
    topic_min_insync_replicas(usize::try_from(broker.min_insync_replicas).unwrap_or(1), topic)
}

/// Directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// A topic as `meta/topics.json` held it, before the metadata log.
#[derive(Debug, Deserialize)]
pub struct LegacyTopic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TopicsFile {
    topics: Vec<LegacyTopic>,
}

/// Reads the metadata files of a broker from before the metadata log:
/// `meta/topics.json` and `meta/producer-ids` (the end of the producer ids
/// reserved). `None` when there are none.
pub fn read_legacy(meta_dir: &Path) -> std::io::Result<Option<(Vec<LegacyTopic>, i64)>> {
    let Some(file) = crate::base::files::read_json::<TopicsFile>(&meta_dir.join("topics.json"))? else {
        return Ok(None);
    };
    let topics = file.topics;
    let reserved = match std::fs::read_to_string(meta_dir.join("producer-ids")) {
        Ok(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("meta/producer-ids: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(Some((topics, reserved)))
}

/// Renames the old metadata files once the metadata log holds them.
pub fn retire_legacy(meta_dir: &Path) -> std::io::Result<()> {
    for name in ["topics.json", "producer-ids"] {
        let path = meta_dir.join(name);
        if path.exists() {
            std::fs::rename(&path, meta_dir.join(format!("{name}.migrated")))?;
        }
    }
    std::fs::File::open(meta_dir)?.sync_all()
}
