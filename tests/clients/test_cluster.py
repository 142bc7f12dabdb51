"""A three-node cluster of real `sluice` processes on loopback, seen through
librdkafka: brokers, RF=3 topics, the controller quorum losing one and two
voters (kill -9), fencing of a dead broker, restarts, and bad starts."""
import contextlib
import os
import tempfile
import time

import pytest
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port, own_answer, wait_for

SESSION_MS = 3000


def admin(node):
    return AdminClient({"bootstrap.servers": node.bootstrap, "log_level": 0})


def metadata(node):
    return admin(node).list_topics(timeout=10)


def seen_by(node, topic):
    """`node`'s own Metadata answer once it lists `topic`, else None."""
    md = own_answer(node)
    return md if md is not None and topic in md.topics else None


def create(node, name, partitions=3, rf=3, timeout=20):
    a = admin(node)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)],
                         request_timeout=timeout)
    fs[name].result(timeout=timeout + 5)


class Cluster:
    def __init__(self, root, n=3, binary=None):
        self.root = root
        ports = [(free_port(), free_port()) for _ in range(n)]
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.nodes = []
        for i, (client, _) in enumerate(ports):
            data = os.path.join(root, f"node-{i + 1}")
            os.makedirs(data)
            self.nodes.append(Broker(data, client, self.settings(i + 1), cores=1, binary=binary))

    def settings(self, node_id, voters=None):
        return [
            f"node.id={node_id}",
            f"controller.quorum.voters={voters or self.voters}",
            "default.replication.factor=3",
            "offsets.topic.num.partitions=3",
            f"broker.session.timeout.ms={SESSION_MS}",
            "broker.heartbeat.interval.ms=500",
            "sluice.controller.write.timeout.ms=5000",
            "num.partitions=1",
        ]

    def start(self, nodes=None):
        nodes = nodes or self.nodes
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            n.wait_listening()

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def live(self):
        return [n for n in self.nodes if n.proc is not None]

    def stop(self):
        for n in self.nodes:
            if n.proc is not None:
                n.kill9()


@contextlib.contextmanager
def running_cluster(extra=(), binary=None):
    """Three nodes with `extra` settings each (of `binary`, the release
    broker unless named), started and registered; all killed on the way
    out."""
    with tempfile.TemporaryDirectory() as root:
        c = Cluster(root, binary=binary)
        for n in c.nodes:
            n.extra += list(extra)
        c.start()
        try:
            wait_for("three live brokers", lambda: len(metadata(c.node(1)).brokers) == 3)
            yield c
        finally:
            c.stop()


@pytest.fixture
def cluster():
    with running_cluster() as c:
        yield c


def topic_view(md, name):
    return {p: (x.leader, sorted(x.replicas), sorted(x.isrs)) for p, x in md.topics[name].partitions.items()}


def test_three_brokers_and_rf3_topics_are_seen_through_every_broker(cluster):
    create(cluster.node(1), "rf3", partitions=6)
    for n in cluster.nodes:
        md = wait_for("the topic on every broker", lambda: seen_by(n, "rf3"))
        assert sorted(md.brokers) == [1, 2, 3]
        assert md.controller_id in (1, 2, 3)
        view = topic_view(md, "rf3")
        assert len(view) == 6
        for leader, replicas, isr in view.values():
            assert replicas == [1, 2, 3] and isr == [1, 2, 3] and leader in (1, 2, 3)
        # Leaders are spread over the brokers.
        assert {v[0] for v in view.values()} == {1, 2, 3}
    # A replication factor above the live brokers is refused.
    with pytest.raises(KafkaException) as e:
        create(cluster.node(2), "rf4", rf=4)
    assert "INVALID_REPLICATION_FACTOR" in str(e.value)


