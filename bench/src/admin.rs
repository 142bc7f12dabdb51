//! Control-plane calls before and after a run: versions, topics, leaders
//! and log ends. Blocking, on the `kafka-protocol` codec.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_tools::{Connection, Error};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The API version ranges a broker advertises.
#[derive(Debug, Clone, Default)]
pub struct Versions(HashMap<i16, (i16, i16)>);

impl Versions {
    pub fn fetch(conn: &mut Connection) -> Result<Self, Error> {
        let r: ApiVersionsResponse = conn.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        if r.error_code != 0 {
            return Err(Error::Kafka {
                api: "ApiVersions",
                code: r.error_code,
            });
        }
        Ok(Self(
            r.api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        ))
    }

    /// The highest version within `lo..=hi` the broker supports.
    pub fn pick(&self, key: ApiKey, lo: i16, hi: i16) -> Result<i16, Error> {
        let (min, max) = self
            .0
            .get(&(key as i16))
            .copied()
            .ok_or_else(|| Error::Protocol(format!("the broker does not support {key:?}")))?;
        let v = max.min(hi);
        if v < lo.max(min) {
            return Err(Error::Protocol(format!(
                "the broker supports {key:?} v{min}-{max}; sluice-bench needs v{lo}-{hi}"
            )));
        }
        Ok(v)
    }
}

/// Leaders of a run's topics.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Address of each node, by id.
    pub brokers: HashMap<i32, String>,
    /// `leaders[topic][partition]` is a node id.
    pub leaders: HashMap<String, Vec<i32>>,
}

impl Layout {
    /// The address of each partition's leader, by topic: a client sends
    /// each partition there, as Kafka clients do (with
    /// `sluice.shard.listeners`, the shard that owns it).
    pub fn routes(&self) -> Result<HashMap<String, Vec<String>>, Error> {
        self.leaders
            .iter()
            .map(|(topic, leaders)| {
                let addrs = leaders
                    .iter()
                    .map(|id| {
                        self.brokers
                            .get(id)
                            .cloned()
                            .ok_or_else(|| Error::Protocol(format!("leader {id} is not among the brokers")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((topic.clone(), addrs))
            })
            .collect()
    }
}

/// Creates the run's topics. `sluice-bench` drives one node: on a
/// cluster, every partition's replicas are assigned with `driven` (the
/// bootstrap address) first, so that node leads them all and the others
/// follow.
pub fn create_topics(
    conn: &mut Connection,
    versions: &Versions,
    names: &[String],
    partitions: u32,
    replication_factor: i16,
    driven: &str,
) -> Result<Layout, Error> {
    let v = versions.pick(ApiKey::CreateTopics, 2, 7)?;
    let brokers = metadata(conn, versions, &[])?.brokers;
    let assignments = if replication_factor >= 1 && brokers.len() > 1 {
        let me = brokers.iter().find(|(_, a)| a.as_str() == driven).map(|(&id, _)| id);
        let mut others: Vec<i32> = brokers.keys().copied().filter(|&id| Some(id) != me).collect();
        others.sort_unstable();
        match me {
            Some(me) if others.len() + 1 >= replication_factor as usize => (0..partitions)
                .map(|p| {
                    let mut ids = vec![me];
                    let k = others.len().max(1);
                    ids.extend((0..replication_factor as usize - 1).map(|i| others[(p as usize + i) % k]));
                    let mut a = CreatableReplicaAssignment::default();
                    a.partition_index = p as i32;
                    a.broker_ids = ids.into_iter().map(BrokerId).collect();
                    a
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = 30_000;
    req.topics = names
        .iter()
        .map(|n| {
            let mut t = CreatableTopic::default();
            t.name = TopicName(s(n));
            if assignments.is_empty() {
                t.num_partitions = partitions as i32;
                t.replication_factor = replication_factor;
            } else {
                t.num_partitions = -1;
                t.replication_factor = -1;
                t.assignments = assignments.clone();
            }
            t
        })
        .collect();
    let r: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, v, &req)?;
    for t in &r.topics {
        if t.error_code != 0 {
            return Err(Error::Protocol(format!(
                "creating topic {}: error {} {}",
                t.name.as_str(),
                t.error_code,
                t.error_message.as_deref().unwrap_or("")
            )));
        }
    }
    // Wait until every partition has a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let layout = metadata(conn, versions, names)?;
        let ready = names.iter().all(|n| {
            layout
                .leaders
                .get(n)
                .is_some_and(|l| l.len() == partitions as usize && l.iter().all(|&id| id >= 0))
        });
        if ready {
            return Ok(layout);
        }
        if Instant::now() > deadline {
            return Err(Error::Protocol("topics have no leaders after 30 s".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn metadata(conn: &mut Connection, versions: &Versions, names: &[String]) -> Result<Layout, Error> {
    let v = versions.pick(ApiKey::Metadata, 1, 9)?;
    let mut req = MetadataRequest::default();
    req.topics = Some(
        names
            .iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(TopicName(s(n)));
                t
            })
            .collect(),
    );
    let r: MetadataResponse = conn.call(ApiKey::Metadata, v, &req)?;
    let brokers = r
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let mut leaders = HashMap::new();
    for t in &r.topics {
        let Some(name) = &t.name else { continue };
        if t.error_code != 0 {
            continue;
        }
        let mut l = vec![-1; t.partitions.len()];
        for p in &t.partitions {
            if let Some(slot) = usize::try_from(p.partition_index).ok().and_then(|i| l.get_mut(i)) {
                *slot = if p.error_code == 0 { p.leader_id.0 } else { -1 };
            }
        }
        leaders.insert(name.as_str().to_string(), l);
    }
    Ok(Layout { brokers, leaders })
}

/// The log end offset of each of `partitions` partitions of `topic`.
pub fn log_ends(conn: &mut Connection, versions: &Versions, topic: &str, partitions: u32) -> Result<Vec<i64>, Error> {
    let v = versions.pick(ApiKey::ListOffsets, 1, 7)?;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = (0..partitions as i32)
        .map(|i| {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = i;
            p.timestamp = -1;
            p
        })
        .collect();
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let r: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, v, &req)?;
    let mut ends = vec![0; partitions as usize];
    for p in r.topics.iter().flat_map(|t| &t.partitions) {
        if p.error_code != 0 {
            return Err(Error::Kafka {
                api: "ListOffsets",
                code: p.error_code,
            });
        }
        if let Some(slot) = usize::try_from(p.partition_index).ok().and_then(|i| ends.get_mut(i)) {
            *slot = p.offset;
        }
    }
    Ok(ends)
}

pub fn delete_topics(conn: &mut Connection, versions: &Versions, names: &[String]) -> Result<(), Error> {
    let v = versions.pick(ApiKey::DeleteTopics, 1, 5)?;
    let mut req = DeleteTopicsRequest::default();
    req.timeout_ms = 30_000;
    req.topic_names = names.iter().map(|n| TopicName(s(n))).collect();
    let r: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, v, &req)?;
    match r.responses.iter().find(|t| t.error_code != 0) {
        Some(t) => Err(Error::Kafka {
            api: "DeleteTopics",
            code: t.error_code,
        }),
        None => Ok(()),
    }
}
