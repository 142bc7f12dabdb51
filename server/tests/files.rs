//! Open files: partitions hold files only while they are used, within
//! `sluice.max.open.files`; admin changes whose partitions cannot be opened
//! are undone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::*;

/// Files under `dir` this process holds open, from /proc, but for the
/// data directory's lock, which the broker holds for its whole life and
/// which `sluice.max.open.files` does not cover (it budgets the logs).
fn fds_under(dir: &Path) -> usize {
    let lock = dir.join(".lock");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && *target != lock)
        .count()
}

/// Waits up to 5 s for the broker to hold at most `max` files under `dir`.
fn settles_at_most(dir: &Path, max: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = fds_under(dir);
        if n <= max || start.elapsed() > Duration::from_secs(5) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(budget: usize) -> TestBroker {
    TestBroker::start(1, |c| {
        c.set("sluice.max.open.files", &budget.to_string()).unwrap();
        c.set("offsets.topic.num.partitions", "1").unwrap();
    })
}

#[test]
fn partitions_past_the_file_budget_close_idle_files_and_reopen_on_use() {
    let mut b = start(40);
    let dir = b.dir.path().to_path_buf();
    let mut c = b.client();
    create_topic(&mut c, "many", 60);
    let id = topic_id(&mut c, "many");
    assert!(fds_under(&dir) <= 40, "creation keeps no files: {}", fds_under(&dir));
    for p in 0..60 {
        assert_eq!(
            produce(&mut c, 9, "many", p, -1, records(3, 1)),
            (0, 0),
            "partition {p}"
        );
    }
    // 60 partitions written would hold 180 writer files without a budget.
    let held = settles_at_most(&dir, 40);
    assert!(held <= 40, "{held} files open with a budget of 40");
    // Every partition reads back, old and new alike.
    for round in 0..2 {
        for p in 0..60 {
            let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("many", id, p, 0, 0));
            let pd = &resp.responses[0].partitions[0];
            assert_eq!(pd.error_code, 0);
            assert!(
                pd.records.as_ref().is_some_and(|r| !r.is_empty()),
                "round {round} partition {p}"
            );
            assert_eq!(produce(&mut c, 9, "many", p, -1, records(1, 2)).0, 0);
        }
    }
    let held = settles_at_most(&dir, 40);
    assert!(held <= 40, "{held} files open after reads and writes");
    b.restart();
    let mut c = b.client();
    assert!(fds_under(&dir) <= 40, "start-up keeps no files");
    for p in 0..60 {
        let resp: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_req("many", id, p, 0, 0));
        let pd = &resp.responses[0].partitions[0];
        assert_eq!(pd.high_watermark, 5, "partition {p}: 3 + 1 + 1 records survive");
    }
}

#[test]
fn topics_and_partitions_that_cannot_be_opened_are_not_created() {
    let mut b = start(1000);
    let dir = b.dir.path().to_path_buf();
    let mut c = b.client();
    // A file where partition 3's directory must go.
    std::fs::write(dir.join("blocked-3"), b"in the way").unwrap();
    let resp = create_topic(&mut c, "blocked", 5);
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 56, "KAFKA_STORAGE_ERROR: {:?}", t.error_message);
    assert!(
        metadata(&mut c, &[])
            .topics
            .iter()
            .all(|t| t.name.as_ref().unwrap().0.as_str() != "blocked")
    );
    for p in [0, 1, 2, 4] {
        assert!(
            !dir.join(format!("blocked-{p}")).exists(),
            "partition {p} was removed again"
        );
    }
    // CreatePartitions the same way.
    create_topic(&mut c, "grow", 2);
    std::fs::write(dir.join("grow-3"), b"in the way").unwrap();
    assert_eq!(create_partitions(&mut c, "grow", 5), 56);
    let mut req = MetadataRequest::default();
    req.topics = None;
    let m: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    let grow = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().unwrap().0.as_str() == "grow")
        .unwrap();
    assert_eq!(grow.partitions.len(), 2, "still two partitions");
    assert!(!dir.join("grow-2").exists());
    assert_eq!(
        produce(&mut c, 9, "grow", 1, -1, records(1, 1)).0,
        0,
        "the old ones still work"
    );
    // Nothing of either survives a restart, and the broker starts.
    b.restart();
    let mut c = b.client();
    let m: MetadataResponse = c.call(ApiKey::Metadata, 12, &req);
    assert!(
        m.topics
            .iter()
            .all(|t| t.name.as_ref().unwrap().0.as_str() != "blocked")
    );
    let grow = m
        .topics
        .iter()
        .find(|t| t.name.as_ref().unwrap().0.as_str() == "grow")
        .unwrap();
    assert_eq!(grow.partitions.len(), 2);
}
