#!/usr/bin/env python3
"""Control-plane figures of a three-node cluster of release `sluice`
binaries on loopback (librdkafka's admin client as the observer):

  failover   kill -9 of the active controller → a new controller in
             Metadata; kill -9 of a partition leader's broker → a new leader
             in Metadata. N trials each; the killed node is restarted and
             rejoins between trials.
  create     CreateTopics of T topics × 3 partitions, RF=3, one request per
             topic: total time and per-request latency percentiles; then the
             restart time of one node holding every partition's replica.
  changes    one metadata change against the cluster's size: P partitions
             (topics of 100, RF=1, on the two brokers that do not hold
             the fenced broker's topic), then N CreateTopics of one
             partition, N AlterConfigs of one topic, and N fences of a
             third broker leading 100 partitions (kill -9 until Metadata
             drops it, restart until it is back): median latency as the
             client sees it, and each node's CPU per change (its CPU
             during the changes less its idle CPU over as long).

  bench/scripts/cluster_control.py [--bin target/release/sluice] [--trials 20]
      [--topics 1000] [--session-ms 9000] [--only failover|create|changes]
      [--partitions 50000] [--changes 50]

Prints one JSON object. Nodes run with one shard each.
"""
import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, binary, root, node_id, client, voters, session_ms):
        self.binary, self.id, self.client = binary, node_id, client
        self.data = os.path.join(root, f"node-{node_id}")
        self.log = open(os.path.join(root, f"node-{node_id}.log"), "ab")
        self.settings = [
            f"node.id={node_id}", f"controller.quorum.voters={voters}",
            "default.replication.factor=3", "offsets.topic.num.partitions=3",
            f"broker.session.timeout.ms={session_ms}",
            f"broker.heartbeat.interval.ms={max(100, session_ms // 4)}",
        ]
        self.proc = None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.client}"

    def start(self):
        cmd = [self.binary, "--listen", self.bootstrap, "--data-dir", self.data, "--cores", "1"]
        for s in self.settings:
            cmd += ["-o", s]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)

    def wait_listening(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"node {self.id} exited")
            try:
                socket.create_connection(("127.0.0.1", self.client), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        sys.exit(f"node {self.id} did not listen")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None


def metadata(node, topic=None):
    return AdminClient({"bootstrap.servers": node.bootstrap, "log_level": 0}).list_topics(topic, timeout=10)


def poll(check, timeout=60, every=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = check()
            if v:
                return v
        except Exception:  # a node in the middle of a change
            pass
        time.sleep(every)
    sys.exit("timed out waiting")


def summary(xs):
    xs = sorted(xs)
    return {"n": len(xs), "median_s": round(statistics.median(xs), 3), "max_s": round(xs[-1], 3),
            "min_s": round(xs[0], 3)}


def failover(nodes, trials):
    poll(lambda: len(metadata(nodes[0]).brokers) == 3)
    a = AdminClient({"bootstrap.servers": nodes[0].bootstrap, "log_level": 0})
    a.create_topics([NewTopic("failover", num_partitions=3, replication_factor=3)])["failover"].result(30)
    controller, leader = [], []
    for _ in range(trials):
        poll(lambda: len(metadata(nodes[0]).brokers) == 3)
        old = metadata(nodes[0]).controller_id
        victim = nodes[old - 1]
        other = next(n for n in nodes if n is not victim)
        victim.kill9()
        t0 = time.time()
        poll(lambda: metadata(other).controller_id not in (old, -1))
        controller.append(time.time() - t0)
        victim.start()
        victim.wait_listening()
    for k in range(trials):
        poll(lambda: len(metadata(nodes[0]).brokers) == 3)
        ctl = metadata(nodes[0]).controller_id
        # A fresh topic spreads its leaders over the three brokers (leaders
        # of older topics moved off the brokers killed before); take a
        # partition led by a broker that is not the controller.
        topic = f"failover-{k}"
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(30)
        md = poll(lambda: (lambda m: topic in m.topics and m)(metadata(nodes[ctl - 1])))
        part, lead = next((p, x.leader) for p, x in md.topics[topic].partitions.items() if x.leader != ctl)
        victim = nodes[lead - 1]
        observer = nodes[ctl - 1]
        victim.kill9()
        t0 = time.time()
        poll(lambda: metadata(observer).topics[topic].partitions[part].leader not in (lead, -1))
        leader.append(time.time() - t0)
        victim.start()
        victim.wait_listening()
        # Leadership comes back only through elections; let it register.
        poll(lambda: lead in metadata(observer).brokers)
    return {"new_controller": summary(controller), "new_partition_leader": summary(leader)}


def create_and_restart(nodes, topics):
    poll(lambda: len(metadata(nodes[0]).brokers) == 3)
    a = AdminClient({"bootstrap.servers": nodes[0].bootstrap, "log_level": 0})
    lat = []
    t_all = time.time()
    for i in range(topics):
        t0 = time.time()
        name = f"c{i:05d}"
        a.create_topics([NewTopic(name, num_partitions=3, replication_factor=3)])[name].result(60)
        lat.append(time.time() - t0)
    total = time.time() - t_all
    lat.sort()
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)
    n = nodes[2]
    md = metadata(n)
    replicas = sum(n.id in x.replicas for t in md.topics.values() for x in t.partitions.values())
    n.stop()
    t0 = time.time()
    n.start()
    # A node answers once it has replayed the metadata log, opened its
    # replicas and registered (its port accepts connections earlier: the
    # kernel queues them).
    poll(lambda: len(metadata(n).topics) >= topics, every=0.005)
    serving = time.time() - t0
    return {
        "topics": topics, "total_s": round(total, 2), "per_topic_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "restart": {"replicas_on_node": replicas, "serving_s": round(serving, 2)},
    }


def cpu_s(node):
    """The node's user + system CPU so far, in seconds."""
    with open(f"/proc/{node.proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_change(nodes, run, n, idle_s=3.0):
    """Runs `run` (n changes); returns the client's latencies and each
    node's CPU per change, less what it spends idle over as long."""
    live = [x for x in nodes if x.proc]
    before = {x.id: cpu_s(x) for x in live}
    time.sleep(idle_s)
    idle = {x.id: (cpu_s(x) - before[x.id]) / idle_s for x in live}
    before = {x.id: cpu_s(x) for x in live}
    t0 = time.time()
    lat = run()
    took = time.time() - t0
    live = [x for x in live if x.proc]
    cpu = {f"node{x.id}": round(max(0.0, cpu_s(x) - before[x.id] - idle[x.id] * took) / n * 1000, 2)
           for x in live}
    return {"median_ms": round(statistics.median(lat) * 1000, 2), "cpu_ms_per_change": cpu,
            "idle_cpu_pct": {f"node{k}": round(v * 100, 2) for k, v in idle.items()}}


def changes(nodes, partitions, n):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    poll(lambda: len(metadata(nodes[0]).brokers) == 3)
    md = metadata(nodes[0])
    victim = next(x for x in reversed(nodes) if x.id != md.controller_id)
    bulk = [x.id for x in nodes if x is not victim]
    a = AdminClient({"bootstrap.servers": nodes[0].bootstrap, "log_level": 0})
    names = [f"bulk{i:05d}" for i in range(partitions // 100)]
    t0 = time.time()
    for i in range(0, len(names), 50):
        batch = [NewTopic(t, num_partitions=100, replica_assignment=[[bulk[(j + p) % 2]] for p in range(100)])
                 for j, t in enumerate(names[i:i + 50])]
        for f in a.create_topics(batch, request_timeout=120).values():
            f.result(180)
    created_s = time.time() - t0
    a.create_topics([NewTopic("fenced", num_partitions=100, replica_assignment=[[victim.id]] * 100)])["fenced"].result(60)
    out = {"partitions": partitions + 100, "create_all_s": round(created_s, 1), "fenced_broker": victim.id}

    def creates():
        lat = []
        for i in range(n):
            t = time.time()
            a.create_topics([NewTopic(f"one{i:04d}", 1, 1)])[f"one{i:04d}"].result(60)
            lat.append(time.time() - t)
        return lat
    out["create_one_partition"] = cpu_per_change(nodes, creates, n)

    def alters():
        lat = []
        for i in range(n):
            r = ConfigResource("topic", names[i % len(names)], incremental_configs=[
                ConfigEntry("retention.ms", str(3_600_000 + i), incremental_operation=AlterConfigOpType.SET)])
            t = time.time()
            a.incremental_alter_configs([r])[r].result(60)
            lat.append(time.time() - t)
        return lat
    out["alter_configs"] = cpu_per_change(nodes, alters, n)

    observer = nodes[md.controller_id - 1]
    fences = max(1, n // 10)

    def fence_cycles():
        lat = []
        for _ in range(fences):
            victim.kill9()
            t = time.time()
            # Metadata of the one topic: one of all 50,000 partitions would
            # cost the observer more than the change.
            poll(lambda: victim.id not in metadata(observer, "fenced").brokers, every=0.005)
            lat.append(time.time() - t)
            victim.start()
            poll(lambda: all(p.leader == victim.id
                             for p in metadata(observer, "fenced").topics["fenced"].partitions.values()))
        return lat
    # The survivors' CPU for a fence and the registration that unfences
    # (the restarted node's own start-up is not counted).
    survivors = [x for x in nodes if x is not victim]
    r = cpu_per_change(survivors, fence_cycles, fences)
    r["kill_to_fenced_median_ms"] = r.pop("median_ms")
    out["fence_and_rejoin"] = r
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sluice")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--topics", type=int, default=1000)
    ap.add_argument("--session-ms", type=int, default=9000)
    ap.add_argument("--only", choices=["failover", "create", "changes"])
    ap.add_argument("--partitions", type=int, default=50000)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--keep", help="a new directory for the nodes' data and logs, kept afterwards")
    args = ap.parse_args()
    out = {"session_timeout_ms": args.session_ms}
    if args.keep:
        os.makedirs(args.keep)
    keep = contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory()
    with keep as root:
        ports = [(free_port(), free_port()) for _ in range(3)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        nodes = [Node(os.path.abspath(args.bin), root, i + 1, p, voters, args.session_ms)
                 for i, (p, _) in enumerate(ports)]
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_listening()
        try:
            if args.only in (None, "failover"):
                out["failover"] = failover(nodes, args.trials)
            if args.only in (None, "create"):
                out["create"] = create_and_restart(nodes, args.topics)
            if args.only == "changes":
                out["changes"] = changes(nodes, args.partitions, args.changes)
        finally:
            for n in nodes:
                if n.proc:
                    n.kill9()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
