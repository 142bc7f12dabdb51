//! The broker ids clients see. Without `sluice.shard.listeners` they are
//! the nodes' ids. With it, each shard of a node is a broker of its own:
//! shard s of node n is broker n × [`SHARD_ID_STRIDE`] + s, at the port
//! of that shard's own endpoint, and a partition's leader and replicas are
//! the shards that own it on those nodes. A Kafka client sends each
//! partition to its leader, so it then sends each partition to the shard
//! that owns it, and no request crosses shards.
//!
//! Only what clients see changes: the controller quorum, registrations,
//! fencing and the brokers' own requests (a follower's replica id) keep
//! the nodes' ids. A node registered without shard endpoints on the
//! listener is one broker, n × [`SHARD_ID_STRIDE`], that leads all its
//! partitions.

use crate::config::{BrokerConfig, SHARD_ID_STRIDE};
use crate::image::BrokerMeta;
use crate::meta::Snapshot;
use crate::shard::owner_of;

/// How this broker presents ids to the clients of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a> {
    snapshot: &'a Snapshot,
    listener: &'a str,
    per_shard: bool,
}

impl<'a> Ids<'a> {
    pub fn new(snapshot: &'a Snapshot, config: &BrokerConfig, listener: &'a str) -> Self {
        Self {
            snapshot,
            listener,
            per_shard: config.shard_listeners,
        }
    }

    /// Ids as they are, whatever the setting: for the brokers' own
    /// requests (a follower's fetch).
    pub fn nodes(snapshot: &'a Snapshot, listener: &'a str) -> Self {
        Self {
            snapshot,
            listener,
            per_shard: false,
        }
    }

    pub fn snapshot(&self) -> &'a Snapshot {
        self.snapshot
    }

    /// The shards of `node` that have endpoints on the listener (0: none).
    fn shards_of(&self, node: i32) -> usize {
        self.snapshot
            .brokers
            .get(&node)
            .map_or(0, |b| b.shard_ports(self.listener).len())
    }

    /// The id of `node`'s replica of `topic`-`partition`: the shard that
    /// owns it there. A negative id (no leader) stays as it is.
    pub fn replica(&self, node: i32, topic: &str, partition: i32) -> i32 {
        if !self.per_shard || node < 0 {
            return node;
        }
        let shard = match self.shards_of(node) {
            0 => 0,
            n => owner_of(topic, partition, n).0 as i32,
        };
        node * SHARD_ID_STRIDE + shard
    }

    /// Each of `nodes`' replicas of `topic`-`partition`.
    pub fn replicas(&self, nodes: &[i32], topic: &str, partition: i32) -> Vec<i32> {
        nodes.iter().map(|n| self.replica(*n, topic, partition)).collect()
    }

    /// A node as a whole (the controller): its first shard.
    pub fn node(&self, node: i32) -> i32 {
        if !self.per_shard || node < 0 {
            return node;
        }
        node * SHARD_ID_STRIDE
    }

    /// The node behind an id a client gave.
    pub fn to_node(&self, id: i32) -> i32 {
        if !self.per_shard || id < 0 {
            return id;
        }
        id / SHARD_ID_STRIDE
    }

    /// The brokers a client sees for the registered broker `b`, as (id,
    /// host, port): one per shard with shard endpoints, else `b` itself.
    /// None when `b` has no endpoint on the listener.
    pub fn brokers(&self, b: &'a BrokerMeta) -> Vec<(i32, &'a str, u16)> {
        let Some((host, port)) = b.endpoint(self.listener) else {
            return Vec::new();
        };
        if !self.per_shard {
            return vec![(b.id, host, port)];
        }
        match b.shard_ports(self.listener) {
            [] => vec![(self.node(b.id), host, port)],
            ports => ports
                .iter()
                .enumerate()
                .map(|(s, p)| (b.id * SHARD_ID_STRIDE + s as i32, host, *p))
                .collect(),
        }
    }

    /// The endpoint of the broker a client knows as `id`.
    pub fn endpoint(&self, id: i32) -> Option<(&'a str, u16)> {
        let node = self.to_node(id);
        let b = self.snapshot.brokers.get(&node)?;
        self.brokers(b)
            .into_iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, h, p)| (h, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, shard_ports: Vec<u16>) -> BrokerMeta {
        BrokerMeta {
            id,
            incarnation: uuid::Uuid::nil(),
            epoch: 1,
            host: "10.0.0.1".into(),
            port: 9093,
            shards: shard_ports.len() as u32,
            fenced: false,
            registered_ms: 0,
            shut_down: false,
            clean_start: true,
            endpoints: vec![crate::image::Endpoint {
                listener: "PLAINTEXT".into(),
                host: "10.0.0.1".into(),
                port: 9092,
                security_protocol: 0,
                shard_ports,
            }],
        }
    }

    #[test]
    fn shards_are_brokers_of_their_own_when_asked() {
        let mut snapshot = Snapshot::default();
        snapshot.brokers.insert(2, broker(2, vec![9192, 9193]));
        snapshot.brokers.insert(3, broker(3, Vec::new()));
        let mut config = BrokerConfig::default();
        let off = Ids::new(&snapshot, &config, "PLAINTEXT");
        assert_eq!(off.replica(2, "t", 0), 2);
        assert_eq!(off.brokers(&snapshot.brokers[&2]), vec![(2, "10.0.0.1", 9092)]);
        config.shard_listeners = true;
        let on = Ids::new(&snapshot, &config, "PLAINTEXT");
        let owner = owner_of("t", 5, 2).0 as i32;
        assert_eq!(on.replica(2, "t", 5), 2048 + owner);
        assert_eq!(
            on.replica(3, "t", 5),
            3072,
            "a node without shard endpoints is one broker"
        );
        assert_eq!(on.replica(-1, "t", 5), -1);
        assert_eq!(on.node(2), 2048);
        assert_eq!(on.to_node(2049), 2);
        assert_eq!(
            on.brokers(&snapshot.brokers[&2]),
            vec![(2048, "10.0.0.1", 9192), (2049, "10.0.0.1", 9193)]
        );
        assert_eq!(on.endpoint(2049), Some(("10.0.0.1", 9193)));
        assert_eq!(on.endpoint(2050), None);
        assert_eq!(on.endpoint(3072), Some(("10.0.0.1", 9092)));
        assert!(
            Ids::new(&snapshot, &config, "SSL")
                .brokers(&snapshot.brokers[&2])
                .is_empty()
        );
    }
}
