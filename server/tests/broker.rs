//! The broker over TCP with a protocol-level client: every API, pipelining,
//! restart persistence, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_engine::batch::{self, ProducerFields, Record};

#[test]
fn api_versions_advertises_the_table_and_answers_unknown_versions_in_v0() {
    let b = TestBroker::start(1, |_| {});
    let mut c = b.client();
    let resp: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
    let listed: Vec<(i16, i16, i16)> = resp
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let table: Vec<(i16, i16, i16)> = sluice::handlers::APIS
        .iter()
        .map(|a| (a.key as i16, a.min_version, a.max_version))
        .collect();
    assert_eq!(listed, table);
    // A version from the future: header v1 (key, version, correlation,
    // client id), answered as ApiVersions v0 with UNSUPPORTED_VERSION.
    let mut frame = Vec::new();
    let body: &[u8] = &[0, 18, 0, 99, 0, 0, 0, 7, 0, 1, b'x', 0, 0, 0];
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(body);
    c.send_raw(&frame);
    let resp: ApiVersionsResponse = c.read_response(ApiKey::ApiVersions, 0, 7);
    assert_eq!(resp.error_code, 35);
    assert!(resp.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16));
}

#[test]
fn metadata_auto_creates_topics_whose_ids_survive_restart() {
    let mut b = TestBroker::start(2, |c| c.set("num.partitions", "3").unwrap());
    let mut c = b.client();
    let m = metadata(&mut c, &["auto-a", "bad name"]);
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.brokers[0].port, i32::from(b.addr().port()));
    assert_eq!(m.topics[0].error_code, 0);
    assert_eq!(m.topics[0].partitions.len(), 3);
    let id = m.topics[0].topic_id;
    assert!(!id.is_nil());
    assert_eq!(m.topics[1].error_code, 17, "INVALID_TOPIC_EXCEPTION");
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(topic_id(&mut c, "auto-a"), id);
}

#[test]
fn admin_apis_create_validate_grow_and_delete() {
    let b = TestBroker::start(2, |c| c.set("auto.create.topics.enable", "false").unwrap());
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "t1", 2).topics[0].error_code, 0);
    assert_eq!(
        create_topic(&mut c, "t1", 2).topics[0].error_code,
        36,
        "TOPIC_ALREADY_EXISTS"
    );
    assert_eq!(create_topic(&mut c, "..", 1).topics[0].error_code, 17);
    assert_eq!(create_topic(&mut c, &"x".repeat(250), 1).topics[0].error_code, 17);
    assert_eq!(
        create_topic(&mut c, "t0", 0).topics[0].error_code,
        37,
        "INVALID_PARTITIONS"
    );
    // validate_only creates nothing.
    let mut t = CreatableTopic::default();
    t.name = name("dry");
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.validate_only = true;
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req);
    assert_eq!(r.topics[0].error_code, 0);
    assert_eq!(
        metadata(&mut c, &["dry"]).topics[0].error_code,
        3,
        "not created, not auto-created"
    );
    // Grow, refuse to shrink.
    assert_eq!(create_partitions(&mut c, "t1", 5), 0);
    assert_eq!(metadata(&mut c, &["t1"]).topics[0].partitions.len(), 5);
    let (err, off) = produce(&mut c, 9, "t1", 4, -1, records(1, 1));
    assert_eq!((err, off), (0, 0), "a new partition takes writes");
    assert_eq!(create_partitions(&mut c, "t1", 2), 37);
    // Delete, then the name is free again and starts empty.
    let mut req = DeleteTopicsRequest::default();
    req.topic_names = vec![name("t1")];
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &req);
    assert_eq!(r.responses[0].error_code, 0);
    let r: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 4, &req);
    assert_eq!(r.responses[0].error_code, 3);
    assert_eq!(create_topic(&mut c, "t1", 5).topics[0].error_code, 0);
    let (err, off) = produce(&mut c, 9, "t1", 4, -1, records(1, 1));
    assert_eq!((err, off), (0, 0));
}

#[test]
fn produce_and_fetch_round_trip_on_every_shard_and_version() {
    let b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "rt", 4);
    let id = topic_id(&mut c, "rt");
    for p in 0..4 {
        for (i, version) in [3i16, 8, 9, 13].into_iter().enumerate() {
            let mut req = produce_req("rt", p, -1, records(3, 1000));
            req.topic_data[0].topic_id = id;
            let resp: ProduceResponse = c.call(ApiKey::Produce, version, &req);
            let pr = &resp.responses[0].partition_responses[0];
            assert_eq!((pr.error_code, pr.base_offset), (0, i as i64 * 3), "p{p} v{version}");
        }
    }
    for p in 0..4 {
        for version in [4i16, 11, 12, 13, 18] {
            let resp: FetchResponse = c.call(ApiKey::Fetch, version, &fetch_req("rt", id, p, 3, 100));
            let pd = &resp.responses[0].partitions[0];
            assert_eq!(pd.error_code, 0);
            assert_eq!(pd.high_watermark, 12);
            let bytes = pd.records.clone().unwrap();
            let h = batch::BatchHeader::parse(&bytes).unwrap();
            assert_eq!(
                h.base_offset(),
                3,
                "fetch returns whole batches from the one holding the offset"
            );
            let info = batch::validate(&bytes[..h.total_len().unwrap()], 1 << 20).unwrap();
            assert_eq!(info.records_count, 3);
        }
    }
}

