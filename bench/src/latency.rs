//! Time and latency: one clock for every task in a run, and the summary
//! OMB reports from an HDR histogram of microseconds.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Microseconds since the UNIX epoch, read from a monotonic clock anchored
/// once, so latencies never go negative when the wall clock steps. Values
/// written into messages use it, and so do the consumers reading them.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_us: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let start_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            start: Instant::now(),
            start_us,
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start_us + self.start.elapsed().as_micros() as u64
    }

    pub fn at_us(&self, t: Instant) -> u64 {
        self.start_us + t.saturating_duration_since(self.start).as_micros() as u64
    }
}

/// Highest latency recorded: an hour. Anything above is clamped there, so
/// a stall shows as the maximum instead of being dropped.
pub const MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// Records `n` samples of `us` (at least 1 µs, at most [`MAX_US`]).
pub fn record(h: &mut Histogram<u64>, us: u64, n: u64) {
    // Within bounds after the clamp, so recording cannot fail.
    let _ = h.record_n(us.clamp(1, MAX_US), n);
}

/// Latency percentiles in milliseconds, as OMB reports them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(h.value_at_quantile(p));
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: q(0.50),
            p75: q(0.75),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = histogram();
        for us in 1..=10_000u64 {
            record(&mut h, us * 100, 1); // 0.1 ms .. 1000 ms
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 10_000);
        let near = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(near(l.p50, 500.0), "{}", l.p50);
        assert!(near(l.p99, 990.0), "{}", l.p99);
        assert!(near(l.p999, 999.0), "{}", l.p999);
        assert!(near(l.max, 1000.0), "{}", l.max);
        assert!(near(l.mean, 500.05), "{}", l.mean);
    }

    #[test]
    fn a_stall_owns_the_tail() {
        // 9 900 fast answers and 100 that waited a second: p99 is still
        // fast, p99.9 is the stall.
        let mut h = histogram();
        record(&mut h, 200, 9_900);
        record(&mut h, 1_000_000, 100);
        let l = Latency::of(&h);
        assert!(l.p99 < 0.21, "{}", l.p99);
        assert!(l.p999 > 990.0, "{}", l.p999);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = histogram();
        record(&mut h, 0, 1);
        record(&mut h, u64::MAX, 1);
        let l = Latency::of(&h);
        assert_eq!(l.count, 2);
        assert!(l.max >= MAX_US as f64 / 1000.0 * 0.999);
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn the_clock_moves_forward_from_the_wall_clock() {
        let c = Clock::new();
        let a = c.now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = c.now_us();
        assert!(b >= a + 2_000, "{a} {b}");
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        assert!(wall.abs_diff(b) < 1_000_000);
    }
}
