//! Workloads: OpenMessaging Benchmark's workload fields, plus the producer
//! and consumer settings OMB keeps in its driver files.
//!
//! Files are OMB's flat YAML (`key: value` lines, `#` comments) or a JSON
//! object with the same keys. Unknown keys are errors, so a typo cannot
//! silently fall back to a default.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How producers pick message keys (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    /// Null keys; each batch goes to the next partition in turn.
    NoKey,
    /// Keys cycle through a fixed set; the partition follows the key's
    /// murmur2 hash, as Kafka's default partitioner does.
    KeyRoundRobin,
    /// A fresh key for every message.
    RandomNano,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec bits of a record batch's attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    /// Bytes of each message's value. At least 8: the first 8 bytes carry
    /// the intended send time for end-to-end latency.
    pub message_size: usize,
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    /// Messages per second over all producers; 0 searches for the maximum
    /// sustainable rate (producers send as fast as acks and, when there
    /// are consumers, the consumers' backlog allow).
    #[serde(default)]
    pub producer_rate: f64,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    #[serde(default = "one")]
    pub consumer_per_subscription: u32,
    #[serde(default = "no_key")]
    pub key_distributor: KeyDistributor,
    /// Accepted for OMB files; only 0 is supported (consumers start at the
    /// log end when the test starts).
    #[serde(default, rename = "consumerBacklogSizeGB")]
    pub consumer_backlog_size_gb: f64,
    /// Accepted for OMB files; payloads are always generated.
    #[serde(default)]
    pub use_randomized_payloads: Option<bool>,
    /// Fraction of each payload that is random; the rest is zeros, which
    /// compresses. OMB's meaning.
    #[serde(default = "full_ratio")]
    pub random_bytes_ratio: f64,
    /// Distinct payloads to cycle through.
    #[serde(default = "pool")]
    pub randomized_payload_pool_size: usize,
    #[serde(default)]
    pub test_duration_minutes: Option<f64>,
    #[serde(default)]
    pub warmup_duration_minutes: Option<f64>,
    /// Seconds, for runs shorter than a minute; wins over the minutes.
    #[serde(default)]
    pub test_duration_seconds: Option<f64>,
    #[serde(default)]
    pub warmup_duration_seconds: Option<f64>,
    /// Producer: 0, 1 or -1 (all).
    #[serde(default = "acks_all")]
    pub acks: i16,
    /// Replicas of each topic the run creates (-1: the broker's default).
    #[serde(default = "one_replica")]
    pub replication_factor: i16,
    /// Producer: bytes of records per batch before it is sent.
    #[serde(default = "batch_size")]
    pub batch_size_bytes: usize,
    /// Producer: how long a batch that is not full may wait.
    #[serde(default = "linger")]
    pub linger_ms: f64,
    /// Producer: requests in flight per connection.
    #[serde(default = "in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "no_compression")]
    pub compression: Compression,
    /// Consumer: longest wait of a Fetch for new data.
    #[serde(default = "fetch_wait")]
    pub fetch_max_wait_ms: i32,
    /// Consumer: bytes per partition per Fetch.
    #[serde(default = "fetch_partition_bytes")]
    pub fetch_max_partition_bytes: i32,
    /// With `producerRate: 0` and consumers: producers wait while this
    /// many messages are sent but not yet consumed.
    #[serde(default = "backlog")]
    pub max_backlog_messages: u64,
}

fn one() -> u32 {
    1
}
fn no_key() -> KeyDistributor {
    KeyDistributor::NoKey
}
fn full_ratio() -> f64 {
    1.0
}
fn pool() -> usize {
    16
}
fn acks_all() -> i16 {
    -1
}
fn one_replica() -> i16 {
    1
}
fn batch_size() -> usize {
    128 * 1024
}
fn linger() -> f64 {
    1.0
}
fn in_flight() -> usize {
    5
}
fn no_compression() -> Compression {
    Compression::None
}
fn fetch_wait() -> i32 {
    100
}
fn fetch_partition_bytes() -> i32 {
    1 << 20
}
fn backlog() -> u64 {
    200_000
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("line {line}: {msg}")]
    Yaml { line: usize, msg: String },
    #[error("{0}")]
    Fields(String),
    #[error("{0}")]
    Invalid(String),
}