#[test]
fn fetch_long_poll_wakes_on_append_and_reports_out_of_range() {
    let b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "lp", 2);
    let id = topic_id(&mut c, "lp");
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("lp", id, 1, 5, 0));
    assert_eq!(resp.responses[0].partitions[0].error_code, 1, "OFFSET_OUT_OF_RANGE");
    let addr = b.addr();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Client::connect(addr);
        produce(&mut p, 9, "lp", 1, 1, records(2, 5))
    });
    let start = Instant::now();
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("lp", id, 1, 0, 20_000));
    let waited = start.elapsed();
    assert_eq!(producer.join().unwrap(), (0, 0));
    let pd = &resp.responses[0].partitions[0];
    assert!(pd.records.as_ref().is_some_and(|r| !r.is_empty()), "woken with data");
    assert!(
        waited < Duration::from_secs(15),
        "woken by the append, not the 20 s wait"
    );
    // With nothing to read, max_wait_ms bounds the wait.
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("lp", id, 0, 0, 200));
    assert!(
        resp.responses[0].partitions[0]
            .records
            .as_ref()
            .is_none_or(|r| r.is_empty())
    );
}

#[test]
fn idempotent_retries_are_deduplicated_even_after_restart() {
    let mut b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "idem", 1);
    let init: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &{
        let mut r = InitProducerIdRequest::default();
        r.transactional_id = None;
        r.producer_id = ProducerId(-1);
        r.producer_epoch = -1;
        r
    });
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    assert!(pid >= 0);
    let batch_at = |seq: i32, epoch: i16| {
        let recs: Vec<Record> = (0..2)
            .map(|i| Record {
                timestamp: 1,
                value: Some(vec![i as u8]),
                ..Default::default()
            })
            .collect();
        batch::build(
            &recs,
            ProducerFields {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: seq,
            },
        )
        .freeze()
    };
    assert_eq!(produce(&mut c, 9, "idem", 0, -1, batch_at(0, 0)), (0, 0));
    assert_eq!(produce(&mut c, 9, "idem", 0, -1, batch_at(2, 0)), (0, 2));
    assert_eq!(
        produce(&mut c, 9, "idem", 0, -1, batch_at(0, 0)),
        (0, 0),
        "retry answered with its offset"
    );
    assert_eq!(
        produce(&mut c, 9, "idem", 0, -1, batch_at(7, 0)).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(
        produce(&mut c, 9, "idem", 0, -1, batch_at(2, 0)),
        (0, 2),
        "dedup survives restart"
    );
    assert_eq!(produce(&mut c, 9, "idem", 0, -1, batch_at(4, 0)), (0, 4));
    assert_eq!(
        produce(&mut c, 9, "idem", 0, -1, batch_at(0, 1)),
        (0, 6),
        "new epoch restarts"
    );
    assert_eq!(
        produce(&mut c, 9, "idem", 0, -1, batch_at(6, 0)).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let id = topic_id(&mut c, "idem");
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("idem", id, 0, 0, 0));
    assert_eq!(
        resp.responses[0].partitions[0].high_watermark, 8,
        "duplicates were not written"
    );
}

#[test]
fn list_offsets_and_delete_records() {
    let b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "lo", 1);
    for ts in [1000, 2000, 3000] {
        produce(&mut c, 9, "lo", 0, 1, records(2, ts));
    }
    let list = |c: &mut Client, ts: i64| list_offsets(c, "lo", 0, ts);
    assert_eq!(list(&mut c, -2), (0, 0, -1));
    assert_eq!(list(&mut c, -1), (0, 6, -1));
    assert_eq!(list(&mut c, 1500), (0, 2, 2000));
    assert_eq!(list(&mut c, -3), (0, 4, 3000));
    assert_eq!(list(&mut c, 9999), (0, -1, -1));
    let del = |c: &mut Client, offset: i64| delete_records(c, "lo", 0, offset);
    assert_eq!(del(&mut c, 3), (0, 3));
    assert_eq!(del(&mut c, 100).0, 1, "beyond the high watermark");
    assert_eq!(list(&mut c, -2), (0, 3, -1));
}

#[test]
fn pipelined_requests_are_answered_in_order_and_acks0_is_silent() {
    let b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "pipe", 2);
    let mut expected = Vec::new();
    let mut wire = Vec::new();
    for i in 0..40 {
        let (corr, frame) = if i % 5 == 4 {
            let mut req = MetadataRequest::default();
            req.topics = None;
            let (corr, f) = c.frame(ApiKey::Metadata, 12, &req);
            expected.push((corr, None));
            (corr, f)
        } else {
            let acks = if i % 7 == 3 { 0 } else { -1 };
            let (corr, f) = c.frame(
                ApiKey::Produce,
                9,
                &produce_req("pipe", i % 2, acks, records(1, i64::from(i))),
            );
            if acks != 0 {
                expected.push((corr, Some(i % 2)));
            }
            (corr, f)
        };
        let _ = corr;
        wire.extend_from_slice(&frame);
    }
    c.send_raw(&wire);
    let mut last_offset = [-1i64; 2];
    for (corr, partition) in expected {
        match partition {
            None => {
                let _: MetadataResponse = c.read_response(ApiKey::Metadata, 12, corr);
            }
            Some(p) => {
                let r: ProduceResponse = c.read_response(ApiKey::Produce, 9, corr);
                let pr = &r.responses[0].partition_responses[0];
                assert_eq!(pr.error_code, 0);
                assert!(pr.base_offset > last_offset[p as usize], "per-partition order kept");
                last_offset[p as usize] = pr.base_offset;
            }
        }
    }
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.put_i32(body.len() as i32);
    f.extend_from_slice(body);
    f
}

