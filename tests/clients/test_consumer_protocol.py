"""Consumer groups of the KIP-848 protocol (`group.protocol=consumer`) with
librdkafka (confluent-kafka) members as separate processes: the coordinator
assigns, members move one partition at a time, and nobody else stops.

The broker heartbeats members every 500 ms and expires a session after
6 s, so takeovers can be timed."""
import json
import threading
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupType, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from conftest import create, free_port, running_broker, wait_for
from test_cli import cli
from test_groups import Member, wait_until
from test_ops import get, sample

HEARTBEAT_MS = 500
SESSION_MS = 6000
SETTINGS = [f"group.consumer.heartbeat.interval.ms={HEARTBEAT_MS}",
            f"group.consumer.session.timeout.ms={SESSION_MS}", "group.initial.rebalance.delay.ms=0"]


@pytest.fixture
def kbroker():
    with running_broker(SETTINGS) as b:
        yield b


class Steady:
    """Produces to every partition in turn, one record every `every` s,
    until stopped; knows the last offset delivered per partition."""

    def __init__(self, broker, topic, partitions, every=0.005):
        self.p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})
        self.topic, self.partitions, self.every = topic, partitions, every
        self.last = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _delivered(self, err, msg):
        if err is None:
            self.last[msg.partition()] = max(msg.offset(), self.last.get(msg.partition(), -1))

    def _run(self):
        i = 0
        while not self.stopping.is_set():
            self.p.produce(self.topic, value=b"x%d" % i, partition=i % self.partitions, on_delivery=self._delivered)
            self.p.poll(0)
            i += 1
            time.sleep(self.every)
        assert self.p.flush(30) == 0

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=60)
        return {p: o + 1 for p, o in self.last.items()}


def ownership(member, end):
    """(partition, from, to) for each time `member` held a partition; one
    still held is held until `end`."""
    out, since = [], {}
    for e in member.snapshot():
        if e["ev"] == "assigned":
            for p in e["partitions"]:
                since.setdefault(p, e["t"])
        elif e["ev"] == "revoked":
            for p in e["partitions"]:
                if p in since:
                    out.append((p, since.pop(p), e["t"]))
    out.extend((p, t, end) for p, t in since.items())
    return out


def check_never_owned_twice(members, ends):
    """No partition was held by two members at the same moment (each
    member's holdings end at its entry of `ends`: when it was killed, or
    now)."""
    spans = [(p, a, b, i) for i, m in enumerate(members) for (p, a, b) in ownership(m, ends[i])]
    for (p, a, b, i) in spans:
        for (q, c, d, j) in spans:
            if i < j and p == q:
                assert b <= c or d <= a, f"partition {p}: member {i} held it {a:.3f}-{b:.3f}, member {j} {c:.3f}-{d:.3f}"


def longest_gap(member, start, end):
    """The longest time between two messages `member` got within
    [start, end]."""
    ts = [e["t"] for e in member.snapshot() if e["ev"] == "msg" and start <= e["t"] <= end]
    ts = [start] + ts + [end]
    return max(b - a for a, b in zip(ts, ts[1:]))


def seen(members):
    return {(p, o) for m in members for (p, o) in m.messages()}