/// Default durations when a file gives none.
pub const DEFAULT_TEST_SECONDS: f64 = 30.0;
pub const DEFAULT_WARMUP_SECONDS: f64 = 5.0;

impl Workload {
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses a JSON object or OMB's flat YAML, then checks the values.
    pub fn parse(text: &str) -> Result<Self, WorkloadError> {
        let value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| WorkloadError::Fields(e.to_string()))?
        } else {
            flat_yaml(text)?
        };
        let w: Self = serde_json::from_value(value).map_err(|e| WorkloadError::Fields(e.to_string()))?;
        w.validate()?;
        Ok(w)
    }

    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |m: String| Err(WorkloadError::Invalid(m));
        if self.name.trim().is_empty() {
            return bad("name is empty".into());
        }
        if self.topics == 0 || self.partitions_per_topic == 0 || self.producers_per_topic == 0 {
            return bad("topics, partitionsPerTopic and producersPerTopic must be at least 1".into());
        }
        if self.message_size < 8 {
            return bad(format!(
                "messageSize {} is below 8, the bytes that carry the send time",
                self.message_size
            ));
        }
        if self.message_size > 16 << 20 {
            return bad(format!("messageSize {} is above 16 MiB", self.message_size));
        }
        if !(self.producer_rate.is_finite() && self.producer_rate >= 0.0) {
            return bad(format!("producerRate {} must be 0 or positive", self.producer_rate));
        }
        if self.consumer_backlog_size_gb != 0.0 {
            return bad("consumerBacklogSizeGB other than 0 is not supported".into());
        }
        if !(0.0..=1.0).contains(&self.random_bytes_ratio) {
            return bad(format!(
                "randomBytesRatio {} must be within 0..1",
                self.random_bytes_ratio
            ));
        }
        if self.randomized_payload_pool_size == 0 {
            return bad("randomizedPayloadPoolSize must be at least 1".into());
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return bad(format!(
                "replicationFactor {} must be -1 (the broker's default) or at least 1",
                self.replication_factor
            ));
        }
        if ![0, 1, -1].contains(&self.acks) {
            return bad(format!("acks {} must be 0, 1 or -1", self.acks));
        }
        if self.max_in_flight == 0 || self.batch_size_bytes == 0 {
            return bad("maxInFlight and batchSizeBytes must be at least 1".into());
        }
        if !(self.linger_ms.is_finite() && self.linger_ms >= 0.0) {
            return bad(format!("lingerMs {} must be 0 or positive", self.linger_ms));
        }
        if self.fetch_max_wait_ms < 0 || self.fetch_max_partition_bytes <= 0 {
            return bad("fetchMaxWaitMs must be 0 or more and fetchMaxPartitionBytes positive".into());
        }
        for (what, v) in [
            ("testDuration", self.test_seconds()),
            ("warmupDuration", self.warmup_seconds()),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{what} must be 0 or positive"));
            }
        }
        if self.test_seconds() == 0.0 {
            return bad("the test duration is 0".into());
        }
        Ok(())
    }

    pub fn test_seconds(&self) -> f64 {
        self.test_duration_seconds
            .or(self.test_duration_minutes.map(|m| m * 60.0))
            .unwrap_or(DEFAULT_TEST_SECONDS)
    }

    pub fn warmup_seconds(&self) -> f64 {
        self.warmup_duration_seconds
            .or(self.warmup_duration_minutes.map(|m| m * 60.0))
            .unwrap_or(DEFAULT_WARMUP_SECONDS)
    }

    pub fn producers(&self) -> u32 {
        self.topics * self.producers_per_topic
    }

    pub fn consumers(&self) -> u32 {
        self.topics * self.subscriptions_per_topic * self.consumer_per_subscription
    }
}

/// OMB workload files are flat maps of scalars. This reads exactly that:
/// `key: value` per line, `#` comments, optional quotes. Anything nested
/// is an error naming the line.
fn flat_yaml(text: &str) -> Result<serde_json::Value, WorkloadError> {
    let mut map = serde_json::Map::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |msg: &str| WorkloadError::Yaml {
            line,
            msg: msg.to_string(),
        };
        let content = strip_comment(raw);
        if content.trim().is_empty() || content.trim() == "---" {
            continue;
        }
        if content.starts_with([' ', '\t']) || content.trim_start().starts_with('-') {
            return Err(err(
                "nested values are not supported; workload files are flat `key: value` lines",
            ));
        }
        let (key, value) = content.split_once(':').ok_or_else(|| err("expected `key: value`"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(err("empty key"));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(err("empty value (nested maps are not supported)"));
        }
        if map.insert(key.to_string(), scalar(value)).is_some() {
            return Err(err(&format!("`{key}` given twice")));
        }
    }
    Ok(serde_json::Value::Object(map))
}