#[test]
fn bad_frames_close_the_connection_and_the_broker_keeps_serving() {
    let b = TestBroker::start(2, |c| c.set("socket.request.max.bytes", "4096").unwrap());
    let mut good = b.client();
    create_topic(&mut good, "safe", 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "frame above socket.request.max.bytes",
            1_000_000i32.to_be_bytes().to_vec(),
        ),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("absurd length", i32::MAX.to_be_bytes().to_vec()),
        ("shorter than a header", frame_of(&[0, 3, 0])),
        ("unknown api key", frame_of(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0])),
        ("unsupported api", frame_of(&[0, 8, 0, 0, 0, 0, 0, 1, 0, 0])),
        ("unsupported Produce version", frame_of(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0])),
        (
            "garbage Metadata body",
            frame_of(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ),
        (
            "garbage Produce body",
            frame_of(&[0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 7, 7]),
        ),
        (
            "client id longer than the frame",
            frame_of(&[0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0]),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = b.client();
        c.send_raw(&bytes);
        assert!(c.is_closed(), "{what}: connection should be closed");
    }
    // A truncated frame: the client goes away mid-frame.
    {
        let mut c = b.client();
        c.send_raw(&[0, 0, 0, 100, 0, 18, 0]);
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(c.is_closed());
    }
    // Bad batches get error codes on an open connection and are not written.
    let mut c = b.client();
    let mut bad_crc = records(2, 1).to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce(&mut c, 9, "safe", 0, -1, Bytes::from(bad_crc)).0,
        2,
        "CORRUPT_MESSAGE"
    );
    let mut lying = records(2, 1).to_vec();
    lying[8..12].copy_from_slice(&10_000i32.to_be_bytes());
    assert_eq!(produce(&mut c, 9, "safe", 0, -1, Bytes::from(lying)).0, 2);
    let mut magic1 = records(1, 1).to_vec();
    magic1[16] = 1;
    assert_ne!(produce(&mut c, 9, "safe", 0, -1, Bytes::from(magic1)).0, 0);
    let big = batch::build_simple(1, 2000, 1).freeze();
    assert_eq!(
        produce(&mut c, 9, "nosuch", 0, -1, big).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!(produce(&mut c, 9, "safe", 7, -1, records(1, 1)).0, 3);
    assert_eq!(
        produce(&mut c, 9, "safe", 0, 5, records(1, 1)).0,
        21,
        "INVALID_REQUIRED_ACKS"
    );
    // The first connection still works and nothing bad was stored.
    let id = topic_id(&mut good, "safe");
    assert_eq!(produce(&mut good, 9, "safe", 0, -1, records(1, 1)), (0, 0));
    let resp: FetchResponse = good.call(ApiKey::Fetch, 12, &fetch_req("safe", id, 0, 0, 0));
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 1);
}

#[test]
fn oversized_batches_get_message_too_large() {
    let b = TestBroker::start(1, |c| c.set("message.max.bytes", "1000").unwrap());
    let mut c = b.client();
    create_topic(&mut c, "big", 1);
    let big = batch::build_simple(1, 2000, 1).freeze();
    assert_eq!(produce(&mut c, 9, "big", 0, 1, big).0, 10, "MESSAGE_TOO_LARGE");
    assert_eq!(produce(&mut c, 9, "big", 0, 1, records(1, 1)), (0, 0));
}

#[test]
fn describe_and_alter_topic_configs() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let mut b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "cfg", 1);
    let describe = |c: &mut Client, key: &str| {
        let mut r = DescribeConfigsResource::default();
        r.resource_type = 2;
        r.resource_name = StrBytes::from_static_str("cfg");
        let mut req = DescribeConfigsRequest::default();
        req.resources = vec![r];
        let resp: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
        let res = &resp.results[0];
        assert_eq!(res.error_code, 0);
        res.configs
            .iter()
            .find(|e| e.name.as_str() == key)
            .map(|e| e.value.as_ref().unwrap().to_string())
    };
    assert_eq!(describe(&mut c, "retention.ms").as_deref(), Some("604800000"));
    let alter = |c: &mut Client, key: &str, value: &str| {
        let mut cfg = AlterableConfig::default();
        cfg.name = StrBytes::from_string(key.into());
        cfg.config_operation = 0;
        cfg.value = Some(StrBytes::from_string(value.into()));
        let mut r = AlterConfigsResource::default();
        r.resource_type = 2;
        r.resource_name = StrBytes::from_static_str("cfg");
        r.configs = vec![cfg];
        let mut req = IncrementalAlterConfigsRequest::default();
        req.resources = vec![r];
        let resp: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &req);
        resp.responses[0].error_code
    };
    assert_eq!(alter(&mut c, "retention.ms", "60000"), 0);
    assert_eq!(alter(&mut c, "cleanup.policy", "shred"), 40, "INVALID_CONFIG");
    assert_eq!(alter(&mut c, "min.cleanable.dirty.ratio", "2"), 40);
    assert_eq!(alter(&mut c, "no.such.config", "1"), 40);
    assert_eq!(alter(&mut c, "cleanup.policy", "compact,delete"), 0);
    drop(c);
    b.restart();
    let mut c = b.client();
    assert_eq!(describe(&mut c, "retention.ms").as_deref(), Some("60000"));
    assert_eq!(describe(&mut c, "cleanup.policy").as_deref(), Some("compact,delete"));
}

