#!/usr/bin/env python3
"""Transaction figures of release `sluice` brokers on loopback, the
brokers pinned to core 0 and this script's librdkafka clients to core 1
(docs/benchmarks.md, "Transactions"):

  produce   1 KiB records, the same count each way, one producer: idempotent
            (acks=all) against transactional, in transactions of 100 and of
            10,000 records; MB/s and the ratio to idempotent. One node.
  commit    transactions of one 1 KiB record, back to back: the time of
            commit_transaction() (EndTxn until the markers are written),
            p50 and p99, on one node and on three nodes (RF=3 topic and
            __transaction_state).
  consume   the same records read with read_committed and read_uncommitted
            (a topic written in committed transactions of 1,000 records,
            synced and read once untimed before), five of each in turn, by
            kcat (librdkafka's C consumer, to the end of each partition and
            out; the Python client's per-message loop would be the bound):
            MB/s and the broker's CPU seconds per GB read, each run and the
            medians.

  bench/scripts/transactions.py [--bin target/release/sluice] [--records 200000]
      [--commits 2000] [--only produce|commit|consume]

Prints one JSON object (and a Markdown table per section on stderr).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_control import Node, free_port  # noqa: E402

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

VALUE = b"x" * 1024


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(binary, root, n, extra=()):
    os.makedirs(root, exist_ok=True)
    ports = [(free_port(), free_port()) for _ in range(n)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports)) if n > 1 else ""
    nodes = []
    for i, (client, _) in enumerate(ports):
        node = Node(binary, root, i + 1, client, voters, 9000)
        if n == 1:
            node.settings = ["sluice.admin.listen="]
        node.settings += ["transaction.state.log.num.partitions=4", "sluice.admin.listen="] + list(extra)
        os.makedirs(node.data, exist_ok=True)
        node.start()
        os.sched_setaffinity(node.proc.pid, {0})
        nodes.append(node)
    for node in nodes:
        node.wait_listening()
    boot = ",".join(node.bootstrap for node in nodes)
    deadline = time.time() + 60
    while len(AdminClient({"bootstrap.servers": boot}).list_topics(timeout=10).brokers) < n:
        if time.time() > deadline:
            sys.exit("brokers did not register")
        time.sleep(0.2)
    return nodes, boot


def create(boot, name, partitions, rf):
    a = AdminClient({"bootstrap.servers": boot})  # must outlive the future
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)], request_timeout=30)
    fs[name].result(timeout=40)


def producer(boot, **extra):
    conf = {"bootstrap.servers": boot, "linger.ms": 5, "batch.size": 1 << 20, "acks": "all",
            "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1 << 21, "log_level": 0}
    conf.update(extra)
    return Producer(conf)


def send_all(p, topic, n, partitions):
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=VALUE, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.01)


def produce_section(boot, records):
    out = {}
    create(boot, "bench-idem", 8, 1)
    p = producer(boot, **{"enable.idempotence": True})
    send_all(p, "bench-idem", 1000, 8)  # connections and metadata first
    p.flush(60)
    t0 = time.time()
    send_all(p, "bench-idem", records, 8)
    p.flush(300)
    out["idempotent"] = records * 1024 / (time.time() - t0) / 1e6
    for size in (100, 10_000):
        topic = f"bench-txn-{size}"
        create(boot, topic, 8, 1)
        p = producer(boot, **{"transactional.id": f"bench-{size}"})
        p.init_transactions(60)
        p.begin_transaction()
        send_all(p, topic, 1000, 8)
        p.commit_transaction(60)
        t0 = time.time()
        done = 0
        while done < records:
            p.begin_transaction()
            n = min(size, records - done)
            send_all(p, topic, n, 8)
            p.commit_transaction(120)
            done += n
        out[f"transactions of {size}"] = records * 1024 / (time.time() - t0) / 1e6
    return out


def commit_latency(boot, rf, commits):
    topic = f"bench-commit-rf{rf}"
    create(boot, topic, 1, rf)
    p = producer(boot, **{"transactional.id": f"bench-commit-{rf}", "linger.ms": 0})
    p.init_transactions(60)
    times = []
    for i in range(commits):
        p.begin_transaction()
        p.produce(topic, value=VALUE, partition=0)
        t0 = time.perf_counter()
        p.commit_transaction(60)
        if i >= commits // 10:  # the first tenth warms up
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1], "commits": len(times)}


def consume_section(boot, node, records):
    create(boot, "bench-read", 4, 1)
    p = producer(boot, **{"transactional.id": "bench-read"})
    p.init_transactions(60)
    done = 0
    while done < records:
        p.begin_transaction()
        send_all(p, "bench-read", 1000, 4)
        p.commit_transaction(120)
        done += 1000
    # Written back, then read once untimed, so every timed read finds the
    # records in the page cache (the broker drops written-back pages:
    # a first read goes to the disk).
    os.sync()
    time.sleep(2)
    out = {}
    for isolation in ["warm-up"] + ["read_uncommitted", "read_committed"] * 5:
        level = isolation.replace("warm-up", "read_uncommitted")
        cmd = ["kcat", "-C", "-b", boot, "-t", "bench-read", "-o", "beginning", "-e", "-q", "-f", "%o\\n",
               "-X", f"isolation.level={level}", "-X", "fetch.max.bytes=52428800",
               "-X", "max.partition.fetch.bytes=16777216", "-X", "log_level=0"]
        cpu0, t0 = cpu_seconds(node.proc.pid), time.time()
        read = subprocess.run(cmd, capture_output=True, check=True, timeout=600)
        secs, cpu = time.time() - t0, cpu_seconds(node.proc.pid) - cpu0
        got = read.stdout.count(b"\n")
        if got != records:
            sys.exit(f"kcat read {got} of {records} records with {level}")
        nbytes = got * len(VALUE)
        if isolation != "warm-up":
            out.setdefault(isolation, []).append({"mb_s": nbytes / secs / 1e6,
                                                  "broker_cpu_s_per_gb": cpu / (nbytes / 1e9)})
    for isolation, runs in list(out.items()):
        out[f"{isolation} median MB/s"] = statistics.median(r["mb_s"] for r in runs)
        out[f"{isolation} median broker CPU s/GB"] = statistics.median(r["broker_cpu_s_per_gb"] for r in runs)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/sluice")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--only", choices=["produce", "commit", "consume"])
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})
    result = {}
    with tempfile.TemporaryDirectory() as root:
        if args.only in (None, "produce", "consume", "commit"):
            nodes, boot = start(args.bin, os.path.join(root, "one"), 1)
            try:
                if args.only in (None, "produce"):
                    result["produce_mb_s"] = produce_section(boot, args.records)
                if args.only in (None, "commit"):
                    result["commit_one_node"] = commit_latency(boot, 1, args.commits)
                if args.only in (None, "consume"):
                    result["consume"] = consume_section(boot, nodes[0], args.records)
            finally:
                for n in nodes:
                    n.stop()
        if args.only in (None, "commit"):
            nodes, boot = start(args.bin, os.path.join(root, "three"), 3)
            try:
                result["commit_rf3"] = commit_latency(boot, 3, args.commits)
            finally:
                for n in nodes:
                    n.stop()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
