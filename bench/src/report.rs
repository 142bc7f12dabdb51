//! Reports: what a run writes with `--json`, the tables it prints, the
//! A/B ratios of `--vs`, and the regression gate of `compare`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::run::WorkloadResult;
use crate::workload::Workload;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
}

impl Host {
    pub fn this() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            kernel,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// "A" (the main target) or "B" (`--vs`).
    pub label: String,
    pub bootstrap: String,
    /// `sluice --version` when sluice-bench started the broker itself.
    pub spawned_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// Commit sluice-bench was built from.
    pub git_commit: String,
    pub started_unix_s: u64,
    pub host: Host,
    pub targets: Vec<Target>,
    /// The command line, for the record.
    pub command: Vec<String>,
    pub workloads: Vec<Workload>,
    pub results: Vec<WorkloadResult>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a sluice-bench report: {e}"))
    }

    /// One workload on one target over its repetitions: the median of the
    /// rates and of p50, p99 and p99.9 of both latencies (what `compare`
    /// and the tables read); the other fields are the first run's.
    pub fn summary(&self, workload: &str, target: &str) -> Option<WorkloadResult> {
        let rs: Vec<&WorkloadResult> = self
            .results
            .iter()
            .filter(|r| r.workload == workload && r.target == target)
            .collect();
        let first = (*rs.first()?).clone();
        let med = |f: &dyn Fn(&WorkloadResult) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let mut s = first;
        s.publish_rate = med(&|r| r.publish_rate);
        s.publish_mb_per_s = med(&|r| r.publish_mb_per_s);
        s.consume_rate = med(&|r| r.consume_rate);
        s.consume_mb_per_s = med(&|r| r.consume_mb_per_s);
        s.publish_latency_ms.p50 = med(&|r| r.publish_latency_ms.p50);
        s.publish_latency_ms.p99 = med(&|r| r.publish_latency_ms.p99);
        s.publish_latency_ms.p999 = med(&|r| r.publish_latency_ms.p999);
        s.end_to_end_latency_ms.p50 = med(&|r| r.end_to_end_latency_ms.p50);
        s.end_to_end_latency_ms.p99 = med(&|r| r.end_to_end_latency_ms.p99);
        s.end_to_end_latency_ms.p999 = med(&|r| r.end_to_end_latency_ms.p999);
        Some(s)
    }
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The human-readable table of a run.
pub fn table(results: &[WorkloadResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:>2} {:>4} {:>10} {:>8} {:>10} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
        "workload",
        "",
        "pair",
        "pub msg/s",
        "pub MB/s",
        "cons msg/s",
        "backlog",
        "pub p50",
        "p75",
        "p95",
        "p99",
        "p99.9",
        "max",
        "e2e p50",
        "p99",
        "p99.9",
        "max"
    );
    for r in results {
        let p = &r.publish_latency_ms;
        let e = &r.end_to_end_latency_ms;
        let _ = writeln!(
            out,
            "{:<30} {:>2} {:>4} {:>10.0} {:>8.1} {:>10.0} {:>8} | {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} | {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            truncate(&r.workload, 30),
            r.target,
            r.pair + 1,
            r.publish_rate,
            r.publish_mb_per_s,
            r.consume_rate,
            r.backlog,
            p.p50,
            p.p75,
            p.p95,
            p.p99,
            p.p999,
            p.max,
            e.p50,
            e.p99,
            e.p999,
            e.max
        );
    }
    let _ = writeln!(
        out,
        "latencies in ms; publish = send to ack, e2e = intended send to consumer receipt"
    );
    for r in results {
        if r.publish_errors + r.consume_errors > 0 {
            let _ = writeln!(
                out,
                "{} {}: {} messages failed to publish (last Kafka error code {}), {} fetch errors",
                r.workload, r.target, r.publish_errors, r.last_publish_error_code, r.consume_errors
            );
        }
        if let (Some(cpu), Some(rss)) = (r.broker_cpu_seconds, r.broker_peak_rss_bytes) {
            let _ = writeln!(
                out,
                "{} {} pair {}: broker CPU {:.2} s ({:.2} cores), peak RSS {:.1} MiB; generator CPU {:.2} s",
                r.workload,
                r.target,
                r.pair + 1,
                cpu,
                cpu / r.test_seconds,
                rss as f64 / 1048576.0,
                r.generator_cpu_seconds
            );
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

/// Per-pair ratios B / A of a `--vs` run, and their medians.
pub fn ratios(results: &[WorkloadResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:>4} {:>12} {:>12} {:>12} {:>12}",
        "B / A", "pair", "pub msg/s", "cons msg/s", "pub p99", "e2e p99"
    );
    let mut names: Vec<&str> = results.iter().map(|r| r.workload.as_str()).collect();
    names.dedup();
    for name in names {
        let mut cols: [Vec<f64>; 4] = Default::default();
        let pairs = results
            .iter()
            .filter(|r| r.workload == name)
            .map(|r| r.pair)
            .max()
            .unwrap_or(0);
        for pair in 0..=pairs {
            let find = |t: &str| {
                results
                    .iter()
                    .find(|r| r.workload == name && r.pair == pair && r.target == t)
            };
            let (Some(a), Some(b)) = (find("A"), find("B")) else {
                continue;
            };
            let ratio = |x: f64, y: f64| if x > 0.0 { y / x } else { f64::NAN };
            let row = [
                ratio(a.publish_rate, b.publish_rate),
                ratio(a.consume_rate, b.consume_rate),
                ratio(a.publish_latency_ms.p99, b.publish_latency_ms.p99),
                ratio(a.end_to_end_latency_ms.p99, b.end_to_end_latency_ms.p99),
            ];
            let _ = writeln!(
                out,
                "{:<30} {:>4} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
                truncate(name, 30),
                pair + 1,
                row[0],
                row[1],
                row[2],
                row[3]
            );
            for (c, v) in cols.iter_mut().zip(row) {
                if v.is_finite() {
                    c.push(v);
                }
            }
        }
        let [a, b, c, d] = cols.map(median);
        let _ = writeln!(
            out,
            "{:<30} {:>4} {:>12.3} {:>12.3} {:>12.3} {:>12.3}",
            truncate(name, 30),
            "med",
            a,
            b,
            c,
            d
        );
    }
    out
}

/// One compared figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Compared {
    pub workload: String,
    pub target: String,
    pub metric: &'static str,
    pub base: f64,
    pub new: f64,
    /// Relative change in the bad direction: +0.3 is 30 % worse.
    pub worse_by: f64,
    pub regressed: bool,
}