/// CPU ticks (user + system) used so far by the thread of `b`'s shard
/// `shard`, read from /proc.
fn shard_cpu_ticks(b: &TestBroker, shard: usize) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    b.broker.as_ref().unwrap().run_on_shard(
        shard,
        Box::new(move |_| {
            let link = std::fs::read_link("/proc/thread-self").unwrap();
            let _ = tx.send(link.file_name().unwrap().to_string_lossy().into_owned());
        }),
    );
    let tid = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the shard ran no job for 2 s: something holds it");
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_fetch_short_of_min_bytes_waits_without_holding_its_shard() {
    let b = TestBroker::start(1, |c| c.set("sluice.fetch.max.wait.ms", "20000").unwrap());
    let mut c = b.client();
    create_topic(&mut c, "short", 1);
    let id = topic_id(&mut c, "short");
    assert_eq!(produce(&mut c, 9, "short", 0, 1, records(10, 7)), (0, 0));
    // Some data is there, far less than min_bytes: the fetch must wait.
    let mut waiting = b.client();
    let mut req = fetch_req("short", id, 0, 0, 20_000);
    req.min_bytes = 1 << 20;
    req.topics[0].partitions[0].partition_max_bytes = 8 << 20;
    let (corr, frame) = waiting.frame(ApiKey::Fetch, 12, &req);
    waiting.send_raw(&frame);
    std::thread::sleep(Duration::from_millis(200));
    let ticks_before = shard_cpu_ticks(&b, 0);
    let asked = Instant::now();
    let mut other = b.client();
    let _: ApiVersionsResponse = other.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let answered_in = asked.elapsed();
    assert!(
        answered_in < Duration::from_secs(1),
        "another connection of the same shard waited {answered_in:?} behind the fetch"
    );
    std::thread::sleep(Duration::from_secs(1));
    let ticks = shard_cpu_ticks(&b, 0) - ticks_before;
    // A re-reading loop burns the whole second (about 100 ticks).
    assert!(ticks < 30, "the shard used {ticks} ticks in a second of waiting");
    eprintln!("shard CPU while the short fetch waited: {ticks} ticks in 1 s; ApiVersions beside it in {answered_in:?}");
    // Enough data arrives: the fetch answers at once with all of it.
    let big: Vec<Record> = (0..2)
        .map(|_| Record {
            timestamp: 8,
            key: None,
            value: Some(vec![7u8; 600 << 10]),
            headers: vec![],
        })
        .collect();
    let woke = Instant::now();
    for r in big {
        let (err, _) = produce(
            &mut c,
            9,
            "short",
            0,
            1,
            batch::build(&[r], ProducerFields::NONE).freeze(),
        );
        assert_eq!(err, 0);
    }
    let resp: FetchResponse = waiting.read_response(ApiKey::Fetch, 12, corr);
    assert!(woke.elapsed() < Duration::from_secs(10), "woken by the appends");
    let pd = &resp.responses[0].partitions[0];
    assert_eq!(pd.error_code, 0);
    assert!(pd.records.as_ref().unwrap().len() >= 1 << 20, "min_bytes reached");
}

#[test]
fn max_wait_ms_is_capped_by_the_broker_setting() {
    let b = TestBroker::start(1, |c| c.set("sluice.fetch.max.wait.ms", "300").unwrap());
    let mut c = b.client();
    create_topic(&mut c, "capped", 1);
    let id = topic_id(&mut c, "capped");
    let start = Instant::now();
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("capped", id, 0, 0, i32::MAX));
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "answered at the broker's cap"
    );
}

#[test]
fn shutdown_stops_listening_first_and_abandons_a_stuck_shard() {
    let mut b = TestBroker::start(2, |c| {
        c.set("sluice.shutdown.drain.ms", "300").unwrap();
        c.set("sluice.shutdown.close.ms", "300").unwrap();
    });
    let addr = b.addr();
    let mut c = b.client();
    create_topic(&mut c, "stuck", 2);
    drop(c);
    // Shard 1 stops running its tasks for 3 s.
    b.broker
        .as_ref()
        .unwrap()
        .run_on_shard(1, Box::new(|_| std::thread::sleep(Duration::from_secs(3))));
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let stopped = b.broker.take().unwrap().shutdown();
    assert_eq!(stopped, sluice::Stopped::Abandoned);
    assert!(start.elapsed() < Duration::from_millis(2500), "{:?}", start.elapsed());
    // No listener outlives shutdown, not even the stuck shard's.
    for _ in 0..20 {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "a connection was accepted after shutdown"
        );
    }
    // The data directory stays locked while the stuck shard may still write.
    assert!(matches!(
        sluice::Broker::start(b.config.clone()),
        Err(sluice::StartError::Locked(_))
    ));
    // Let the stuck shard finish before its directory is removed.
    std::thread::sleep(Duration::from_secs(3));
}

