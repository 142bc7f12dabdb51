"""Transactions with librdkafka (confluent-kafka): commit and abort,
read_committed consumers and the last stable offset, zombie fencing, and
the coordinator aborting a transaction its producer abandoned."""
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import create, running_broker, wait_for


def producer(broker, txn_id, **extra):
    conf = {"bootstrap.servers": broker.bootstrap, "transactional.id": txn_id, "linger.ms": 5}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def commit_one(broker, txn_id, topic, value):
    """One transaction of one record, committed, by a new producer."""
    p = producer(broker, txn_id)
    p.begin_transaction()
    p.produce(topic, value=value)
    p.commit_transaction(30)


def read(broker, topic, partitions, isolation, expected=None, wait=10.0):
    """Every record of `topic` from the start, as (partition, value), with
    the given isolation level; waits for `expected` records or `wait`
    seconds without a new one."""
    c = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "reader-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = []
    quiet_until = time.time() + wait
    while time.time() < quiet_until and (expected is None or len(out) < expected):
        m = c.poll(0.2)
        if m is None:
            continue
        assert m.error() is None, m.error()
        out.append((m.partition(), m.value().decode()))
        quiet_until = time.time() + wait
    c.close()
    return out


def aborted_then_open(broker, txn_id, topic, later_id):
    """A producer of `txn_id` with one transaction aborted ("aborted") and
    one left open ("open") in `topic`, and after them a record committed
    by `later_id` ("later"); returns the producer."""
    p = producer(broker, txn_id)
    p.begin_transaction()
    p.produce(topic, value="aborted")
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, value="open")
    p.flush(30)
    commit_one(broker, later_id, topic, "later")
    return p


def values(records):
    return sorted(v for _, v in records)


def test_committed_records_are_read_once_and_aborted_ones_never(broker):
    create(broker, "tx-out", 2)
    p = producer(broker, "tx-a")
    p.begin_transaction()
    for i in range(10):
        p.produce("tx-out", value=f"c1-{i}", partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce("tx-out", value=f"a-{i}", partition=i % 2)
    # librdkafka purges what it has not sent when aborting: flush first so
    # the aborted records are in the log.
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce("tx-out", value=f"c2-{i}", partition=i % 2)
    p.commit_transaction(30)

    committed = read(broker, "tx-out", 2, "read_committed", expected=15, wait=3)
    want = [f"c1-{i}" for i in range(10)] + [f"c2-{i}" for i in range(5)]
    assert values(committed) == sorted(want)
    for part in (0, 1):
        mine = [v for pp, v in committed if pp == part]
        assert mine == [v for v in [f"c1-{i}" for i in range(10)] + [f"c2-{i}" for i in range(5)]
                        if int(v.split("-")[1]) % 2 == part], "in order within a partition"
    everything = read(broker, "tx-out", 2, "read_uncommitted", expected=25, wait=3)
    assert values(everything) == sorted(want + [f"a-{i}" for i in range(10)])


def test_read_committed_stops_at_an_open_transaction(broker):
    create(broker, "tx-open", 1)
    commit_one(broker, "tx-before", "tx-open", "first")
    p = producer(broker, "tx-open")
    p.begin_transaction()
    for i in range(5):
        p.produce("tx-open", value=f"open-{i}")
    p.flush(30)
    # A committed record after the open transaction's start waits behind it.
    commit_one(broker, "tx-after", "tx-open", "after")
    assert values(read(broker, "tx-open", 1, "read_committed", wait=2)) == ["first"]
    assert len(read(broker, "tx-open", 1, "read_uncommitted", expected=7, wait=3)) == 7
    p.commit_transaction(30)
    got = read(broker, "tx-open", 1, "read_committed", expected=7, wait=3)
    assert [v for _, v in got] == ["first"] + [f"open-{i}" for i in range(5)] + ["after"]


def test_a_second_producer_with_the_id_fences_the_first(broker):
    create(broker, "tx-zombie", 1)
    zombie = producer(broker, "tx-z")
    zombie.begin_transaction()
    zombie.produce("tx-zombie", value="zombie")
    zombie.flush(30)
    # The new producer's init aborts the zombie's open transaction.
    fresh = producer(broker, "tx-z")
    fresh.begin_transaction()
    fresh.produce("tx-zombie", value="fresh")
    fresh.commit_transaction(30)
    with pytest.raises(KafkaException) as e:
        zombie.produce("tx-zombie", value="late")
        zombie.commit_transaction(10)
    err = e.value.args[0]
    assert err.fatal() or "fenced" in err.str().lower(), err.str()
    assert [v for _, v in read(broker, "tx-zombie", 1, "read_committed", expected=1, wait=2)] == ["fresh"]


def test_the_coordinator_aborts_a_transaction_past_its_timeout():
    with running_broker(["transaction.abort.timed.out.transaction.cleanup.interval.ms=200"]) as broker:
        create(broker, "tx-slow", 1)
        slow = producer(broker, "tx-slow", **{"transaction.timeout.ms": 1500})
        slow.begin_transaction()
        slow.produce("tx-slow", value="abandoned")
        slow.flush(30)
        commit_one(broker, "tx-other", "tx-slow", "committed")
        # Only the coordinator's abort lets the committed record through.
        got = read(broker, "tx-slow", 1, "read_committed", expected=1, wait=10)
        assert [v for _, v in got] == ["committed"]
        with pytest.raises(KafkaException):
            slow.commit_transaction(10)


def test_consume_transform_produce_commits_its_input_offsets_with_its_output(broker):
    create(broker, "eos-in", 2)
    create(broker, "eos-out", 2)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        plain.produce("eos-in", value=str(i), partition=i % 2)
    plain.flush(30)
    group = "eos-group"
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe(["eos-in"])
    p = producer(broker, "eos-processor")
    done = 0
    aborted_once = False
    deadline = time.time() + 60
    while done < 100 and time.time() < deadline:
        msgs = consumer.consume(20, 1.0)
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            assert m.error() is None, m.error()
            p.produce("eos-out", value=f"x{int(m.value()) * 10}", partition=m.partition())
        p.send_offsets_to_transaction(consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
        if not aborted_once:
            # The offsets sent in a transaction are not the group's until it
            # commits: a reader that asks for stable offsets waits.
            checker = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                                "isolation.level": "read_committed"})
            with pytest.raises(KafkaException):
                checker.committed([TopicPartition("eos-in", 0), TopicPartition("eos-in", 1)], timeout=2)
            checker.close()
            p.flush(30)
            p.abort_transaction(30)
            aborted_once = True
            # Back to the committed offsets: what the abort undid is read again.
            for tp in consumer.committed(consumer.assignment(), timeout=10):
                consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            continue
        p.commit_transaction(30)
        done += len(msgs)
    assert done == 100, f"processed {done} of 100"
    committed = consumer.committed([TopicPartition("eos-in", 0), TopicPartition("eos-in", 1)], timeout=10)
    assert sorted(tp.offset for tp in committed) == [50, 50]
    consumer.close()
    got = read(broker, "eos-out", 2, "read_committed", expected=100, wait=3)
    assert values(got) == sorted(f"x{i * 10}" for i in range(100)), "each input's result exactly once"


