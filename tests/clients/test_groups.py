"""Consumer groups with real clients: librdkafka (confluent-kafka) members
as separate processes, and kafka-python."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from conftest import create, running_broker

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def gbroker():
    """A broker with no initial rebalance delay (the tests measure their own
    waits) and Kafka's other group defaults."""
    with running_broker(["group.initial.rebalance.delay.ms=0"]) as b:
        yield b


class Member:
    """A group_member.py process and the events it printed."""

    def __init__(self, broker, topic, group, instance=None, session_ms=6000, protocol="classic"):
        cmd = [sys.executable, os.path.join(HERE, "group_member.py"), broker.bootstrap, topic, group,
               "--session-ms", str(session_ms), "--protocol", protocol]
        if instance:
            cmd += ["--instance", instance]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.events = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.events.append(json.loads(line))

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def assignment(self):
        """Partitions held now, from the assign/revoke events (the classic
        protocol revokes everything before it assigns anew)."""
        held = set()
        for e in self.snapshot():
            if e["ev"] == "assigned":
                held |= set(e["partitions"])
            elif e["ev"] == "revoked":
                held -= set(e["partitions"])
        return held

    def messages(self):
        return [(e["p"], e["o"]) for e in self.snapshot() if e["ev"] == "msg"]

    def last_committed(self):
        out = {}
        for e in self.snapshot():
            if e["ev"] == "committed":
                out[e["p"]] = e["o"]
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0
        self.reader.join(timeout=5)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)


def wait_until(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def produce(broker, topic, partitions, per_partition, start=0):
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"{part}-{start + i}".encode(), partition=part)
    assert p.flush(30) == 0


def committed(members):
    """The newest commit per partition, over every member (offsets only grow)."""
    out = {}
    for m in members:
        for p, o in m.last_committed().items():
            out[p] = max(o, out.get(p, 0))
    return out


def all_offsets_seen(members, partitions, end):
    seen = set()
    for m in members:
        seen.update(m.messages())
    return all((p, o) in seen for p in range(partitions) for o in range(end))


def test_members_share_partitions_and_take_over_on_leave_and_on_crash(gbroker):
    topic, group, parts = "gt", "workers", 6
    create(gbroker, topic, parts)
    produce(gbroker, topic, parts, 50)
    ms = [Member(gbroker, topic, group) for _ in range(3)]
    try:
        wait_until(lambda: all(len(m.assignment()) == 2 for m in ms)
                   and set().union(*[m.assignment() for m in ms]) == set(range(parts)),
                   30, "three members with two partitions each")
        wait_until(lambda: all_offsets_seen(ms, parts, 50), 30, "the first 300 messages")

        # A clean leave: the other two cover all six partitions and resume
        # exactly at the committed offsets (no re-delivery).
        left = ms.pop(0)
        left_parts = left.assignment()
        seen_before = [len(m.messages()) for m in ms]
        t_leave = time.time()
        left.stop()
        left_commits = committed(ms + [left])
        wait_until(lambda: sorted(set().union(*[m.assignment() for m in ms])) == list(range(parts))
                   and all(len(m.assignment()) == 3 for m in ms), 30, "two members covering six partitions")
        rebalance_s = time.time() - t_leave
        produce(gbroker, topic, parts, 50, start=50)
        wait_until(lambda: all_offsets_seen(ms + [left], parts, 100), 30, "600 messages after the leave")
        for p in left_parts:
            later = [o for m, n in zip(ms, seen_before) for (q, o) in m.messages()[n:] if q == p]
            assert min(later) == left_commits[p], f"partition {p} resumed at {min(later)}, committed {left_commits[p]}"
        assert rebalance_s < 10, rebalance_s

        # A crash: after the session timeout the survivor takes the killed
        # member's partitions, starting at its last commit.
        crashed = ms.pop(0)
        produce(gbroker, topic, parts, 20, start=100)
        wait_until(lambda: all_offsets_seen(ms + [crashed, left], parts, 120), 30, "messages before the crash")
        crashed_parts = crashed.assignment()
        crashed.kill()
        crashed_commits = committed(ms + [crashed, left])
        survivor = ms[0]
        before = len(survivor.messages())
        t_kill = time.time()
        wait_until(lambda: survivor.assignment() == set(range(parts)), 30, "the survivor owning everything")
        takeover_s = time.time() - t_kill
        assert takeover_s >= 3, f"took over after {takeover_s:.1f}s, before the 6 s session could expire"
        produce(gbroker, topic, parts, 10, start=120)
        wait_until(lambda: all_offsets_seen(ms + [crashed, left], parts, 130), 30, "messages after the crash")
        after = survivor.messages()[before:]
        for p in crashed_parts:
            first = min(o for (q, o) in after if q == p)
            assert first == crashed_commits[p], f"partition {p}: resumed at {first}, last commit {crashed_commits[p]}"
        # Nothing delivered twice except where a member died between
        # processing a message and committing it.
        everything = [x for m in ms + [crashed, left] for x in m.messages()]
        dupes = {x for x in everything if everything.count(x) > 1}
        assert all(p in crashed_parts and o == crashed_commits[p] for (p, o) in dupes), dupes
    finally:
        for m in ms:
            m.stop()


