#!/usr/bin/env python3
"""Records the request frames real clients send, as seeds for the fuzzers.

Starts the release `sluice` advertising a recording proxy's port, runs
librdkafka (confluent-kafka: admin, idempotent and plain producers with
every codec, a group consumer with commits, seeks and offsets_for_times)
and kafka-python through the proxy, and writes each client's request frames
to tests/fuzz/corpus/<client>.frames: the bytes as they crossed the wire,
each frame a 4-byte big-endian length and the frame. Run it again when the
clients or the supported APIs change:

    python3 tests/fuzz/capture.py            # CORPUS_DIR=... writes elsewhere
"""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CORPUS = os.environ.get("CORPUS_DIR", os.path.join(ROOT, "tests", "fuzz", "corpus"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A TCP proxy that keeps every complete client-to-broker frame."""

    def __init__(self, listen_port, broker_port):
        self.broker_port = broker_port
        self.frames = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", listen_port))
        self.sock.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.broker_port))
            threading.Thread(target=self.pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client, False), daemon=True).start()

    def pump(self, src, dst, record):
        """Copies `src` to `dst` until either closes; keeps each complete
        frame when `record` (the client-to-broker direction)."""
        buf = b""
        while True:
            try:
                data = src.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                dst.close()
                return
            if record:
                buf += data
                while len(buf) >= 4:
                    (n,) = struct.unpack(">i", buf[:4])
                    if len(buf) < 4 + n:
                        break
                    with self.lock:
                        self.frames.append(buf[: 4 + n])
                    buf = buf[4 + n :]
            try:
                dst.sendall(data)
            except OSError:
                src.close()
                return

    def take(self):
        with self.lock:
            out, self.frames = self.frames, []
        return out


def librdkafka(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("seed-a", 3, 1), NewTopic("seed-b", 1, 1)]).values():
        f.result()
    for f in admin.create_partitions([NewPartitions("seed-b", 2)]).values():
        f.result()
    res = ConfigResource(ConfigResource.Type.TOPIC, "seed-a", set_config={"retention.ms": "3600000"})
    for f in admin.alter_configs([res]).values():
        f.result()
    for f in admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "seed-a")]).values():
        f.result()
    admin.list_topics(timeout=10)
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        for idem in [True, False]:
            p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                          "enable.idempotence": idem, "linger.ms": 5})
            for i in range(50):
                p.produce("seed-a", key=f"k{i}", value=f"{codec}-{i}" * 10, headers={"h": b"v"},
                          timestamp=1_700_000_000_000 + i * 1000)
            p.flush(10)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "seed-group", "auto.offset.reset": "earliest",
                  "fetch.min.bytes": 1000, "fetch.wait.max.ms": 100, "enable.auto.commit": False})
    c.subscribe(["seed-a"])
    got = 0
    deadline = time.time() + 30
    while got < 300 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got += 1
            if got % 50 == 0:
                c.commit(message=m, asynchronous=False)
    c.offsets_for_times([TopicPartition("seed-a", 0, 1_700_000_010_000)], timeout=10)
    c.get_watermark_offsets(TopicPartition("seed-a", 0), timeout=10)
    c.committed([TopicPartition("seed-a", 0)], timeout=10)
    c.close()
    list(admin.list_consumer_groups().result().valid)
    for f in admin.describe_consumer_groups(["seed-group"]).values():
        f.result()
    admin.delete_records([TopicPartition("seed-a", 0, 5)])
    for f in admin.delete_topics(["seed-b"]).values():
        f.result()


def kafka_python(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("seed-kp", 2, 1)])
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", linger_ms=5)
    for i in range(100):
        p.send("seed-kp", key=b"k", value=b"v" * i)
    p.flush()
    p.close()
    c = KafkaConsumer("seed-kp", bootstrap_servers=bootstrap, group_id="seed-kp-group",
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    n = sum(1 for _ in c)
    assert n == 100, n
    c.commit()
    c.offsets_for_times({TopicPartition("seed-kp", 0): 0})
    c.close()
    admin.list_groups()
    admin.describe_groups(["seed-kp-group"])
    admin.describe_cluster()
    admin.list_group_offsets("seed-kp-group")
    admin.delete_groups(["seed-kp-group"])
    admin.close()


def main():
    broker_port, proxy_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="sluice-capture-")
    log = open(os.path.join(data, "broker.log"), "wb")
    binary = os.path.join(ROOT, "target", "release", "sluice")
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{broker_port}", "--advertised",
                             f"127.0.0.1:{proxy_port}", "--data-dir", os.path.join(data, "d"),
                             "--cores", "2", "-o", "group.initial.rebalance.delay.ms=0"],
                            stdout=log, stderr=log)
    try:
        time.sleep(0.5)
        rec = Recorder(proxy_port, broker_port)
        bootstrap = f"127.0.0.1:{proxy_port}"
        os.makedirs(CORPUS, exist_ok=True)
        for name, run in [("librdkafka", librdkafka), ("kafka-python", kafka_python)]:
            run(bootstrap)
            time.sleep(0.5)
            frames = rec.take()
            with open(os.path.join(CORPUS, f"{name}.frames"), "wb") as f:
                for fr in frames:
                    f.write(fr)
            keys = sorted({struct.unpack(">hh", fr[4:8]) for fr in frames})
            print(f"{name}: {len(frames)} frames, (api, version): {keys}")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
