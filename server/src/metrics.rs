//! Operator metrics. Each shard counts in plain cells on its own thread (no
//! locks or atomics on the request path, nothing allocated per request);
//! a scrape asks every shard for a [`ShardReport`], merges them into a
//! [`Report`], and writes it in the OpenMetrics text format with
//! `prometheus-client`.

use std::collections::{BTreeMap, HashMap};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use sluice_engine::stats::{HistogramData, IoHistograms};

pub use crate::base::counters::{CleanerTotals, GroupReport, PartitionReport, ShardMetrics, ShardReport, Traffic};

/// Broker-wide facts from the metadata image.
#[derive(Debug, Clone, Default)]
pub struct ClusterReport {
    pub node_id: i32,
    pub active_controller: bool,
    pub brokers: u64,
    pub fenced_brokers: u64,
    /// Partitions of the whole cluster with no leader.
    pub offline_partitions: u64,
    pub ready: bool,
}

/// Every shard's report with the image's facts: what a scrape writes.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub cluster: ClusterReport,
    pub shards: Vec<ShardReport>,
    /// Shards that did not answer the scrape in time.
    pub missing_shards: u64,
}

fn api_name(key: i16) -> String {
    kafka_protocol::messages::ApiKey::try_from(key).map_or_else(|_| format!("api{key}"), |k| format!("{k:?}"))
}

fn error_name(code: i16) -> String {
    crate::error_codes::kafka_name(code)
}

impl Report {
    /// Consumer lag per group, summed and maxed over the partitions it
    /// committed to that this broker leads.
    pub fn group_lag(&self) -> Vec<(String, i64, i64)> {
        let hw: HashMap<(&str, i32), i64> = self
            .shards
            .iter()
            .flat_map(|s| &s.partitions)
            .filter(|p| p.leader)
            .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
            .collect();
        let mut out = Vec::new();
        for g in self.shards.iter().flat_map(|s| &s.groups) {
            let lags: Vec<i64> = g
                .committed
                .iter()
                .filter_map(|(t, p, o)| hw.get(&(t.as_str(), *p)).map(|h| (h - o).max(0)))
                .collect();
            out.push((
                g.group.clone(),
                lags.iter().sum(),
                lags.iter().copied().max().unwrap_or(0),
            ));
        }
        out.sort();
        out
    }

