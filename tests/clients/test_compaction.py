"""Compacted topics (`cleanup.policy=compact`) with real clients: a
changelog-shaped topic read from the start holds the latest value of
each live key and nothing of deleted ones once the cleaner ran (librdkafka
and kcat), a consumer group resumes across what was removed, a record
without a key is refused, and the policy is described and validated."""
import glob
import json
import os
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from conftest import BINARY, SWITCHED_BINARY, admin, free_port, records_to_end, running_broker, wait_for
from test_ops import get, sample

KEYS = 300
ROUNDS = 15
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "0",
}


def create_compacted(broker, name, configs=COMPACTED):
    a = admin(broker)
    a.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=configs)])[name].result(10)


def producer(broker, compression="none"):
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "compression.type": compression,
                     "enable.idempotence": True, "log_level": 0})


def write_changelog(broker, topic, compression="none"):
    """ROUNDS values of each of KEYS keys, then tombstones for every tenth
    key; a last record rolls the segment the others are in (segment.ms).
    Returns what a reader must end with."""
    p = producer(broker, compression)
    for r in range(ROUNDS):
        for k in range(KEYS):
            p.produce(topic, key=f"k{k}", value=f"{k}-{r}")
        p.poll(0)
    for k in range(0, KEYS, 10):
        p.produce(topic, key=f"k{k}", value=None)
    assert p.flush(30) == 0
    time.sleep(0.3)
    p.produce(topic, key="roll", value="last")
    assert p.flush(30) == 0
    want = {f"k{k}": [f"{k}-{ROUNDS - 1}"] for k in range(KEYS) if k % 10}
    want["roll"] = ["last"]
    return want


def read_from_start(broker, topic):
    """Every record of the topic's partition 0 from the start to its end:
    key -> values in order (a tombstone is None)."""
    out = {}
    for m in records_to_end(broker.bootstrap, topic, 0)[0]:
        v = m.value().decode() if m.value() is not None else None
        out.setdefault(m.key().decode(), []).append(v)
    return out


def log_bytes(broker, topic):
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(broker.data_dir, f"{topic}-0", "*.log")))


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_a_changelog_topic_keeps_the_latest_value_of_each_live_key(compression):
    """Compressed batches are inflated, cleaned and compressed again with
    their codec."""
    with running_broker(["log.cleaner.backoff.ms=200"]) as broker:
        create_compacted(broker, "changelog")
        want = write_changelog(broker, "changelog", compression)
        before = log_bytes(broker, "changelog")
        got = wait_for("the cleaner ran", lambda: (lambda g: g if g == want else None)(
            read_from_start(broker, "changelog")), timeout=60)
        assert got == want
        assert log_bytes(broker, "changelog") < before / 3, (before, log_bytes(broker, "changelog"))
        if compression == "none":
            dump_shows_the_gaps(broker, "changelog")
        # kcat (librdkafka 2.0.2) reads the same across the gaps.
        out = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", "changelog", "-o", "beginning", "-e",
                              "-q", "-f", "%k=%s\\n"], capture_output=True, text=True, timeout=60, check=True)
        lines = [line for line in out.stdout.splitlines() if line]
        assert sorted(lines) == sorted(f"{k}={v[0]}" for k, v in want.items())
        # A restart reads the cleaned log back the same.
        broker.stop()
        broker.start()
        assert read_from_start(broker, "changelog") == want


def dump_shows_the_gaps(broker, topic):
    """`sluice log dump` reads a cleaned segment as intact, with the
    offsets the cleaner removed counted as gaps."""
    seg = sorted(glob.glob(os.path.join(broker.data_dir, f"{topic}-0", "*.log")))[0]
    out = subprocess.run([BINARY, "log", "dump", seg, "--records", "--json"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    batches = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(b["status"] == "ok" for b in batches)
    assert sum(b["gaps"] for b in batches) > 0
    for b in batches:
        assert b["count"] + b["gaps"] == b["last_offset"] - b["base_offset"] + 1
        assert all(b["base_offset"] <= r["offset"] <= b["last_offset"] for r in b["records"])


def test_a_consumer_group_resumes_across_removed_records():
    with running_broker(["log.cleaner.backoff.ms=200"]) as broker:
        # Written and partly consumed under `delete`, then compacted: the
        # group's commit lands before the cleaner runs.
        create_compacted(broker, "resume", dict(COMPACTED, **{"cleanup.policy": "delete"}))
        group = "resume-group"
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "log_level": 0})
        want = write_changelog(broker, "resume")
        c.assign([TopicPartition("resume", 0, 0)])
        seen = 0
        while seen < KEYS * 3:
            m = c.poll(5.0)
            assert m is not None and m.error() is None
            seen += 1
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition("resume", 0)], timeout=10)[0].offset
        c.close()
        a = admin(broker)
        compact = ConfigResource("topic", "resume", incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
        a.incremental_alter_configs([compact])[compact].result(10)
        wait_for("the cleaner ran", lambda: read_from_start(broker, "resume") == want, timeout=60)
        # The committed offset now points into removed records: the group
        # goes on from the next record kept.
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                      "enable.partition.eof": True, "log_level": 0})
        c.assign([TopicPartition("resume", 0, committed)])
        rest = []
        while True:
            m = c.poll(5.0)
            assert m is not None
            if m.error() is not None:
                assert m.error().code() == -191, m.error()
                break
            assert m.offset() >= committed
            rest.append(m.key().decode())
        c.close()
        assert sorted(rest) == sorted(want), "every key's latest record is past the commit"


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_a_record_without_a_key_is_refused_by_a_compacted_topic(compression):
    with running_broker([]) as broker:
        create_compacted(broker, "keyed-only")
        p = producer(broker, compression)
        errors = []
        p.produce("keyed-only", value="no key", on_delivery=lambda err, msg: errors.append(err))
        p.flush(30)
        # A batch is taken or refused whole: the keyed record goes alone.
        p = producer(broker, compression)
        p.produce("keyed-only", key="k", value="keyed", on_delivery=lambda err, msg: errors.append(err))
        p.flush(30)
        assert errors[0] is not None and errors[0].code() == 87, errors  # INVALID_RECORD
        assert errors[1] is None


