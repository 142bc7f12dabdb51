"""librdkafka (through confluent-kafka) against Sluice."""
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewPartitions

from conftest import admin, consume_all, create


def test_admin_create_grow_delete(broker):
    a = admin(broker)
    create(broker, "adm", 3)
    md = a.list_topics(timeout=10)
    assert len(md.topics["adm"].partitions) == 3
    assert md.brokers[0].port == broker.port
    a.create_partitions([NewPartitions("adm", 5)])["adm"].result(timeout=10)
    assert len(a.list_topics(timeout=10).topics["adm"].partitions) == 5
    with pytest.raises(Exception):
        a.create_partitions([NewPartitions("adm", 2)])["adm"].result(timeout=10)
    with pytest.raises(Exception):
        create(broker, "adm", 1)
    a.delete_topics(["adm"])["adm"].result(timeout=10)
    assert "adm" not in a.list_topics(timeout=10).topics


def test_keyed_messages_keep_partition_and_order(broker):
    create(broker, "keyed", 6)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(10_000):
        p.produce("keyed", key=f"key-{i % 97}", value=str(i))
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    msgs = consume_all(broker, "keyed", 6, 10_000)
    partition_of = {}
    last = {}
    for m in msgs:
        k = m.key().decode()
        assert partition_of.setdefault(k, m.partition()) == m.partition(), "a key stays in one partition"
        v = int(m.value())
        assert v > last.get(k, -1), "per-key order"
        last[k] = v
    assert len({m.partition() for m in msgs}) == 6


def test_values_keys_headers_and_timestamps_round_trip(broker):
    create(broker, "rt", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    p.produce("rt", key=b"k\x00bin", value=b"v" * 3000, headers=[("h1", b"x"), ("h2", None)], timestamp=1_700_000_000_123)
    p.produce("rt", key=None, value=None)
    assert p.flush(10) == 0
    a, b = consume_all(broker, "rt", 1, 2)
    assert a.key() == b"k\x00bin" and a.value() == b"v" * 3000
    assert a.headers() == [("h1", b"x"), ("h2", None)]
    assert a.timestamp()[1] == 1_700_000_000_123
    assert (a.offset(), b.offset()) == (0, 1)
    assert b.key() is None and b.value() is None


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_stored_and_served(broker, codec):
    topic = "comp-" + codec
    create(broker, topic, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 20})
    for i in range(2000):
        p.produce(topic, key=str(i), value=f"compressible-{i}-" + "abc" * 50)
    assert p.flush(30) == 0
    msgs = consume_all(broker, topic, 2, 2000)
    assert sorted(int(m.key()) for m in msgs) == list(range(2000))


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(broker, acks):
    topic = "acks-" + acks
    create(broker, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks})
    reports = []
    for i in range(500):
        p.produce(topic, value=str(i), on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0
    assert len(reports) == 500 and all(e is None for e in reports)
    msgs = consume_all(broker, topic, 1, 500)
    assert [int(m.value()) for m in msgs] == list(range(500))


def test_idempotent_producer(broker):
    create(broker, "idem", 3)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2})
    for i in range(3000):
        p.produce("idem", key=str(i % 3), value=str(i))
    assert p.flush(30) == 0
    msgs = consume_all(broker, "idem", 3, 3000)
    assert sorted(int(m.value()) for m in msgs) == list(range(3000))


def test_consume_from_an_offset_and_list_offsets_by_time(broker):
    create(broker, "off", 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    base = 1_700_000_000_000
    for i in range(20):
        p.produce("off", value=str(i), timestamp=base + i * 1000)
        p.flush(10)
    msgs = consume_all(broker, "off", 1, 15, start=5)
    assert [int(m.value()) for m in msgs] == list(range(5, 20))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lo", "enable.auto.commit": False})
    got = c.offsets_for_times([TopicPartition("off", 0, base + 7500)], timeout=10)
    assert got[0].offset == 8
    lo, hi = c.get_watermark_offsets(TopicPartition("off", 0), timeout=10)
    assert (lo, hi) == (0, 20)
    c.close()