#[test]
fn a_client_that_hangs_up_is_let_go_while_its_request_is_held() {
    let b = TestBroker::start(1, |c| c.set("sluice.fetch.max.wait.ms", "20000").unwrap());
    let mut c = b.client();
    create_topic(&mut c, "gone", 1);
    let id = topic_id(&mut c, "gone");
    let mut req = fetch_req("gone", id, 0, 0, 20_000);
    req.min_bytes = 1 << 20;
    let (_, frame) = c.frame(ApiKey::Fetch, 12, &req);
    c.send_raw(&frame);
    std::thread::sleep(Duration::from_millis(100));
    // Hang up the sending side: Kafka closes the channel on EOF, and so
    // does the broker, without waiting out the held fetch.
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let start = Instant::now();
    assert!(c.is_closed(), "the broker closed its end");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "closed after {:?}, not after the 20 s wait",
        start.elapsed()
    );
    // The shard goes on serving.
    let mut other = b.client();
    let _: ApiVersionsResponse = other.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
}

#[test]
fn timestamp_lookups_answer_to_the_record_in_plain_and_compressed_batches() {
    use kafka_protocol::records::{
        Compression, Record as KRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let b = TestBroker::start(1, |_| {});
    let mut c = b.client();
    let base = 1_700_000_000_000i64;
    // Record i holds base + order[i] seconds: timestamps out of order.
    let order = [0i64, 3, 1, 7, 2, 9, 4, 8, 5, 6];
    for (n, compression) in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into_iter()
    .enumerate()
    {
        let topic = format!("ts-{n}");
        create_topic(&mut c, &topic, 1);
        // Two earlier records, so the batch under test starts at offset 2.
        assert_eq!(produce(&mut c, 9, &topic, 0, 1, records(2, base - 10_000)), (0, 0));
        let recs: Vec<KRecord> = order
            .iter()
            .enumerate()
            .map(|(i, s)| KRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: base + s * 1000,
                key: None,
                value: Some(Bytes::from(vec![b'v'; 200])),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &recs, &options).unwrap();
        assert_eq!(
            produce(&mut c, 9, &topic, 0, 1, buf.freeze()),
            (0, 2),
            "{compression:?}"
        );
        let list = |c: &mut Client, ts: i64| list_offsets(c, &topic, 0, ts);
        // The first record (in offset order) at or after the time.
        assert_eq!(list(&mut c, base + 3500), (0, 2 + 3, base + 7000), "{compression:?}");
        assert_eq!(list(&mut c, base + 1000), (0, 2 + 1, base + 3000), "{compression:?}");
        assert_eq!(list(&mut c, base), (0, 2, base), "{compression:?}");
        assert_eq!(list(&mut c, base - 20_000), (0, 0, base - 10_000), "{compression:?}");
        assert_eq!(list(&mut c, base + 9000), (0, 2 + 5, base + 9000), "{compression:?}");
        assert_eq!(list(&mut c, base + 9001), (0, -1, -1), "{compression:?}");
        // Max timestamp: the record that holds it.
        assert_eq!(list(&mut c, -3), (0, 2 + 5, base + 9000), "{compression:?}");
    }
}

#[test]
fn a_transaction_runs_from_find_coordinator_to_commit_and_abort_over_the_wire() {
    let b = TestBroker::start(2, |c| c.set("transaction.state.log.num.partitions", "4").unwrap());
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "out", 2).topics[0].error_code, 0);
    let out = topic_id(&mut c, "out");
    let tx = || TransactionalId(StrBytes::from_static_str("tx-1"));
    // The first ask creates __transaction_state; the answer waits for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut req = FindCoordinatorRequest::default();
        req.key_type = 1;
        req.coordinator_keys = vec![StrBytes::from_static_str("tx-1")];
        let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, 4, &req);
        let found = &r.coordinators[0];
        if found.error_code == 0 {
            assert_eq!(found.port, i32::from(b.addr().port()));
            break;
        }
        assert_eq!(
            found.error_code, 15,
            "COORDINATOR_NOT_AVAILABLE until the topic is there"
        );
        assert!(Instant::now() < deadline, "no transaction coordinator");
        std::thread::sleep(Duration::from_millis(50));
    }
    let init = |c: &mut Client| -> InitProducerIdResponse {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = Some(tx());
            req.transaction_timeout_ms = 60_000;
            req.producer_id = ProducerId(-1);
            req.producer_epoch = -1;
            let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req);
            // The coordinator's partition may still be loading, or an open
            // transaction being aborted first: both are retried.
            if !matches!(r.error_code, 14 | 15 | 51) || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let r = init(&mut c);
    assert_eq!((r.error_code, r.producer_epoch), (0, 0));
    let pid = r.producer_id.0;
    assert!(pid >= 0);
    let add = |c: &mut Client, epoch: i16, partitions: Vec<i32>| -> i16 {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(tx())
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(name("out"))
                    .with_partitions(partitions),
            ]);
        let r: AddPartitionsToTxnResponse = c.call(ApiKey::AddPartitionsToTxn, 3, &req);
        r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
    };
    let txn_batch = |epoch: i16, seq: i32, n: usize| {
        let recs: Vec<Record> = (0..n)
            .map(|i| Record {
                timestamp: 1_000,
                key: None,
                value: Some(format!("v{seq}-{i}").into_bytes()),
                headers: vec![],
            })
            .collect();
        let producer = ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        };
        batch::build_with(&recs, producer, batch::TRANSACTIONAL).freeze()
    };
    let produce_txn = |c: &mut Client, partition: i32, batch: Bytes| -> i16 {
        let mut req = produce_req("out", partition, -1, batch);
        req.transactional_id = Some(tx());
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req);
        r.responses[0].partition_responses[0].error_code
    };
    let end = |c: &mut Client, epoch: i16, commit: bool| -> i16 {
        let req = EndTxnRequest::default()
            .with_transactional_id(tx())
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let r: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &req);
        r.error_code
    };
    let committed_read = |c: &mut Client, partition: i32| {
        let mut req = fetch_req("out", out, partition, 0, 0);
        req.isolation_level = 1;
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
        let p = r.responses[0].partitions[0].clone();
        let aborted: Vec<(i64, i64)> = p
            .aborted_transactions
            .unwrap_or_default()
            .iter()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect();
        (p.high_watermark, p.last_stable_offset, aborted)
    };
    // A partition not added to the transaction is refused.
    assert_eq!(produce_txn(&mut c, 0, txn_batch(0, 0, 2)), 48, "INVALID_TXN_STATE");
    // Transaction 1, committed: partition 0 only.
    assert_eq!(add(&mut c, 0, vec![0]), 0);
    assert_eq!(produce_txn(&mut c, 0, txn_batch(0, 0, 2)), 0);
    assert_eq!(produce_txn(&mut c, 0, txn_batch(0, 2, 3)), 0);
    assert_eq!(
        committed_read(&mut c, 0),
        (5, 0, vec![]),
        "the open transaction holds the stable offset"
    );
    assert_eq!(end(&mut c, 0, true), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed_read(&mut c, 0).1 < 6 {
        assert!(Instant::now() < deadline, "the commit marker never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(committed_read(&mut c, 0), (6, 6, vec![]));
    // A retried commit is answered the same; an abort of it is refused.
    let retry = (0..100).map(|_| end(&mut c, 0, true)).find(|&e| e != 51);
    assert_eq!(retry, Some(0));
    assert_eq!(end(&mut c, 0, false), 48);
    // Transaction 2, aborted: its records stay in the log and reads with
    // read_committed are told to drop them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match add(&mut c, 0, vec![0, 1]) {
            0 => break,
            51 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("AddPartitionsToTxn: {other}"),
        }
    }
    assert_eq!(produce_txn(&mut c, 1, txn_batch(0, 0, 4)), 0);
    assert_eq!(end(&mut c, 0, false), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while committed_read(&mut c, 1).1 < 5 {
        assert!(Instant::now() < deadline, "the abort marker never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(committed_read(&mut c, 1), (5, 5, vec![(pid, 0)]));
    // Partition 0 was in the transaction without records: a marker only.
    while committed_read(&mut c, 0).1 < 7 {
        assert!(Instant::now() < deadline, "partition 0's abort marker never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(committed_read(&mut c, 0), (7, 7, vec![]));
    // DescribeProducers: the producer, its epoch and no open transaction.
    let req = DescribeProducersRequest::default().with_topics(vec![
        describe_producers_request::TopicRequest::default()
            .with_name(name("out"))
            .with_partition_indexes(vec![1, 9]),
    ]);
    let r: DescribeProducersResponse = c.call(ApiKey::DescribeProducers, 0, &req);
    let parts = &r.topics[0].partitions;
    assert_eq!(parts[1].error_code, 3, "no partition 9");
    let p1 = &parts[0].active_producers;
    assert_eq!(
        p1.iter()
            .map(|s| (
                s.producer_id.0,
                s.producer_epoch,
                s.last_sequence,
                s.current_txn_start_offset
            ))
            .collect::<Vec<_>>(),
        vec![(pid, 0, 3, -1)]
    );
    // ListTransactions and DescribeTransactions.
    let r: ListTransactionsResponse = c.call(ApiKey::ListTransactions, 1, &ListTransactionsRequest::default());
    let listed: Vec<(String, i64, String)> = r
        .transaction_states
        .iter()
        .map(|t| {
            (
                t.transactional_id.0.to_string(),
                t.producer_id.0,
                t.transaction_state.to_string(),
            )
        })
        .collect();
    assert_eq!(listed, vec![("tx-1".to_string(), pid, "CompleteAbort".to_string())]);
    let r: ListTransactionsResponse = c.call(
        ApiKey::ListTransactions,
        1,
        &ListTransactionsRequest::default().with_state_filters(vec![
            StrBytes::from_static_str("Ongoing"),
            StrBytes::from_static_str("Bogus"),
        ]),
    );
    assert!(r.transaction_states.is_empty());
    assert_eq!(r.unknown_state_filters.len(), 1);
    let r: DescribeTransactionsResponse = c.call(
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![tx(), TransactionalId(StrBytes::from_static_str("nope"))]),
    );
    let t = &r.transaction_states[0];
    assert_eq!(
        (
            t.error_code,
            t.producer_id.0,
            t.producer_epoch,
            t.transaction_state.as_str()
        ),
        (0, pid, 0, "CompleteAbort")
    );
    assert_eq!(r.transaction_states[1].error_code, 105, "TRANSACTIONAL_ID_NOT_FOUND");
    // A new producer with the id bumps the epoch and fences the old one.
    let r = init(&mut c);
    assert_eq!((r.error_code, r.producer_id.0, r.producer_epoch), (0, pid, 1));
    assert_eq!(add(&mut c, 0, vec![0]), 90, "PRODUCER_FENCED (AddPartitionsToTxn v2+)");
}

#[test]
fn describe_log_dirs_reports_the_data_directory_and_partition_sizes() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "dirs", 3);
    produce(&mut c, 9, "dirs", 1, 1, records(5, 1));
    for version in [1, 4] {
        let mut every = DescribeLogDirsRequest::default();
        every.topics = None;
        let all: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, version, &every);
        assert_eq!(all.results.len(), 1);
        let r = &all.results[0];
        assert_eq!(r.error_code, 0);
        let dir = std::fs::canonicalize(b.dir.path()).unwrap();
        assert_eq!(r.log_dir.as_str(), dir.to_str().unwrap());
        if version >= 4 {
            assert!(r.total_bytes > 0 && r.usable_bytes > 0 && r.usable_bytes <= r.total_bytes);
        }
        let t = r.topics.iter().find(|t| t.name.0.as_str() == "dirs").unwrap();
        let sizes: Vec<(i32, i64)> = t
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.partition_size))
            .collect();
        assert_eq!(sizes.len(), 3);
        assert!(sizes[1].1 > 0 && sizes[0].1 == 0, "{sizes:?}");
        assert!(r.topics.iter().any(|t| t.name.0.as_str() == "__consumer_offsets"));
    }
    let mut req = DescribeLogDirsRequest::default();
    let mut t = DescribableLogDirTopic::default();
    t.topic = name("dirs");
    t.partitions = vec![1, 7];
    req.topics = Some(vec![t]);
    let some: DescribeLogDirsResponse = c.call(ApiKey::DescribeLogDirs, 4, &req);
    let topics = &some.results[0].topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(
        topics[0].partitions.len(),
        1,
        "only the partitions asked for that exist"
    );
    assert_eq!(topics[0].partitions[0].partition_index, 1);
}

