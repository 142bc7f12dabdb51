//! What each shard counts for `/metrics`, in plain cells on its own thread
//! (no locks or atomics on the request path, nothing allocated per
//! request), and the plain-data report a shard hands a scrape. Encoding
//! the reports is `metrics`' work, above the shards.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sluice_engine::stats::{Histogram, HistogramData};

/// The highest Kafka API key counted; others count under this one.
const MAX_API_KEY: usize = 80;

#[derive(Debug)]
struct ApiMetrics {
    requests: Cell<u64>,
    latency: Histogram,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Cell::new(0),
            latency: Histogram::latency(),
        }
    }
}

/// One shard's counters.
#[derive(Debug)]
pub struct ShardMetrics {
    apis: Box<[ApiMetrics]>,
    /// Error codes answered, by API key and code. Touched only when a
    /// partition or request gets an error.
    errors: RefCell<BTreeMap<(i16, i16), u64>>,
    /// Bytes of record batches sent to consumers, by topic.
    bytes_out: RefCell<HashMap<Arc<str>, u64>>,
    pub connections_accepted: Cell<u64>,
    pub connections_refused: Cell<u64>,
    /// SASL authentications that succeeded, and that failed.
    pub authentications: Cell<u64>,
    pub authentication_failures: Cell<u64>,
    /// Jobs this shard handed to another shard.
    pub handoffs: Cell<u64>,
    pub isr_shrinks: Cell<u64>,
    pub isr_expands: Cell<u64>,
    /// The log cleaner's passes, summed.
    cleaner: Cell<CleanerTotals>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self {
            apis: (0..=MAX_API_KEY).map(|_| ApiMetrics::default()).collect(),
            errors: RefCell::default(),
            bytes_out: RefCell::default(),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            authentications: Cell::new(0),
            authentication_failures: Cell::new(0),
            handoffs: Cell::new(0),
            isr_shrinks: Cell::new(0),
            isr_expands: Cell::new(0),
            cleaner: Default::default(),
        }
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get().wrapping_add(by));
}

impl ShardMetrics {
    /// A request of API `key` answered after `ns` nanoseconds.
    pub fn request(&self, key: i16, ns: u64) {
        let a = &self.apis[usize::try_from(key).unwrap_or(0).min(MAX_API_KEY)];
        bump(&a.requests, 1);
        a.latency.observe(ns);
    }

    /// An error code (non-zero) answered for API `key`, once per partition
    /// or request that carried it.
    pub fn error(&self, key: i16, code: i16) {
        if code != 0 {
            *self.errors.borrow_mut().entry((key, code)).or_default() += 1;
        }
    }

    /// `bytes` of records of `topic` sent to a consumer.
    pub fn sent(&self, topic: &Arc<str>, bytes: u64) {
        let mut m = self.bytes_out.borrow_mut();
        match m.get_mut(&**topic) {
            Some(n) => *n += bytes,
            None => {
                m.insert(topic.clone(), bytes);
            }
        }
    }

    pub fn bump(c: &Cell<u64>) {
        bump(c, 1);
    }

    /// Fills this shard's counters into `r`.
    pub fn fill(&self, r: &mut ShardReport) {
        for (key, a) in self.apis.iter().enumerate() {
            if a.requests.get() > 0 {
                r.apis.push((key as i16, a.requests.get(), a.latency.data()));
            }
        }
        r.errors = self.errors.borrow().iter().map(|(&k, &v)| (k, v)).collect();
        r.bytes_out = self
            .bytes_out
            .borrow()
            .iter()
            .map(|(k, &v)| (k.to_string(), v))
            .collect();
        r.connections_accepted = self.connections_accepted.get();
        r.connections_refused = self.connections_refused.get();
        r.authentications = self.authentications.get();
        r.authentication_failures = self.authentication_failures.get();
        r.handoffs = self.handoffs.get();
        r.isr_shrinks = self.isr_shrinks.get();
        r.isr_expands = self.isr_expands.get();
        r.cleaner = self.cleaner.get();
    }

