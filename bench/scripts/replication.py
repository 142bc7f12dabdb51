#!/usr/bin/env python3
"""Replication figures of a three-node cluster of release `sluice` binaries
on loopback, every broker pinned to core 0 and the load to core 1 (three
brokers on two cores is a correctness setup, so CPU per GB is the figure to
compare, not MB/s alone):

  throughput  sluice-bench at the maximum rate, 1 KiB, 8 partitions, no
              consumers: RF=1 and RF=3 topics on the same cluster, acks=1 and
              acks=all; MB/s and the three brokers' CPU seconds per GB
              produced. Then RF=3 again with `sluice.fetch.zero.copy=false`
              on every broker (follower fetches copied through user space):
              the CPU-per-GB ratio shows what zero-copy saves. Then RF=3
              with `sluice.replica.direct.writes=false` (followers write
              through the page cache, as before ADR 0017).
  ratio       RF=1 then RF=3 acks=all at the maximum rate, N pairs on one
              cluster (3 unless --trials is given): the RF=3 / RF=1 MB/s
              ratio of each pair and their median.
  latency     publish latency at 5 000 and 50 000 msg/s of 1 KiB, acks=all,
              RF=3 next to RF=1.
  failover    kill -9 of a partition's leader while an idempotent acks=all
              producer (librdkafka) sends every 2 ms: time from the kill to
              the acknowledgement of the first record sent after it (from
              the new leader); and the longest gap between consecutive
              acknowledgements around it. A consumer (librdkafka, assigned
              the partition) reads alongside: time from the kill to its read
              of the first record sent after it, and its longest gap between
              reads. Then SIGTERM (controlled shutdown) the same way. N
              trials each; the node is restarted and back in the ISR
              between trials, then one heartbeat interval passes so that
              every voter has heard from every broker.

  bench/scripts/replication.py [--bin-dir target/release] [--secs 15]
      [--trials 20] [--session-ms 9000] [--only throughput|ratio|latency|failover]
      [--set KEY=VALUE ...]

Prints a JSON object (and a Markdown table per section on stderr).
"""
import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_control import Node, metadata, poll, summary  # noqa: E402

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

WORKLOAD = """name: {name}
topics: 1
partitionsPerTopic: {partitions}
messageSize: 1024
producersPerTopic: {producers}
producerRate: {rate}
subscriptionsPerTopic: 0
consumerPerSubscription: 0
keyDistributor: NO_KEY
acks: {acks}
lingerMs: {linger}
replicationFactor: {rf}
testDurationSeconds: {secs}
warmupDurationSeconds: 3
"""


class PinnedNode(Node):
    def start(self):
        cmd = ["taskset", "-c", "0", self.binary, "--listen", self.bootstrap, "--data-dir", self.data,
               "--cores", "1"]
        for s in self.settings:
            cmd += ["-o", s]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)


def start_cluster(binary, root, session_ms, extra=()):
    voters = ",".join(f"{i}@127.0.0.1:2{i}093" for i in (1, 2, 3))
    nodes = [PinnedNode(binary, root, i, int(f"2{i}092"), voters, session_ms) for i in (1, 2, 3)]
    for n in nodes:
        n.settings += ["replica.lag.time.max.ms=10000", *extra]
        n.start()
    for n in nodes:
        n.wait_listening()
    poll(lambda: len(metadata(nodes[0]).brokers) == 3)
    return nodes


def stop_cluster(nodes):
    for n in nodes:
        if n.proc:
            n.kill9()


