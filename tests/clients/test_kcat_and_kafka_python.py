"""Debian's kcat (librdkafka 2.0.2) and the pure-Python kafka-python client."""
import subprocess

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def kcat(broker, *args, stdin=None):
    r = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_kcat_metadata_produce_and_consume(broker):
    lines = "".join(f"line-{i}\n" for i in range(1000))
    kcat(broker, "-P", "-t", "kc", stdin=lines.encode())
    meta = kcat(broker, "-L")
    assert 'topic "kc" with 1 partitions' in meta
    assert f"broker 0 at 127.0.0.1:{broker.port}" in meta
    out = kcat(broker, "-C", "-t", "kc", "-e", "-o", "beginning", "-f", "%o %s\n")
    got = out.splitlines()
    assert got == [f"{i} line-{i}" for i in range(1000)]


def test_kafka_python_produce_and_consume(broker):
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    futures = [p.send("kp", key=str(i).encode(), value=f"v{i}".encode()) for i in range(500)]
    offsets = [f.get(timeout=30).offset for f in futures]
    assert offsets == list(range(500))
    p.close()
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000)
    c.assign([TopicPartition("kp", 0)])
    c.seek_to_beginning()
    got = []
    for m in c:
        got.append((m.offset, m.value))
        if len(got) == 500:
            break
    c.close()
    assert got == [(i, f"v{i}".encode()) for i in range(500)]
