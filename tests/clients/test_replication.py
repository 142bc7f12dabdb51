"""Partition replication across three real `sluice` processes, seen through
librdkafka and kcat: acks=all under kill -9 of the leader, the ISR falling
below min.insync.replicas, a follower truncating an old epoch's tail,
controlled shutdown, and committed offsets surviving their coordinator."""
import glob
import json
import hashlib
import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BINARY, SWITCHED_BINARY
from history import History
from test_cluster import metadata, running_cluster, wait_for

LAG_MS = 4000


@pytest.fixture
def cluster():
    # Every follower write goes past the page cache (ADR 0017), however
    # small, so these tests cover that path.
    with running_cluster([f"replica.lag.time.max.ms={LAG_MS}", "replica.fetch.backoff.ms=200",
                          "sluice.replica.direct.writes.min.bytes=0"]) as c:
        yield c


def create(node, name, partitions=1, rf=3, configs=None):
    a = AdminClient({"bootstrap.servers": node.bootstrap, "log_level": 0})
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                   config=configs or {})], request_timeout=20)
    fs[name].result(timeout=25)
    def led():
        # The answering broker may not list the new topic yet.
        t = metadata(node).topics.get(name)
        return t is not None and all(p.leader >= 0 for p in t.partitions.values())
    wait_for("leaders everywhere", led)


def partition_view(node, topic, p=0):
    x = metadata(node).topics[topic].partitions[p]
    return x.leader, sorted(x.replicas), sorted(x.isrs)


def bootstrap(cluster):
    return ",".join(n.bootstrap for n in cluster.live())


def producer(cluster, **extra):
    conf = {"bootstrap.servers": bootstrap(cluster), "acks": "all", "enable.idempotence": True,
            "linger.ms": 2, "log_level": 0, "message.timeout.ms": 60000}
    conf.update(extra)
    return Producer(conf)


class Recorder:
    """Delivery reports of one producer: value -> (partition, offset) for
    each acknowledged record, and the errors."""

    def __init__(self):
        self.acked = {}
        self.errors = []
        self.times = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            assert msg.value() not in self.acked, "one delivery report per record"
            self.acked[msg.value()] = (msg.partition(), msg.offset())
            self.times.append(time.time())


def drive(prod, topic, hist, seconds, at, action, rate=4000, idempotent=True, acks=-1):
    """Produces numbered values to partition 0 at about `rate` a second for
    `seconds`, recording each send in `hist`, running `action` once `at`
    seconds in; returns how many."""
    start, done, i = time.time(), False, 0
    while time.time() - start < seconds:
        target = int((time.time() - start) * rate)
        while i < target:
            value = "v%07d" % i
            try:
                prod.produce(topic, value=value.encode(), partition=0,
                             on_delivery=hist.sender("producer", topic, 0, value, idempotent, acks))
            except BufferError:
                break
            i += 1
        prod.poll(0.005)
        if not done and time.time() - start > at:
            action()
            done = True
    return i


