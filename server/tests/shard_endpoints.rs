//! `sluice.shard.listeners`: every shard is a broker of its own to
//! clients, and a client that sends each partition to its leader sends it
//! to the shard that owns it, so nothing crosses shards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice::config::SHARD_ID_STRIDE;
use sluice::shard::owner_of;

fn start(shards: usize) -> TestBroker {
    TestBroker::start(shards, |c| {
        c.set("sluice.shard.listeners", "true").unwrap();
        c.set("sluice.admin.listen", "127.0.0.1:0").unwrap();
    })
}

/// Jobs the shards handed to one another so far (`/metrics`).
fn handoffs(admin: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("sluice_shard_handoffs_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn endpoint(md: &MetadataResponse, id: i32) -> SocketAddr {
    let b = md
        .brokers
        .iter()
        .find(|b| b.node_id.0 == id)
        .expect("the leader is listed");
    format!("{}:{}", b.host.as_str(), b.port).parse().unwrap()
}

#[test]
fn each_shard_is_a_broker_and_gets_its_own_partitions() {
    let b = start(2);
    let admin = b.broker.as_ref().unwrap().admin_addr().unwrap();
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "spread", 8).topics[0].error_code, 0);
    let md = metadata(&mut c, &["spread"]);
    // Node 0's two shards, each at a port of its own.
    let mut ids: Vec<i32> = md.brokers.iter().map(|b| b.node_id.0).collect();
    ids.sort();
    assert_eq!(ids, [0, 1]);
    let ports: Vec<i32> = md.brokers.iter().map(|b| b.port).collect();
    assert_ne!(ports[0], ports[1]);
    assert!(!ports.contains(&i32::from(b.addr().port())));
    assert_eq!(md.controller_id.0, 0);
    // Each partition is led by the shard that owns it.
    for p in &md.topics[0].partitions {
        let owner = owner_of("spread", p.partition_index, 2).0 as i32;
        assert_eq!(p.leader_id.0, owner, "partition {}", p.partition_index);
        assert_eq!(p.replica_nodes.iter().map(|r| r.0).collect::<Vec<_>>(), [owner]);
        assert_eq!(p.isr_nodes.iter().map(|r| r.0).collect::<Vec<_>>(), [owner]);
    }
    let mut to: Vec<Client> = (0..2).map(|id| Client::connect(endpoint(&md, id))).collect();
    let rounds = 25;
    // Sent to each partition's leader: served where it arrived.
    let before = handoffs(admin);
    for _ in 0..rounds {
        for p in &md.topics[0].partitions {
            let leader = p.leader_id.0 as usize;
            let (code, _) = produce(&mut to[leader], 9, "spread", p.partition_index, 1, records(1, 0));
            assert_eq!(code, 0);
        }
    }
    let direct = handoffs(admin) - before;
    // Sent to the other shard (stale metadata): still served, by a hop.
    let before = handoffs(admin);
    for _ in 0..rounds {
        for p in &md.topics[0].partitions {
            let other = 1 - p.leader_id.0 as usize;
            let (code, _) = produce(&mut to[other], 9, "spread", p.partition_index, 1, records(1, 0));
            assert_eq!(code, 0);
        }
    }
    let hopped = handoffs(admin) - before;
    let requests = rounds * 8;
    assert!(
        hopped >= requests,
        "{hopped} handoffs for {requests} produces sent to the wrong shard"
    );
    assert!(
        direct < 10,
        "{direct} handoffs for {requests} produces sent to the owners"
    );
    // Every record arrived: two produces per partition per round.
    for p in &md.topics[0].partitions {
        let (code, end, _) = list_offsets(&mut c, "spread", p.partition_index, -1);
        assert_eq!((code, end), (0, 2 * rounds as i64));
    }
}

#[test]
fn coordinators_and_cluster_views_name_shards() {
    let b = start(2);
    let mut c = b.client();
    // The group coordinator is the shard that owns the group's offsets
    // partition, at that shard's endpoint.
    let mut req = FindCoordinatorRequest::default();
    req.key = StrBytes::from_static_str("some-group");
    let resp: FindCoordinatorResponse = loop {
        let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 3, &req);
        if r.error_code == 0 {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let md = metadata(&mut c, &[]);
    assert!((0..2).contains(&resp.node_id.0), "{resp:?}");
    assert_eq!(endpoint(&md, resp.node_id.0).port(), resp.port as u16);
    let offsets = metadata(&mut c, &["__consumer_offsets"]);
    let partitions = offsets.topics[0].partitions.len() as i32;
    let p = sluice::groups::partition_for("some-group", partitions);
    assert_eq!(resp.node_id.0, owner_of("__consumer_offsets", p, 2).0 as i32);
    // DescribeCluster lists the same brokers.
    let d: DescribeClusterResponse = c.call(ApiKey::DescribeCluster, 0, &DescribeClusterRequest::default());
    let mut ids: Vec<i32> = d.brokers.iter().map(|b| b.broker_id.0).collect();
    ids.sort();
    assert_eq!(ids, [0, 1]);
    // A BROKER config resource may name a shard of this node.
    let mut r = DescribeConfigsRequest::default();
    let mut res = describe_configs_request::DescribeConfigsResource::default();
    res.resource_type = 4;
    res.resource_name = StrBytes::from_static_str("1");
    r.resources = vec![res];
    let d: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 1, &r);
    assert_eq!(d.results[0].error_code, 0);
    assert_eq!(SHARD_ID_STRIDE, 1024);
}
