#!/usr/bin/env python3
"""How long the other members of a group stop when one member leaves and
one joins: the classic protocol (librdkafka's eager default assignors,
client-side assignment) against the consumer protocol of KIP-848
(docs/benchmarks.md, "Consumer group protocols").

One release broker (one shard, pinned to core 0); 8 confluent-kafka members
(tests/clients/group_member.py, one process each, auto-commit) read a
64-partition topic that a producer fills at a fixed rate; members and
producer run on core 1. Per run: the members settle at 8 partitions each,
then one member closes (a clean leave), then a new member starts. For each
event it reports

  settle_s   from the event (for the join: from starting the process) until
             every partition is held and every member holds 8 or 9
             (after the leave: 9 or 10);
  pause_s    the longest time any *other* member went without a record,
             from the event until one second after settling;
  revoked    partitions taken from the other members meanwhile (the
             classic protocol's eager assignors take all of them and hand
             them out again).

Both protocols heartbeat every --heartbeat-ms (the broker's
group.consumer.heartbeat.interval.ms, the client's heartbeat.interval.ms);
sessions are 6 s. Runs alternate classic and consumer.

  bench/scripts/rebalance_pause.py [--bin target/release/sluice] [--runs 3]
      [--rate 1000] [--heartbeat-ms 500]

Prints one JSON object: each run, and the medians per protocol.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_control import free_port  # noqa: E402

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MEMBER = os.path.join(ROOT, "tests", "clients", "group_member.py")
PARTITIONS = 64
MEMBERS = 8


class Member:
    def __init__(self, boot, topic, group, protocol, heartbeat_ms):
        cmd = [sys.executable, MEMBER, boot, topic, group, "--protocol", protocol, "--auto-commit",
               "--heartbeat-ms", str(heartbeat_ms), "--session-ms", "6000"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        os.sched_setaffinity(self.proc.pid, {1})
        self.events, self.lock = [], threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            e = json.loads(line)
            with self.lock:
                self.events.append(e)

    def held(self):
        out = set()
        with self.lock:
            for e in self.events:
                if e["ev"] == "assigned":
                    out |= set(e["partitions"])
                elif e["ev"] == "revoked":
                    out -= set(e["partitions"])
        return out

    def longest_gap(self, start, end):
        with self.lock:
            ts = [e["t"] for e in self.events if e["ev"] == "msg" and start <= e["t"] <= end]
        ts = [start] + ts + [end]
        return max(b - a for a, b in zip(ts, ts[1:]))

    def revoked(self, start, end):
        with self.lock:
            return sum(len(e["partitions"]) for e in self.events
                       if e["ev"] == "revoked" and start <= e["t"] <= end)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def settled(members, lo, hi):
    held = [m.held() for m in members]
    return set().union(*held) == set(range(PARTITIONS)) and all(lo <= len(h) <= hi for h in held)


def wait_settled(members, lo, hi, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if settled(members, lo, hi):
            return time.time()
        time.sleep(0.01)
    raise RuntimeError(f"not settled within {timeout}s: {[len(m.held()) for m in members]}")


def steady(boot, topic, rate, stopping):
    p = Producer({"bootstrap.servers": boot, "linger.ms": 1})
    i, t0 = 0, time.time()
    while not stopping.is_set():
        p.produce(topic, value=b"x" * 100, partition=i % PARTITIONS)
        p.poll(0)
        i += 1
        ahead = t0 + i / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
    p.flush(30)


def one_run(binary, protocol, rate, heartbeat_ms):
    with tempfile.TemporaryDirectory() as root:
        port = free_port()
        data = os.path.join(root, "data")
        os.makedirs(data)
        cmd = [binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--cores", "1",
               "-o", f"sluice.admin.listen=127.0.0.1:{free_port()}", "-o", "group.initial.rebalance.delay.ms=0",
               "-o", f"group.consumer.heartbeat.interval.ms={heartbeat_ms}",
               "-o", "group.consumer.session.timeout.ms=6000"]
        broker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.sched_setaffinity(broker.pid, {0})
        os.sched_setaffinity(0, {1})
        boot = f"127.0.0.1:{port}"
        try:
            a = AdminClient({"bootstrap.servers": boot})
            deadline = time.time() + 30
            while True:
                try:
                    a.create_topics([NewTopic("rp", num_partitions=PARTITIONS, replication_factor=1)])["rp"].result(10)
                    break
                except Exception:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
            stopping = threading.Event()
            producer = threading.Thread(target=steady, args=(boot, "rp", rate, stopping), daemon=True)
            producer.start()
            members = [Member(boot, "rp", "rp-group", protocol, heartbeat_ms) for _ in range(MEMBERS)]
            wait_settled(members, 8, 8)
            time.sleep(3)
            # A clean leave.
            leaving = members.pop(0)
            t_leave = time.time()
            leaving.stop()
            t_done = wait_settled(members, 9, 10)
            time.sleep(1)
            leave = {"settle_s": round(t_done - t_leave, 3),
                     "pause_s": round(max(m.longest_gap(t_leave, t_done + 1) for m in members), 3),
                     "revoked": sum(m.revoked(t_leave, t_done + 1) for m in members)}
            time.sleep(2)
            # A join.
            t_join = time.time()
            others = list(members)
            members.append(Member(boot, "rp", "rp-group", protocol, heartbeat_ms))
            t_done = wait_settled(members, 8, 8)
            time.sleep(1)
            join = {"settle_s": round(t_done - t_join, 3),
                    "pause_s": round(max(m.longest_gap(t_join, t_done + 1) for m in others), 3),
                    "revoked": sum(m.revoked(t_join, t_done + 1) for m in others)}
            stopping.set()
            producer.join(timeout=30)
            for m in members:
                m.stop()
            return {"protocol": protocol, "leave": leave, "join": join}
        finally:
            broker.terminate()
            broker.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "sluice"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    a = ap.parse_args()
    runs = []
    for _ in range(a.runs):
        for protocol in ("classic", "consumer"):
            r = one_run(a.bin, protocol, a.rate, a.heartbeat_ms)
            print(json.dumps(r), file=sys.stderr, flush=True)
            runs.append(r)
    medians = {}
    for protocol in ("classic", "consumer"):
        mine = [r for r in runs if r["protocol"] == protocol]
        medians[protocol] = {
            event: {k: statistics.median(r[event][k] for r in mine) for k in ("settle_s", "pause_s", "revoked")}
            for event in ("leave", "join")
        }
    print(json.dumps({"heartbeat_ms": a.heartbeat_ms, "rate": a.rate, "runs": runs, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
