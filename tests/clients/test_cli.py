"""`sluice topic|group|cluster ...` against a running broker: tables and
`--json` parsed back, Kafka error names on stderr with exit code 1, exit
code 3 when no broker answers."""
import json
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import BINARY, free_port


def cli(broker, *args):
    out = subprocess.run([BINARY, *args, "--brokers", broker.bootstrap], capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def test_topic_commands(broker):
    rc, out, err = cli(broker, "topic", "create", "cli-t", "-p", "3", "-c", "retention.ms=60000")
    assert rc == 0, err
    assert "created cli-t: 3 partition(s)" in out
    rc, out, err = cli(broker, "topic", "create", "cli-t", "-p", "3")
    assert rc == 1 and "TOPIC_ALREADY_EXISTS" in err, err

    rc, out, _ = cli(broker, "topic", "list", "--json")
    assert rc == 0
    topics = {t["topic"]: t for t in json.loads(out)}
    assert topics["cli-t"] == {"topic": "cli-t", "partitions": 3, "replication_factor": 1, "internal": False}
    rc, out, _ = cli(broker, "topic", "list")
    assert rc == 0 and out.splitlines()[0].split() == ["TOPIC", "PARTITIONS", "REPLICATION", "INTERNAL"]

    rc, out, _ = cli(broker, "topic", "describe", "cli-t", "--json")
    assert rc == 0
    parts = json.loads(out)
    assert [p["partition"] for p in parts] == [0, 1, 2]
    assert all(p["leader"] == p["replicas"][0] and p["isr"] == p["replicas"] for p in parts)
    rc, _, err = cli(broker, "topic", "describe", "no-such-topic")
    assert rc == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err

    rc, _, err = cli(broker, "topic", "alter-config", "cli-t", "--set", "retention.ms=5000")
    assert rc == 0, err
    rc, _, err = cli(broker, "topic", "alter-config", "cli-t", "--set", "no.such.config=1")
    assert rc == 1 and "INVALID_CONFIG" in err, err

    rc, out, err = cli(broker, "topic", "delete", "cli-t", "--json")
    assert rc == 0, err
    assert json.loads(out) == [{"topic": "cli-t", "error": None}]
    rc, _, err = cli(broker, "topic", "delete", "cli-t")
    assert rc == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err


def test_group_and_cluster_commands(broker):
    assert cli(broker, "topic", "create", "cli-g", "-p", "1")[0] == 0
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        p.produce("cli-g", value=b"x", partition=0)
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-group", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("cli-g", 0, 40)], asynchronous=False)
    c.close()

    rc, out, _ = cli(broker, "group", "list", "--json")
    assert rc == 0
    assert {"group": "cli-group", "protocol": "classic", "state": "Empty", "members": 0} in json.loads(out)
    rc, out, _ = cli(broker, "group", "describe", "cli-group", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["state"] == "Empty"
    assert d["partitions"] == [{"group": "cli-group", "topic": "cli-g", "partition": 0,
                                "committed": 40, "log_end": 100, "lag": 60}]
    rc, out, _ = cli(broker, "group", "describe", "cli-group")
    assert rc == 0 and "LAG" in out and "60" in out

    rc, out, _ = cli(broker, "cluster", "info", "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["controller"] == 0 and [b["id"] for b in info["brokers"]] == [0]


def test_no_broker_answers():
    out = subprocess.run([BINARY, "topic", "list", "--brokers", f"127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "connecting to" in out.stderr


def test_log_dump_checks_every_batch(broker):
    import os
    assert cli(broker, "topic", "create", "cli-log", "-p", "1")[0] == 0
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "compression.type": "none"})
    for i in range(5):
        p.produce("cli-log", key=b"k", value=b"v" * (10 + i), partition=0)
        p.flush(10)  # five batches of one record
    broker.stop()
    seg = os.path.join(broker.data_dir, "cli-log-0", "00000000000000000000.log")
    out = subprocess.run([BINARY, "log", "dump", seg, "--records", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    batches = [json.loads(l) for l in out.stdout.splitlines()]
    assert [b["base_offset"] for b in batches] == [0, 1, 2, 3, 4]
    assert all(b["status"] == "ok" and b["count"] == 1 for b in batches)
    assert [b["records"][0]["value_size"] for b in batches] == [10, 11, 12, 13, 14]

    # Flip a byte inside the third batch's records: its CRC no longer
    # matches, the others still do.
    third = batches[2]
    with open(seg, "r+b") as f:
        f.seek(third["position"] + third["size"] - 3)
        b = f.read(1)
        f.seek(third["position"] + third["size"] - 3)
        f.write(bytes([b[0] ^ 0xFF]))
    out = subprocess.run([BINARY, "log", "dump", seg], capture_output=True, text=True)
    assert out.returncode == 1, out.stdout
    lines = out.stdout.splitlines()
    assert "DAMAGED: CRC32C mismatch" in lines[2] and all(l.endswith(" ok") for l in lines[:2] + lines[3:5])
    assert "5 batch(es), 1 damaged" in lines[5]
    assert "damaged batch" in out.stderr


def test_group_reset_offsets_and_delete(broker):
    assert cli(broker, "topic", "create", "cli-r", "-p", "2")[0] == 0
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce("cli-r", value=b"early", partition=i % 2)
    p.flush(10)
    time.sleep(1.1)
    middle = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    for i in range(10):
        p.produce("cli-r", value=b"late", partition=i % 2)
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-r-group", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("cli-r", 0, 3), TopicPartition("cli-r", 1, 3)], asynchronous=False)
    c.close()

    def committed():
        rc, out, _ = cli(broker, "group", "describe", "cli-r-group", "--json")
        assert rc == 0
        return {r["partition"]: r["committed"] for r in json.loads(out)["partitions"]}

    rc, out, err = cli(broker, "group", "reset-offsets", "cli-r-group", "--topic", "cli-r", "--to-latest",
                       "--dry-run", "--json")
    assert rc == 0, err
    assert json.loads(out)["partitions"] == [{"topic": "cli-r", "partition": 0, "offset": 10},
                                             {"topic": "cli-r", "partition": 1, "offset": 10}]
    assert committed() == {0: 3, 1: 3}, "a dry run commits nothing"
    assert cli(broker, "group", "reset-offsets", "cli-r-group", "--topic", "cli-r", "--to-latest")[0] == 0
    assert committed() == {0: 10, 1: 10}
    assert cli(broker, "group", "reset-offsets", "cli-r-group", "--topic", "cli-r:1", "--to-earliest")[0] == 0
    assert committed() == {0: 10, 1: 0}
    assert cli(broker, "group", "reset-offsets", "cli-r-group", "--topic", "cli-r", "--to-offset", "99")[0] == 0
    assert committed() == {0: 10, 1: 10}, "kept within the log"
    assert cli(broker, "group", "reset-offsets", "cli-r-group", "--topic", "cli-r", "--to-datetime", middle)[0] == 0
    assert committed() == {0: 5, 1: 5}, "the first record at or after the time"
    rc, _, err = cli(broker, "group", "reset-offsets", "cli-r-group", "--topic", "cli-r", "--to-datetime", "yesterday")
    assert rc == 2 and "YYYY-MM-DD" in err

    # A group with a member cannot be reset or deleted.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cli-r-group", "enable.auto.commit": False,
                  "session.timeout.ms": 6000})
    c.subscribe(["cli-r"])
    deadline = time.time() + 30
    while not c.assignment() and time.time() < deadline:
        c.poll(0.2)
    rc, _, err = cli(broker, "group", "delete", "cli-r-group")
    assert rc == 1 and "NON_EMPTY_GROUP" in err, err
    c.close()
    rc, out, err = cli(broker, "group", "delete", "cli-r-group", "--json")
    assert rc == 0, err
    assert json.loads(out) == [{"group": "cli-r-group", "error": None}]
    rc, out, _ = cli(broker, "group", "list", "--json")
    assert all(g["group"] != "cli-r-group" for g in json.loads(out))


def test_cluster_health_sees_a_dead_broker():
    from test_cluster import create as create_rf3, running_cluster, wait_for

    class At:
        def __init__(self, node):
            self.bootstrap = node.bootstrap

    with running_cluster() as c:
        create_rf3(c.node(1), "cli-h", partitions=3, rf=3)

        def health():
            return cli(At(c.node(1)), "cluster", "health", "--json")

        wait_for("healthy", lambda: health()[0] == 0)
        rc, out, _ = health()
        h = json.loads(out)
        assert h["healthy"] and h["brokers"] == 3 and h["offline_partitions"] == []
        c.node(3).kill9()
        # Fenced once its session lapses; its partitions lose it from
        # their ISR.
        wait_for("node 3 fenced", lambda: json.loads(health()[1])["fenced_brokers"] == [3])
        rc, out, err = health()
        h = json.loads(out)
        assert rc == 1 and not h["healthy"] and "fenced brokers" in err
        assert any(p.startswith("cli-h-") for p in h["under_replicated_partitions"])


def test_completions():
    out = subprocess.run([BINARY, "completions", "bash"], capture_output=True, text=True)
    assert out.returncode == 0 and "_sluice()" in out.stdout and "reset-offsets" in out.stdout


def test_topic_produce_and_consume(broker):
    assert cli(broker, "topic", "create", "cli-pc", "-p", "2")[0] == 0
    lines = "".join(f"k{i}:value {i}\n" for i in range(2500))
    out = subprocess.run([BINARY, "topic", "produce", "cli-pc", "-p", "1", "--key-separator", ":",
                          "--brokers", broker.bootstrap], input=lines, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "produced 2500 record(s) to cli-pc-1 from offset 0" in out.stdout
    rc, out, err = cli(broker, "topic", "consume", "cli-pc", "-p", "1", "--json", "--offset", "2490")
    assert rc == 0, err
    got = [json.loads(l) for l in out.splitlines()]
    assert [(r["offset"], r["key"], r["value"]) for r in got] == [(o, f"k{o}", f"value {o}") for o in range(2490, 2500)]
    rc, out, _ = cli(broker, "topic", "consume", "cli-pc", "-p", "1", "--max-messages", "3")
    assert rc == 0 and out.splitlines() == ["value 0", "value 1", "value 2"]
    # What a real client produced reads back too.
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "lz4"})
    p.produce("cli-pc", value=b"from librdkafka", partition=0)
    p.flush(10)
    rc, out, _ = cli(broker, "topic", "consume", "cli-pc", "-p", "0", "--max-messages", "1")
    assert rc == 0 and out.strip() == "from librdkafka"
    rc, _, err = cli(broker, "topic", "consume", "cli-pc", "-p", "9", "--max-messages", "1")
    assert rc == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err
