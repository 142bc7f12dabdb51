#!/usr/bin/env python3
"""Prints the shard sweep's table from sluice-bench JSON reports (one per
shard count, as bench/scripts/shard_sweep.sh writes them): per workload and
shard count, publish MB/s, the broker's CPU seconds per GB published, that
figure as a ratio to the smallest shard count of the same workload, and the
publish and end-to-end p99. Rows are medians over repetitions."""
import json
import re
import statistics
import sys


def shards_of(report):
    cmd = report.get("command", [])
    for i, a in enumerate(cmd):
        if a == "--broker-cores" and i + 1 < len(cmd):
            return int(cmd[i + 1])
        m = re.match(r"--broker-cores=(\d+)$", a)
        if m:
            return int(m.group(1))
    return 1


def main(paths):
    rows = {}
    for path in paths:
        with open(path) as f:
            rep = json.load(f)
        n = shards_of(rep)
        for r in rep["results"]:
            rows.setdefault((r["workload"], n, r["target"]), []).append(r)
    print("| workload | shards | target | pub MB/s | broker core-s per GB | vs fewest shards | pub p99 ms | e2e p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    base = {}
    for (w, n, t) in sorted(rows):
        rs = rows[(w, n, t)]
        mbs = statistics.median(r["publish_mb_per_s"] for r in rs)
        per_gb = [
            r["broker_cpu_seconds"] / (r["publish_mb_per_s"] * r["test_seconds"] / 1000.0)
            for r in rs
            if r.get("broker_cpu_seconds") is not None and r["publish_mb_per_s"] > 0
        ]
        cpu = statistics.median(per_gb) if per_gb else None
        if cpu is not None:
            base.setdefault((w, t), cpu)
        ratio = f"{cpu / base[(w, t)]:.2f}" if cpu is not None else "-"
        p99 = statistics.median(r["publish_latency_ms"]["p99"] for r in rs)
        e2e = [r["end_to_end_latency_ms"]["p99"] for r in rs if r["consume_rate"] > 0]
        e2e_s = f"{statistics.median(e2e):.2f}" if e2e else "-"
        cpu_s = f"{cpu:.2f}" if cpu is not None else "-"
        print(f"| {w} | {n} | {t} | {mbs:.1f} | {cpu_s} | {ratio} | {p99:.2f} | {e2e_s} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: sweep_table.py REPORT.json ...")
    main(sys.argv[1:])