fn strip_comment(line: &str) -> &str {
    // A `#` starts a comment unless it is inside quotes.
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('#', None) if i == 0 || line[..i].ends_with([' ', '\t']) => return &line[..i],
            _ => {}
        }
    }
    line
}

fn scalar(v: &str) -> serde_json::Value {
    use serde_json::Value;
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return Value::String(v[1..v.len() - 1].to_string());
        }
    }
    match v {
        "true" | "True" => return Value::Bool(true),
        "false" | "False" => return Value::Bool(false),
        "null" | "~" => return Value::Null,
        _ => {}
    }
    if let Ok(n) = v.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(f) = v.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OMB: &str = r#"
# An OpenMessaging Benchmark workload, unchanged.
name: 1 topic / 16 partitions / 1Kb

topics: 1
partitionsPerTopic: 16
keyDistributor: "KEY_ROUND_ROBIN"
messageSize: 1024
useRandomizedPayloads: true
randomBytesRatio: 0.5
randomizedPayloadPoolSize: 1000
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"#;

    #[test]
    fn reads_an_omb_workload_file() {
        let w = Workload::parse(OMB).unwrap();
        assert_eq!(w.name, "1 topic / 16 partitions / 1Kb");
        assert_eq!((w.topics, w.partitions_per_topic, w.message_size), (1, 16, 1024));
        assert_eq!(w.key_distributor, KeyDistributor::KeyRoundRobin);
        assert_eq!(w.producer_rate, 50_000.0);
        assert_eq!(w.random_bytes_ratio, 0.5);
        assert_eq!(w.test_seconds(), 900.0);
        assert_eq!(w.warmup_seconds(), DEFAULT_WARMUP_SECONDS);
        // Defaults for what OMB keeps in its driver file.
        assert_eq!((w.acks, w.max_in_flight, w.compression), (-1, 5, Compression::None));
    }

    #[test]
    fn json_with_the_same_keys_reads_the_same() {
        let w = Workload::parse(OMB).unwrap();
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(Workload::parse(&json).unwrap(), w);
    }

    #[test]
    fn seconds_win_over_minutes() {
        let w = Workload::parse(&format!("{OMB}testDurationSeconds: 20\nwarmupDurationSeconds: 2.5\n")).unwrap();
        assert_eq!((w.test_seconds(), w.warmup_seconds()), (20.0, 2.5));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = |t: &str| Workload::parse(t).unwrap_err().to_string();
        assert!(err(&format!("{OMB}partitionsPerTopc: 3\n")).contains("partitionsPerTopc"));
        assert!(err(&format!("{OMB}producerConfig:\n  acks: all\n")).contains("nested maps are not supported"));
        assert!(err(&format!("{OMB}topics: 2\n")).contains("given twice"));
        assert!(err(&OMB.replace("messageSize: 1024", "messageSize: 4")).contains("below 8"));
        assert!(err(&OMB.replace("producerRate: 50000", "producerRate: -1")).contains("producerRate"));
        assert!(err(&OMB.replace("consumerBacklogSizeGB: 0", "consumerBacklogSizeGB: 1")).contains("not supported"));
        assert!(err(&OMB.replace("keyDistributor: \"KEY_ROUND_ROBIN\"", "keyDistributor: ZIPF")).contains("ZIPF"));
        assert!(err(&format!("{OMB}acks: 2\n")).contains("acks"));
        assert!(err(&format!("{OMB}compression: gzip\n")).contains("gzip"));
        assert!(err("name: x\ntopics: 1\n").contains("missing field"));
    }

    #[test]
    fn comments_and_quotes() {
        let w =
            Workload::parse(&OMB.replace("name: 1 topic / 16 partitions / 1Kb", "name: 'a # b' # trailing")).unwrap();
        assert_eq!(w.name, "a # b");
    }
}