/// Compares every workload and target of `base` with `new`. A figure
/// regresses when throughput falls, or p99 latency rises, by more than
/// `max_regression` (a fraction). A workload missing from `new` regresses.
pub fn compare(base: &Report, new: &Report, max_regression: f64) -> (Vec<Compared>, bool) {
    let mut rows = Vec::new();
    let mut keys: Vec<(String, String)> = base
        .results
        .iter()
        .map(|r| (r.workload.clone(), r.target.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut any = false;
    for (workload, target) in keys {
        let Some(b) = base.summary(&workload, &target) else {
            continue;
        };
        let Some(n) = new.summary(&workload, &target) else {
            any = true;
            rows.push(Compared {
                workload,
                target,
                metric: "missing from the new report",
                base: 1.0,
                new: 0.0,
                worse_by: 1.0,
                regressed: true,
            });
            continue;
        };
        let mut push = |metric: &'static str, bv: f64, nv: f64, higher_is_better: bool| {
            if bv <= 0.0 {
                return;
            }
            let worse_by = if higher_is_better {
                (bv - nv) / bv
            } else {
                (nv - bv) / bv
            };
            let regressed = worse_by > max_regression;
            any |= regressed;
            rows.push(Compared {
                workload: workload.clone(),
                target: target.clone(),
                metric,
                base: bv,
                new: nv,
                worse_by,
                regressed,
            });
        };
        push("publish msg/s", b.publish_rate, n.publish_rate, true);
        push("consume msg/s", b.consume_rate, n.consume_rate, true);
        push(
            "publish p99 ms",
            b.publish_latency_ms.p99,
            n.publish_latency_ms.p99,
            false,
        );
        push(
            "e2e p99 ms",
            b.end_to_end_latency_ms.p99,
            n.end_to_end_latency_ms.p99,
            false,
        );
    }
    (rows, any)
}

pub fn compare_table(rows: &[Compared], max_regression: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<30} {:>2} {:<16} {:>14} {:>14} {:>9}  verdict (limit {:.1}% worse)",
        "workload",
        "",
        "figure",
        "base",
        "new",
        "change",
        max_regression * 100.0
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<30} {:>2} {:<16} {:>14.3} {:>14.3} {:>+8.1}%  {}",
            truncate(&r.workload, 30),
            r.target,
            r.metric,
            r.base,
            r.new,
            -r.worse_by * 100.0,
            if r.regressed { "REGRESSED" } else { "ok" }
        );
    }
    out
}