    /// The OpenMetrics text of this report.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

type Labels = Vec<(&'static str, String)>;

/// Writes one metric family: a descriptor, then each labelled sample.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            // A family of one unlabelled sample.
            return v.encode(m);
        }
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The Prometheus text format (0.0.4) of an OpenMetrics text written by
/// [`Report::encode`], for scrapers that do not ask for OpenMetrics: a
/// counter's family takes its samples' `_total` name, and the `# EOF`
/// line goes.
pub fn to_classic(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Writes `h` with its bounds and sum multiplied by `scale` (1e-9 turns
/// nanoseconds into seconds).
fn histogram(
    m: prometheus_client::encoding::MetricEncoder<'_>,
    h: &HistogramData,
    scale: f64,
) -> Result<(), std::fmt::Error> {
    let mut m = m;
    let buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .map(|&b| b as f64 * scale)
        .chain(std::iter::once(f64::MAX))
        .zip(h.counts.iter().copied())
        .collect();
    m.encode_histogram::<NoLabelSet>(h.sum as f64 * scale, h.count(), &buckets, None)
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn counter_f(v: f64) -> ConstCounter<f64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

fn label(k: &'static str, v: impl ToString) -> (&'static str, String) {
    (k, v.to_string())
}

impl Collector for Report {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let e = &mut enc;
        self.encode_requests(e)?;
        self.encode_storage(e)?;
        self.encode_topics(e)?;
        self.encode_partitions(e)?;
        self.encode_connections(e)?;
        self.encode_replication(e)?;
        self.encode_cluster(e)?;
        self.encode_groups(e)?;
        self.encode_transactions(e)?;
        Ok(())
    }
}

impl Report {
    /// Requests, errors and latency per API.
    fn encode_requests(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let mut apis: BTreeMap<i16, (u64, HistogramData)> = BTreeMap::new();
        let empty = || (0, HistogramData::empty(&sluice_engine::stats::LATENCY_BOUNDS_NS));
        let mut errors: BTreeMap<(i16, i16), u64> = BTreeMap::new();
        for s in shards {
            for (k, n, h) in &s.apis {
                let a = apis.entry(*k).or_insert_with(empty);
                a.0 += n;
                a.1.add(h);
            }
            for (k, n) in &s.errors {
                *errors.entry(*k).or_default() += n;
            }
        }
        family(
            e,
            "sluice_requests",
            "Requests answered, by Kafka API.",
            MetricType::Counter,
            apis.iter()
                .map(|(k, (n, _))| (vec![label("api", api_name(*k))], counter(*n))),
        )?;
        family(
            e,
            "sluice_request_errors",
            "Error codes answered, by Kafka API and error (once per partition or request that carried one).",
            MetricType::Counter,
            errors.iter().map(|((k, code), n)| {
                (
                    vec![label("api", api_name(*k)), label("error", error_name(*code))],
                    counter(*n),
                )
            }),
        )?;
        {
            let mut m = e.encode_descriptor(
                "sluice_request_latency_seconds",
                "Time from a request's arrival to its response being ready, by Kafka API.",
                None,
                MetricType::Histogram,
            )?;
            for (k, (_, h)) in &apis {
                let labels = vec![label("api", api_name(*k))];
                histogram(m.encode_family(&labels)?, h, 1e-9)?;
            }
        }
        Ok(())
    }

    /// The storage engine, all shards together.
    fn encode_storage(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let mut io: Option<(HistogramData, HistogramData, HistogramData)> = None;
        for s in shards {
            if let Some((w, f, r)) = &s.io {
                match &mut io {
                    None => io = Some((w.clone(), f.clone(), r.clone())),
                    Some((aw, af, ar)) => {
                        aw.add(w);
                        af.add(f);
                        ar.add(r);
                    }
                }
            }
        }
        if let Some((w, f, r)) = &io {
            for (name, help, h, scale) in [
                (
                    "sluice_log_write_seconds",
                    "Each write of segment data (a group-commit round makes one or more).",
                    w,
                    1e-9,
                ),
                ("sluice_log_fdatasync_seconds", "Each fdatasync of a segment.", f, 1e-9),
                (
                    "sluice_log_group_commit_batches",
                    "Record batches written by each group-commit round.",
                    r,
                    1.0,
                ),
            ] {
                let m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
                histogram(m, h, scale)?;
            }
        }
        Ok(())
    }

    /// Traffic per topic.
    fn encode_topics(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let mut topics: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for s in shards {
            for p in &s.partitions {
                let t = topics.entry(p.topic.as_str()).or_default();
                t.0 += p.bytes_in;
                t.1 += p.records_in;
            }
            for (name, n) in &s.bytes_out {
                topics.entry(name.as_str()).or_default().2 += n;
            }
        }
        family(
            e,
            "sluice_topic_bytes_in",
            "Bytes of record batches appended by producers, by topic.",
            MetricType::Counter,
            topics.iter().map(|(t, v)| (vec![label("topic", t)], counter(v.0))),
        )?;
        family(
            e,
            "sluice_topic_records_in",
            "Records appended by producers, by topic.",
            MetricType::Counter,
            topics.iter().map(|(t, v)| (vec![label("topic", t)], counter(v.1))),
        )?;
        family(
            e,
            "sluice_topic_bytes_out",
            "Bytes of record batches sent to consumers (not to followers), by topic.",
            MetricType::Counter,
            topics.iter().map(|(t, v)| (vec![label("topic", t)], counter(v.2))),
        )?;
        Ok(())
    }

    /// Transactions this broker coordinates, and what open ones hold back
    /// in the partitions it leads.
    fn encode_transactions(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let txns = || self.shards.iter().flat_map(|s| &s.transactions);
        let mut by_state: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for (state, _) in txns() {
            *by_state.entry(state).or_default() += 1;
        }
        family(
            e,
            "sluice_transactional_ids",
            "Transactional ids this broker coordinates, by state (Ongoing: a transaction is open).",
            MetricType::Gauge,
            by_state.iter().map(|(s, n)| (vec![label("state", s)], gauge(*n))),
        )?;
        let now = crate::base::clock::now_ms();
        let oldest = txns()
            .filter(|(state, start)| *state == "Ongoing" && *start >= 0)
            .map(|(_, start)| now - start)
            .max()
            .unwrap_or(0);
        family(
            e,
            "sluice_transaction_oldest_open_seconds",
            "Age of the oldest open transaction this broker coordinates (0 when none is open).",
            MetricType::Gauge,
            [(vec![], ConstGauge::new(oldest as f64 / 1000.0))],
        )?;
        let mut lagging: Vec<&PartitionReport> = self
            .shards
            .iter()
            .flat_map(|s| &s.partitions)
            .filter(|p| p.leader && p.lso_lag > 0)
            .collect();
        lagging.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        family(
            e,
            "sluice_partition_lso_lag",
            "Offsets between the high watermark and the last stable offset of each partition this broker leads that has an open transaction (what read_committed consumers wait for).",
            MetricType::Gauge,
            lagging.iter().map(|p| {
                (
                    vec![label("topic", &p.topic), label("partition", p.partition)],
                    gauge(p.lso_lag),
                )
            }),
        )?;
        Ok(())
    }

    /// The log per partition.
    fn encode_partitions(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let mut sorted: Vec<&PartitionReport> = shards.iter().flat_map(|s| &s.partitions).collect();
        sorted.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let parts = || sorted.iter().copied();
        let plabels = |p: &PartitionReport| vec![label("topic", &p.topic), label("partition", p.partition)];
        family(
            e,
            "sluice_log_segments",
            "Segment files of each partition replica on this broker.",
            MetricType::Gauge,
            parts().map(|p| (plabels(p), gauge(p.segments as i64))),
        )?;
        family(
            e,
            "sluice_log_size_bytes",
            "Bytes in the segments of each partition replica on this broker.",
            MetricType::Gauge,
            parts().map(|p| (plabels(p), gauge(p.size_bytes as i64))),
        )?;
        let cleaned = || parts().filter_map(|p| p.cleaning.map(|c| (p, c)));
        family(
            e,
            "sluice_log_cleaner_dirty_ratio",
            "Share of the rolled bytes of each compacted partition replica on this broker not yet cleaned, as the cleaner last measured it (compared with min.cleanable.dirty.ratio).",
            MetricType::Gauge,
            cleaned().map(|(p, (ratio, _))| (plabels(p), ConstGauge::new(ratio))),
        )?;
        family(
            e,
            "sluice_log_cleaner_last_clean_timestamp_seconds",
            "When the cleaner's last pass over each compacted partition replica on this broker ended, in seconds since the epoch (0: none since the broker started).",
            MetricType::Gauge,
            cleaned().map(|(p, (_, ms))| (plabels(p), ConstGauge::new(ms as f64 / 1000.0))),
        )?;
        Ok(())
    }

    /// Connections and shards.
    fn encode_connections(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let sum = |f: fn(&ShardReport) -> u64| shards.iter().map(f).sum::<u64>();
        family(
            e,
            "sluice_connections_open",
            "Client connections open.",
            MetricType::Gauge,
            [(vec![], gauge(sum(|s| s.connections_open) as i64))],
        )?;
        family(
            e,
            "sluice_connections_accepted",
            "Client connections accepted.",
            MetricType::Counter,
            [(vec![], counter(sum(|s| s.connections_accepted)))],
        )?;
        family(
            e,
            "sluice_connections_refused",
            "Client connections closed at once because max.connections was reached.",
            MetricType::Counter,
            [(vec![], counter(sum(|s| s.connections_refused)))],
        )?;
        family(
            e,
            "sluice_sasl_authentications",
            "SASL authentications, by result (success, failure).",
            MetricType::Counter,
            [
                (
                    vec![("result", "success".to_string())],
                    counter(sum(|s| s.authentications)),
                ),
                (
                    vec![("result", "failure".to_string())],
                    counter(sum(|s| s.authentication_failures)),
                ),
            ],
        )?;
        family(
            e,
            "sluice_shard_queued_request_bytes",
            "Bytes of requests read and not yet answered, by shard.",
            MetricType::Gauge,
            shards
                .iter()
                .map(|s| (vec![label("shard", s.shard)], gauge(s.queued_request_bytes as i64))),
        )?;
        family(
            e,
            "sluice_shard_handoffs",
            "Work handed from one shard to another (a request for a partition another shard owns), by the shard that handed it.",
            MetricType::Counter,
            shards
                .iter()
                .map(|s| (vec![label("shard", s.shard)], counter(s.handoffs))),
        )?;
        Ok(())
    }

    /// The partitions this broker leads: under-replicated, below or at
    /// their effective minimum ISR.
    fn encode_replication(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let parts = || shards.iter().flat_map(|s| &s.partitions);
        let leaders = parts().filter(|p| p.leader).count();
        let under = parts().filter(|p| p.leader && p.under_replicated).count();
        family(
            e,
            "sluice_partitions_led",
            "Partitions this broker leads.",
            MetricType::Gauge,
            [(vec![], gauge(leaders as i64))],
        )?;
        family(
            e,
            "sluice_under_replicated_partitions",
            "Partitions this broker leads whose ISR is smaller than their replica set.",
            MetricType::Gauge,
            [(vec![], gauge(under as i64))],
        )?;
        let under_min = parts().filter(|p| p.under_min_isr).count();
        let at_min = parts().filter(|p| p.at_min_isr).count();
        family(
            e,
            "sluice_under_min_isr_partitions",
            "Partitions this broker leads whose ISR is below their effective min.insync.replicas (the setting, at most the replica count): acks=all writes are refused.",
            MetricType::Gauge,
            [(vec![], gauge(under_min as i64))],
        )?;
        family(
            e,
            "sluice_at_min_isr_partitions",
            "Partitions this broker leads whose ISR is exactly their effective min.insync.replicas: one more replica lost refuses acks=all.",
            MetricType::Gauge,
            [(vec![], gauge(at_min as i64))],
        )?;
        Ok(())
    }

    /// The cluster as this broker's image has it: offline partitions, ISR
    /// changes, the controller, brokers, readiness, missing shards.
    fn encode_cluster(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = &self.cluster;
        let shards = &self.shards;
        let sum = |f: fn(&ShardReport) -> u64| shards.iter().map(f).sum::<u64>();
        family(
            e,
            "sluice_offline_partitions",
            "Partitions of the cluster without a leader, in this broker's metadata image.",
            MetricType::Gauge,
            [(vec![], gauge(c.offline_partitions as i64))],
        )?;
        family(
            e,
            "sluice_isr_shrinks",
            "ISR shrinks this broker's leaders made.",
            MetricType::Counter,
            [(vec![], counter(sum(|s| s.isr_shrinks)))],
        )?;
        family(
            e,
            "sluice_isr_expands",
            "ISR expansions this broker's leaders made.",
            MetricType::Counter,
            [(vec![], counter(sum(|s| s.isr_expands)))],
        )?;
        let cleaner = |f: fn(&CleanerTotals) -> u64| shards.iter().map(|s| f(&s.cleaner)).sum::<u64>();
        family(
            e,
            "sluice_log_cleaner_passes",
            "Passes of the log cleaner over compacted logs.",
            MetricType::Counter,
            [(vec![], counter(cleaner(|c| c.passes)))],
        )?;
        family(
            e,
            "sluice_log_cleaner_bytes",
            "Bytes the log cleaner read (direction read) and wrote (written).",
            MetricType::Counter,
            [
                (vec![label("direction", "read")], counter(cleaner(|c| c.bytes_read))),
                (
                    vec![label("direction", "written")],
                    counter(cleaner(|c| c.bytes_written)),
                ),
            ],
        )?;
        family(
            e,
            "sluice_log_cleaner_records_removed",
            "Records the log cleaner removed from compacted logs.",
            MetricType::Counter,
            [(vec![], counter(cleaner(|c| c.records_removed)))],
        )?;
        family(
            e,
            "sluice_log_cleaner_seconds",
            "Time the log cleaner's passes took, yields included.",
            MetricType::Counter,
            [(vec![], counter_f(cleaner(|c| c.ns) as f64 / 1e9))],
        )?;
        family(
            e,
            "sluice_active_controller",
            "1 when this node is the active controller (the quorum's leader).",
            MetricType::Gauge,
            [(vec![], gauge(i64::from(c.active_controller)))],
        )?;
        family(
            e,
            "sluice_brokers",
            "Registered brokers in the metadata image, by state.",
            MetricType::Gauge,
            [
                (
                    vec![label("state", "unfenced")],
                    gauge((c.brokers - c.fenced_brokers) as i64),
                ),
                (vec![label("state", "fenced")], gauge(c.fenced_brokers as i64)),
            ],
        )?;
        family(
            e,
            "sluice_scrape_missing_shards",
            "Shards that did not answer this scrape in time (their counters are left out).",
            MetricType::Gauge,
            [(vec![], gauge(self.missing_shards as i64))],
        )?;
        family(
            e,
            "sluice_ready",
            "1 when this broker is ready: started, listening and (in a cluster) registered and unfenced.",
            MetricType::Gauge,
            [(vec![label("node", c.node_id)], gauge(i64::from(c.ready)))],
        )?;
        Ok(())
    }

    /// Consumer groups this broker coordinates.
    fn encode_groups(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let shards = &self.shards;
        let groups = || shards.iter().flat_map(|s| &s.groups);
        family(
            e,
            "sluice_consumer_groups",
            "Consumer groups this broker coordinates, by state.",
            MetricType::Gauge,
            {
                let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
                for g in groups() {
                    *by_state.entry(g.state.as_str()).or_default() += 1;
                }
                by_state
                    .into_iter()
                    .map(|(s, n)| (vec![label("state", s)], gauge(n)))
                    .collect::<Vec<_>>()
            },
        )?;
        family(
            e,
            "sluice_consumer_group_members",
            "Members of each consumer group this broker coordinates.",
            MetricType::Gauge,
            groups().map(|g| (vec![label("group", &g.group)], gauge(g.members as i64))),
        )?;
        let consumer = || groups().filter_map(|g| g.consumer.map(|c| (g.group.as_str(), c)));
        family(
            e,
            "sluice_consumer_group_epoch",
            "Group epoch of each consumer-protocol (KIP-848) group: it grows with every change of members, subscriptions or subscribed topics.",
            MetricType::Gauge,
            consumer().map(|(g, (epoch, _, _))| (vec![label("group", g)], gauge(i64::from(epoch)))),
        )?;
        family(
            e,
            "sluice_consumer_group_assignment_epoch",
            "The group epoch of each consumer-protocol group's current target assignment.",
            MetricType::Gauge,
            consumer().map(|(g, (_, epoch, _))| (vec![label("group", g)], gauge(i64::from(epoch)))),
        )?;
        family(
            e,
            "sluice_consumer_group_reconciling_members",
            "Members of each consumer-protocol group not yet at their target assignment.",
            MetricType::Gauge,
            consumer().map(|(g, (_, _, n))| (vec![label("group", g)], gauge(n as i64))),
        )?;
        let lag = self.group_lag();
        family(
            e,
            "sluice_consumer_group_lag",
            "Records between each group's committed offsets and the high watermark, summed over the partitions it committed to that this broker leads.",
            MetricType::Gauge,
            lag.iter().map(|(g, s, _)| (vec![label("group", g)], gauge(*s))),
        )?;
        family(
            e,
            "sluice_consumer_group_max_lag",
            "The largest lag of one partition, over the same partitions.",
            MetricType::Gauge,
            lag.iter().map(|(g, _, m)| (vec![label("group", g)], gauge(*m))),
        )?;
        Ok(())
    }
}

/// This shard's report: its counters, its partitions and its groups.
/// Runs on the shard's thread.
pub fn shard_report(shard: &crate::node::Shard) -> ShardReport {
    let mut r = ShardReport {
        shard: shard.id.0,
        connections_open: shard.live_connections.get() as u64,
        queued_request_bytes: shard.budget.used(),
        ..Default::default()
    };
    shard.metrics.fill(&mut r);
    let io: &IoHistograms = &shard.io_histograms;
    r.io = Some((io.write_ns.data(), io.sync_ns.data(), io.round_batches.data()));
    for p in shard.owned_partitions() {
        let replica = p.replica.borrow();
        let leader = replica.role == crate::partition::Role::Leader;
        r.partitions.push(PartitionReport {
            topic: p.topic.to_string(),
            partition: p.index,
            segments: p.log.segment_count() as u64,
            size_bytes: p.log.size_bytes(),
            bytes_in: p.traffic.bytes_in.get(),
            records_in: p.traffic.records_in.get(),
            leader,
            under_replicated: leader && replica.isr.len() < replica.replicas.len(),
            under_min_isr: leader && replica.isr.len() < replica.min_isr,
            at_min_isr: leader && replica.isr.len() == replica.min_isr,
            high_watermark: p.log.high_watermark(),
            lso_lag: if leader {
                p.log.high_watermark() - p.last_stable_offset()
            } else {
                0
            },
            cleaning: p
                .cleaning
                .dirty_ratio
                .get()
                .map(|ratio| (ratio, p.cleaning.last_clean_ms.get())),
        });
    }
    for (m, _) in shard.services.transactions.all() {
        r.transactions.push((m.status.name(), m.start_ms));
    }
    for h in shard.services.groups.all() {
        let g = h.group.borrow();
        let consumer = g
            .consumer
            .as_ref()
            .map(|c| (c.epoch, c.assignment_epoch, c.reconciling() as u64));
        r.groups.push(GroupReport {
            group: g.id.to_string(),
            state: g
                .consumer
                .as_ref()
                .map_or(g.state.name(), |c| c.state_name())
                .to_string(),
            members: g.consumer.as_ref().map_or(g.members.len(), |c| c.members.len()) as u64,
            consumer,
            committed: g
                .offsets
                .iter()
                .map(|((t, p), v)| (t.to_string(), *p, v.offset))
                .collect(),
        });
    }
    r
}

/// The image's facts as this shard sees them.
pub fn cluster_report(shard: &crate::node::Shard) -> ClusterReport {
    let snap = shard.meta();
    let me = shard.config().node_id;
    ClusterReport {
        node_id: me,
        active_controller: snap.controller_id == me,
        brokers: snap.brokers.len() as u64,
        fenced_brokers: snap.brokers.values().filter(|b| b.fenced).count() as u64,
        offline_partitions: snap
            .topics
            .values()
            .flat_map(|t| &t.partition_states)
            .filter(|p| p.leader == crate::image::NO_LEADER)
            .count() as u64,
        ready: shard.common.ready(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_to_the_high_watermark_of_partitions_led_here() {
        let part = |t: &str, p, hw, leader| PartitionReport {
            topic: t.into(),
            partition: p,
            leader,
            high_watermark: hw,
            ..Default::default()
        };
        let report = Report {
            cluster: ClusterReport::default(),
            shards: vec![ShardReport {
                partitions: vec![part("t", 0, 100, true), part("t", 1, 50, true), part("t", 2, 70, false)],
                groups: vec![GroupReport {
                    group: "g".into(),
                    state: "Empty".into(),
                    members: 0,
                    committed: vec![("t".into(), 0, 40), ("t".into(), 1, 50), ("t".into(), 2, 0)],
                    consumer: Some((7, 6, 2)),
                }],
                ..Default::default()
            }],
            missing_shards: 0,
        };
        assert_eq!(report.group_lag(), vec![("g".to_string(), 60, 60)]);
        let text = report.encode().unwrap_or_default();
        assert!(text.contains("sluice_consumer_group_lag{group=\"g\"} 60"), "{text}");
        assert!(text.contains("sluice_consumer_group_epoch{group=\"g\"} 7"), "{text}");
        assert!(
            text.contains("sluice_consumer_group_assignment_epoch{group=\"g\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("sluice_consumer_group_reconciling_members{group=\"g\"} 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE sluice_requests counter\n"));
        let classic = to_classic(&text);
        assert!(classic.contains("# TYPE sluice_requests_total counter\n"));
        assert!(classic.contains("# HELP sluice_requests_total Requests"));
        assert!(!classic.contains("# EOF"));
        assert!(classic.contains("# TYPE sluice_log_segments gauge\n"));
    }
}