#[test]
fn describe_topic_partitions_pages_sorted_topics_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let b = TestBroker::start(1, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "dtp-a", 3);
    create_topic(&mut c, "dtp-b", 2);
    let id_a = topic_id(&mut c, "dtp-a");
    let ask = |c: &mut Client, cursor: Option<(&str, i32)>| -> DescribeTopicPartitionsResponse {
        let mut req = DescribeTopicPartitionsRequest::default();
        req.topics = ["dtp-b", "missing", "dtp-a"]
            .iter()
            .map(|n| {
                let mut t = TopicRequest::default();
                t.name = name(n);
                t
            })
            .collect();
        req.response_partition_limit = 4;
        req.cursor = cursor.map(|(t, p)| {
            let mut cur = Cursor::default();
            cur.topic_name = name(t);
            cur.partition_index = p;
            cur
        });
        c.call(ApiKey::DescribeTopicPartitions, 0, &req)
    };
    let first = ask(&mut c, None);
    let seen: Vec<(String, Vec<i32>)> = first
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().unwrap().0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    assert_eq!(seen, vec![("dtp-a".into(), vec![0, 1, 2]), ("dtp-b".into(), vec![0])]);
    assert_eq!(first.topics[0].topic_id, id_a);
    assert_eq!(first.topics[0].partitions[0].leader_id, BrokerId(0));
    let cursor = first.next_cursor.as_ref().unwrap();
    assert_eq!((cursor.topic_name.0.as_str(), cursor.partition_index), ("dtp-b", 1));
    let second = ask(&mut c, Some(("dtp-b", 1)));
    assert_eq!(second.topics.len(), 2);
    assert_eq!(second.topics[0].partitions.len(), 1);
    assert_eq!(second.topics[0].partitions[0].partition_index, 1);
    assert_eq!(second.topics[1].name.as_ref().unwrap().0.as_str(), "missing");
    assert_eq!(second.topics[1].error_code, 3);
    assert!(second.next_cursor.is_none());
}