/// Parses `5%` or `0.05`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{s}` is not a percentage like 5% or a fraction like 0.05"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("`{s}` must be 0 or more"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::latency::Latency;

    pub fn result(workload: &str, target: &str, pair: usize, rate: f64, p99: f64) -> WorkloadResult {
        let lat = Latency {
            count: 1000,
            mean: p99 / 2.0,
            p50: p99 / 3.0,
            p75: p99 / 2.0,
            p95: p99 / 1.5,
            p99,
            p999: p99 * 2.0,
            p9999: p99 * 3.0,
            max: p99 * 4.0,
        };
        WorkloadResult {
            workload: workload.into(),
            target: target.into(),
            bootstrap: "127.0.0.1:9092".into(),
            pair,
            test_seconds: 10.0,
            publish_rate: rate,
            publish_mb_per_s: rate * 1024.0 / 1e6,
            consume_rate: rate,
            consume_mb_per_s: rate * 1024.0 / 1e6,
            backlog: 0,
            publish_errors: 0,
            last_publish_error_code: 0,
            consume_errors: 0,
            publish_latency_ms: lat,
            end_to_end_latency_ms: lat,
            generator_cpu_seconds: 1.0,
            broker_cpu_seconds: Some(5.0),
            broker_peak_rss_bytes: Some(64 << 20),
        }
    }

    pub fn report(results: Vec<WorkloadResult>) -> Report {
        Report {
            tool: "sluice-bench".into(),
            version: "0.1.0".into(),
            git_commit: "abc".into(),
            started_unix_s: 1,
            host: Host::this(),
            targets: vec![Target {
                label: "A".into(),
                bootstrap: "127.0.0.1:9092".into(),
                spawned_version: None,
            }],
            command: vec!["sluice-bench".into()],
            workloads: Vec::new(),
            results,
        }
    }

    #[test]
    fn reports_round_trip_through_json() {
        let r = report(vec![result("w", "A", 0, 1000.0, 2.0), result("w", "B", 0, 900.0, 3.0)]);
        assert_eq!(Report::from_json(&r.to_json()).unwrap(), r);
        assert!(Report::from_json("{}").is_err());
    }

    #[test]
    fn the_gate_passes_noise_and_catches_a_30_percent_slowdown() {
        let base = report(vec![
            result("a", "A", 0, 100_000.0, 2.0),
            result("b", "A", 0, 50_000.0, 1.0),
        ]);
        // Run-to-run noise: 4 % slower, p99 6 % higher.
        let noisy = report(vec![
            result("a", "A", 0, 96_000.0, 2.12),
            result("b", "A", 0, 51_000.0, 0.98),
        ]);
        let (rows, regressed) = compare(&base, &noisy, 0.10);
        assert!(!regressed, "{}", compare_table(&rows, 0.10));
        assert_eq!(rows.len(), 8);
        // A build 30 % slower: throughput down 30 %, latency up 43 %.
        let slow = report(vec![
            result("a", "A", 0, 70_000.0, 2.0 / 0.7),
            result("b", "A", 0, 50_000.0, 1.0),
        ]);
        let (rows, regressed) = compare(&base, &slow, 0.10);
        assert!(regressed);
        let bad: Vec<_> = rows
            .iter()
            .filter(|r| r.regressed)
            .map(|r| (r.workload.as_str(), r.metric))
            .collect();
        assert_eq!(
            bad,
            vec![
                ("a", "publish msg/s"),
                ("a", "consume msg/s"),
                ("a", "publish p99 ms"),
                ("a", "e2e p99 ms")
            ]
        );
        assert!((rows[0].worse_by - 0.30).abs() < 1e-9);
        assert!(compare_table(&rows, 0.10).contains("REGRESSED"));
        // Only a latency rise counts when throughput holds.
        let laggy = report(vec![
            result("a", "A", 0, 100_000.0, 2.5),
            result("b", "A", 0, 50_000.0, 1.0),
        ]);
        let (rows, regressed) = compare(&base, &laggy, 0.10);
        assert!(regressed);
        assert_eq!(rows.iter().filter(|r| r.regressed).count(), 2);
    }

    #[test]
    fn a_missing_workload_fails_the_gate() {
        let base = report(vec![result("a", "A", 0, 1.0, 1.0), result("b", "A", 0, 1.0, 1.0)]);
        let new = report(vec![result("a", "A", 0, 1.0, 1.0)]);
        let (rows, regressed) = compare(&base, &new, 0.05);
        assert!(regressed);
        assert!(rows.iter().any(|r| r.workload == "b" && r.regressed));
    }

    #[test]
    fn pairs_are_summarised_by_their_median() {
        let r = report(vec![
            result("a", "A", 0, 100.0, 1.0),
            result("a", "A", 1, 300.0, 9.0),
            result("a", "A", 2, 200.0, 2.0),
            result("a", "B", 0, 50.0, 1.0),
        ]);
        let s = r.summary("a", "A").unwrap();
        assert_eq!((s.publish_rate, s.publish_latency_ms.p99), (200.0, 2.0));
        assert_eq!(r.summary("a", "B").unwrap().publish_rate, 50.0);
        assert!(r.summary("c", "A").is_none());
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn vs_ratios_are_b_over_a_per_pair() {
        let rs = vec![
            result("a", "A", 0, 100.0, 2.0),
            result("a", "B", 0, 50.0, 4.0),
            result("a", "A", 1, 100.0, 2.0),
            result("a", "B", 1, 25.0, 8.0),
        ];
        let t = ratios(&rs);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("0.500") && lines[1].contains("2.000"), "{t}");
        assert!(lines[2].contains("0.250") && lines[2].contains("4.000"), "{t}");
        assert!(
            lines[3].contains("med") && lines[3].contains("0.375") && lines[3].contains("3.000"),
            "{t}"
        );
    }

    #[test]
    fn thresholds_parse() {
        assert_eq!(parse_fraction("5%").unwrap(), 0.05);
        assert_eq!(parse_fraction("0.1").unwrap(), 0.1);
        assert!(parse_fraction("-1%").is_err());
        assert!(parse_fraction("five").is_err());
    }

    #[test]
    fn tables_show_every_result() {
        let rs = vec![result("a", "A", 0, 1234.0, 2.0), result("b", "A", 0, 99.0, 1.0)];
        let t = table(&rs);
        assert!(t.contains("1234") && t.contains("99"));
        assert!(t.contains("broker CPU 5.00 s (0.50 cores), peak RSS 64.0 MiB"), "{t}");
    }
}
