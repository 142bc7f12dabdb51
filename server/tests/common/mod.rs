//! A minimal blocking Kafka client over std TCP, built on the
//! `kafka-protocol` crate's encoders and decoders, plus an in-process broker.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice::{Broker, BrokerConfig};
use sluice_engine::batch::{self, ProducerFields, Record};

pub struct TestBroker {
    pub broker: Option<Broker>,
    pub dir: tempfile::TempDir,
    pub config: BrokerConfig,
}

impl TestBroker {
    pub fn start(cores: usize, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), cores, tweak)
    }

    /// [`TestBroker::start`] with its data in `dir`.
    pub fn start_in(dir: tempfile::TempDir, cores: usize, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let mut config = BrokerConfig::default();
        config.set("listeners", "127.0.0.1:0").unwrap();
        config.set("log.dirs", dir.path().to_str().unwrap()).unwrap();
        config.set("num.cores", &cores.to_string()).unwrap();
        tweak(&mut config);
        config.finish().unwrap();
        let broker = Broker::start(config.clone()).unwrap();
        Self {
            broker: Some(broker),
            dir,
            config,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.broker.as_ref().unwrap().local_addr()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Clean shutdown and start again on the same data directory.
    pub fn restart(&mut self) {
        self.broker.take().unwrap().shutdown();
        self.broker = Some(Broker::start(self.config.clone()).unwrap());
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        // Waking a shard from a thread that is unwinding makes compio abort
        // the process; after a failed assertion, leave the broker to the
        // process exit so the failure is reported.
        if std::thread::panicking() {
            std::mem::forget(self.broker.take());
            return;
        }
        if let Some(b) = self.broker.take() {
            b.shutdown();
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, correlation: 0 }
    }

    /// Encodes a request frame without sending it.
    pub fn frame<R: Encodable>(&mut self, key: ApiKey, version: i16, req: &R) -> (i32, Vec<u8>) {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("sluice-test"));
        let mut body = BytesMut::new();
        header.encode(&mut body, key.request_header_version(version)).unwrap();
        req.encode(&mut body, version).unwrap();
        let mut out = Vec::with_capacity(body.len() + 4);
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        (self.correlation, out)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one response frame; `None` when the broker closed the
    /// connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).is_err() {
            return None;
        }
        let n = i32::from_be_bytes(len) as usize;
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }

    pub fn read_response<T: Decodable>(&mut self, key: ApiKey, version: i16, correlation: i32) -> T {
        let mut frame = self.read_frame().expect("connection closed before a response");
        let header = ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation, "responses out of order");
        let resp = T::decode(&mut frame, version).unwrap();
        assert!(
            !frame.has_remaining(),
            "{key:?} v{version}: {} bytes left over",
            frame.remaining()
        );
        resp
    }

    pub fn call<R: Encodable, T: Decodable>(&mut self, key: ApiKey, version: i16, req: &R) -> T {
        let (corr, frame) = self.frame(key, version, req);
        self.send_raw(&frame);
        self.read_response(key, version, corr)
    }

    /// True when the broker has closed this connection.
    pub fn is_closed(&mut self) -> bool {
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

// Requests the tests share.

pub fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub fn create_topic(c: &mut Client, topic: &str, partitions: i32) -> CreateTopicsResponse {
    create_replicated_topic(c, topic, partitions, 1)
}

pub fn create_replicated_topic(c: &mut Client, topic: &str, partitions: i32, rf: i16) -> CreateTopicsResponse {
    let mut t = CreatableTopic::default();
    t.name = name(topic);
    t.num_partitions = partitions;
    t.replication_factor = rf;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    c.call(ApiKey::CreateTopics, 7, &req)
}

pub fn records(n: usize, ts: i64) -> Bytes {
    let recs: Vec<Record> = (0..n)
        .map(|i| Record {
            timestamp: ts,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("value-{i}").into_bytes()),
            headers: vec![("h".into(), Some(b"x".to_vec()))],
        })
        .collect();
    batch::build(&recs, ProducerFields::NONE).freeze()
}

pub fn produce_req(topic: &str, partition: i32, acks: i16, batch: Bytes) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(batch);
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5000;
    req.topic_data = vec![t];
    req
}

pub fn produce(c: &mut Client, version: i16, topic: &str, partition: i32, acks: i16, batch: Bytes) -> (i16, i64) {
    let resp: ProduceResponse = c.call(ApiKey::Produce, version, &produce_req(topic, partition, acks, batch));
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetch_req(topic: &str, id: uuid::Uuid, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.topic_id = id;
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 1;
    req.max_bytes = 50 << 20;
    req.session_epoch = -1;
    req.topics = vec![t];
    req
}

pub fn metadata(c: &mut Client, topics: &[&str]) -> MetadataResponse {
    let mut req = MetadataRequest::default();
    req.topics = Some(
        topics
            .iter()
            .map(|t| {
                let mut m = MetadataRequestTopic::default();
                m.name = Some(name(t));
                m
            })
            .collect(),
    );
    req.allow_auto_topic_creation = true;
    c.call(ApiKey::Metadata, 12, &req)
}

pub fn topic_id(c: &mut Client, topic: &str) -> uuid::Uuid {
    metadata(c, &[topic]).topics[0].topic_id
}

/// CreatePartitions v3 of one topic to `count`; the topic's error code.
pub fn create_partitions(c: &mut Client, topic: &str, count: i32) -> i16 {
    let mut t = create_partitions_request::CreatePartitionsTopic::default();
    t.name = name(topic);
    t.count = count;
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &req);
    r.results[0].error_code
}

/// ListOffsets v7 of one partition: `(error_code, offset, timestamp)`.
pub fn list_offsets(c: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

/// DeleteRecords v2 of one partition: `(error_code, low_watermark)`.
pub fn delete_records(c: &mut Client, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let mut p = delete_records_request::DeleteRecordsPartition::default();
    p.partition_index = partition;
    p.offset = offset;
    let mut t = delete_records_request::DeleteRecordsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut req = DeleteRecordsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    let r: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, 2, &req);
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

/// A port free on loopback now (another process may take it before use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
