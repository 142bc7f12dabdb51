"""Exactly-once across crashes: a consume-transform-produce processor
(`eos_processor.py` on librdkafka, `java/EosProcessor.java` on the Java
client) killed with kill -9 and restarted, on one node and on a three-node
cluster whose transaction coordinator is killed too. The output topic read
with read_committed holds each input record's result exactly once."""
import collections
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import create, running_broker, wait_for
from test_java import classpath  # noqa: F401 (a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITIONS = 3
RECORDS = 3000


def fill(bootstrap, topic):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True, "log_level": 0})
    for i in range(RECORDS):
        p.produce(topic, value=f"r{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(60) == 0


class Processor:
    """How to start one client's processor, and how long it takes to get
    going (a JVM starts slower)."""

    def __init__(self, client, request):
        self.client = client
        if client == "java":
            self.command = ["java", "-cp", request.getfixturevalue("classpath"), "EosProcessor"]
            self.warmup = 1.5
        else:
            self.command = [sys.executable, os.path.join(HERE, "eos_processor.py")]
            self.warmup = 0.0

    def start(self, bootstrap, log):
        return subprocess.Popen(
            self.command + [bootstrap, "eos-crash", "eos-crash-group", "crash-in", "crash-out", str(PARTITIONS)],
            stdout=log, stderr=log)


@pytest.fixture(params=["librdkafka", "java"])
def processor(request):
    return Processor(request.param, request)


def run_with_kills(processor, bootstrap, kills, log_path, during=None):
    """Runs the processor to the end, killing it with kill -9 `kills` times
    at random moments (and calling `during()` once, midway)."""
    rng = random.Random(7)
    start_processor = processor.start
    with open(log_path, "ab") as log:
        for round_ in range(kills):
            proc = start_processor(bootstrap, log)
            time.sleep(processor.warmup + rng.uniform(1.0, 2.5))
            if during is not None and round_ == kills // 2:
                during()
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        proc = start_processor(bootstrap, log)
        assert proc.wait(timeout=240) == 0, f"the processor failed: see {log_path}"


def check_exactly_once(bootstrap):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "check-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "isolation.level": "read_committed", "log_level": 0})
    c.assign([TopicPartition("crash-out", p, 0) for p in range(PARTITIONS)])
    seen = collections.Counter()
    quiet_until = time.time() + 5
    while time.time() < quiet_until:
        m = c.poll(0.3)
        if m is None or m.error() is not None:
            continue
        seen[m.value().decode()] += 1
        quiet_until = time.time() + 5
    c.close()
    twice = {v: n for v, n in seen.items() if n > 1}
    missing = [i for i in range(RECORDS) if f"r{i}-out" not in seen]
    extra = [v for v in seen if not v.endswith("-out")]
    assert not twice, f"read twice: {list(twice.items())[:5]}"
    assert not missing, f"{len(missing)} inputs have no result, e.g. {missing[:5]}"
    assert not extra
    assert sum(seen.values()) == RECORDS


def test_a_processor_killed_repeatedly_on_one_node_writes_each_result_once(tmp_path, processor):
    with running_broker([]) as broker:
        create(broker, "crash-in", PARTITIONS)
        create(broker, "crash-out", PARTITIONS)
        fill(broker.bootstrap, "crash-in")
        run_with_kills(processor, broker.bootstrap, 4, str(tmp_path / "processor.log"))
        check_exactly_once(broker.bootstrap)


def java_hash_partition(key, n):
    h = 0
    for ch in key.encode("utf-16-be").decode("utf-16-be"):
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (h & 0x7FFFFFFF) % n


def test_a_processor_and_its_transaction_coordinator_killed_on_a_cluster_write_each_result_once(tmp_path, processor):
    from test_cluster import create as create_rf3, metadata, running_cluster
    extra = ["transaction.state.log.num.partitions=3", "replica.lag.time.max.ms=2000"]
    with running_cluster(extra) as cluster:
        boot = ",".join(n.bootstrap for n in cluster.nodes)
        create_rf3(cluster.node(1), "crash-in", partitions=PARTITIONS)
        create_rf3(cluster.node(1), "crash-out", partitions=PARTITIONS)
        fill(boot, "crash-in")
        killed = []

        def kill_the_coordinator():
            md = metadata(cluster.node(1))
            part = java_hash_partition("eos-crash", 3)
            leader = md.topics["__transaction_state"].partitions[part].leader
            node = cluster.node(leader)
            node.kill9()
            killed.append(node)
            time.sleep(3)
            node.start()

        run_with_kills(processor, boot, 4, str(tmp_path / "processor.log"), during=kill_the_coordinator)
        assert killed, "the coordinator was killed"
        check_exactly_once(boot)
