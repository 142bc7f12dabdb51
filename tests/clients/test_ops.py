"""The operators' HTTP listener (`sluice.admin.listen`): `/metrics` parses
and passes `promtool check metrics`, its counters move by exactly what a
scripted workload does, and `/health` and `/ready` answer as a load
balancer expects while a broker starts, serves and shuts down."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import BINARY, ROOT, Broker, create, free_port, running_broker


def get(port, path, accept=None):
    """(status, body) of GET `path` on the admin listener."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(text, name, **labels):
    """The value of one sample of the classic text format, its labels in
    any order; 0 when absent."""
    for line in text.splitlines():
        m = re.match(r"([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-z_]+)="([^"]*)"', m.group(3) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(4))
    return 0.0


def test_metrics_pass_promtool_and_count_a_scripted_workload():
    port = free_port()
    with running_broker([f"sluice.admin.listen=127.0.0.1:{port}"]) as b:
        create(b, "ops", 1)
        status, before = get(port, "/metrics")
        assert status == 200
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "acks": 1})
        for i in range(100):
            p.produce("ops", value=f"v{i}".encode(), partition=0)
            p.flush(10)  # one Produce request per record
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "ops-group", "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition("ops", 0, 40)], asynchronous=False)
        c.close()
        status, after = get(port, "/metrics")
        assert status == 200

        out = subprocess.run(["promtool", "check", "metrics"], input=after, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr

        def delta(name, **labels):
            return sample(after, name, **labels) - sample(before, name, **labels)

        assert delta("sluice_requests_total", api="Produce") == 100
        assert delta("sluice_topic_records_in_total", topic="ops") == 100
        assert delta("sluice_request_latency_seconds_count", api="Produce") == 100
        assert sample(after, "sluice_request_latency_seconds_bucket", api="Produce", le="+Inf") >= 100
        assert sample(after, "sluice_requests_total", api="OffsetCommit") >= 1
        # 100 records produced, 40 committed: 60 behind.
        assert sample(after, "sluice_consumer_group_lag", group="ops-group") == 60
        assert sample(after, "sluice_consumer_group_max_lag", group="ops-group") == 60
        assert sample(after, "sluice_log_segments", topic="ops", partition="0") == 1
        assert sample(after, "sluice_partitions_led") >= 1
        assert sample(after, "sluice_active_controller") == 1
        assert sample(after, "sluice_ready", node="0") == 1
        assert sample(after, "sluice_connections_accepted_total") >= 2
        # The storage engine: 100 produced batches and one offset commit
        # went through group-commit rounds and writes.
        assert 100 <= delta("sluice_log_group_commit_batches_sum") <= 101
        assert delta("sluice_log_write_seconds_count") >= 1
        assert "sluice_log_fdatasync_seconds_bucket{le=\"+Inf\"}" in after

        # A produce to a partition that does not exist counts its error.
        p2 = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 3000})
        errors = []
        p2.produce("ops", value=b"x", partition=5, on_delivery=lambda err, msg: errors.append(err))
        p2.flush(10)
        assert errors and errors[0] is not None

        # OpenMetrics for a scraper that asks for it.
        status, om = get(port, "/metrics", accept="application/openmetrics-text; version=1.0.0")
        assert status == 200 and om.endswith("# EOF\n")
        assert "# TYPE sluice_requests counter" in om

        assert get(port, "/nothing")[0] == 404


def test_health_and_ready_while_starting_serving_and_stopping():
    # One voter of three started alone: it serves, but no controller can
    # register it, so it is healthy and not ready.
    with tempfile.TemporaryDirectory() as tmp:
        admin_port = free_port()
        voters = ",".join(f"{i}@127.0.0.1:{free_port()}" for i in (1, 2, 3))
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        lonely = Broker(data, free_port(), [
            "node.id=1", f"controller.quorum.voters={voters}", f"sluice.admin.listen=127.0.0.1:{admin_port}",
        ])
        lonely.start(wait=False)
        try:
            deadline = time.time() + 20
            seen = None
            while time.time() < deadline:
                try:
                    seen = get(admin_port, "/health")
                    break
                except OSError:
                    time.sleep(0.05)
            assert seen == (200, "ok\n")
            status, body = get(admin_port, "/ready")
            assert status == 503, body
            assert body in ("starting\n", "not registered with the controller, or fenced\n")
        finally:
            lonely.proc.send_signal(signal.SIGKILL)
            lonely.proc.wait(timeout=30)

    # A single node: ready once serving; while it drains at shutdown, not
    # ready but healthy.
    port = free_port()
    with running_broker([f"sluice.admin.listen=127.0.0.1:{port}", "sluice.shutdown.drain.ms=4000"]) as b:
        deadline = time.time() + 10
        while get(port, "/ready")[0] != 200 and time.time() < deadline:
            time.sleep(0.05)
        assert get(port, "/ready") == (200, "ready\n")
        assert get(port, "/health") == (200, "ok\n")
        # Half a request keeps a connection in its read: shutdown waits for
        # it (up to the drain time) before stopping.
        s = socket.create_connection((b.host, b.port))
        s.sendall((100).to_bytes(4, "big") + b"\x00\x12")
        time.sleep(0.2)
        b.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert b.proc.poll() is None, "still draining"
        assert get(port, "/ready") == (503, "shutting down\n")
        assert get(port, "/health") == (200, "ok\n")
        s.close()
        assert b.proc.wait(timeout=30) == 0
        b.proc = None


