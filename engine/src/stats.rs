//! Histograms of the data path that a shard shares among its logs
//! ([`IoHistograms`], through [`crate::Env`]): plain cells on the shard's
//! thread, read by the broker's metrics at scrape time.

use std::cell::Cell;

/// Upper bounds of latency buckets, in nanoseconds: 50 µs times powers of
/// √2 up to about 13 s, so p99 and p99.9 read within a factor of 1.41
/// from 50 µs to 10 s.
pub const LATENCY_BOUNDS_NS: [u64; 37] = latency_bounds();

const fn latency_bounds() -> [u64; 37] {
    let mut b = [0u64; 37];
    let mut k = 0;
    while k < 37 {
        let base = if k % 2 == 0 { 50_000 } else { 70_711 };
        b[k] = base << (k / 2);
        k += 1;
    }
    b
}

/// Upper bounds of count buckets: powers of two up to 4096.
pub const COUNT_BOUNDS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A histogram over fixed `bounds`, plus one bucket past the last bound.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[Cell<u64>]>,
    sum: Cell<u64>,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0),
        }
    }

    /// A latency histogram over [`LATENCY_BOUNDS_NS`].
    pub fn latency() -> Self {
        Self::new(&LATENCY_BOUNDS_NS)
    }

    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].set(self.counts[i].get() + 1);
        self.sum.set(self.sum.get().saturating_add(v));
    }

    /// The counts as plain numbers, to send to another thread.
    pub fn data(&self) -> HistogramData {
        HistogramData {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

/// A histogram's counts as sent between threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramData {
    pub bounds: &'static [u64],
    /// One count per bucket (not cumulative); the last is past every bound.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl HistogramData {
    pub fn empty(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0,
        }
    }

    /// Adds `other`'s counts (over the same bounds).
    pub fn add(&mut self, other: &HistogramData) {
        assert_eq!(self.bounds, other.bounds, "histograms over different bounds");
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What a shard's logs measure together.
#[derive(Debug)]
pub struct IoHistograms {
    /// Each `writev` of segment data (a group-commit round writes one or
    /// more), in nanoseconds.
    pub write_ns: Histogram,
    /// Each `fdatasync` of a segment, in nanoseconds.
    pub sync_ns: Histogram,
    /// Batches written by each group-commit round.
    pub round_batches: Histogram,
}

impl Default for IoHistograms {
    fn default() -> Self {
        Self {
            write_ns: Histogram::latency(),
            sync_ns: Histogram::latency(),
            round_batches: Histogram::new(&COUNT_BOUNDS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        assert_eq!(LATENCY_BOUNDS_NS[0], 50_000);
        assert!(LATENCY_BOUNDS_NS[36] > 10_000_000_000);
        for w in LATENCY_BOUNDS_NS.windows(2) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!((ratio - std::f64::consts::SQRT_2).abs() < 0.001, "{w:?}");
        }
        let h = Histogram::latency();
        h.observe(50_000); // on a bound: that bucket
        h.observe(50_001);
        h.observe(u64::MAX); // past every bound
        let d = h.data();
        assert_eq!((d.counts[0], d.counts[1], d.counts[LATENCY_BOUNDS_NS.len()]), (1, 1, 1));
        assert_eq!(d.count(), 3);
        let mut both = d.clone();
        both.add(&d);
        assert_eq!(both.count(), 6);
    }
}
