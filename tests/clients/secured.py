"""What the SASL and TLS client tests share: a round trip through a
client configuration with librdkafka and with kafka-python, the first
error librdkafka reports, kcat, and the Java classes compiled."""
import glob
import os
import subprocess
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer


def librdkafka_round_trip(conf, topic, n=300, create=True):
    """Produces `n` records (acks=all) and reads them back in a group
    that commits; with `create`, makes the topic with 2 partitions first.
    Returns the admin client of `conf`."""
    admin = AdminClient(conf)
    if create:
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    p = Producer(dict(conf, acks="all"))
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0
    c = Consumer(dict(conf, **{"group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                               "enable.auto.commit": False}))
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.commit(asynchronous=False)
    c.close()
    assert sorted(got, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(n)]
    return admin


def kafka_python_round_trip(conf, topic, group, n=200):
    """The same with kafka-python (`conf` in its own names), one partition."""
    p = KafkaProducer(acks="all", **conf)
    offsets = [p.send(topic, value=f"v{i}".encode()).get(timeout=30).offset for i in range(n)]
    p.close()
    assert offsets == list(range(n))
    c = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=10_000, **conf)
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == n:
            break
    c.commit()
    c.close()
    assert got == [f"v{i}".encode() for i in range(n)]


def first_error(conf, seconds=15):
    """The first error librdkafka reports for `conf`; None if it gets
    metadata (or, after `seconds`, reports nothing)."""
    errors = []
    p = Producer(dict(conf, error_cb=errors.append, **{"socket.timeout.ms": 5000}))
    deadline = time.time() + seconds
    while not errors and time.time() < deadline:
        p.poll(0.2)
        try:
            p.list_topics(timeout=1)
            return None
        except Exception:
            pass
    return errors[0] if errors else None


def kcat(*args, stdin=None, check=True):
    r = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr.decode()
    return r


def java_classpath():
    """Compiles tests/clients/java (as test_java does); the classpath."""
    from test_java import CLASSES, LIB, SRC
    jars = sorted(glob.glob(os.path.join(LIB, "*.jar")))
    assert len(jars) == 5, "run tests/clients/java/fetch_jars.sh first"
    os.makedirs(CLASSES, exist_ok=True)
    cp = ":".join([CLASSES] + jars)
    r = subprocess.run(["javac", "-Xlint:-options", "-d", CLASSES, "-cp", cp] + glob.glob(os.path.join(SRC, "*.java")),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return cp