#[test]
fn leader_epochs_diverging_epochs_and_replica_fetches_are_checked() {
    let b = TestBroker::start(1, |_| {});
    let mut c = b.client();
    create_topic(&mut c, "ep", 1);
    let id = topic_id(&mut c, "ep");
    assert_eq!(produce(&mut c, 9, "ep", 0, 1, records(3, 1)), (0, 0));
    assert_eq!(produce(&mut c, 9, "ep", 0, 1, records(2, 2)), (0, 3));
    let fetch = |c: &mut Client, version: i16, tweak: &dyn Fn(&mut FetchRequest)| {
        let mut req = fetch_req("ep", id, 0, 0, 0);
        tweak(&mut req);
        let resp: FetchResponse = c.call(ApiKey::Fetch, version, &req);
        resp.responses[0].partitions[0].clone()
    };
    // A fresh topic's leader epoch is 0; a client ahead of it retries, one
    // behind it is fenced.
    let pd = fetch(&mut c, 12, &|r| r.topics[0].partitions[0].current_leader_epoch = 0);
    assert_eq!(pd.error_code, 0);
    let pd = fetch(&mut c, 12, &|r| r.topics[0].partitions[0].current_leader_epoch = 3);
    assert_eq!(pd.error_code, 75, "UNKNOWN_LEADER_EPOCH");
    // A fetcher whose last fetched epoch the log does not hold is told where
    // the log's epochs end instead of getting records.
    let pd = fetch(&mut c, 12, &|r| {
        let p = &mut r.topics[0].partitions[0];
        p.last_fetched_epoch = 4;
        p.fetch_offset = 5;
    });
    assert_eq!(pd.error_code, 0);
    assert_eq!((pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset), (0, 5));
    assert!(pd.records.as_ref().is_none_or(|r| r.is_empty()));
    // A replica's fetch must name a broker and its current epoch.
    let pd = fetch(&mut c, 15, &|r| {
        r.replica_state.replica_id = BrokerId(7);
        r.replica_state.replica_epoch = 0;
    });
    assert_eq!(pd.error_code, 77, "STALE_BROKER_EPOCH");
    // OffsetForLeaderEpoch: epoch 0 ends at the log end.
    let mut p = kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
    p.partition = 0;
    p.leader_epoch = 0;
    p.current_leader_epoch = 0;
    let mut t = kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
    t.topic = name("ep");
    t.partitions = vec![p];
    let mut req = OffsetForLeaderEpochRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    let resp: OffsetForLeaderEpochResponse = c.call(ApiKey::OffsetForLeaderEpoch, 4, &req);
    let e = &resp.topics[0].partitions[0];
    assert_eq!((e.error_code, e.leader_epoch, e.end_offset), (0, 0, 5));
}