def test_members_share_partitions_and_move_them_without_stopping_the_others(kbroker):
    topic, group, parts = "kt", "kip848", 6
    create(kbroker, topic, parts)
    load = Steady(kbroker, topic, parts)
    ms = [Member(kbroker, topic, group, protocol="consumer") for _ in range(3)]
    ends = [None, None, None]
    everyone = list(ms)
    try:
        wait_until(lambda: all(len(m.assignment()) == 2 for m in ms)
                   and set().union(*[m.assignment() for m in ms]) == set(range(parts)),
                   30, "three members with two partitions each")
        time.sleep(2)

        # A clean leave: the other two take its partitions, one heartbeat
        # or two later, and never stop consuming their own.
        left = ms[2]
        left_parts = left.assignment()
        t_leave = time.time()
        left.stop()
        ends[2] = time.time()
        wait_until(lambda: all(len(m.assignment()) == 3 for m in ms[:2]), 30, "two members with three each")
        settle_s = time.time() - t_leave
        time.sleep(1)
        gaps = [longest_gap(m, t_leave, time.time()) for m in ms[:2]]
        print(f"leave: settled after {settle_s:.2f}s, longest gap of the others {max(gaps):.3f}s")
        assert settle_s < 4 * HEARTBEAT_MS / 1000 + 2, settle_s
        assert max(gaps) < 2.0, gaps
        left_commits = left.last_committed()
        for p in left_parts:
            later = [o for m in ms[:2] for (q, o) in m.messages() if q == p and o >= left_commits.get(p, 0)]
            assert later and min(later) == left_commits[p], f"partition {p} resumed at {min(later)}"

        # A crash: after the session timeout the survivor owns everything.
        crashed, survivor = ms[1], ms[0]
        crashed_parts = crashed.assignment()
        t_kill = time.time()
        crashed.kill()
        ends[1] = time.time()
        crashed_commits = crashed.last_committed()
        wait_until(lambda: survivor.assignment() == set(range(parts)), 30, "the survivor owning all six")
        takeover_s = time.time() - t_kill
        print(f"crash: taken over after {takeover_s:.2f}s")
        assert SESSION_MS / 1000 - 1 <= takeover_s <= SESSION_MS / 1000 + 5, takeover_s
        assert longest_gap(survivor, t_kill, time.time()) < 2.0

        end = load.stop()
        wait_until(lambda: all((p, o) in seen(everyone) for p in range(parts) for o in range(end.get(p, 0))),
                   30, "every record consumed")
        ends[0] = time.time()
        check_never_owned_twice(everyone, ends)
        for p in crashed_parts:
            # It resumes at the killed member's last commit: the last one it
            # reported, or one past the last record it read if the kill
            # came between that commit and its report.
            read = max(o for (q, o) in crashed.messages() if q == p)
            after = [o for (q, o) in survivor.messages() if q == p and o >= crashed_commits.get(p, 0)]
            assert crashed_commits[p] <= min(after) <= read + 1, f"partition {p} resumed at {min(after)}"
        # Nothing twice, except what the killed member read but had not
        # committed.
        everything = [x for m in everyone for x in m.messages()]
        dupes = {x for x in everything if everything.count(x) > 1}
        assert all(p in crashed_parts and o >= crashed_commits[p] for (p, o) in dupes), dupes
    finally:
        if not load.stopping.is_set():
            load.stop()
        ms[0].stop()


def test_a_static_member_that_comes_back_gets_its_partitions_and_nobody_moves(kbroker):
    create(kbroker, "st", 4)
    a = Member(kbroker, "st", "static848", instance="a", protocol="consumer")
    b = Member(kbroker, "st", "static848", instance="b", protocol="consumer")
    try:
        wait_until(lambda: len(a.assignment()) == 2 and len(b.assignment()) == 2, 30, "two static members")
        a_parts = a.assignment()
        b_events = len(b.snapshot())
        # A closes (it leaves as a static member, keeping its place) and
        # its instance comes back as a new process well within the session.
        a.stop()
        a = Member(kbroker, "st", "static848", instance="a", protocol="consumer")
        wait_until(lambda: a.assignment() == a_parts, 20, "the instance's old partitions")
        later = [e["ev"] for e in b.snapshot()[b_events:]]
        assert "revoked" not in later and "assigned" not in later, later
    finally:
        a.stop()
        b.stop()