def test_the_quorum_survives_one_voter_refuses_changes_without_a_majority_and_catches_up(cluster):
    create(cluster.node(1), "before")
    ctl = metadata(cluster.node(1)).controller_id
    cluster.node(ctl).kill9()
    rest = cluster.live()
    new = wait_for("a new controller",
                   lambda: (lambda c: c not in (ctl, -1) and c)(metadata(rest[0]).controller_id))
    assert new != ctl
    # Metadata changes go on through either survivor.
    create(rest[1], "one-down", rf=2)
    # Lose a second voter: reads still work, changes are refused.
    last = rest[1] if rest[1].port != cluster.node(new).port else rest[0]
    cluster.node(new).kill9()
    md = metadata(last)
    assert {"before", "one-down"} <= set(md.topics)
    # Without a majority no controller is elected: Metadata names none, and
    # the client gives up on the change (librdkafka sends admin requests to
    # the controller only).
    wait_for("no controller", lambda: metadata(last).controller_id == -1)
    with pytest.raises(KafkaException) as e:
        create(last, "no-majority", rf=1, timeout=8)
    assert "controller" in str(e.value).lower(), e.value
    assert "no-majority" not in metadata(last).topics
    # Bring both back: they catch up with what happened while they were down.
    cluster.start([cluster.node(ctl), cluster.node(new)])
    # Three replicas need three live brokers: each node's own view lists
    # them (a controller is named as soon as one is elected, before the
    # restarted brokers have registered again).
    for i, n in enumerate(cluster.nodes):
        wait_for(f"node {i + 1} sees three live brokers",
                 lambda: (lambda m: m is not None and sorted(m.brokers) == [1, 2, 3])(own_answer(n)))
    create(cluster.node(ctl), "after", rf=3)
    for n in cluster.nodes:
        wait_for(f"node {n.port} sees every topic",
                 lambda: {"before", "one-down", "after"} <= set(metadata(n).topics))


def test_a_dead_brokers_partitions_get_new_leaders_and_it_rejoins_after_restart():
    # Fencing by the session alone: a dead process is otherwise found
    # sooner (the next test).
    with running_cluster(["sluice.broker.fence.when.gone=false"]) as cluster:
        session_fencing_moves_a_dead_brokers_partitions(cluster)


def session_fencing_moves_a_dead_brokers_partitions(cluster):
    create(cluster.node(1), "moves", partitions=6)
    ctl = metadata(cluster.node(1)).controller_id
    victim = next(i for i in (1, 2, 3) if i != ctl)
    cluster.node(victim).kill9()
    killed = time.time()
    survivor = cluster.node(ctl)

    def moved():
        md = metadata(survivor)
        view = topic_view(md, "moves")
        return victim not in md.brokers and all(
            leader != victim and victim not in isr for leader, _, isr in view.values()) and view

    view = wait_for("leaders off the dead broker", moved, timeout=SESSION_MS / 1000 + 15)
    assert time.time() - killed >= SESSION_MS / 1000 * 0.9, "fenced only after the session timeout"
    assert all(leader in (1, 2, 3) for leader, _, _ in view.values()), "every partition still has a leader"
    cluster.node(victim).start()
    wait_for("the restarted broker registers again", lambda: victim in metadata(survivor).brokers)


def test_a_killed_broker_is_fenced_when_its_address_refuses_connections_not_a_session_later():
    long_session_s = 60
    with running_cluster([f"broker.session.timeout.ms={long_session_s * 1000}"]) as cluster:
        create(cluster.node(1), "gone", partitions=6)
        ctl = metadata(cluster.node(1)).controller_id
        # A voter that is not the quorum's leader, and then the leader
        # itself: the new leader has seen the old one's connection close.
        for victim in (next(i for i in (1, 2, 3) if i != ctl), ctl):
            survivor = cluster.node(next(i for i in (1, 2, 3) if i != victim and cluster.node(i).proc))
            assert any(x.leader == victim for x in metadata(survivor).topics["gone"].partitions.values())
            cluster.node(victim).kill9()
            killed = time.time()

            def moved():
                md = metadata(survivor)
                return victim not in md.brokers and all(
                    x.leader not in (victim, -1) and victim not in x.isrs
                    for x in md.topics["gone"].partitions.values())

            wait_for("leaders off the killed broker", moved, timeout=long_session_s)
            assert time.time() - killed < long_session_s / 4, "fenced once it was gone, not by its session"
            cluster.node(victim).start()
            wait_for("the restarted broker registers again", lambda: victim in metadata(survivor).brokers)
            wait_for("back in every ISR", lambda: all(
                victim in x.isrs for x in metadata(survivor).topics["gone"].partitions.values()))
            # No pause: the restarted voter has no heartbeat connection from
            # the next victim yet, and finds it gone by its overdue heartbeat.