#[test]
fn a_clean_shutdown_leaves_a_marker_that_the_next_start_takes() {
    let mut b = TestBroker::start(1, |_| {});
    let marker = b.dir.path().join(sluice::broker::CLEAN_SHUTDOWN_MARKER);
    assert!(!b.broker.as_ref().unwrap().clean_start(), "a new data directory");
    assert!(!marker.exists());
    b.broker.take().unwrap().shutdown();
    assert!(marker.exists(), "written once every log is closed");
    b.broker = Some(sluice::Broker::start(b.config.clone()).unwrap());
    assert!(b.broker.as_ref().unwrap().clean_start());
    // Taken at start: a crash from here on finds no marker.
    assert!(!marker.exists());
}

/// WriteTxnMarkers v1 of one marker for `partitions` of `topic`: each
/// partition's error code.
fn write_marker(c: &mut Client, topic: &str, partitions: Vec<i32>, pid: i64, epoch: i16, commit: bool) -> Vec<i16> {
    let req = WriteTxnMarkersRequest::default().with_markers(vec![
        write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_transaction_result(commit)
            .with_topics(vec![
                write_txn_markers_request::WritableTxnMarkerTopic::default()
                    .with_name(name(topic))
                    .with_partition_indexes(partitions),
            ])
            .with_coordinator_epoch(0),
    ]);
    let resp: WriteTxnMarkersResponse = c.call(ApiKey::WriteTxnMarkers, 1, &req);
    assert_eq!(resp.markers[0].producer_id.0, pid);
    resp.markers[0].topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

#[test]
fn transaction_markers_are_written_and_read_committed_fetches_answer_the_stable_offset() {
    let b = TestBroker::start(2, |_| {});
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "tx", 2).topics[0].error_code, 0);
    let id = topic_id(&mut c, "tx");
    assert_eq!(produce(&mut c, 9, "tx", 0, -1, records(2, 1_000)).0, 0);
    // A transactional batch from a request without a transactional id
    // would open a transaction nothing ends: INVALID_RECORD.
    let txn = batch::build_with(
        &[Record::default()],
        ProducerFields {
            producer_id: 5,
            producer_epoch: 0,
            base_sequence: 0,
        },
        batch::TRANSACTIONAL,
    );
    assert_eq!(produce(&mut c, 9, "tx", 0, -1, txn.freeze()).0, 87);
    // A marker per partition; a partition the topic lacks is refused.
    assert_eq!(write_marker(&mut c, "tx", vec![0, 1, 7], 5, 0, true), vec![0, 0, 3]);
    assert_eq!(write_marker(&mut c, "nope", vec![0], 5, 0, false), vec![3]);
    // The marker is a control batch at offset 2, past the two records.
    let mut req = fetch_req("tx", id, 0, 0, 0);
    req.isolation_level = 1;
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &req);
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark, p.last_stable_offset), (0, 3, 3));
    assert_eq!(p.aborted_transactions.as_deref().map(<[_]>::len), Some(0));
    let mut bytes = p.records.clone().unwrap();
    let mut batches = Vec::new();
    while !bytes.is_empty() {
        let h = batch::BatchHeader::parse(&bytes).unwrap();
        let len = h.total_len().unwrap();
        batches.push((h.base_offset(), h.is_control(), batch::marker(&bytes[..len])));
        let _ = bytes.split_to(len);
    }
    assert_eq!(batches, vec![(0, false, None), (2, true, Some(batch::Marker::Commit))]);
    // read_uncommitted: no aborted list at all.
    let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("tx", id, 0, 0, 0));
    assert!(resp.responses[0].partitions[0].aborted_transactions.is_none());
    // ListOffsets latest, read_committed: the last stable offset.
    let mut p = list_offsets_request::ListOffsetsPartition::default();
    p.timestamp = -1;
    let mut t = list_offsets_request::ListOffsetsTopic::default();
    t.name = name("tx");
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.isolation_level = 1;
    req.topics = vec![t];
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req);
    assert_eq!(
        (r.topics[0].partitions[0].error_code, r.topics[0].partitions[0].offset),
        (0, 3)
    );
}