def read_partition(cluster, topic, p, until_offset, timeout=30):
    """Every record of `topic`-`p` from offset 0 to `until_offset`
    (exclusive) as [(offset, value)], through a consumer that reads only
    below the high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap(cluster), "group.id": f"reader-{time.time()}",
                  "enable.auto.commit": False, "log_level": 0})
    c.assign([TopicPartition(topic, p, 0)])
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline and (not out or out[-1][0] < until_offset - 1):
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append((m.offset(), m.value()))
    c.close()
    return out


def batches_end(path):
    """Where the record batches of a segment end, as `sluice log dump`
    walks them: a follower's direct writes leave zeros past its last batch
    until the segment rolls or closes (ADR 0017), and those are not part of
    its log."""
    out = subprocess.run([BINARY, "log", "dump", "--json", path], capture_output=True, text=True, check=True)
    batches = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return batches[-1]["position"] + batches[-1]["size"] if batches else 0


def segment_digests(cluster, topic, p=0):
    out = {}
    for n in cluster.nodes:
        h = hashlib.sha256()
        for f in sorted(glob.glob(os.path.join(n.data_dir, f"{topic}-{p}", "*.log"))):
            with open(f, "rb") as fh:
                data = fh.read()
            end = batches_end(f)
            assert not any(data[end:]), f"{f}: bytes other than padding after its last batch"
            h.update(data[:end])
        out[n.port] = h.hexdigest()
    return out


def test_kill9_of_the_leader_under_acks_all_loses_no_acknowledged_record(cluster, tmp_path):
    create(cluster.node(1), "orders", configs={"min.insync.replicas": "2"})
    leader, _, isr = partition_view(cluster.node(1), "orders")
    assert len(isr) == 3
    hist = History(str(tmp_path / "history.jsonl"))
    prod = producer(cluster)
    killed_at = []
    i = drive(prod, "orders", hist, seconds=8, at=2,
              action=lambda: (cluster.node(leader).kill9(), killed_at.append(time.time() * 1000)))
    assert prod.flush(60) == 0
    sends = [op for op in hist.ops if op["op"] == "send"]
    assert len(sends) == i and all(op["outcome"] == "ok" for op in sends)
    assert any(op["end_ms"] > killed_at[0] for op in sends), "writes go on after the leader died"
    survivor = cluster.live()[0]
    new_leader, _, _ = partition_view(survivor, "orders")
    assert new_leader not in (leader, -1)
    hist.drain(bootstrap(cluster), "orders", 1)
    report, anomalies = hist.check()
    assert anomalies == 0, report["anomalies"][:5]
    assert report["acknowledged"] == i and not report["counts"]
    # The killed broker comes back as a follower, rejoins the ISR and ends
    # byte-identical to the leader.
    cluster.node(leader).start()
    wait_for("the old leader back in the ISR",
             lambda: partition_view(survivor, "orders")[2] == [1, 2, 3], timeout=30)
    wait_for("identical replicas", lambda: len(set(segment_digests(cluster, "orders").values())) == 1)


def test_isr_below_min_refuses_acks_all_accepts_acks_1_and_holds_the_high_watermark(cluster):
    create(cluster.node(1), "strict", rf=2, configs={"min.insync.replicas": "2"})
    leader, replicas, _ = partition_view(cluster.node(1), "strict")
    follower = next(r for r in replicas if r != leader)
    prod = producer(cluster)
    rec = Recorder()
    for i in range(10):
        prod.produce("strict", value=b"before-%d" % i, partition=0, on_delivery=rec)
    assert prod.flush(20) == 0 and len(rec.acked) == 10
    cluster.node(follower).kill9()
    alive = cluster.node(leader)
    wait_for("the ISR down to the leader", lambda: partition_view(alive, "strict")[2] == [leader], timeout=30)
    # acks=all is refused before anything is appended.
    strict = producer(cluster, **{"message.timeout.ms": 3000, "retries": 0, "enable.idempotence": False})
    failed = Recorder()
    strict.produce("strict", value=b"refused", partition=0, on_delivery=failed)
    strict.flush(10)
    assert not failed.acked
    assert [e.code() for e in failed.errors] == [KafkaError.NOT_ENOUGH_REPLICAS], failed.errors
    # acks=1 is accepted, but the high watermark stays where the ISR had it.
    loose = producer(cluster, acks="1", **{"enable.idempotence": False})
    ones = Recorder()
    for i in range(5):
        loose.produce("strict", value=b"acks1-%d" % i, partition=0, on_delivery=ones)
    assert loose.flush(10) == 0 and len(ones.acked) == 5
    c = Consumer({"bootstrap.servers": alive.bootstrap, "group.id": "hw", "log_level": 0})
    low, high = c.get_watermark_offsets(TopicPartition("strict", 0), timeout=10)
    assert (low, high) == (0, 10), "records past the high watermark are not visible"
    # kcat (librdkafka 2.0.2) sees the same.
    out = subprocess.run(["kcat", "-b", alive.bootstrap, "-C", "-t", "strict", "-p", "0", "-o", "beginning",
                          "-e", "-q", "-f", "%s\n"], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == [f"before-{i}" for i in range(10)]
    # The follower returns: it catches up, rejoins, and the high watermark
    # moves past the acks=1 records.
    cluster.node(follower).start()
    wait_for("the follower back in the ISR",
             lambda: partition_view(alive, "strict")[2] == sorted([leader, follower]), timeout=30)
    wait_for("the high watermark moving on",
             lambda: c.get_watermark_offsets(TopicPartition("strict", 0), timeout=10)[1] == 15)
    c.close()


def test_a_follower_with_an_old_epochs_tail_truncates_and_matches_the_new_leader(cluster):
    create(cluster.node(1), "diverge")
    leader, replicas, _ = partition_view(cluster.node(1), "diverge")
    followers = [r for r in replicas if r != leader]
    prod = producer(cluster, acks="1", **{"enable.idempotence": False})
    rec = Recorder()
    for i in range(20):
        prod.produce("diverge", value=b"replicated-%d" % i, partition=0, on_delivery=rec)
    assert prod.flush(20) == 0
    wait_for("followers caught up", lambda: len(set(segment_digests(cluster, "diverge").values())) == 1)
    # Followers paused: the leader takes acks=1 writes no one else gets.
    for f in followers:
        cluster.node(f).proc.send_signal(signal.SIGSTOP)
    # Past replica.fetch.wait.max.ms, the fetches they had sent are
    # answered (empty) and they send no more.
    time.sleep(1.5)
    lone = Producer({"bootstrap.servers": cluster.node(leader).bootstrap, "acks": "1", "log_level": 0})
    for i in range(7):
        lone.produce("diverge", value=b"unreplicated-%d" % i, partition=0)
    assert lone.flush(10) == 0
    cluster.node(leader).kill9()
    for f in followers:
        cluster.node(f).proc.send_signal(signal.SIGCONT)
    survivor = cluster.node(followers[0])
    wait_for("a new leader", lambda: partition_view(survivor, "diverge")[0] in followers, timeout=40)
    again = Recorder()
    prod2 = producer(cluster)
    for i in range(10):
        prod2.produce("diverge", value=b"new-epoch-%d" % i, partition=0, on_delivery=again)
    assert prod2.flush(30) == 0 and len(again.acked) == 10
    cluster.node(leader).start()
    wait_for("the old leader back in the ISR",
             lambda: partition_view(survivor, "diverge")[2] == [1, 2, 3], timeout=30)
    wait_for("identical replicas", lambda: len(set(segment_digests(cluster, "diverge").values())) == 1)
    with open(cluster.node(leader).log_path, "rb") as fh:
        assert b"truncated a diverging tail" in fh.read()
    values = [v for _, v in read_partition(cluster, "diverge", 0, 30)]
    assert values == [b"replicated-%d" % i for i in range(20)] + [b"new-epoch-%d" % i for i in range(10)]


def test_sigterm_of_a_leader_moves_leadership_with_only_retriable_errors(cluster, tmp_path):
    create(cluster.node(1), "calm", configs={"min.insync.replicas": "2"})
    leader, _, _ = partition_view(cluster.node(1), "calm")
    hist = History(str(tmp_path / "history.jsonl"))
    prod = producer(cluster)
    i = drive(prod, "calm", hist, seconds=6, at=2, action=lambda: cluster.node(leader).stop())
    assert prod.flush(30) == 0
    sends = [op for op in hist.ops if op["op"] == "send"]
    assert len(sends) == i and all(op["outcome"] == "ok" for op in sends), "only retriable errors"
    other = cluster.live()[0]
    assert partition_view(other, "calm")[0] not in (leader, -1)
    hist.drain(bootstrap(cluster), "calm", 1)
    report, anomalies = hist.check()
    assert anomalies == 0 and report["acknowledged"] == i, report["anomalies"][:5]


def test_committed_offsets_survive_the_loss_of_the_coordinators_broker(cluster):
    create(cluster.node(1), "work", partitions=2)
    prod = producer(cluster)
    for i in range(100):
        prod.produce("work", value=b"w%d" % i, partition=i % 2)
    assert prod.flush(20) == 0
    conf = {"bootstrap.servers": bootstrap(cluster), "group.id": "survivors", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "log_level": 0}
    c = Consumer(conf)
    c.assign([TopicPartition("work", 0, 0), TopicPartition("work", 1, 0)])
    got = 0
    deadline = time.time() + 20
    while got < 60 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    c.commit(offsets=[TopicPartition("work", 0, 17), TopicPartition("work", 1, 23)], asynchronous=False)
    c.close()
    # The coordinator is the leader of the group's offsets partition.
    a = AdminClient({"bootstrap.servers": bootstrap(cluster), "log_level": 0})
    coord = a.describe_consumer_groups(["survivors"])["survivors"].result(timeout=10).coordinator.id
    cluster.node(coord).kill9()
    c2 = Consumer(dict(conf, **{"bootstrap.servers": bootstrap(cluster)}))
    committed = wait_for("committed offsets from the new coordinator", lambda: (
        lambda r: r if all(tp.offset >= 0 for tp in r) else None)(
        c2.committed([TopicPartition("work", 0), TopicPartition("work", 1)], timeout=5)), timeout=40)
    assert [(tp.partition, tp.offset) for tp in committed] == [(0, 17), (1, 23)]
    c2.close()


def test_the_checker_catches_a_broker_that_acknowledges_before_the_isr_has_the_batch(tmp_path):
    """The checker's own test against a broken broker: with
    `sluice.unsafe.ack.before.replication`, acks=all is answered once the
    leader wrote the batch; the leader dies before its followers fetch it,
    and the checker must report the acknowledged writes as lost."""
    assert os.path.exists(SWITCHED_BINARY), "scripts/test.sh builds the broker with its test switches"
    with running_cluster([f"replica.lag.time.max.ms={LAG_MS}", "sluice.unsafe.ack.before.replication=true"],
                         binary=SWITCHED_BINARY) as c:
        create(c.node(1), "early", configs={"min.insync.replicas": "2"})
        leader, replicas, _ = partition_view(c.node(1), "early")
        followers = [r for r in replicas if r != leader]
        hist = History(str(tmp_path / "history.jsonl"))
        prod = producer(c)
        for i in range(20):
            v = "replicated-%d" % i
            prod.produce("early", value=v.encode(), partition=0,
                         on_delivery=hist.sender("p", "early", 0, v, True, -1))
        assert prod.flush(20) == 0
        for f in followers:
            c.node(f).proc.send_signal(signal.SIGSTOP)
        time.sleep(1.5)
        # Not idempotent: a producer id would need the controller quorum,
        # and two of its three voters are paused.
        lone = Producer({"bootstrap.servers": c.node(leader).bootstrap, "acks": "all", "log_level": 0,
                         "enable.idempotence": False})
        for i in range(7):
            v = "early-%d" % i
            lone.produce("early", value=v.encode(), partition=0,
                         on_delivery=hist.sender("lone", "early", 0, v, False, -1))
        assert lone.flush(10) == 0
        c.node(leader).kill9()
        for f in followers:
            c.node(f).proc.send_signal(signal.SIGCONT)
        wait_for("a new leader", lambda: partition_view(c.node(followers[0]), "early")[0] in followers,
                 timeout=40)
        hist.drain(",".join(n.bootstrap for n in c.live()), "early", 1)
        report, anomalies = hist.check()
        assert report["counts"].get("lost_acked") == 7, report["counts"]
        assert anomalies >= 7
