"""Starts a Sluice broker (the release binary) for the real-client tests."""
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))
# The same broker built with the cargo feature `test-switches`, whose
# settings break it on purpose (scripts/test.sh builds it): only the
# checker's own tests start it.
SWITCHED_BINARY = os.path.join(ROOT, "target", "release", "sluice-test-switches")


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(n, host="127.0.0.1"):
    """`n` distinct free ports (each socket is held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Broker:
    def __init__(self, data_dir, port, extra, cores=2, host="127.0.0.1", log_path=None, binary=None, listeners=None):
        self.binary = binary or BINARY
        # `listeners` as Sluice takes it (NAME://host:port,...); the first
        # must be host:port. Default: one PLAINTEXT listener there.
        self.listeners = listeners
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.extra = extra
        self.cores = cores
        self.proc = None
        # The process's environment (None: this one's).
        self.env = None
        logs = os.path.join(ROOT, "target", "client-test-logs")
        os.makedirs(logs, exist_ok=True)
        self.log_path = log_path or os.path.join(logs, f"sluice-{port}.log")
        self.log = open(self.log_path, "ab")

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    def start(self, wait=True):
        """Starts the process; with `wait`, returns once it listens."""
        cmd = [self.binary, "--listen", self.listeners or self.bootstrap, "--data-dir", self.data_dir,
               "--cores", str(self.cores)]
        for kv in self.extra:
            cmd += ["-o", kv]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=self.env)
        if wait:
            self.wait_listening()

    def wait_listening(self):
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited with {self.proc.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sluice did not start listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0, "clean shutdown exits 0"
        self.proc = None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self):
        self.stop()
        self.start()


def own_answer(node):
    """A Metadata answer that `node` itself gave, else None. librdkafka may
    ask any broker it has learned of, and brokers apply a change a moment
    apart, so a check takes one answer and looks at who gave it. The
    answering connection's address says so: a bootstrap connection reports
    broker id -1 (most answers of a fresh client), a learned one its id."""
    md = AdminClient({"bootstrap.servers": node.bootstrap, "log_level": 0}).list_topics(timeout=10)
    return md if md.orig_broker_name.rsplit("/", 1)[0] == node.bootstrap else None


def wait_for(what, check, timeout=30):
    """`check()`'s first true answer, asked every 0.1 s for `timeout`
    seconds (a KafkaException counts as not yet)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except KafkaException as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last})")


def records_to_end(bootstrap, topic, partition, timeout=30, strict=True, security=None):
    """The records of one partition from its start to its end (the
    consumer's end-of-partition event), in order, and whether the end was
    reached within `timeout` seconds. With `strict` a consumer error
    raises; without, it is passed over (a fault's passing errors)."""
    c = Consumer({**(security or {}), "bootstrap.servers": bootstrap, "group.id": f"to-end-{time.time()}",
                  "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 0})
    c.assign([TopicPartition(topic, partition, 0)])
    out, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out, True
                if strict:
                    raise KafkaException(m.error())
                continue
            out.append(m)
        return out, False
    finally:
        c.close()


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker, name, partitions):
    a = admin(broker)  # must outlive the future
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    fs[name].result(timeout=10)


def consume_all(broker, topic, partitions, expected, start=0):
    """Assigns `partitions` (a count, or a list of partition numbers) from
    `start` and reads until `expected` messages arrive (no consumer group
    involved)."""
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "unused-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    parts = range(partitions) if isinstance(partitions, int) else partitions
    c.assign([TopicPartition(topic, p, start) for p in parts])
    out = []
    deadline = time.time() + 60
    while len(out) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append(m)
    c.close()
    assert len(out) == expected, f"got {len(out)} of {expected}"
    return out


@contextlib.contextmanager
def running_broker(extra):
    """A broker on a temporary data directory, stopped (cleanly) after."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        b = Broker(data, free_port(), ["num.partitions=1"] + list(extra))
        b.start()
        try:
            yield b
        finally:
            if b.proc is not None:
                b.stop()


@pytest.fixture
def broker():
    with running_broker([]) as b:
        yield b
