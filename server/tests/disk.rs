//! A full disk, for real: the broker's data directory on a small tmpfs
//! (mounted by the test, which needs root). The free-space reserve refuses
//! produce before the disk is full; DeleteRecords and DeleteTopics free
//! space even when the disk is completely full; writes resume without a
//! restart; nothing acknowledged is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::*;
use sluice_engine::batch::{self, BatchHeader, ProducerFields, Record};

const STORAGE_ERROR: i16 = 56;

/// A tmpfs of `bytes` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (these tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file at `path` until the filesystem is full.
    fn fill(&self, path: &Path) {
        let mut f = std::fs::File::create(path).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        assert_eq!(free_bytes(self.path()), 0, "the filesystem is full");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    sluice::disk::filesystem_bytes(path).unwrap().1
}

/// One batch of one record of `len` bytes.
fn blob(len: usize, ts: i64) -> Bytes {
    let r = Record {
        timestamp: ts,
        key: None,
        value: Some(vec![0xab; len]),
        headers: vec![],
    };
    batch::build(&[r], ProducerFields::NONE).freeze()
}

fn produce_msg(c: &mut Client, topic: &str, batch: Bytes) -> (i16, i64, Option<String>) {
    let resp: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req(topic, 0, -1, batch));
    let p = &resp.responses[0].partition_responses[0];
    (
        p.error_code,
        p.base_offset,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// Every offset fetchable from partition 0 of `topic`, in order.
fn fetched_offsets(c: &mut Client, topic: &str) -> Vec<i64> {
    let id = topic_id(c, topic);
    let mut offsets = Vec::new();
    let mut next = 0;
    loop {
        let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req(topic, id, 0, next, 0));
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) else {
            return offsets;
        };
        let mut at = 0;
        while let Ok(h) = BatchHeader::parse(&records[at..]) {
            let Some(len) = h.total_len().filter(|&l| at + l <= records.len()) else {
                break;
            };
            offsets.extend(h.base_offset()..=h.last_offset());
            next = h.last_offset() + 1;
            at += len;
        }
    }
}

fn start(fs: &Tmpfs, min_free: u64) -> TestBroker {
    let dir = tempfile::tempdir_in(fs.path()).unwrap();
    TestBroker::start_in(dir, 1, |c| {
        c.set("sluice.storage.min.free.bytes", &min_free.to_string()).unwrap();
        // tmpfs has no blocks to reserve: a reserve would only take memory.
        c.set("sluice.log.preallocate.bytes", "0").unwrap();
        c.set("log.segment.bytes", &(2u64 << 20).to_string()).unwrap();
        c.set("offsets.topic.num.partitions", "1").unwrap();
    })
}

/// Produces 200 KiB batches with acks=all until the broker refuses one;
/// returns the offsets acknowledged and the refusal.
fn produce_until_refused(c: &mut Client, topic: &str) -> (Vec<i64>, i16, String) {
    let mut acked = Vec::new();
    for i in 0..10_000 {
        let (err, base, msg) = produce_msg(c, topic, blob(200 << 10, i));
        if err != 0 {
            return (acked, err, msg.unwrap_or_default());
        }
        acked.push(base);
    }
    panic!("the disk never filled");
}

fn retry_produce(c: &mut Client, topic: &str, within: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let (err, base, msg) = produce_msg(c, topic, blob(1000, 1));
        if err == 0 {
            return base;
        }
        assert!(start.elapsed() < within, "produce still refused: {err} {msg:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_reserve_refuses_produce_and_deletes_free_a_full_disk_without_a_restart() {
    let fs = Tmpfs::mount(48 << 20);
    let b = start(&fs, 8 << 20);
    let mut c = b.client();
    create_topic(&mut c, "keep", 1);
    create_topic(&mut c, "bulk", 1);
    let mut kept = Vec::new();
    for i in 0..5 {
        let (err, base, _) = produce_msg(&mut c, "keep", blob(100, i));
        assert_eq!(err, 0);
        kept.push(base);
    }
    let (bulk_acked, err, msg) = produce_until_refused(&mut c, "bulk");
    assert_eq!(err, STORAGE_ERROR, "{msg}");
    assert!(msg.contains("sluice.storage.min.free.bytes"), "a clear message: {msg}");
    assert!(bulk_acked.len() > 100, "about 40 MiB went in: {}", bulk_acked.len());
    let free = free_bytes(fs.path());
    assert!(free >= 7 << 20, "refused before the disk was full: {free} bytes free");

    // Something else fills the disk to the last byte.
    let filler = fs.path().join("filler");
    fs.fill(&filler);

    // DeleteRecords frees whole segments even with no room for its
    // checkpoint.
    let cut = bulk_acked[bulk_acked.len() / 2];
    assert_eq!(delete_records(&mut c, "bulk", 0, cut), (0, cut));
    assert!(free_bytes(fs.path()) > 8 << 20, "segments below the cut were removed");

    // Fill again; DeleteTopics still works.
    std::fs::remove_file(&filler).unwrap();
    fs.fill(&filler);
    let mut t = DeleteTopicState::default();
    t.name = Some(name("bulk"));
    let mut req = DeleteTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5000;
    let resp: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, 6, &req);
    assert_eq!(resp.responses[0].error_code, 0, "{:?}", resp.responses[0].error_message);
    assert!(free_bytes(fs.path()) > 8 << 20, "the topic's data is gone");
    let m = metadata(&mut c, &[]);
    assert!(
        m.topics
            .iter()
            .all(|t| t.name.as_ref().is_none_or(|n| n.0.as_str() != "bulk"))
    );

    // Produce resumes by itself, and every acknowledged record is there.
    kept.push(retry_produce(&mut c, "keep", Duration::from_secs(5)));
    assert_eq!(fetched_offsets(&mut c, "keep"), kept);
}

#[test]
fn a_partition_the_disk_filled_under_comes_back_when_space_returns() {
    let fs = Tmpfs::mount(24 << 20);
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 8 << 20]).unwrap();
    // No reserve: the disk really fills under the log.
    let b = start(&fs, 0);
    let mut c = b.client();
    create_topic(&mut c, "p", 1);
    let (acked, err, msg) = produce_until_refused(&mut c, "p");
    assert_eq!(err, STORAGE_ERROR, "{msg}");
    assert!(msg.contains("poisoned"), "the write failed: {msg}");
    assert!(!acked.is_empty());
    std::fs::remove_file(&filler).unwrap();
    let next = retry_produce(&mut c, "p", Duration::from_secs(10));
    assert_eq!(
        next,
        *acked.last().unwrap() + 1,
        "the torn batch was cut, offsets stay dense"
    );
    let mut want = acked.clone();
    want.push(next);
    assert_eq!(fetched_offsets(&mut c, "p"), want, "nothing acknowledged lost");
}
