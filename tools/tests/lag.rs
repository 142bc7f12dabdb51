//! `sluice-lag` against an in-process broker: produce, commit for two
//! groups, and check the reported committed offsets, log ends and lag.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice::{Broker, BrokerConfig};
use sluice_tools::{Connection, LagRow, lag, table};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn produce(c: &mut Connection, topic: &str, partition: i32, records: usize) {
    let batch = sluice_engine::batch::build_simple(records, 10, 1_700_000_000_000).freeze();
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(batch);
    let mut t = TopicProduceData::default();
    t.name = TopicName(s(topic));
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = 1;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).unwrap();
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

fn commit(c: &mut Connection, group: &str, topic: &str, partition: i32, offset: i64) {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = partition;
    p.committed_offset = offset;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = -1;
    req.topics = vec![t];
    let r: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &req).unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
}

#[test]
fn lag_reports_committed_log_end_and_difference_per_group_and_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::default();
    config.set("listeners", "127.0.0.1:0").unwrap();
    config.set("log.dirs", dir.path().to_str().unwrap()).unwrap();
    config.set("num.cores", "2").unwrap();
    config.set("offsets.topic.num.partitions", "3").unwrap();
    config.finish().unwrap();
    let broker = Broker::start(config).unwrap();
    let addr = broker.local_addr().to_string();

    let mut c = Connection::connect(&addr).unwrap();
    let mut t = CreatableTopic::default();
    t.name = TopicName(s("orders"));
    t.num_partitions = 2;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).unwrap();
    assert_eq!(r.topics[0].error_code, 0);
    produce(&mut c, "orders", 0, 10);
    produce(&mut c, "orders", 1, 4);
    commit(&mut c, "billing", "orders", 0, 7);
    commit(&mut c, "billing", "orders", 1, 4);
    commit(&mut c, "audit", "orders", 0, 0);

    let rows = lag(&addr, &[]).unwrap();
    let row = |group: &str, partition: i32, committed: i64, log_end: i64| LagRow {
        group: group.into(),
        topic: "orders".into(),
        partition,
        committed: Some(committed),
        log_end: Some(log_end),
        lag: Some(log_end - committed),
    };
    assert_eq!(
        rows,
        vec![
            row("audit", 0, 0, 10),
            row("billing", 0, 7, 10),
            row("billing", 1, 4, 4)
        ]
    );
    assert_eq!(lag(&addr, &["billing".to_string()]).unwrap().len(), 2);
    assert!(table(&rows).contains("billing  orders          0          7       10    3"));
    drop(c);
    broker.shutdown();
}
