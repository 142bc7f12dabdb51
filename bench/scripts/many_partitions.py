#!/usr/bin/env python3
"""Many partitions on one node: creates TOPICS x PARTITIONS partitions on a
fresh `sluice` (one shard, pinned to a core, the machine's default open-file
limits), then reports create time, RSS, open descriptors, idle CPU,
Metadata latency, the time of a /metrics scrape, produce and consume to a random 1% of the partitions,
and the same after a restart (start-up time included). Used for the
50,000-partition figures in docs/benchmarks.md and docs/reliability.md.

    python3 bench/scripts/many_partitions.py --topics 2000 --partitions 25
"""
import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def proc_stats(pid):
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return rss_kb / 1024, fds, ticks


def start(args, log):
    cmd = ["taskset", "-c", args.broker_core, os.path.join(ROOT, "target/release/sluice"), "--cores", "1",
           "--listen", f"127.0.0.1:{args.port}", "--data-dir", args.data,
           "-o", f"sluice.admin.listen=127.0.0.1:{args.port + 1}"]
    p = subprocess.Popen(cmd, stdout=log, stderr=log)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=0.2):
                break
        except OSError:
            if p.poll() is not None:
                sys.exit(f"broker exited with {p.returncode}; see {log.name}")
            time.sleep(0.01)
    return p


def scrape_ms(port, n=5):
    """Median wall time of `n` GET /metrics, and the body's size."""
    times, size = [], 0
    for _ in range(n):
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            size = len(r.read())
        times.append((time.monotonic() - t0) * 1000)
    return statistics.median(times), size


def metadata_ms(admin, topic, n=20):
    full, one = [], []
    for _ in range(n):
        t0 = time.monotonic()
        admin.list_topics(timeout=30)
        full.append((time.monotonic() - t0) * 1000)
        t0 = time.monotonic()
        admin.list_topics(topic=topic, timeout=30)
        one.append((time.monotonic() - t0) * 1000)
    return statistics.median(full), statistics.median(one)


def produce(bootstrap, chosen, per_partition, size):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                  "queue.buffering.max.messages": 1000000})
    payload = b"x" * size
    failed = []
    t0 = time.monotonic()
    for (topic, part) in chosen:
        for _ in range(per_partition):
            while True:
                try:
                    p.produce(topic, payload, partition=part,
                              on_delivery=lambda e, m: e and failed.append(e))
                    break
                except BufferError:
                    p.poll(0.01)
        p.poll(0)
    left = p.flush(60)
    secs = time.monotonic() - t0
    assert left == 0 and not failed, (left, failed[:3])
    return secs


def consume(bootstrap, chosen, want):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"many-{time.time()}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(t, p, 0) for (t, p) in chosen])
    got = 0
    t0 = time.monotonic()
    while got < want and time.monotonic() - t0 < 120:
        for m in c.consume(1000, timeout=1):
            if m.error() is None:
                got += 1
    secs = time.monotonic() - t0
    c.close()
    assert got == want, (got, want)
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=25)
    ap.add_argument("--per-request", type=int, default=100, help="topics per CreateTopics request")
    ap.add_argument("--data", default="/tmp/sluice-many-partitions")
    ap.add_argument("--port", type=int, default=19096)
    ap.add_argument("--broker-core", default="0")
    ap.add_argument("--messages", type=int, default=100, help="per chosen partition")
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    shutil.rmtree(args.data, ignore_errors=True)
    bootstrap = f"127.0.0.1:{args.port}"
    log = open(args.data + ".log", "w")
    total = args.topics * args.partitions
    print(f"open-file limit of this shell: soft {os.sysconf('SC_OPEN_MAX')}; {total} partitions")
    broker = start(args, log)
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        names = [f"mp-{i:05d}" for i in range(args.topics)]
        t0 = time.monotonic()
        for i in range(0, len(names), args.per_request):
            fs = admin.create_topics([NewTopic(n, args.partitions, 1) for n in names[i:i + args.per_request]],
                                     request_timeout=600)
            for f in fs.values():
                f.result()
        create_s = time.monotonic() - t0
        time.sleep(1)
        rss, fds, t_a = proc_stats(broker.pid)
        time.sleep(5)
        t_b = proc_stats(broker.pid)[2]
        full, one = metadata_ms(admin, names[0])
        print(f"create: {create_s:.1f} s ({total / create_s:.0f} partitions/s); RSS {rss:.0f} MiB; "
              f"open fds {fds}; idle CPU {(t_b - t_a) / 5:.1f}% of a core")
        print(f"metadata: all topics {full:.1f} ms, one topic {one:.2f} ms (medians of 20)")
        ms, size = scrape_ms(args.port + 1)
        print(f"/metrics: {ms:.1f} ms per scrape (median of 5), {size / 1024:.0f} KiB")
        rng = random.Random(7)
        chosen = rng.sample([(n, p) for n in names for p in range(args.partitions)], max(1, total // 100))
        want = len(chosen) * args.messages
        ps = produce(bootstrap, chosen, args.messages, args.size)
        cs = consume(bootstrap, chosen, want)
        rss, fds, _ = proc_stats(broker.pid)
        print(f"1% ({len(chosen)} partitions): produced {want} x {args.size} B acks=all in {ps * 1000:.0f} ms, "
              f"consumed in {cs * 1000:.0f} ms; RSS {rss:.0f} MiB, open fds {fds}")
        broker.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        broker.wait(120)
        stop_s = time.monotonic() - t0
        t0 = time.monotonic()
        broker = start(args, log)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        md = admin.list_topics(timeout=120)
        start_s = time.monotonic() - t0
        assert len([t for t in md.topics if t.startswith("mp-")]) == args.topics
        rss, fds, _ = proc_stats(broker.pid)
        print(f"restart: stop {stop_s:.1f} s; start to first full Metadata answered {start_s:.2f} s; "
              f"RSS {rss:.0f} MiB, open fds {fds}")
        cs = consume(bootstrap, chosen, want)
        print(f"after restart: the 1% consumed again in {cs * 1000:.0f} ms; all {want} records back")
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(120)
        shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    main()
