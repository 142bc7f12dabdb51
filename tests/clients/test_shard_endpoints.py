"""`sluice.shard.listeners`: each shard of a node accepts on a port of its
own and clients see it as a broker of its own (id node x 1024 + shard),
leading the partitions it owns. Unmodified clients then send each
partition to the shard that owns it. librdkafka, kcat, kafka-python and the
Java client on one node of two shards; librdkafka's workload and the
history checker on a three-node cluster of two shards each, through
faults."""
import json
import subprocess
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running_broker
from faults import run_faults
from secured import java_classpath, kafka_python_round_trip, kcat, librdkafka_round_trip

SHARDED = ["sluice.shard.listeners=true"]


@pytest.fixture
def sharded():
    with running_broker(SHARDED) as b:
        yield b


def test_librdkafka_sees_a_broker_per_shard_and_each_partition_at_its_owner(sharded):
    conf = {"bootstrap.servers": sharded.bootstrap}
    a = AdminClient(conf)
    a.create_topics([NewTopic("per-shard", 8, 1)])["per-shard"].result(30)
    md = a.list_topics(timeout=10)
    assert sorted(md.brokers) == [0, 1], md.brokers
    ports = {b.port for b in md.brokers.values()}
    assert len(ports) == 2 and sharded.port not in ports, ports
    leaders = [p.leader for p in md.topics["per-shard"].partitions.values()]
    assert sorted(set(leaders)) == [0, 1], leaders
    # Every partition's records are taken at its leader's endpoint.
    p = Producer(dict(conf, acks="all"))
    for i in range(400):
        p.produce("per-shard", key=str(i).encode(), value=b"x", partition=i % 8)
    assert p.flush(30) == 0
    # A group round trip (coordinator at its shard) on a topic of its own.
    librdkafka_round_trip(conf, f"rt-{uuid.uuid4().hex[:6]}", n=500)


def test_kcat_and_kafka_python(sharded):
    out = kcat("-b", sharded.bootstrap, "-L", "-J").stdout
    listed = json.loads(out)
    assert sorted(b["id"] for b in listed["brokers"]) == [0, 1], listed["brokers"]
    topic = f"kc-{uuid.uuid4().hex[:6]}"
    kcat("-b", sharded.bootstrap, "-P", "-t", topic, stdin="".join(f"line-{i}\n" for i in range(200)).encode())
    got = kcat("-b", sharded.bootstrap, "-C", "-t", topic, "-e", "-o", "beginning", "-f", "%s\n")
    assert got.stdout.decode().splitlines() == [f"line-{i}" for i in range(200)]
    kafka_python_round_trip({"bootstrap_servers": sharded.bootstrap}, f"kp-{uuid.uuid4().hex[:6]}", "kp-sharded")


@pytest.mark.parametrize("program", ["ProducerCheck", "ConsumerCheck"])
def test_java_client(sharded, program):
    cp = java_classpath()
    r = subprocess.run(["java", "-cp", cp, program, sharded.bootstrap], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_three_node_cluster_with_shard_endpoints_through_faults(tmp_path):
    """Two shards a node, each its own broker: the fault suite's workload
    (producers, a group, transactions, a compacted topic) and checker
    through a leader killed, a leader cut off and the controller killed."""
    from test_faults import assert_came_through
    schedule = ["kill_leader", "partition_leader", "kill_controller"]
    report = run_faults(str(tmp_path), schedule, seed=11, hold=lambda rng: 4.0, base=71, cores=2, extra=SHARDED)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    assert [f["fault"] for f in report["faults"]] == schedule
    assert_came_through(report)
