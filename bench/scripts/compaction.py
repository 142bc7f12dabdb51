#!/usr/bin/env python3
"""Produce latency with the log cleaner running against without
(docs/benchmarks.md, "Compaction"). One release broker, one shard pinned
to core 0, this script's librdkafka producer on core 1. A compacted topic
of 4 partitions with 1 MiB segments and min.cleanable.dirty.ratio 0.01
takes keyed 1 KiB records (20,000 keys, acks=all, idempotent) at a fixed
rate, so that segments roll every few seconds and the cleaner (looking
every 200 ms) keeps cleaning them; the other run is the same with
log.cleaner.enable=false. Runs alternate, cleaner on and off, and each
reports the delivery latency percentiles (send to delivery callback) and,
for the cleaner's run, its passes and bytes from /metrics.

  bench/scripts/compaction.py [--bin target/release/sluice] [--rate 5000]
      [--secs 30] [--runs 3] [--root DIR]

--root puts the broker's data under DIR (the default is the system's
temporary directory; /dev/shm takes the disk out of the comparison).

Prints one JSON object.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_control import free_port  # noqa: E402

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

VALUE = b"x" * 1024


def start(binary, root, cleaner):
    port, admin = free_port(), free_port()
    data = os.path.join(root, "data")
    os.makedirs(data)
    cmd = [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--cores", "1",
           "-o", f"sluice.admin.listen=127.0.0.1:{admin}", "-o", "log.cleaner.backoff.ms=200",
           "-o", f"log.cleaner.enable={'true' if cleaner else 'false'}"]
    log = open(os.path.join(root, "broker.log"), "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    os.sched_setaffinity(proc.pid, {0})
    boot = f"127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            AdminClient({"bootstrap.servers": boot}).list_topics(timeout=2)
            break
        except Exception:
            if time.time() > deadline:
                sys.exit("the broker did not start")
            time.sleep(0.1)
    return proc, boot, f"127.0.0.1:{admin}"


def cleaner_metrics(admin):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("sluice_log_cleaner_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def run(binary, cleaner, rate, secs, parent=None):
    with tempfile.TemporaryDirectory(dir=parent) as root:
        proc, boot, admin = start(binary, root, cleaner)
        try:
            a = AdminClient({"bootstrap.servers": boot})
            configs = {"cleanup.policy": "compact", "segment.bytes": str(1 << 20),
                       "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
            a.create_topics([NewTopic("bench-compact", num_partitions=4, replication_factor=1,
                                      config=configs)])["bench-compact"].result(30)
            p = Producer({"bootstrap.servers": boot, "linger.ms": 1, "acks": "all", "enable.idempotence": True,
                          "log_level": 0})
            lat = []

            # A second of warm-up, then the measured window: records sent in
            # the first second are not counted, whenever they are delivered
            # (the producer's start can hold them longer than that).
            total = int(rate * (secs + 1))
            start_t = time.perf_counter()
            measured_from = start_t + 1.0

            def done(err, _msg, sent):
                if err is None and sent >= measured_from:
                    lat.append(time.perf_counter() - sent)

            for i in range(total):
                due = start_t + i / rate
                while time.perf_counter() < due:
                    p.poll(0)
                sent = time.perf_counter()
                p.produce("bench-compact", key=f"key-{i % 20000}", value=VALUE,
                          on_delivery=lambda err, msg, sent=sent: done(err, msg, sent))
            p.flush(60)
            lat.sort()
            pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3)
            out = {"cleaner": cleaner, "delivered": len(lat), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                   "p999_ms": pct(0.999), "max_ms": pct(1.0)}
            if cleaner:
                out["cleaner_metrics"] = cleaner_metrics(admin)
            # What the topic holds on disk at the end (space reclaimed:
            # against the run without the cleaner).
            out["log_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                                   for d, _, files in os.walk(os.path.join(root, "data"))
                                   if "bench-compact-" in d for f in files if f.endswith(".log"))
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/sluice")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--secs", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    runs = []
    for _ in range(args.runs):
        for cleaner in (True, False):
            runs.append(run(os.path.abspath(args.bin), cleaner, args.rate, args.secs, args.root))
    on = [r["p99_ms"] for r in runs if r["cleaner"]]
    off = [r["p99_ms"] for r in runs if not r["cleaner"]]
    print(json.dumps({"runs": runs, "p99_median_on_ms": statistics.median(on),
                      "p99_median_off_ms": statistics.median(off),
                      "ratio": round(statistics.median(on) / statistics.median(off), 3)}, indent=1))


if __name__ == "__main__":
    main()
