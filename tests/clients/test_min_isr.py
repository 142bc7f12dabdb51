"""acks=all when `min.insync.replicas` is above a topic's replication
factor: the effective minimum is the smaller of the setting and the
partition's replica count, as Kafka's partition takes it
(docs/cluster.md, "The effective minimum"). librdkafka and the Java client
on one node, librdkafka on a three-node cluster; the under/at-min-ISR
gauges agree."""
import random
import socket
import tempfile

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running_broker
from test_cluster import Cluster, metadata, wait_for
from test_java import classpath, run  # noqa: F401 (the fixture)
from test_ops import get, sample
from test_replication import Recorder, create as create_replicated, partition_view


def produce(bootstrap, topic, values, **extra):
    """Sends `values` with acks=all to partition 0; the Recorder of them."""
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "log_level": 0,
            "message.timeout.ms": 20000}
    conf.update(extra)
    p = Producer(conf)
    rec = Recorder()
    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=rec)
    p.flush(30)
    return rec


def admin_ports(n):
    """`n` free ports below the kernel's ephemeral range (32768 and up),
    for the nodes' admin listeners: a port that free_port() found free can
    be handed to another node's outgoing connection before the node that
    was given it binds it, and these never are."""
    ports = []
    while len(ports) < n:
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture
def strict_node():
    (port,) = admin_ports(1)
    with running_broker(["min.insync.replicas=2", f"sluice.admin.listen=127.0.0.1:{port}"]) as b:
        b.metrics_port = port
        yield b


def test_one_node_with_min_insync_2_takes_acks_all_on_rf1_topics(strict_node):
    a = AdminClient({"bootstrap.servers": strict_node.bootstrap})
    fs = a.create_topics([NewTopic("rf1", 1, 1),
                          NewTopic("rf1-min3", 1, 1, config={"min.insync.replicas": "3"})])
    for f in fs.values():
        f.result(timeout=10)
    for topic in ("rf1", "rf1-min3"):
        rec = produce(strict_node.bootstrap, topic, [b"v%d" % i for i in range(50)], **{"enable.idempotence": True})
        assert rec.errors == [], (topic, rec.errors)
        assert sorted(o for _, o in rec.acked.values()) == list(range(50)), topic
    # Both partitions are at their effective minimum (1 of 1), none below.
    status, text = get(strict_node.metrics_port, "/metrics")
    assert status == 200
    assert sample(text, "sluice_under_min_isr_partitions") == 0
    assert sample(text, "sluice_at_min_isr_partitions") >= 2


def test_java_client_takes_acks_all_on_rf1_topics_under_min_insync_2(classpath, strict_node):  # noqa: F811
    run(classpath, "MinIsrCheck", strict_node)


def test_cluster_with_min_insync_3_takes_rf2_while_in_sync_and_refuses_below():
    metrics = admin_ports(3)
    with tempfile.TemporaryDirectory() as root:
        c = Cluster(root)
        for n, port in zip(c.nodes, metrics):
            n.extra += ["min.insync.replicas=3", f"sluice.admin.listen=127.0.0.1:{port}"]
        try:
            c.start()
            wait_for("three live brokers", lambda: len(metadata(c.node(1)).brokers) == 3)
            check_cluster(c, metrics)
        finally:
            c.stop()


def check_cluster(c, metrics):
    node = c.node(1)
    create_replicated(node, "pair", rf=2)
    create_replicated(node, "trio", rf=3)
    boot = ",".join(n.bootstrap for n in c.nodes)
    for topic in ("pair", "trio"):
        wait_for(f"{topic}'s full ISR", lambda: len(partition_view(node, topic)[2]) == len(partition_view(node, topic)[1]))
        rec = produce(boot, topic, [b"in-sync-%d" % i for i in range(20)])
        assert rec.errors == [] and len(rec.acked) == 20, (topic, rec.errors)
    leader, replicas, _ = partition_view(node, "pair")
    follower = next(r for r in replicas if r != leader)
    # The pair's leader is at its effective minimum (2 of 2), not below
    # the setting's 3.
    _, text = get(metrics[leader - 1], "/metrics")
    assert sample(text, "sluice_under_min_isr_partitions") == 0
    assert sample(text, "sluice_at_min_isr_partitions") >= 1
    c.node(follower).kill9()
    alive = c.node(leader)
    wait_for("the pair's ISR down to its leader",
             lambda: partition_view(alive, "pair")[2] == [leader], timeout=30)
    wait_for("the trio's ISR without the killed broker",
             lambda: follower not in partition_view(alive, "trio")[2] and partition_view(alive, "trio")[0] >= 0,
             timeout=30)
    live = ",".join(n.bootstrap for n in c.live())
    for topic in ("pair", "trio"):
        rec = produce(live, topic, [b"refused"], retries=0, **{"enable.idempotence": False,
                                                               "message.timeout.ms": 5000})
        assert not rec.acked, topic
        assert [e.code() for e in rec.errors] == [KafkaError.NOT_ENOUGH_REPLICAS], (topic, rec.errors)
    wait_for("the pair's leader reports it below its minimum",
             lambda: sample(get(metrics[leader - 1], "/metrics")[1], "sluice_under_min_isr_partitions") >= 1)
