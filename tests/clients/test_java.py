"""The Apache Kafka Java client 3.9.1 (the reference implementation) against
Sluice: AdminClient, KafkaProducer and KafkaConsumer programs under
tests/clients/java, compiled with javac and run against the release broker.
The jars come from tests/clients/java/fetch_jars.sh (scripts/test.sh runs
it)."""
import glob
import os
import subprocess

import pytest

from conftest import ROOT

SRC = os.path.join(ROOT, "tests", "clients", "java")
LIB = os.path.join(ROOT, "target", "java-lib")
CLASSES = os.path.join(ROOT, "target", "java-classes")


@pytest.fixture(scope="module")
def classpath():
    jars = glob.glob(os.path.join(LIB, "*.jar"))
    assert len(jars) == 5, f"run tests/clients/java/fetch_jars.sh first (found {jars})"
    os.makedirs(CLASSES, exist_ok=True)
    cp = ":".join([CLASSES] + sorted(jars))
    r = subprocess.run(["javac", "-Xlint:-options", "-d", CLASSES, "-cp", cp] + glob.glob(os.path.join(SRC, "*.java")),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return cp


def run(classpath, program, broker):
    r = subprocess.run(["java", "-cp", classpath, program, broker.bootstrap], capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    print(r.stdout)


@pytest.mark.parametrize("program", ["AdminCheck", "ProducerCheck", "ConsumerCheck", "TransactionCheck"])
def test_java_client(classpath, program, broker):
    run(classpath, program, broker)


def test_java_abandoned_transaction_is_aborted_by_the_coordinator(classpath):
    from conftest import running_broker
    with running_broker(["transaction.abort.timed.out.transaction.cleanup.interval.ms=200"]) as broker:
        run(classpath, "TransactionTimeoutCheck", broker)


def test_java_reads_a_compacted_topic_across_what_the_cleaner_removed(classpath):
    from conftest import running_broker
    with running_broker(["log.cleaner.backoff.ms=200"]) as broker:
        run(classpath, "CompactedCheck", broker)


def test_java_consumer_protocol_group(classpath):
    """group.protocol=consumer (KIP-848): the coordinator assigns."""
    from conftest import running_broker
    with running_broker(["group.consumer.heartbeat.interval.ms=500"]) as broker:
        run(classpath, "ConsumerProtocolCheck", broker)


def test_java_consumer_protocol_group_on_a_three_node_cluster(classpath):
    """The same check against three nodes: the group's coordinator, the
    topic's leaders and the bootstrap broker are different brokers."""
    from test_cluster import running_cluster
    with running_cluster(["group.consumer.heartbeat.interval.ms=500"]) as cluster:
        run(classpath, "ConsumerProtocolCheck", cluster.node(1))
