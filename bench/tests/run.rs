//! sluice-bench end to end: workloads against an in-process broker, the
//! figures they produce, `--spawn`, and the `compare` gate's exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use sluice::{Broker, BrokerConfig};
use sluice_bench::report::Report;
use sluice_bench::run::{RunOptions, run_workload};
use sluice_bench::workload::Workload;

struct TestBroker {
    broker: Option<Broker>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    fn start() -> Self {
        Self::start_with(1, &[])
    }

    fn start_with(cores: usize, settings: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::default();
        config.set("listeners", "127.0.0.1:0").unwrap();
        config.set("log.dirs", dir.path().to_str().unwrap()).unwrap();
        config.set("num.cores", &cores.to_string()).unwrap();
        config.set("offsets.topic.num.partitions", "1").unwrap();
        for (k, v) in settings {
            config.set(k, v).unwrap();
        }
        config.finish().unwrap();
        Self {
            broker: Some(Broker::start(config).unwrap()),
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        self.broker.as_ref().unwrap().local_addr().to_string()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.broker.take());
        } else if let Some(b) = self.broker.take() {
            b.shutdown();
        }
    }
}

fn workload(extra: &str) -> Workload {
    let rate = if extra.contains("producerRate") {
        ""
    } else {
        "producerRate: 2000\n"
    };
    let size = if extra.contains("messageSize") {
        ""
    } else {
        "messageSize: 200\n"
    };
    Workload::parse(&format!(
        "name: t\ntopics: 1\npartitionsPerTopic: 4\n{rate}{size}\
         testDurationSeconds: 2\nwarmupDurationSeconds: 0.5\n{extra}"
    ))
    .unwrap()
}

fn quiet() -> RunOptions {
    RunOptions {
        progress_secs: 0.0,
        ..RunOptions::default()
    }
}

#[test]
fn a_fixed_rate_workload_is_published_consumed_and_timed() {
    let b = TestBroker::start();
    for extra in [
        "keyDistributor: KEY_ROUND_ROBIN\ncompression: lz4\n",
        "keyDistributor: RANDOM_NANO\ncompression: zstd\nacks: 1\n",
        "acks: 0\nsubscriptionsPerTopic: 2\nconsumerPerSubscription: 3\n",
    ] {
        let w = workload(extra);
        let r = run_workload(&w, &b.addr(), "A", 0, &quiet(), &mut |_| {}).unwrap();
        let subs = f64::from(w.subscriptions_per_topic);
        assert!((r.publish_rate - 2000.0).abs() < 200.0, "{extra}: {r:?}");
        assert!((r.consume_rate - 2000.0 * subs).abs() < 200.0 * subs, "{extra}: {r:?}");
        assert!(
            (r.publish_mb_per_s - 2000.0 * 200.0 / 1e6).abs() < 0.05,
            "{extra}: {r:?}"
        );
        assert_eq!((r.publish_errors, r.consume_errors), (0, 0), "{extra}");
        // Every message sent in the 2 s window is timed once per hop.
        let n = r.publish_latency_ms.count as f64;
        assert!((n - 4000.0).abs() < 100.0, "{extra}: {n}");
        let e = r.end_to_end_latency_ms.count as f64;
        assert!((e - 4000.0 * subs).abs() < 100.0 * subs, "{extra}: {e}");
        assert!(r.publish_latency_ms.p50 > 0.0 && r.publish_latency_ms.p99 >= r.publish_latency_ms.p50);
        assert!(r.end_to_end_latency_ms.max >= r.end_to_end_latency_ms.p99);
        assert!(r.backlog.abs() < 1000, "{extra}: {r:?}");
    }
}

/// With each shard its own broker, partitions are led from two addresses:
/// every producer and consumer reaches each partition at its leader's.
#[test]
fn partitions_led_from_several_addresses_are_each_sent_to_their_leader() {
    let b = TestBroker::start_with(2, &[("sluice.shard.listeners", "true")]);
    let w = workload("keyDistributor: KEY_ROUND_ROBIN\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 2\n");
    let r = run_workload(&w, &b.addr(), "A", 0, &quiet(), &mut |_| {}).unwrap();
    assert!((r.publish_rate - 2000.0).abs() < 200.0, "{r:?}");
    assert!((r.consume_rate - 2000.0).abs() < 200.0, "{r:?}");
    assert_eq!(r.publish_errors, 0, "{r:?}");
}