def test_a_pattern_subscription_picks_up_a_new_matching_topic(kbroker):
    create(kbroker, "rx-a", 2)
    create(kbroker, "other", 2)
    m = Member(kbroker, "^rx-.*", "pattern848", protocol="consumer")
    try:
        wait_until(lambda: m.assignment() == {0, 1}, 30, "rx-a's partitions")
        create(kbroker, "rx-b", 3)
        producer = Producer({"bootstrap.servers": kbroker.bootstrap})
        producer.produce("rx-b", b"hello", partition=2)
        assert producer.flush(10) == 0
        # Both topics' partitions now (indexes 0-2 of rx-b join 0-1 of rx-a).
        wait_until(lambda: sum(1 for e in m.snapshot() if e["ev"] == "assigned"
                               for _ in e["partitions"]) == 5, 30, "rx-b's partitions too")
        wait_until(lambda: (2, 0) in m.messages(), 30, "rx-b's record")
    finally:
        m.stop()


def test_admin_sees_the_group_and_a_classic_member_is_refused():
    port = free_port()
    with running_broker(SETTINGS + [f"sluice.admin.listen=127.0.0.1:{port}"]) as kbroker:
        admin_checks(kbroker, port)


def admin_checks(kbroker, port):
    create(kbroker, "ad", 3)
    m = Member(kbroker, "ad", "admin848", protocol="consumer")
    try:
        wait_until(lambda: m.assignment() == {0, 1, 2}, 30, "the member's partitions")
        a = AdminClient({"bootstrap.servers": kbroker.bootstrap})
        listed = a.list_consumer_groups(types={ConsumerGroupType.CONSUMER}).result(timeout=10)
        assert [g.group_id for g in listed.valid] == ["admin848"]
        assert listed.valid[0].type == ConsumerGroupType.CONSUMER
        assert listed.valid[0].state == ConsumerGroupState.STABLE
        classic = a.list_consumer_groups(types={ConsumerGroupType.CLASSIC}).result(timeout=10)
        assert "admin848" not in [g.group_id for g in classic.valid]
        d = a.describe_consumer_groups(["admin848"])["admin848"].result(timeout=10)
        assert d.type == ConsumerGroupType.CONSUMER
        assert d.state == ConsumerGroupState.STABLE
        assert len(d.members) == 1
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1, 2]
        assert d.members[0].target_assignment is not None
        # The CLI shows the protocol, the epochs and each member's target.
        rc, out, err = cli(kbroker, "group", "describe", "admin848", "--json")
        assert rc == 0, err
        shown = json.loads(out)
        assert shown["protocol"] == "consumer" and shown["state"] == "Stable" and shown["assignor"] == "uniform"
        assert shown["group_epoch"] == shown["assignment_epoch"] >= 1
        [member] = shown["member_assignments"]
        assert sorted(member["assigned"]) == sorted(member["target"]) == ["ad-0", "ad-1", "ad-2"]
        rc, out, err = cli(kbroker, "group", "list", "--json")
        assert {"group": "admin848", "protocol": "consumer", "state": "Stable", "members": 1} in json.loads(out)
        status, metrics = get(port, "/metrics")
        assert status == 200
        assert sample(metrics, "sluice_consumer_group_epoch", group="admin848") == shown["group_epoch"]
        assert sample(metrics, "sluice_consumer_group_assignment_epoch", group="admin848") == shown["group_epoch"]
        assert sample(metrics, "sluice_consumer_group_members", group="admin848") == 1
        assert sample(metrics, "sluice_consumer_groups", state="Stable") == 1

        # A classic member cannot join a consumer-protocol group.
        c = Consumer({"bootstrap.servers": kbroker.bootstrap, "group.id": "admin848", "session.timeout.ms": 6000})
        c.subscribe(["ad"])
        errors = []
        deadline = time.time() + 20
        while not errors and time.time() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is not None:
                errors.append(msg.error())
        c.close()
        assert errors and errors[0].code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL, errors
        # The empty group can be deleted once its member left.
        m.stop()
        wait_for("the group empty", lambda: a.describe_consumer_groups(["admin848"])["admin848"]
                 .result(timeout=10).state == ConsumerGroupState.EMPTY)
        a.delete_consumer_groups(["admin848"])["admin848"].result(timeout=10)
        gone = a.list_consumer_groups().result(timeout=10)
        assert "admin848" not in [g.group_id for g in gone.valid]
    finally:
        if m.proc.poll() is None:
            m.stop()