def test_transactions_are_listed_described_and_measured():
    """`sluice txn list|describe` (ListTransactions, DescribeTransactions)
    and the metrics."""
    from conftest import free_port
    port = free_port()
    with running_broker([f"sluice.admin.listen=127.0.0.1:{port}"]) as broker:
        listed_described_and_measured(broker, f"127.0.0.1:{port}")


def listed_described_and_measured(broker, admin_addr):
    import json
    import subprocess
    import urllib.request

    from conftest import BINARY

    def cli(*args):
        out = subprocess.run([BINARY, *args, "--brokers", broker.bootstrap], capture_output=True, text=True,
                             timeout=60)
        return out.returncode, out.stdout, out.stderr

    create(broker, "tx-admin", 2)
    commit_one(broker, "tx-done", "tx-admin", "done")
    p = producer(broker, "tx-open-one")
    p.begin_transaction()
    p.produce("tx-admin", value="pending", partition=1)
    p.flush(30)
    rc, out, err = cli("txn", "list", "--json")
    assert rc == 0, err
    listed = {t["transactional_id"]: t for t in json.loads(out)}
    assert listed["tx-done"]["state"] == "CompleteCommit"
    assert listed["tx-open-one"]["state"] == "Ongoing"
    rc, out, err = cli("txn", "list", "--state", "Ongoing", "--json")
    assert rc == 0 and [t["transactional_id"] for t in json.loads(out)] == ["tx-open-one"], out
    rc, out, err = cli("txn", "describe", "tx-open-one", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["state"] == "Ongoing" and d["partitions"] == ["tx-admin-1"] and d["start_ms"] > 0, d
    rc, _, err = cli("txn", "describe", "no-such-id")
    assert rc == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in err, err
    # The metrics: one open transaction, and the stable offset held back.
    text = urllib.request.urlopen(f"http://{admin_addr}/metrics", timeout=10).read().decode()
    assert 'sluice_transactional_ids{state="Ongoing"} 1' in text, text
    assert 'sluice_partition_lso_lag{topic="tx-admin",partition="1"} 1' in text
    p.commit_transaction(30)


def test_open_and_aborted_transactions_survive_a_crash_of_the_broker():
    """kill -9 with one transaction aborted and one open: after the restart
    read_committed still drops the aborted records and stops at the open
    transaction, which the same producer then commits."""
    with running_broker([]) as broker:
        create(broker, "tx-crash", 1)
        p = aborted_then_open(broker, "tx-crash", "tx-crash", "tx-later")
        broker.kill9()
        broker.start()
        assert read(broker, "tx-crash", 1, "read_committed", wait=2) == []
        assert values(read(broker, "tx-crash", 1, "read_uncommitted", expected=3, wait=3)) == [
            "aborted", "later", "open"]
        p.commit_transaction(60)
        got = read(broker, "tx-crash", 1, "read_committed", expected=2, wait=3)
        assert [v for _, v in got] == ["open", "later"]


def test_transactions_survive_leader_changes_and_a_caught_up_follower_leading():
    """RF=3: one transaction aborted, one open and later commits around it.
    The leader is killed (its first follower leads), the open transaction
    commits through the new leader, the old leader restarts and catches up
    as a follower, a new transaction opens, and the leader is killed again
    so that the caught-up follower leads. Each leader drops the aborted
    records and stops read_committed at the open transaction, from the
    markers and the log it has, not from the leader before it."""
    import types

    from test_cluster import create as create_rf3, metadata, running_cluster
    extra = ["transaction.state.log.num.partitions=3", "replica.lag.time.max.ms=2000"]
    with running_cluster(extra) as cluster:
        boot = types.SimpleNamespace(bootstrap=",".join(n.bootstrap for n in cluster.nodes))
        create_rf3(cluster.node(1), "tx-move", partitions=1)
        commit_one(boot, "tx-m-first", "tx-move", "first")
        p = aborted_then_open(boot, "tx-m-open", "tx-move", "tx-m-later")

        def partition():
            return metadata(next(iter(cluster.live()))).topics["tx-move"].partitions[0]

        def in_sync():
            x = partition()
            return x.leader > 0 and len(x.isrs) == 3

        wait_for("the partition fully in sync", in_sync, timeout=30)
        first, second = partition().replicas[0], partition().replicas[1]
        assert partition().leader == first
        cluster.node(first).kill9()
        wait_for("the first follower leads", lambda: partition().leader == second, timeout=30)
        assert values(read(boot, "tx-move", 1, "read_committed", wait=2)) == ["first"]
        assert values(read(boot, "tx-move", 1, "read_uncommitted", expected=4, wait=3)) == [
            "aborted", "first", "later", "open"]
        p.commit_transaction(60)
        got = read(boot, "tx-move", 1, "read_committed", expected=3, wait=3)
        assert [v for _, v in got] == ["first", "open", "later"]

        cluster.node(first).start()
        wait_for("the restarted broker back in sync", in_sync, timeout=60)
        q = producer(boot, "tx-m-open2")
        q.begin_transaction()
        q.produce("tx-move", value="open2")
        q.flush(30)
        commit_one(boot, "tx-m-last", "tx-move", "last")
        wait_for("the partition fully in sync", in_sync, timeout=30)
        cluster.node(second).kill9()
        wait_for("the caught-up follower leads", lambda: partition().leader == first, timeout=30)
        got = read(boot, "tx-move", 1, "read_committed", wait=2)
        assert [v for _, v in got] == ["first", "open", "later"]
        q.abort_transaction(60)
        got = read(boot, "tx-move", 1, "read_committed", expected=4, wait=3)
        assert [v for _, v in got] == ["first", "open", "later", "last"]


def test_the_transaction_state_log_is_bounded_and_replays_after_its_rewrite():
    """With 1 KiB segments the transaction-state log rolls every few
    transactions; its leader rewrites the ids' states and drops the older
    segments. An open transaction's state (its partitions) survives that
    and a kill -9: after the restart read_committed still stops at it and
    its producer commits it."""
    import glob
    import os

    settings = ["transaction.state.log.num.partitions=1", "transaction.state.log.segment.bytes=1024"]
    with running_broker(settings) as broker:
        create(broker, "tx-bound", 1)
        held = producer(broker, "tx-held")
        held.begin_transaction()
        held.produce("tx-bound", value="held")
        held.flush(30)
        busy = producer(broker, "tx-busy")
        for i in range(60):
            busy.begin_transaction()
            busy.produce("tx-bound", value=f"busy-{i}")
            busy.commit_transaction(30)
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "tx-bound-watch"})
        low = wait_for("the transaction-state log start moved",
                       lambda: c.get_watermark_offsets(TopicPartition("__transaction_state", 0), timeout=5)[0] > 0)
        assert low
        c.close()

        def segments():
            return glob.glob(os.path.join(broker.data_dir, "**", "__transaction_state-0", "*.log"), recursive=True)

        # While tx-busy commits, its id is mostly busy and rewrites wait;
        # once it stops, the next rewrite leaves a segment or two.
        wait_for("the older segments deleted", lambda: 0 < len(segments()) < 4, timeout=15)
        broker.kill9()
        broker.start()
        assert read(broker, "tx-bound", 1, "read_committed", wait=2) == []
        held.commit_transaction(60)
        got = read(broker, "tx-bound", 1, "read_committed", expected=61, wait=3)
        assert [v for _, v in got] == ["held"] + [f"busy-{i}" for i in range(60)]
        again = producer(broker, "tx-busy")
        again.begin_transaction()
        again.produce("tx-bound", value="after")
        again.commit_transaction(30)