def test_every_node_restarts_with_the_same_metadata(cluster):
    create(cluster.node(2), "kept", partitions=4)
    before = metadata(cluster.node(1))
    want = (before.topics["kept"].partitions.keys(), topic_view(before, "kept"))
    ids = {str(topic_id(n, "kept")) for n in cluster.nodes}
    assert len(ids) == 1, ids
    for n in cluster.nodes:
        n.stop()
    cluster.start()
    md = wait_for("metadata after restart", lambda: "kept" in metadata(cluster.node(3)).topics
                  and metadata(cluster.node(3)))
    assert md.topics["kept"].partitions.keys() == want[0]
    assert {p: v[1] for p, v in topic_view(md, "kept").items()} == {p: v[1] for p, v in want[1].items()}
    assert {str(topic_id(n, "kept")) for n in cluster.nodes} == ids


def topic_id(node, name):
    a = admin(node)  # must outlive the future
    return a.describe_topics(TopicCollection([name]))[name].result(timeout=10).topic_id


def files_under(path):
    out = {}
    for d, _, fs in os.walk(path):
        for f in fs:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def refused_start(broker):
    broker.start(wait=False)
    code = broker.proc.wait(timeout=30)
    broker.proc = None
    with open(broker.log_path, "rb") as f:
        return code, f.read().decode(errors="replace").strip().splitlines()[-1]


def test_bad_starts_are_refused_with_a_clear_message_and_write_nothing(cluster):
    node = cluster.node(3)
    node.stop()
    before = files_under(os.path.join(node.data_dir, "meta"))
    good = list(node.extra)
    # Another cluster's id.
    node.extra = good + ["cluster.id=someone-else"]
    code, last = refused_start(node)
    assert code != 0 and "belongs to cluster" in last, last
    # A voter list that does not match the quorum the directory belongs to.
    node.extra = cluster.settings(3, voters=cluster.voters.rsplit(",", 1)[0] + f",3@127.0.0.1:{free_port()}")
    code, last = refused_start(node)
    assert code != 0 and "controller quorum of voters" in last, last
    assert files_under(os.path.join(node.data_dir, "meta")) == before, "nothing written"
    node.extra = good
    node.start()
    # A second process with a live node's id (and so its controller address).
    with tempfile.TemporaryDirectory() as other:
        dup = Broker(other, free_port(), cluster.settings(1), cores=1)
        code, last = refused_start(dup)
        assert code != 0 and "controller listener" in last, last
        assert not os.path.exists(os.path.join(other, "meta")), "nothing written"
    # A node that is not in the voter list.
    with tempfile.TemporaryDirectory() as other:
        stray = Broker(other, free_port(), cluster.settings(7), cores=1)
        code, last = refused_start(stray)
        assert code == 2 and "not in the voter list" in last, last


def test_a_paused_broker_is_fenced_and_unfenced_when_it_heartbeats_again(cluster):
    import signal
    ctl = metadata(cluster.node(1)).controller_id
    paused = cluster.node(next(i for i in (1, 2, 3) if i != ctl))
    observer = cluster.node(ctl)
    node_id = cluster.nodes.index(paused) + 1
    paused.proc.send_signal(signal.SIGSTOP)
    t0 = time.time()
    try:
        wait_for("the paused broker fenced", lambda: node_id not in metadata(observer).brokers,
                 timeout=SESSION_MS / 1000 + 10)
        # Its connections stay open and its address takes connections: only
        # the session fences a paused process.
        assert time.time() - t0 >= SESSION_MS / 1000 * 0.9, "fenced by the session"
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    wait_for("the broker unfenced after it resumes", lambda: node_id in metadata(observer).brokers, timeout=10)