def test_committed_offsets_survive_a_broker_restart(gbroker):
    create(gbroker, "rs", 2)
    produce(gbroker, "rs", 2, 100)
    conf = {"bootstrap.servers": gbroker.bootstrap, "group.id": "keeper", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    c = Consumer(conf)
    c.subscribe(["rs"])
    got = 0
    deadline = time.time() + 30
    while got < 120 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got += 1
        c.commit(message=m, asynchronous=False)
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition("rs", 0), TopicPartition("rs", 1)])}
    c.close()
    assert sum(committed.values()) == 120

    gbroker.restart()
    c = Consumer(conf)
    c.subscribe(["rs"])
    first, rest = {}, 0
    deadline = time.time() + 30
    while rest < 80 and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        rest += 1
        first.setdefault(m.partition(), m.offset())
    # Nothing more arrives: everything below the commits stays consumed.
    extra = c.poll(2)
    c.close()
    assert rest == 80 and extra is None
    assert first == {p: o for p, o in committed.items() if o < 100}


def read_some(conf, topic, want, timeout=20):
    c = Consumer(conf)
    c.subscribe([topic])
    out, errors = [], []
    deadline = time.time() + timeout
    while len(out) < want and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
            if m.error().code() == KafkaError._AUTO_OFFSET_RESET:
                break
            continue
        out.append(m.value())
    c.close()
    return out, errors


def test_auto_offset_reset_earliest_latest_and_none(gbroker):
    create(gbroker, "ar", 1)
    produce(gbroker, "ar", 1, 10)
    base = {"bootstrap.servers": gbroker.bootstrap, "enable.auto.commit": False}

    got, _ = read_some({**base, "group.id": "early", "auto.offset.reset": "earliest"}, "ar", 10)
    assert got[0] == b"0-0" and len(got) == 10

    # latest: only what is produced after the member has its assignment.
    late = Consumer({**base, "group.id": "late", "auto.offset.reset": "latest"})
    late.subscribe(["ar"])
    wait_until(lambda: (late.poll(0.1), late.assignment())[1] != [], 20, "an assignment")
    # The position is resolved on the first fetch; give it a moment.
    for _ in range(5):
        late.poll(0.1)
    produce(gbroker, "ar", 1, 1, start=10)
    got = []
    deadline = time.time() + 20
    while not got and time.time() < deadline:
        m = late.poll(0.2)
        if m is not None and not m.error():
            got.append(m.value())
    late.close()
    assert got == [b"0-10"]

    # none (librdkafka spells it `error`): no committed offset is an error.
    got, errors = read_some({**base, "group.id": "strict", "auto.offset.reset": "error"}, "ar", 1, timeout=15)
    assert got == []
    assert any(e.code() == KafkaError._AUTO_OFFSET_RESET for e in errors), errors


def test_two_groups_each_read_everything(gbroker):
    create(gbroker, "both", 3)
    produce(gbroker, "both", 3, 40)
    for g in ("alpha", "beta"):
        got, _ = read_some({"bootstrap.servers": gbroker.bootstrap, "group.id": g,
                            "auto.offset.reset": "earliest"}, "both", 120)
        assert sorted(got) == sorted(f"{p}-{i}".encode() for p in range(3) for i in range(40)), g


def test_kafka_python_group_consumer_commits(gbroker):
    create(gbroker, "kp", 2)
    produce(gbroker, "kp", 2, 25)

    def consumer():
        return KafkaConsumer("kp", bootstrap_servers=gbroker.bootstrap, group_id="kpg",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5000)

    c = consumer()
    seen = []
    for m in c:
        seen.append((m.partition, m.offset))
        if len(seen) == 30:
            break
    c.commit()
    committed = {p: c.committed(KpTopicPartition("kp", p)) for p in (0, 1)}
    c.close()
    assert sum(committed.values()) == 30

    c = consumer()
    rest = [(m.partition, m.offset) for m in c]
    c.close()
    assert len(rest) == 20
    for p in (0, 1):
        mine = [o for (q, o) in rest if q == p]
        if mine:
            assert min(mine) == committed[p]
    assert sorted(seen + rest) == sorted((p, o) for p in (0, 1) for o in range(25))


def test_static_member_restart_does_not_rebalance(gbroker):
    create(gbroker, "st", 4)
    a = Member(gbroker, "st", "static", instance="a", session_ms=15000)
    b = Member(gbroker, "st", "static", instance="b", session_ms=15000)
    try:
        wait_until(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2, 30, "two static members")
        a_parts = a.assignment()
        b_events = len(b.snapshot())
        # A dies and comes back with the same instance id, well within its
        # session timeout: it gets its partitions back and B never rebalances.
        a.kill()
        a2 = Member(gbroker, "st", "static", instance="a", session_ms=15000)
        wait_until(lambda: a2.assignment() == a_parts, 20, "the restarted member's old partitions")
        produce(gbroker, "st", 4, 5)
        wait_until(lambda: len(a2.messages()) + len(b.messages()) >= 20, 20, "messages to both")
        later = [e["ev"] for e in b.snapshot()[b_events:]]
        assert "revoked" not in later and "assigned" not in later, later
        a = a2
    finally:
        a.stop()
        b.stop()