def bench(bin_dir, nodes, root, variants, secs):
    """Runs each (name, rf, acks, rate, producers, partitions) variant once;
    returns sluice-bench's results by name."""
    files = []
    for name, rf, acks, rate, producers, partitions in variants:
        path = os.path.join(root, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(WORKLOAD.format(name=name, rf=rf, acks=acks, rate=rate, producers=producers,
                                    partitions=partitions, secs=secs, linger=0 if rate else 1))
        files.append(path)
    out = os.path.join(root, "report.json")
    pids = ",".join(str(n.proc.pid) for n in nodes)
    bootstrap = ",".join(n.bootstrap for n in nodes).split(",")[0]
    cmd = ["taskset", "-c", "1", os.path.join(bin_dir, "sluice-bench"), "run", "--bootstrap", bootstrap,
           "--broker-pids", pids, "--cores", "1", "--progress-secs", "0", "--json", out, *files]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return {r["workload"]: r for r in json.load(f)["results"]}


def cpu_per_gb(r):
    gb = r["publish_mb_per_s"] * r["test_seconds"] / 1000.0
    return r["broker_cpu_seconds"] / gb if gb > 0 else None


def throughput(args, root):
    variants = [(f"rf{rf}-acks{'all' if acks == -1 else acks}", rf, acks, 0, 4, 8)
                for rf in (1, 3) for acks in (1, -1)]
    out = {}
    for label, extra in (("zero_copy", ()), ("copying", ("sluice.fetch.zero.copy=false",)),
                         ("buffered_followers", ("sluice.replica.direct.writes=false",))):
        d = tempfile.mkdtemp(dir=root)
        nodes = start_cluster(args.bin, d, args.session_ms, extra)
        try:
            wanted = variants if label == "zero_copy" else [v for v in variants if v[1] == 3]
            for name, r in bench(args.bin_dir, nodes, d, wanted, args.secs).items():
                out[f"{label}/{name}"] = {"mb_per_s": round(r["publish_mb_per_s"], 1),
                                          "broker_cpu_s_per_gb": round(cpu_per_gb(r), 3),
                                          "publish_p99_ms": round(r["publish_latency_ms"]["p99"], 2)}
        finally:
            stop_cluster(nodes)
    return out


def ratio(args, root):
    """RF=1 then RF=3, both acks=all at the maximum rate, on one cluster,
    `--trials` times (3 when not given): each pair's MB/s, CPU per GB and
    the RF=3 / RF=1 ratio, and the median ratio. A pair run back to back
    shares the state of this VM's memory (see docs/benchmarks.md, "Why
    produce is slow here"), which moves single runs by ±20 %."""
    trials = args.trials if args.trials_given else 3
    d = tempfile.mkdtemp(dir=root)
    nodes = start_cluster(args.bin, d, args.session_ms, args.set)
    pairs = []
    try:
        for k in range(trials):
            res = bench(args.bin_dir, nodes, d, [(f"rf1-{k}", 1, -1, 0, 4, 8), (f"rf3-{k}", 3, -1, 0, 4, 8)], args.secs)
            one, three = res[f"rf1-{k}"], res[f"rf3-{k}"]
            pairs.append({"rf1_mb_per_s": round(one["publish_mb_per_s"], 1),
                          "rf3_mb_per_s": round(three["publish_mb_per_s"], 1),
                          "rf1_cpu_s_per_gb": round(cpu_per_gb(one), 3),
                          "rf3_cpu_s_per_gb": round(cpu_per_gb(three), 3),
                          "ratio": round(three["publish_mb_per_s"] / one["publish_mb_per_s"], 3)})
    finally:
        stop_cluster(nodes)
    return {"pairs": pairs, "median_ratio": statistics.median(p["ratio"] for p in pairs)}


def latency(args, root):
    variants = [(f"rf{rf}-{rate // 1000}k", rf, -1, rate, 1, 1) for rate in (5000, 50000) for rf in (1, 3)]
    d = tempfile.mkdtemp(dir=root)
    nodes = start_cluster(args.bin, d, args.session_ms, args.set)
    try:
        res = bench(args.bin_dir, nodes, d, variants, args.secs)
    finally:
        stop_cluster(nodes)
    return {name: {k: round(r["publish_latency_ms"][k], 2) for k in ("p50", "p99", "p999", "max")} |
            {"rate": round(r["publish_rate"])} for name, r in res.items()}


def first_after(events, t0):
    """Seconds from `t0` to the earliest event (sent, at) of a record sent
    after `t0`."""
    return min(at for sent, at in events if sent > t0) - t0


def longest_gap(events, t0):
    """The longest gap between consecutive events from a second before
    `t0` on."""
    times = sorted(at for _, at in events)
    return max(b - a for a, b in zip(times, times[1:]) if b > t0 - 1)


def failover(args, root):
    d = tempfile.mkdtemp(dir=root)
    nodes = start_cluster(args.bin, d, args.session_ms, args.set)
    bootstrap = ",".join(n.bootstrap for n in nodes)
    a = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    results = {"kill9": [], "sigterm": []}
    gaps = {"kill9": [], "sigterm": []}
    read_after = {"kill9": [], "sigterm": []}
    read_gaps = {"kill9": [], "sigterm": []}
    try:
        for kind in ("kill9", "sigterm"):
            for k in range(args.trials):
                topic = f"fo-{kind}-{k}"
                a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3,
                                          config={"min.insync.replicas": "2"})])[topic].result(30)
                md = poll(lambda: (lambda m: m if m.topics[topic].partitions[0].leader >= 0 else None)(
                    metadata(nodes[0])))
                lead = md.topics[topic].partitions[0].leader
                victim = nodes[lead - 1]
                acks = []  # (sent, acknowledged) times
                p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                              "linger.ms": 0, "log_level": 0, "message.timeout.ms": 60000,
                              "topic.metadata.refresh.interval.ms": 1000})
                stop = threading.Event()

                reads = []  # (sent, read) times
                c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "enable.auto.commit": False,
                              "fetch.wait.max.ms": 100, "log_level": 0,
                              "topic.metadata.refresh.interval.ms": 1000})
                c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])

                def send():
                    while not stop.is_set():
                        sent = time.time()
                        p.produce(topic, struct.pack(">d", sent) + b"x" * 92, partition=0,
                                  on_delivery=lambda e, m, sent=sent: e is None and acks.append((sent, time.time())))
                        p.poll(0.002)

                def read():
                    while not stop.is_set():
                        m = c.poll(0.05)
                        if m is not None and m.error() is None:
                            reads.append((struct.unpack(">d", m.value()[:8])[0], time.time()))

                t = threading.Thread(target=send)
                t.start()
                r = threading.Thread(target=read)
                r.start()
                poll(lambda: len(acks) > 50 and len(reads) > 50)
                t0 = time.time()
                if kind == "kill9":
                    victim.kill9()
                else:
                    victim.proc.send_signal(signal.SIGTERM)
                poll(lambda: any(s > t0 for s, _ in acks), timeout=120, every=0.005)
                results[kind].append(first_after(acks, t0))
                poll(lambda: any(s > t0 for s, _ in reads), timeout=120, every=0.005)
                read_after[kind].append(first_after(reads, t0))
                time.sleep(0.5)
                stop.set()
                t.join()
                r.join()
                c.close()
                p.flush(60)
                gaps[kind].append(longest_gap(acks, t0))
                read_gaps[kind].append(longest_gap(reads, t0))
                if victim.proc:
                    victim.proc.wait(timeout=60)
                    victim.proc = None
                victim.start()
                victim.wait_listening()
                poll(lambda: sorted(metadata(nodes[0]).topics[topic].partitions[0].isrs) == [1, 2, 3],
                     timeout=120)
                # Steady state again: every voter has had a heartbeat from
                # the restarted broker and the restarted voter from every
                # broker (one interval, 2 s), as before the first trial.
                time.sleep(2.5)
    finally:
        stop_cluster(nodes)
    return {k: {"first_ack_after": summary(v), "longest_gap": summary(gaps[k]),
                "first_read_after": summary(read_after[k]), "longest_read_gap": summary(read_gaps[k])}
            for k, v in results.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="target/release")
    ap.add_argument("--secs", type=int, default=15)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--session-ms", type=int, default=9000)
    ap.add_argument("--only", choices=["throughput", "ratio", "latency", "failover"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every broker in the ratio and latency runs and the failover trials (repeatable)")
    args = ap.parse_args()
    args.trials_given = "--trials" in sys.argv
    args.bin = os.path.join(args.bin_dir, "sluice")
    out = {"session_ms": args.session_ms}
    with tempfile.TemporaryDirectory() as root:
        for section in ("throughput", "ratio", "latency", "failover"):
            if args.only in (None, section):
                out[section] = globals()[section](args, root)
                print(json.dumps({section: out[section]}, indent=1), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