def test_a_chosen_admin_address_in_use_refuses_the_start():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with tempfile.TemporaryDirectory() as tmp:
            b = Broker(tmp, free_port(), [f"sluice.admin.listen=127.0.0.1:{port}"])
            b.start(wait=False)
            assert b.proc.wait(timeout=30) != 0
            with open(b.log_path, "rb") as f:
                assert b"sluice.admin.listen" in f.read()


def test_json_log_lines():
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SLUICE_LOG_FORMAT="json")
        port = free_port()
        log = os.path.join(tmp, "log")
        with open(log, "wb") as out:
            p = subprocess.Popen([BINARY, "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "d"),
                                  "--cores", "1", "-o", "sluice.admin.listen="], stdout=out, stderr=out, env=env)
            try:
                deadline = time.time() + 30
                while time.time() < deadline:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                        break
                    except OSError:
                        time.sleep(0.05)
            finally:
                p.send_signal(signal.SIGTERM)
                assert p.wait(timeout=30) == 0
        lines = [l for l in open(log).read().splitlines() if l.startswith("{")]
        assert lines, "no JSON log lines"
        for line in lines:
            entry = json.loads(line)
            assert {"timestamp", "level", "fields", "target"} <= entry.keys(), entry
        assert any(json.loads(l)["fields"].get("message") == "open-file limit" for l in lines)


def test_systemd_unit_verifies():
    unit = os.path.join(ROOT, "packaging", "sluice.service")
    text = open(unit).read()
    assert "ExecStart=/usr/local/bin/sluice " in text
    with tempfile.TemporaryDirectory() as tmp:
        # The unit as installed, with this build's binary where the unit
        # expects /usr/local/bin/sluice (verify checks that it exists).
        copy = os.path.join(tmp, "sluice.service")
        with open(copy, "w") as f:
            f.write(text.replace("/usr/local/bin/sluice", BINARY))
        out = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True)
        assert out.returncode == 0 and "sluice.service" not in out.stdout + out.stderr, out.stdout + out.stderr
    # The arguments of its ExecStart are the binary's.
    args = text.split("ExecStart=/usr/local/bin/sluice ", 1)[1].splitlines()[0].split()
    out = subprocess.run([BINARY] + args + ["--help-settings"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_print_config_names_where_each_setting_came_from():
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "sluice.toml")
        with open(conf, "w") as f:
            f.write("num.partitions = 4\nmin.insync.replicas = 3\n")
        env = dict(os.environ, SLUICE_MIN_INSYNC_REPLICAS="2", SLUICE_LOG_RETENTION_BYTES="5000")
        out = subprocess.run([BINARY, "--config", conf, "-o", "log.retention.bytes=7000", "--cores", "1",
                              "--print-config"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        lines = dict(l.split(" = ", 1) for l in out.stdout.splitlines())
        assert lines["num.partitions"] == f"4  # file {conf}"
        assert lines["min.insync.replicas"] == "2  # environment SLUICE_MIN_INSYNC_REPLICAS"
        assert lines["log.retention.bytes"] == "7000  # -o"
        assert lines["num.cores"] == "1  # flag"
        assert lines["node.id"] == "0  # default"
        # A bad value from the environment names its variable.
        env["SLUICE_NUM_PARTITIONS"] = "many"
        out = subprocess.run([BINARY, "--print-config"], capture_output=True, text=True, env=env)
        assert out.returncode == 2 and "SLUICE_NUM_PARTITIONS" in out.stderr, out.stderr
