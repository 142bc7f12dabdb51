//! What one metadata change costs a node, at 1,000 and at 50,000
//! partitions (`docs/benchmarks.md`, "Metadata changes against cluster
//! size"): the controller drafting it (`Draft::handle`, or the fencing
//! records), the image applying its records and making the snapshot every
//! shard reads, and a shard installing that snapshot. The shard belongs to
//! a broker that holds none of the changed partitions, so its install is
//! only the metadata walk (`shard_install_of_one_changed_topic` times
//! that install alone); `full_install` installs the same image on a
//! fresh shard, which visits every topic, as every install did before
//! installs visited only what changed. Each created topic is deleted
//! again outside the timing, so the image keeps its size.
//!
//! Partitions are in topics of 100, on brokers 1-3 in turn; broker 4 leads
//! 100 more whatever the size (the one fenced, then unfenced: after the
//! first round it leads nothing and the figure is the controller's look
//! for what it holds and the two records). `cargo bench -p sluice
//! --bench metadata_change` measures; under `cargo test` each routine runs
//! once, at 200 partitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice::config::BrokerConfig;
use sluice::controller::{ControllerRequest, Draft, Rules, fence_records, unfence_records};
use sluice::image::{BrokerMeta, Image, MetaRecord, PartitionState};
use sluice::meta::{Snapshot, TopicMeta};
use sluice::shard::{Common, Shard, ShardId};
use uuid::Uuid;

const PER_TOPIC: i32 = 100;

fn full_size() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn broker(id: i32) -> BrokerMeta {
    BrokerMeta {
        id,
        incarnation: Uuid::from_u128(id as u128),
        epoch: i64::from(id),
        host: "127.0.0.1".into(),
        port: 9092,
        shards: 1,
        fenced: false,
        registered_ms: 0,
        shut_down: false,
        clean_start: true,
        endpoints: Vec::new(),
    }
}

/// An image of `partitions` partitions in topics of 100 on brokers 1-3,
/// and one topic of 100 partitions led by broker 4.
fn image(partitions: i32) -> Image {
    let mut image = Image::default();
    for id in 1..=4 {
        image.brokers.insert(id, broker(id));
    }
    let topic = |name: String, id: u128, states: Vec<PartitionState>| TopicMeta {
        name: name.into(),
        id: Uuid::from_u128(id),
        partitions: states.len() as i32,
        configs: BTreeMap::new(),
        partition_states: states,
    };
    for t in 0..partitions / PER_TOPIC {
        let states = (0..PER_TOPIC)
            .map(|p| {
                let first = (t * PER_TOPIC + p) % 3;
                let mut s = PartitionState::new((0..3).map(|i| 1 + (first + i) % 3).collect());
                s.isr = s.replicas.clone();
                s.leader = s.replicas[0];
                s
            })
            .collect();
        image.put(topic(format!("t{t:05}"), t as u128 + 1, states));
    }
    let fourth = (0..PER_TOPIC)
        .map(|_| {
            let mut s = PartitionState::new(vec![4, 1, 2]);
            s.isr = s.replicas.clone();
            s.leader = 4;
            s
        })
        .collect();
    image.put(topic("on-broker-4".into(), u128::MAX, fourth));
    image
}

/// Node 9's shard: it holds no replica of any partition here.
fn new_shard(dir: &std::path::Path) -> std::rc::Rc<Shard<()>> {
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        node_id: 9,
        ..BrokerConfig::default()
    };
    Shard::new(
        ShardId(0),
        Arc::new(Common::new(config, 1, true)),
        Arc::new(Snapshot::default()),
        (),
    )
}

/// The next retention change of topic `t00000` (a new value each time).
fn new_retention(retention: &mut u64) -> ControllerRequest {
    *retention += 1;
    ControllerRequest::AlterTopicConfigs {
        name: "t00000".into(),
        changes: vec![("retention.ms".into(), Some((60_000 + *retention).to_string()))],
        incremental: true,
        validate_only: false,
    }
}

/// The node's part of a change: apply the records to the image, make the
/// snapshot, install it on the shard. Returns the time it took.
fn apply(
    rt: &compio::runtime::Runtime,
    image: &mut Image,
    version: &mut u64,
    records: &[MetaRecord],
    shard: &Shard<()>,
) -> Duration {
    let start = Instant::now();
    for r in records {
        image.apply(r).unwrap();
    }
    *version += 1;
    let snapshot = Arc::new(image.snapshot(*version));
    rt.block_on(shard.install(snapshot)).unwrap();
    start.elapsed()
}

fn changes(c: &mut Criterion) {
    let sizes: &[i32] = if full_size() { &[1_000, 50_000] } else { &[200] };
    let rt = compio::runtime::Runtime::new().unwrap();
    let mut g = c.benchmark_group("metadata_change");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for &n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let shard = new_shard(dir.path());
        let mut image = image(n);
        let mut version = 1;
        rt.block_on(shard.install(Arc::new(image.snapshot(version)))).unwrap();
        let draft = |image: &Image| Draft::new(image.clone(), i64::MAX, 3, Rules::default());

        let mut created = 0u64;
        g.bench_function(BenchmarkId::new("create_topic_1_partition", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    created += 1;
                    let start = Instant::now();
                    let mut d = draft(&image);
                    d.handle(ControllerRequest::CreateTopic {
                        name: format!("new-{created}"),
                        partitions: 1,
                        replication_factor: 3,
                        assignments: Vec::new(),
                        configs: BTreeMap::new(),
                        validate_only: false,
                    })
                    .unwrap();
                    let records = d.into_records();
                    total += start.elapsed() + apply(&rt, &mut image, &mut version, &records, &shard);
                    // Deleted again, untimed: the image keeps its size.
                    let mut d = draft(&image);
                    d.handle(ControllerRequest::DeleteTopic {
                        name: format!("new-{created}"),
                    })
                    .unwrap();
                    apply(&rt, &mut image, &mut version, &d.into_records(), &shard);
                }
                total
            })
        });

        let mut retention = 0u64;
        g.bench_function(BenchmarkId::new("alter_configs", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut d = draft(&image);
                    d.handle(new_retention(&mut retention)).unwrap();
                    let records = d.into_records();
                    total += start.elapsed() + apply(&rt, &mut image, &mut version, &records, &shard);
                }
                total
            })
        });

        g.bench_function(BenchmarkId::new("shard_install_of_one_changed_topic", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut d = draft(&image);
                    d.handle(new_retention(&mut retention)).unwrap();
                    for r in d.into_records() {
                        image.apply(&r).unwrap();
                    }
                    version += 1;
                    let snapshot = Arc::new(image.snapshot(version));
                    let start = Instant::now();
                    rt.block_on(shard.install(snapshot)).unwrap();
                    total += start.elapsed();
                }
                total
            })
        });

        g.bench_function(
            BenchmarkId::new("fence_and_unfence_a_broker_of_100_partitions", n),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let fence = fence_records(&image, 4, Rules::default());
                        total += start.elapsed() + apply(&rt, &mut image, &mut version, &fence, &shard);
                        let start = Instant::now();
                        let unfence = unfence_records(&image, 4, Rules::default());
                        total += start.elapsed() + apply(&rt, &mut image, &mut version, &unfence, &shard);
                    }
                    total
                })
            },
        );

        g.bench_function(BenchmarkId::new("full_install", n), |b| {
            b.iter_custom(|iters| {
                let snapshot = Arc::new(image.snapshot(version));
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fresh = new_shard(dir.path());
                    let start = Instant::now();
                    rt.block_on(fresh.install(snapshot.clone())).unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, changes);
criterion_main!(benches);
