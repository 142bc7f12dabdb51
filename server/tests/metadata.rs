//! The metadata log of the one-voter quorum: every change survives a
//! restart, replayed from the log and from snapshots; a data directory from
//! before the quorum is moved into it; replication factors are checked
//! against the live brokers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::*;

/// Topic name → (id, partitions, replicas of partition 0, leader epoch).
fn topics(c: &mut Client) -> BTreeMap<String, (uuid::Uuid, usize, Vec<i32>)> {
    let mut req = MetadataRequest::default();
    req.topics = None;
    let m: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    m.topics
        .iter()
        .map(|t| {
            let replicas = t.partitions[0].replica_nodes.iter().map(|b| b.0).collect();
            (
                t.name.as_ref().unwrap().0.to_string(),
                (t.topic_id, t.partitions.len(), replicas),
            )
        })
        .collect()
}

fn init_producer_id(c: &mut Client) -> i64 {
    let mut r = InitProducerIdRequest::default();
    r.transactional_id = None;
    r.producer_id = ProducerId(-1);
    r.producer_epoch = -1;
    let resp: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &r);
    assert_eq!(resp.error_code, 0);
    resp.producer_id.0
}

#[test]
fn every_change_survives_restart_from_the_log_and_its_snapshots() {
    // A snapshot every 10 entries: 40 changes leave snapshots and a log
    // tail to replay after them.
    let mut b = TestBroker::start(2, |c| {
        c.set("sluice.metadata.snapshot.records", "10").unwrap();
        c.set("offsets.topic.num.partitions", "2").unwrap();
    });
    let mut c = b.client();
    for i in 0..30 {
        create_topic(&mut c, &format!("t{i}"), 1 + i % 3);
    }
    for i in 0..5 {
        assert_eq!(create_partitions(&mut c, &format!("t{i}"), 6), 0);
    }
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = (25..30).map(|i| name(&format!("t{i}"))).collect();
    let resp: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &req);
    assert!(resp.responses.iter().all(|r| r.error_code == 0));
    let pid = init_producer_id(&mut c);
    let before = topics(&mut c);
    assert_eq!(before.len(), 26, "25 topics and the offsets topic");
    assert_eq!(before["t0"].1, 6);
    let quorum = b.dir.path().join("meta/quorum");
    assert!(quorum.join("snapshot").exists(), "a snapshot was taken");
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(topics(&mut c), before, "the same topics, ids and partitions");
    assert!(
        init_producer_id(&mut c) > pid,
        "producer ids are never handed out twice"
    );
    // Restart once more: the log written since the last start replays too.
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(topics(&mut c), before);
}

#[test]
fn a_data_directory_from_before_the_quorum_is_moved_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    let id = uuid::Uuid::new_v4();
    let offsets_id = uuid::Uuid::new_v4();
    let old = serde_json::json!({
        "format": 1,
        "topics": [
            {"name": "old", "id": id, "partitions": 3, "configs": {"retention.ms": "60000"}},
            {"name": "__consumer_offsets", "id": offsets_id, "partitions": 2,
             "configs": {"retention.ms": "-1", "retention.bytes": "-1"}},
        ],
    });
    std::fs::write(meta.join("topics.json"), serde_json::to_vec(&old).unwrap()).unwrap();
    std::fs::write(meta.join("producer-ids"), "2000").unwrap();
    let mut b = TestBroker::start_in(dir, 1, |c| {
        c.set("offsets.topic.num.partitions", "7").unwrap();
    });
    let mut c = b.client();
    let seen = topics(&mut c);
    assert_eq!(seen["old"].0, id, "the topic keeps its id");
    assert_eq!(seen["old"].1, 3);
    assert_eq!(
        seen["__consumer_offsets"],
        (offsets_id, 2, vec![0]),
        "the old offsets topic is kept"
    );
    assert!(
        init_producer_id(&mut c) >= 2000,
        "ids reserved before are not handed out"
    );
    assert!(!meta.join("topics.json").exists());
    assert!(meta.join("topics.json.migrated").exists());
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(topics(&mut c), seen, "moved once, then read from the log");
}

#[test]
fn replication_factors_and_assignments_are_checked_against_the_brokers() {
    let b = TestBroker::start(1, |c| {
        c.set("offsets.topic.num.partitions", "1").unwrap();
    });
    let mut c = b.client();
    let create = |c: &mut Client, t: CreatableTopic| -> (i16, i16, i32) {
        let mut req = CreateTopicsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 5000;
        let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req);
        let r = &resp.topics[0];
        (r.error_code, r.replication_factor, r.num_partitions)
    };
    let topic = |n: &str, partitions: i32, rf: i16| {
        let mut t = CreatableTopic::default();
        t.name = name(n);
        t.num_partitions = partitions;
        t.replication_factor = rf;
        t
    };
    // One live broker: RF 3 cannot be placed.
    assert_eq!(create(&mut c, topic("rf3", 2, 3)).0, 38, "INVALID_REPLICATION_FACTOR");
    assert_eq!(create(&mut c, topic("rf-default", 2, -1)), (0, 1, 2));
    // An assignment names its brokers; an unknown broker is refused.
    let assigned = |n: &str, brokers: Vec<Vec<i32>>| {
        let mut t = topic(n, -1, -1);
        t.assignments = brokers
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let mut a = CreatableReplicaAssignment::default();
                a.partition_index = i as i32;
                a.broker_ids = b.into_iter().map(BrokerId).collect();
                a
            })
            .collect();
        t
    };
    assert_eq!(create(&mut c, assigned("by-hand", vec![vec![0], vec![0]])), (0, 1, 2));
    assert_eq!(
        create(&mut c, assigned("unknown", vec![vec![5]])).0,
        39,
        "INVALID_REPLICA_ASSIGNMENT"
    );
    assert_eq!(create(&mut c, assigned("twice", vec![vec![0, 0]])).0, 39);
    let seen = topics(&mut c);
    assert!(!seen.contains_key("rf3") && !seen.contains_key("unknown") && !seen.contains_key("twice"));
    assert_eq!(seen["by-hand"].1, 2);
}