def test_the_group_survives_a_coordinator_restart_without_a_rebalance(kbroker):
    topic, parts = "rs848", 4
    create(kbroker, topic, parts)
    load = Steady(kbroker, topic, parts, every=0.01)
    ms = [Member(kbroker, topic, "restart848", protocol="consumer") for _ in range(2)]
    try:
        wait_until(lambda: all(len(m.assignment()) == 2 for m in ms), 30, "two members with two each")
        time.sleep(1)
        held = [m.assignment() for m in ms]
        marks = [len(m.snapshot()) for m in ms]
        a = AdminClient({"bootstrap.servers": kbroker.bootstrap})
        epoch = a.describe_consumer_groups(["restart848"])["restart848"].result(timeout=10)
        kbroker.restart()
        end = load.stop()
        wait_until(lambda: all((p, o) in seen(ms) for p in range(parts) for o in range(end.get(p, 0))),
                   60, "every record consumed after the restart")
        # Same members, same partitions, no revocation: the group's state
        # was replayed from __consumer_offsets.
        for m, h, mark in zip(ms, held, marks):
            assert m.assignment() == h
            later = [e["ev"] for e in m.snapshot()[mark:]]
            assert "revoked" not in later and "assigned" not in later, later
        a = AdminClient({"bootstrap.servers": kbroker.bootstrap})
        after = a.describe_consumer_groups(["restart848"])["restart848"].result(timeout=10)
        assert {x.member_id for x in after.members} == {x.member_id for x in epoch.members}
    finally:
        if not load.stopping.is_set():
            load.stop()
        for m in ms:
            m.stop()


def test_the_group_carries_on_when_its_coordinators_broker_is_killed():
    """Three nodes, `__consumer_offsets` on all three: the group's
    coordinator is killed (kill -9); the new one replays the group, and
    its members keep their partitions, epochs and commits."""
    from types import SimpleNamespace

    from test_cluster import admin as node_admin
    from test_cluster import create as create_rf3
    from test_cluster import running_cluster

    with running_cluster(SETTINGS) as cluster:
        topic, parts = "ck848", 4
        create_rf3(cluster.node(1), topic, partitions=parts)
        boot = SimpleNamespace(bootstrap=",".join(n.bootstrap for n in cluster.nodes))
        load = Steady(boot, topic, parts, every=0.01)
        ms = [Member(boot, topic, "cluster848", protocol="consumer") for _ in range(2)]
        try:
            wait_until(lambda: all(len(m.assignment()) == 2 for m in ms), 60, "two members with two each")
            time.sleep(1)
            a = node_admin(cluster.node(1))  # must outlive its futures
            before = a.describe_consumer_groups(["cluster848"])["cluster848"].result(timeout=10)
            coordinator = before.coordinator.id
            held = [m.assignment() for m in ms]
            marks = [len(m.snapshot()) for m in ms]
            cluster.node(coordinator).kill9()
            time.sleep(2)
            end = load.stop()
            wait_until(lambda: all((p, o) in seen(ms) for p in range(parts) for o in range(end.get(p, 0))),
                       90, "every record consumed after the coordinator's kill")
            live = next(n for n in cluster.nodes if n.proc is not None)
            a = node_admin(live)
            after = a.describe_consumer_groups(["cluster848"])["cluster848"].result(timeout=10)
            assert after.coordinator.id != coordinator
            assert {x.member_id for x in after.members} == {x.member_id for x in before.members}
            for m, h, mark in zip(ms, held, marks):
                assert m.assignment() == h
                later = [e["ev"] for e in m.snapshot()[mark:]]
                assert "revoked" not in later and "assigned" not in later, later
            # Commits kept: nothing was read twice.
            everything = [x for m in ms for x in m.messages()]
            assert len(everything) == len(set(everything))
        finally:
            if not load.stopping.is_set():
                load.stop()
            for m in ms:
                m.stop()