def test_producers_reach_each_partition_leader_and_groups_find_their_coordinator(cluster):
    from confluent_kafka import Consumer, Producer, TopicPartition
    create(cluster.node(1), "work", partitions=6)
    boot = ",".join(n.bootstrap for n in cluster.nodes)
    p = Producer({"bootstrap.servers": boot, "log_level": 0})
    for i in range(60):
        p.produce("work", value=str(i).encode(), partition=i % 6)
    assert p.flush(30) == 0
    groups = {}
    for gid in ("g-a", "g-b", "g-c", "g-d"):
        c = Consumer({"bootstrap.servers": cluster.node(1).bootstrap, "group.id": gid, "log_level": 0,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe(["work"])
        got = []
        deadline = time.time() + 60
        while len(got) < 60 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        assert len(got) == 60, f"{gid}: {len(got)} of 60"
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition("work", i) for i in range(6)], timeout=10)
        assert [tp.offset for tp in committed] == [10] * 6
        c.close()
        a = admin(cluster.node(3))
        groups[gid] = a.describe_consumer_groups([gid])[gid].result(timeout=10).coordinator.id
    # Coordinators are the leaders of the groups' offsets partitions, spread
    # over the brokers, whichever broker the consumers bootstrapped from.
    assert set(groups.values()) <= {1, 2, 3}
    assert len(set(groups.values())) > 1, groups


def test_a_clean_shutdown_hands_leadership_over_before_the_session_runs_out(cluster):
    create(cluster.node(1), "handover", partitions=6)
    ctl = metadata(cluster.node(1)).controller_id
    leaving_id = next(i for i in (1, 2, 3) if i != ctl)
    observer = cluster.node(ctl)
    assert any(x.leader == leaving_id for x in metadata(observer).topics["handover"].partitions.values())
    t0 = time.time()
    cluster.node(leaving_id).stop()
    view = wait_for("leaders off the stopped broker", lambda: all(
        x.leader not in (leaving_id, -1) for x in metadata(observer).topics["handover"].partitions.values())
        and metadata(observer), timeout=SESSION_MS / 1000)
    assert time.time() - t0 < SESSION_MS / 1000, "moved by the controlled shutdown, not by the session timeout"
    assert leaving_id not in view.brokers
    # It comes back, registered and serving.
    cluster.node(leaving_id).start()
    wait_for("the broker back", lambda: leaving_id in metadata(observer).brokers)


def test_a_broker_only_node_follows_the_quorum_and_takes_partitions(cluster):
    with tempfile.TemporaryDirectory() as data:
        settings = [s for s in cluster.settings(4) if not s.startswith("node.id")] + [
            "node.id=4", "process.roles=broker"]
        extra = Broker(data, free_port(), settings, cores=1)
        extra.start()
        try:
            wait_for("four brokers", lambda: sorted(metadata(cluster.node(1)).brokers) == [1, 2, 3, 4])
            # It reads the cluster's metadata, and writes through the leader.
            create(extra, "with-four", partitions=8)
            md = wait_for("the topic seen by the broker-only node", lambda: seen_by(extra, "with-four"))
            assert sorted(md.brokers) == [1, 2, 3, 4]
            assert md.controller_id in (1, 2, 3), "controllers are the voters"
            assert any(x.leader == 4 for x in md.topics["with-four"].partitions.values())
            assert os.path.exists(os.path.join(data, "meta", "observer-image.json"))
            assert not os.path.exists(os.path.join(data, "meta", "quorum")), "not a Raft member"
            extra.kill9()
            wait_for("the broker-only node fenced", lambda: 4 not in metadata(cluster.node(1)).brokers,
                     timeout=SESSION_MS / 1000 + 10)
        finally:
            if extra.proc is not None:
                extra.kill9()