def test_cleanup_policy_is_described_and_validated():
    with running_broker([]) as broker:
        create_compacted(broker, "described", {"cleanup.policy": "compact"})
        a = admin(broker)
        r = ConfigResource("topic", "described")
        configs = a.describe_configs([r])[r].result(10)
        assert configs["cleanup.policy"].value == "compact"
        assert configs["min.cleanable.dirty.ratio"].value == "0.5"
        assert configs["delete.retention.ms"].value == "86400000"
        change = ConfigResource("topic", "described", incremental_configs=[
            ConfigEntry("cleanup.policy", "compact,delete", incremental_operation=AlterConfigOpType.SET)])
        a.incremental_alter_configs([change])[change].result(10)
        assert a.describe_configs([r])[r].result(10)["cleanup.policy"].value == "compact,delete"
        bad = ConfigResource("topic", "described", incremental_configs=[
            ConfigEntry("cleanup.policy", "shred", incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException):
            a.incremental_alter_configs([bad])[bad].result(10)
        ratio = ConfigResource("topic", "described", incremental_configs=[
            ConfigEntry("min.cleanable.dirty.ratio", "1.5", incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException):
            a.incremental_alter_configs([ratio])[ratio].result(10)


# The cleaner's steps where the broker can be made to abort
# (SLUICE_CRASH_AT, docs/storage.md), and the file each leaves beside the
# segment it was cleaning.
CRASH_STEPS = [
    ("clean.written", "log.cleaned"),
    ("clean.synced", "log.cleaned"),
    ("clean.renamed", "log.swap"),
    ("clean.indexes_removed", "log.swap"),
    ("clean.swapped", None),
    ("clean.indexes_written", None),
    ("clean.pass_done", None),
]


@pytest.mark.parametrize("step,leftover", CRASH_STEPS)
def test_a_crash_at_each_cleaner_step_loses_nothing_it_must_keep(step, leftover):
    """The changelog is written with the cleaner off; the broker restarts
    with it on and aborts at `step` of its first pass (as kill -9 would
    stop it). On the next start recovery leaves no half-made file, every
    segment reads as intact, and once the cleaner ran again a reader sees
    exactly the latest value of each live key. (The cleaner's own tests in
    `engine/tests/clean.rs` check the same states in process, and a failed
    sync of a pass.)"""
    with running_broker(["log.cleaner.enable=false"]) as broker:
        create_compacted(broker, "crashing")
        want = write_changelog(broker, "crashing")
        broker.stop()
        broker.extra = ["num.partitions=1", "log.cleaner.backoff.ms=200"]
        # Crash points exist only in the test-switches build.
        broker.binary = SWITCHED_BINARY
        broker.env = dict(os.environ, SLUICE_CRASH_AT=step)
        broker.start()
        assert broker.proc.wait(timeout=60) == -6, "the broker aborts at the step (SIGABRT)"
        broker.proc = None
        part = os.path.join(broker.data_dir, "crashing-0")
        found = [f for f in os.listdir(part) if f.endswith((".log.cleaned", ".log.swap"))]
        assert found == ([f for f in found if f.endswith(leftover)] if leftover else []) and \
            (len(found) == 1 if leftover else True), found
        # Recovery alone first (the cleaner off, so that no new pass makes
        # files of its own), then the cleaner again.
        broker.env = None
        broker.binary = BINARY
        broker.extra = ["num.partitions=1", "log.cleaner.enable=false"]
        broker.start()
        # (A partition's log opens as the broker installs its metadata,
        # which may end after it listens: a read waits for this one.)
        recovered = read_from_start(broker, "crashing")
        assert not [f for f in os.listdir(part) if f.endswith((".log.cleaned", ".log.swap"))]
        for seg in sorted(glob.glob(os.path.join(part, "*.log"))):
            out = subprocess.run([BINARY, "log", "dump", seg, "--json"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert all('"status":"ok"' in line.replace(" ", "") for line in out.stdout.splitlines()), seg
        for k in range(KEYS):
            latest = want[f"k{k}"][0] if f"k{k}" in want else None
            assert recovered.get(f"k{k}", [None])[-1] == latest, (k, recovered.get(f"k{k}"))
        assert recovered["roll"] == ["last"]
        broker.stop()
        broker.extra = ["num.partitions=1", "log.cleaner.backoff.ms=200"]
        broker.start()
        got = wait_for("the cleaner ran again", lambda: (lambda g: g if g == want else None)(
            read_from_start(broker, "crashing")), timeout=60)
        assert got == want


def test_appends_go_on_while_the_cleaner_cleans_the_same_partition():
    """A producer keeps writing to the partition whose log the cleaner of
    the same shard keeps cleaning (64 KiB segments, a pass every 100 ms):
    acknowledgements never stop for long, the passes move on (the
    partition's cleaner checkpoint rises), and afterwards the latest value
    of every key is there; /metrics shows the partition's dirty ratio and
    last clean (and passes promtool)."""
    port = free_port()
    with running_broker(["log.cleaner.backoff.ms=100", f"sluice.admin.listen=127.0.0.1:{port}"]) as broker:
        create_compacted(broker, "busy", dict(COMPACTED, **{"segment.bytes": "65536"}))
        checkpoint = os.path.join(broker.data_dir, "busy-0", "cleaner-offset-checkpoint")
        p = producer(broker)
        acks, latest, marks = [], {}, []
        value = "x" * 400

        def done(err, msg):
            assert err is None, err
            acks.append(time.time())

        start = time.time()
        i = 0
        while time.time() - start < 8:
            for _ in range(20):
                p.produce("busy", key=f"k{i % 500}", value=f"{i}-{value}", on_delivery=done)
                latest[f"k{i % 500}"] = [f"{i}-{value}"]
                i += 1
            p.poll(0.01)
            if os.path.exists(checkpoint):
                with open(checkpoint) as f:
                    text = f.read().strip()
                if text and (not marks or marks[-1] != text):
                    marks.append(text)
        assert p.flush(30) == 0
        time.sleep(0.3)
        p.produce("busy", key="roll", value="last")
        assert p.flush(30) == 0
        latest["roll"] = ["last"]
        gaps = [b - a for a, b in zip(acks, acks[1:])]
        assert len(acks) == i and max(gaps) < 1.0, (len(acks), i, max(gaps))
        assert len(marks) >= 5, f"the cleaner's passes moved on only {len(marks)} times"
        wait_for("the cleaner ran", lambda: read_from_start(broker, "busy") == latest, timeout=60)
        status, text = get(port, "/metrics")
        assert status == 200
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        ratio = sample(text, "sluice_log_cleaner_dirty_ratio", topic="busy", partition="0")
        last = sample(text, "sluice_log_cleaner_last_clean_timestamp_seconds", topic="busy", partition="0")
        assert 0 <= ratio < 1 and time.time() - 60 < last <= time.time(), (ratio, last)


def test_a_lookup_by_time_goes_past_a_batch_whose_newest_records_were_removed():
    """A batch keeps its header's maxTimestamp when the cleaner removes
    the record that had it: ListOffsets by a time between its kept
    record's and that maxTimestamp finds the next record at or after the
    time, in a later batch."""
    with running_broker(["log.cleaner.backoff.ms=200"]) as broker:
        create_compacted(broker, "timed")
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50, "log_level": 0})
        offsets = {}

        def note(err, msg):
            assert err is None, err
            offsets[(msg.key().decode(), msg.value().decode())] = msg.offset()
        t0 = int(time.time() * 1000) - 60_000
        p.produce("timed", key="a", value="a1", timestamp=t0, on_delivery=note)
        p.produce("timed", key="b", value="b1", timestamp=t0 + 20_000, on_delivery=note)
        assert p.flush(10) == 0
        p.produce("timed", key="b", value="b2", timestamp=t0 + 40_000, on_delivery=note)
        assert p.flush(10) == 0
        time.sleep(0.3)
        p.produce("timed", key="roll", value="last", on_delivery=note)
        assert p.flush(10) == 0
        want = {"a": ["a1"], "b": ["b2"], "roll": ["last"]}
        wait_for("the cleaner ran", lambda: read_from_start(broker, "timed") == want, timeout=60)
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "timed", "log_level": 0})
        got = c.offsets_for_times([TopicPartition("timed", 0, t0 + 10_000)], timeout=10)
        c.close()
        assert got[0].offset == offsets[("b", "b2")], (got, offsets)
