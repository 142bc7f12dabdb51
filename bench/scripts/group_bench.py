#!/usr/bin/env python3
"""Consumer-group benchmarks for docs/benchmarks.md.

1. Throughput: 3 consumers (librdkafka's rdkafka_performance, one process
   each) read a 6-partition topic, once with partitions assigned by hand
   (2 each) and once as a consumer group. Reports the summed MB/s of the
   three for each mode and the ratio group / manual, for each repetition.
2. Rebalance after a clean leave: 3 confluent-kafka members in a group;
   one closes (LeaveGroup); reports the time until the other two hold all
   6 partitions, next to the client's heartbeat.interval.ms, and when each
   survivor learned of the rebalance.
3. --cadence: the gaps between the heartbeats librdkafka really sends for a
   given heartbeat.interval.ms (from its cgrp debug log).

Usage: group_bench.py BOOTSTRAP [--reps 3] [--messages 600000] [--heartbeat-ms 300] [--cadence]
Needs: rdkafka_performance (bench/peers builds it), confluent-kafka.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

PERF = os.environ.get("PERF", "/tmp/peers/bin/rdkafka_performance")
RATE = re.compile(r"consumed in (\d+)ms: \d+ msgs/s \(([0-9.]+) MB/s\)")


def create(bootstrap, topic, partitions):
    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def produce(bootstrap, topic, n):
    subprocess.run([PERF, "-P", "-t", topic, "-b", bootstrap, "-s", "1024", "-c", str(n), "-a", "1",
                    "-X", "linger.ms=5", "-X", "batch.size=1000000",
                    "-X", "queue.buffering.max.messages=1000000", "-X", "queue.buffering.max.kbytes=1048576"],
                   check=True, capture_output=True)


def consume(bootstrap, topic, group=None, partitions=None):
    """Starts one rdkafka_performance consumer; returns the Popen."""
    cmd = [PERF, "-C", "-t", topic, "-b", bootstrap, "-o", "beginning", "-e", "-q"]
    if group:
        cmd += ["-G", group, "-X", "auto.offset.reset=earliest", "-X", "enable.auto.commit=false"]
    for p in partitions or []:
        cmd += ["-p", str(p)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_three(procs):
    total = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=300)
        rates = [float(m.group(2)) for m in RATE.finditer(out)]
        if not rates:
            raise RuntimeError(f"no rate in output:\n{out}")
        total += rates[-1]
    return total


def throughput(bootstrap, reps, n):
    rows = []
    for rep in range(reps):
        topic = f"gb-{uuid.uuid4().hex[:8]}"
        create(bootstrap, topic, 6)
        produce(bootstrap, topic, n)
        manual = run_three([consume(bootstrap, topic, partitions=[2 * i, 2 * i + 1]) for i in range(3)])
        group = f"gb-{uuid.uuid4().hex[:8]}"
        grouped = run_three([consume(bootstrap, topic, group=group) for _ in range(3)])
        rows.append({"rep": rep + 1, "manual_MBps": round(manual, 1), "group_MBps": round(grouped, 1),
                     "ratio": round(grouped / manual, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def rebalance(bootstrap, reps, heartbeat_ms):
    rows = []
    for rep in range(reps):
        topic = f"rb-{uuid.uuid4().hex[:8]}"
        create(bootstrap, topic, 6)
        group = f"rb-{uuid.uuid4().hex[:8]}"
        members, assigned, lock = [], {}, threading.Lock()
        revoked = {}
        stop = [threading.Event() for _ in range(3)]

        def run(i):
            c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": 10000,
                          "heartbeat.interval.ms": heartbeat_ms, "enable.auto.commit": False})

            def on_assign(_c, ps):
                with lock:
                    assigned[i] = (time.monotonic(), {p.partition for p in ps})

            def on_revoke(_c, ps):
                with lock:
                    assigned[i] = (time.monotonic(), set())
                    revoked.setdefault(i, time.monotonic())

            c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
            while not stop[i].is_set():
                c.poll(0.01)
            c.close()

        for i in range(3):
            t = threading.Thread(target=run, args=(i,))
            t.start()
            members.append(t)

        def holdings(ids):
            with lock:
                return [assigned.get(i, (0, set())) for i in ids]

        deadline = time.time() + 60
        while time.time() < deadline:
            h = holdings([0, 1, 2])
            if all(len(s) == 2 for _, s in h):
                break
            time.sleep(0.01)
        t_leave = time.monotonic()
        with lock:
            revoked.clear()
        stop[0].set()
        members[0].join()
        while time.time() < deadline:
            h = holdings([1, 2])
            if all(t > t_leave for t, _ in h) and set().union(*[s for _, s in h]) == set(range(6)):
                break
            time.sleep(0.005)
        done = max(t for t, _ in holdings([1, 2]))
        for i in (1, 2):
            stop[i].set()
            members[i].join()
        rows.append({"rep": rep + 1, "heartbeat_interval_ms": heartbeat_ms,
                     "rebalance_ms": round(1000 * (done - t_leave), 1),
                     # When each survivor learned of the rebalance (its
                     # heartbeat answered REBALANCE_IN_PROGRESS, then revoke).
                     "revoke_ms": [round(1000 * (revoked.get(i, t_leave) - t_leave), 1) for i in (1, 2)]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cadence(bootstrap, heartbeat_ms, seconds=6):
    """Gaps between the heartbeats one librdkafka member actually sends,
    from its cgrp debug log (stderr of a child process)."""
    topic = f"cad-{uuid.uuid4().hex[:8]}"
    code = (
        "import sys, time; from confluent_kafka import Consumer\n"
        f"c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'cad-{uuid.uuid4().hex[:8]}',"
        f" 'heartbeat.interval.ms': {heartbeat_ms}, 'session.timeout.ms': 10000, 'debug': 'cgrp'}})\n"
        f"c.subscribe(['{topic}'])\n"
        f"end = time.time() + {seconds}\n"
        "while time.time() < end: c.poll(0.01)\n"
        "c.close()\n")
    create(bootstrap, topic, 1)
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    ts = [float(line.split("|")[1]) for line in err.splitlines() if "Heartbeat for group" in line]
    gaps = [round(1000 * (b - a)) for a, b in zip(ts, ts[1:])]
    return {"heartbeat_interval_ms": heartbeat_ms, "sent_gaps_ms": gaps,
            "mean_gap_ms": round(sum(gaps) / len(gaps)) if gaps else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--messages", type=int, default=600_000)
    ap.add_argument("--heartbeat-ms", type=int, default=300)
    ap.add_argument("--cadence", action="store_true",
                    help="only print the gaps between the heartbeats librdkafka sends")
    a = ap.parse_args()
    if a.cadence:
        print(json.dumps(cadence(a.bootstrap, a.heartbeat_ms)))
        return 0
    t = throughput(a.bootstrap, a.reps, a.messages)
    r = rebalance(a.bootstrap, a.reps, a.heartbeat_ms)
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(json.dumps({"summary": {
        "manual_MBps_median": med([x["manual_MBps"] for x in t]),
        "group_MBps_median": med([x["group_MBps"] for x in t]),
        "ratio_median": med([x["ratio"] for x in t]),
        "rebalance_ms_median": med([x["rebalance_ms"] for x in r]),
        "rebalance_ms_max": max(x["rebalance_ms"] for x in r),
        "heartbeat_interval_ms": a.heartbeat_ms}}))


if __name__ == "__main__":
    sys.exit(main())
