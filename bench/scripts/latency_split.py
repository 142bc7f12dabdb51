#!/usr/bin/env python3
"""Publish latency at 5k and 50k msg/s acks=all on one shard, next to a
same-run fdatasync baseline and split by where it is spent
(docs/benchmarks.md, "Where an acks=all millisecond goes").

Alternating, `--runs` times: the disk's own fdatasync of 1 KiB appends in
the directory the broker's data lives in (a file written and synced the
way a segment is, `--samples` times), then each workload with sluice-bench
against a spawned broker (one shard, core 0; the generator on core 1).
From the broker's /metrics around each run: its Produce request latency
(read to answer, `sluice_request_latency_seconds{api="Produce"}`), its
segment writes (`sluice_log_write_seconds`) and its own fdatasyncs
(`sluice_log_fdatasync_seconds`). Percentiles of the
broker's histograms are interpolated within their buckets (each bucket
spans a factor of 1.41).

Prints, per workload, the medians of: the client's publish p50/p99, the
broker's Produce p50/p99, the broker's fdatasync p99, the raw disk's
fdatasync p50/p99, and publish p99 over raw fdatasync p99.

Usage: latency_split.py [--runs 3] [--test-secs 20] [-o SETTING=VALUE ...]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import free_port  # noqa: E402

BENCH = os.environ.get("SLUICE_BENCH_BIN", os.path.join(ROOT, "target", "release", "sluice-bench"))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))
WORKLOADS = ["latency-5k-acks-all", "latency-50k-acks-all"]


def fdatasync_baseline(directory, samples):
    """p50 and p99 in ms of appending 1 KiB and fdatasync, as a segment is."""
    fd, path = tempfile.mkstemp(dir=directory, prefix="fdatasync-")
    try:
        block = b"\x5a" * 1024
        times = []
        for _ in range(samples):
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        return times[len(times) // 2], times[int(len(times) * 0.99)]
    finally:
        os.close(fd)
        os.unlink(path)


def scrape(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as r:
        return r.read().decode()


def histogram(text, name, labels=""):
    """{upper bound in s: cumulative count} of one histogram."""
    out = {}
    pattern = re.compile(r'^' + re.escape(name) + r'_bucket\{(.*)\} (\S+)$')
    for line in text.splitlines():
        m = pattern.match(line)
        if not m or labels not in m.group(1):
            continue
        le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
        bound = float("inf") if le == "+Inf" else float(le)
        out[bound] = out.get(bound, 0) + float(m.group(2))
    return out


def percentile(before, after, q):
    """The q-quantile (ms) of what a histogram counted between two scrapes,
    interpolated within its bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0) for b in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return float("nan")
    want = q * total
    lower, below = 0.0, 0.0
    for b, c in zip(bounds, counts):
        if c >= want:
            if b == float("inf"):
                return lower * 1000
            return (lower + (b - lower) * (want - below) / max(c - below, 1e-9)) * 1000
        lower, below = b, c
    return lower * 1000


def run_workload(name, admin_port, test_secs, out_json, data_parent, broker_args=()):
    env = dict(os.environ, SLUICE_BIN=BIN, TMPDIR=data_parent)
    cmd = [BENCH, "run", "--spawn", "--broker-bin", BIN, "--broker-cores", "1", "--cores", "1",
           "--progress-secs", "0", "--json", out_json, "--test-secs", str(test_secs),
           f"--broker-arg=-o", f"--broker-arg=sluice.admin.listen=127.0.0.1:{admin_port}",
           *[f"--broker-arg={a}" for a in broker_args],
           os.path.join(ROOT, "bench", "workloads", f"{name}.yaml")]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    admin = f"127.0.0.1:{admin_port}"
    # The first scrape once the broker answers, the second just before the
    # run ends (sluice-bench stops the broker when it is done).
    before = None
    deadline = time.time() + 30
    while before is None and time.time() < deadline:
        try:
            before = scrape(admin)
        except OSError:
            time.sleep(0.1)
    after = before
    while p.poll() is None:
        try:
            after = scrape(admin)
        except OSError:
            pass
        time.sleep(0.5)
    err = p.stderr.read()
    if p.returncode != 0:
        raise RuntimeError(f"sluice-bench failed: {err}")
    with open(out_json) as f:
        result = json.load(f)["results"][0]
    req_b = histogram(before, "sluice_request_latency_seconds", 'api="Produce"')
    req_a = histogram(after, "sluice_request_latency_seconds", 'api="Produce"')
    sync_b = histogram(before, "sluice_log_fdatasync_seconds")
    sync_a = histogram(after, "sluice_log_fdatasync_seconds")
    write_b = histogram(before, "sluice_log_write_seconds")
    write_a = histogram(after, "sluice_log_write_seconds")
    return {
        "publish_p50": result["publish_latency_ms"]["p50"],
        "publish_p99": result["publish_latency_ms"]["p99"],
        "broker_p50": percentile(req_b, req_a, 0.50),
        "broker_p99": percentile(req_b, req_a, 0.99),
        "broker_write_p99": percentile(write_b, write_a, 0.99),
        "broker_sync_p99": percentile(sync_b, sync_a, 0.99),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--test-secs", type=int, default=20)
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("-o", dest="settings", action="append", default=[],
                    help="a broker setting for every run, e.g. -o sluice.log.preallocate.bytes=0")
    args = ap.parse_args()
    data_parent = tempfile.mkdtemp(prefix="latency-split-")
    rows = {w: [] for w in WORKLOADS}
    try:
        for run in range(args.runs):
            for w in WORKLOADS:
                disk50, disk99 = fdatasync_baseline(data_parent, args.samples)
                broker_args = [x for kv in args.settings for x in ("-o", kv)]
                r = run_workload(w, free_port(), args.test_secs, os.path.join(data_parent, f"{w}-{run}.json"),
                                 data_parent, broker_args)
                r.update(disk_p50=disk50, disk_p99=disk99, ratio=r["publish_p99"] / disk99)
                rows[w].append(r)
                print(f"run {run + 1} {w}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), file=sys.stderr,
                      flush=True)
    finally:
        subprocess.run(["rm", "-rf", data_parent])
    print("| workload | publish p50 / p99 ms | broker Produce p50 / p99 ms | broker write p99 ms "
          "| broker fdatasync p99 ms | disk fdatasync p50 / p99 ms | publish p99 / disk p99 |")
    print("|---|---|---|---|---|---|---|")
    for w, rs in rows.items():
        m = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| `{w}` | {m['publish_p50']:.2f} / {m['publish_p99']:.2f} | {m['broker_p50']:.2f} / "
              f"{m['broker_p99']:.2f} | {m['broker_write_p99']:.2f} | {m['broker_sync_p99']:.2f} | {m['disk_p50']:.2f} / {m['disk_p99']:.2f} | "
              f"{m['ratio']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