    /// A pass of the log cleaner.
    pub fn cleaned(&self, stats: &sluice_engine::CleanStats, took: std::time::Duration) {
        let t = self.cleaner.get();
        self.cleaner.set(CleanerTotals {
            passes: t.passes.wrapping_add(1),
            bytes_read: t.bytes_read.wrapping_add(stats.bytes_read),
            bytes_written: t.bytes_written.wrapping_add(stats.bytes_written),
            records_removed: t.records_removed.wrapping_add(stats.records_removed),
            ns: t.ns.wrapping_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)),
        });
    }
}

/// A compacted partition as its shard's cleaner last saw it.
#[derive(Debug, Default)]
pub struct Cleaning {
    /// Bytes of rolled segments not yet cleaned over all rolled bytes
    /// (what `min.cleanable.dirty.ratio` is compared with); `None` until
    /// the cleaner looked at the partition.
    pub dirty_ratio: Cell<Option<f64>>,
    /// When the last pass over the partition ended (ms since the epoch);
    /// 0 when none has since this process started.
    pub last_clean_ms: Cell<u64>,
    /// The lowest offset a follower's truncation cut the log back to since
    /// the cleaner last looked: records written again from there are not
    /// clean, whatever the last pass left.
    pub truncated_to: Cell<Option<i64>>,
}

impl Cleaning {
    pub fn truncated(&self, offset: i64) {
        let lowest = self.truncated_to.get().map_or(offset, |t| t.min(offset));
        self.truncated_to.set(Some(lowest));
    }
}

/// Per-partition traffic, counted on the partition's shard.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: Cell<u64>,
    pub records_in: Cell<u64>,
}

impl Traffic {
    pub fn appended(&self, bytes: u64, records: u64) {
        bump(&self.bytes_in, bytes);
        bump(&self.records_in, records);
    }
}

/// One partition replica as a scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    pub segments: u64,
    pub size_bytes: u64,
    pub bytes_in: u64,
    pub records_in: u64,
    pub leader: bool,
    pub under_replicated: bool,
    /// A leader whose ISR is below its effective `min.insync.replicas`
    /// (acks=all is refused), or exactly at it (one more loss refuses it).
    pub under_min_isr: bool,
    pub at_min_isr: bool,
    /// Leaders only: the high watermark, which consumer lag is counted to.
    pub high_watermark: i64,
    /// Leaders only: the high watermark less the last stable offset
    /// (what read_committed consumers wait for open transactions to end).
    pub lso_lag: i64,
    /// Compacted partitions the cleaner looked at: its dirty ratio and
    /// when its last pass ended (ms since the epoch, 0: none yet).
    pub cleaning: Option<(f64, u64)>,
}

/// One coordinated group as a scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct GroupReport {
    pub group: String,
    pub state: String,
    pub members: u64,
    pub committed: Vec<(String, i32, i64)>,
    /// A consumer-protocol group's group epoch, assignment epoch and
    /// members not yet at their target.
    pub consumer: Option<(i32, i32, u64)>,
}

/// The log cleaner's passes on one shard, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanerTotals {
    pub passes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// Time the passes took, yields included.
    pub ns: u64,
}

/// What one shard sends for a scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub shard: usize,
    pub apis: Vec<(i16, u64, HistogramData)>,
    pub errors: Vec<((i16, i16), u64)>,
    pub bytes_out: Vec<(String, u64)>,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub authentications: u64,
    pub authentication_failures: u64,
    pub connections_open: u64,
    pub handoffs: u64,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub cleaner: CleanerTotals,
    pub queued_request_bytes: u64,
    /// The shard's log writes, fdatasyncs and group-commit rounds.
    pub io: Option<(HistogramData, HistogramData, HistogramData)>,
    pub partitions: Vec<PartitionReport>,
    pub groups: Vec<GroupReport>,
    /// Transactional ids this shard coordinates, by state name, and the
    /// start (ms) of each open transaction.
    pub transactions: Vec<(&'static str, i64)>,
}