#[test]
fn the_maximum_rate_search_is_bounded_by_the_consumer_backlog() {
    let b = TestBroker::start();
    let w = workload("producerRate: 0\nacks: 1\nmaxBacklogMessages: 5000\n");
    let r = run_workload(&w, &b.addr(), "A", 0, &quiet(), &mut |_| {}).unwrap();
    assert!(r.publish_rate > 2000.0, "{r:?}");
    assert!(r.backlog <= 5000 + 5 * 655 * 4, "{r:?}");
    assert!(r.consume_rate > 0.5 * r.publish_rate, "{r:?}");
}

#[test]
fn a_broker_that_refuses_every_batch_is_reported_not_hidden() {
    let b = TestBroker::start();
    // Batches above the broker's message.max.bytes (1 MiB) fail with
    // MESSAGE_TOO_LARGE (10).
    let w =
        workload("messageSize: 600000\nbatchSizeBytes: 2000000\nproducerRate: 0\nacks: 1\nsubscriptionsPerTopic: 0\n");
    let r = run_workload(&w, &b.addr(), "A", 0, &quiet(), &mut |_| {}).unwrap();
    assert_eq!(r.publish_rate, 0.0);
    assert!(r.publish_errors > 0);
    assert_eq!(r.last_publish_error_code, 10);
}

#[test]
fn an_unreachable_broker_is_an_error() {
    let w = workload("");
    let err = run_workload(&w, "127.0.0.1:1", "A", 0, &quiet(), &mut |_| {}).unwrap_err();
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

fn bench_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
}

#[test]
fn spawn_runs_a_workload_file_writes_json_and_compare_gates_it() {
    let dir = tempfile::tempdir().unwrap();
    let wl = dir.path().join("w.yaml");
    std::fs::write(
        &wl,
        "name: spawn\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\nproducerRate: 1000\n\
         testDurationSeconds: 2\nwarmupDurationSeconds: 0.5\n",
    )
    .unwrap();
    let json = dir.path().join("r.json");
    let broker = sluice_bench::spawn::find_binary(None);
    assert!(
        broker.is_file(),
        "{} is missing: build the broker first (cargo build -p sluice)",
        broker.display()
    );
    let out = bench_bin()
        .args(["run", "--spawn", "--progress-secs", "0.5", "--json"])
        .arg(&json)
        .arg(&wl)
        .env("SLUICE_BIN", &broker)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("measure"), "progress lines: {stderr}");
    let report = Report::from_json(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report.results.len(), 1);
    let r = &report.results[0];
    // The generator keeps the asked rate; a stall of a few hundred ms on a
    // busy two-core machine (debug broker, tests in parallel) may cost a
    // tenth of a 2 s run, not a third.
    assert!((r.publish_rate - 1000.0).abs() < 300.0, "{r:?}");
    assert!(
        r.broker_cpu_seconds.is_some() && r.broker_peak_rss_bytes.unwrap() > 1 << 20,
        "{r:?}"
    );
    assert!(report.targets[0].spawned_version.as_deref().unwrap().contains("sluice"));
    assert_eq!(report.workloads[0].name, "spawn");

    // The same report against itself passes; a copy 30 % slower fails.
    let same = bench_bin().arg("compare").arg(&json).arg(&json).output().unwrap();
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stdout));
    let mut slow = report.clone();
    slow.results[0].publish_rate *= 0.7;
    slow.results[0].consume_rate *= 0.7;
    let slow_path = dir.path().join("slow.json");
    std::fs::write(&slow_path, slow.to_json()).unwrap();
    let gate = bench_bin()
        .args(["compare", "--max-regression", "10%"])
        .arg(&json)
        .arg(&slow_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&gate.stdout);
    assert_eq!(gate.status.code(), Some(1), "{table}");
    assert!(table.contains("REGRESSED") && table.contains("-30.0%"), "{table}");
    let bad = bench_bin().arg("compare").arg(&json).arg(&wl).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_shipped_workloads_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let w = Workload::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(path.file_stem().unwrap().to_str().unwrap(), w.name);
        names.push(w.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "1-topic-1-partition-1kb",
            "1-topic-16-partitions-1kb",
            "fanout-16x-1kb",
            "fixed-200k-1kb",
            "keyed-1m-64p",
            "latency-50k-acks-all",
            "latency-5k-acks-all",
            "max-rate-100b",
            "max-rate-1kb",
            "max-rate-64kb",
            "max-rate-64p-produce",
            "shards-64p-30k-keyed-produce",
            "shards-64p-30k-keyed-pubsub",
            "shards-64p-30k-nokey-produce",
            "shards-64p-30k-nokey-pubsub",
            "small-batches-10k",
            "small-batches-10k-produce"
        ]
    );
}
