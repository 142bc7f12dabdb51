"""The short fault-injection suite: every fault of `faults.py` once, held a
few seconds, against a three-node cluster under the recording workload; the
history checker must find no anomaly the durability promise forbids, and
writes must flow again once the fault is healed. And a voter whose disk
fills keeps its place in the controller quorum."""
import json
import os
import socket
import ssl
import struct
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import own_answer, wait_for
from faults import FAULTS, KEYS, PARTITIONS, FaultCluster, fill_disk, run_faults


@pytest.mark.parametrize("fault", FAULTS)
def test_fault(fault, tmp_path):
    report = run_faults(str(tmp_path), [fault], seed=FAULTS.index(fault), hold=lambda rng: 4.0)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    assert_came_through(report)


# The faults that move leadership and the controller, and cut the links
# the secured listeners carry.
SECURED_SCHEDULE = ["kill_leader", "partition_controller", "pause_leader", "kill_controller", "partition_follower"]


def test_faults_with_every_listener_secured(tmp_path):
    """The same workload and checker through a schedule of faults, with
    every listener secured (`faults.Secured`: clients on SASL_SSL, the
    brokers' own traffic on mutual TLS, the controller quorum on SASL_SSL,
    the authorizer on)."""
    report = run_faults(str(tmp_path), SECURED_SCHEDULE, seed=5, hold=lambda rng: 4.0, base=51, secured=True)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    assert [f["fault"] for f in report["faults"]] == SECURED_SCHEDULE
    assert_came_through(report)


def controller_call(addr, frames, tls_ca=None):
    """Sends the controller transport's frames (little-endian length, JSON)
    to `addr`, over TLS when `tls_ca` is given; the answers read, until
    the voter closes the connection."""
    raw = socket.create_connection(addr, timeout=10)
    sock = raw
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        sock = ctx.wrap_socket(raw, server_hostname=addr[0])
    answers = []
    try:
        for f in frames:
            body = json.dumps(f).encode()
            sock.sendall(struct.pack("<I", len(body)) + body)
            head = b""
            while len(head) < 4:
                chunk = sock.recv(4 - len(head))
                if not chunk:
                    return answers
                head += chunk
            (n,) = struct.unpack("<I", head)
            body = b""
            while len(body) < n:
                chunk = sock.recv(n - len(body))
                if not chunk:
                    return answers
                body += chunk
            answers.append(json.loads(body))
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        sock.close()
    return answers


def test_the_controllers_take_only_the_clusters_own_nodes(tmp_path):
    """On a SASL_SSL controller listener with an authorizer, a plaintext
    peer, a wrong password and a user without CLUSTER_ACTION get nothing
    (no image, no heartbeat recorded), while the brokers' own login is
    served; the cluster meanwhile forms and registers all three brokers."""
    c = FaultCluster(str(tmp_path), base=61, secured=True)
    try:
        c.start()
        wait_for("three brokers and a controller",
                 lambda: (lambda m: len(m.brokers) == 3 and m.controller_id > 0)(c.metadata()))
        addr = c.voters[1]
        ca = c.secured.certs.ca
        image = {"Image": {"known": None}}
        login = lambda user, password: {"Login": {"mechanism": "PLAIN", "user": user, "password": password}}
        # Not TLS: the handshake fails and nothing is answered.
        assert controller_call(addr, [image]) == []
        # TLS without a login first, or with a wrong password.
        assert controller_call(addr, [image], tls_ca=ca) == []
        wrong = controller_call(addr, [login("broker", "guess"), image], tls_ca=ca)
        assert len(wrong) == 1 and "Failed" in wrong[0], wrong
        # A user the controllers know but the authorizer does not let act
        # for the cluster: logged in, then refused and disconnected.
        intruder = controller_call(addr, [login("intruder", "intruder-secret"), image,
                                          {"Heartbeat": {"broker": 2, "epoch": 1}}], tls_ca=ca)
        assert intruder[0] == "LoggedIn", intruder
        assert len(intruder) == 2 and "CLUSTER_ACTION" in intruder[1].get("Failed", ""), intruder
        # The brokers' own login is served.
        ok = controller_call(addr, [login("broker", "quorum-secret"), image], tls_ca=ca)
        assert ok[0] == "LoggedIn" and "Image" in ok[1], str(ok)[:300]
    finally:
        c.stop()


def assert_came_through(report):
    ops = report["operations"]
    assert report["anomalies"] == 0, json.dumps(report["check"], indent=1)
    assert report["unsettled"] == 0, "the cluster did not recover its leaders and ISRs"
    # Every producer had writes acknowledged and the consumers read them.
    assert ops.get("send_ok", 0) > 1000, ops
    assert ops.get("read", 0) > 1000, ops
    # Transactions ran and were read with read_committed (the checker
    # judged them). After kill_majority a commit caught by the fault can
    # still be retrying when the workload stops, a few seconds after the
    # heal: the soak, not this short run, shows transactions going on
    # through faults.
    assert ops.get("txn", 0) > 20, ops
    assert ops.get("read_committed", 0) > 50, ops
    # Keyed writes to a compacted topic went on through the fault, its
    # partitions' cleaners ran (at least one replica of each finished a
    # pass), and the checker found each key's latest acknowledged write.
    compacted = report["compacted"]
    assert compacted["acked_keys"] == KEYS, compacted
    assert all(compacted["cleaned_on"][p] for p in range(PARTITIONS)), compacted
    # The idempotent acks=all producer was never stopped for good: its
    # longest stretch without an acknowledgement is bounded.
    gaps = report["availability_longest_gap_s"]
    assert set(gaps) == {f["fault"] for f in report["faults"]}, gaps
    assert max(gaps.values()) < 30, gaps


def test_a_voter_whose_disk_fills_keeps_its_place_in_the_quorum(tmp_path):
    """A voter's metadata writes wait for room on a full disk instead of
    failing (which the Raft library takes as fatal): once there is room it
    catches up, and with the controller gone it helps elect the next."""
    c = FaultCluster(str(tmp_path), base=41)
    try:
        c.start()
        md = wait_for("three brokers and a controller",
                      lambda: (lambda m: len(m.brokers) == 3 and m.controller_id > 0 and m)(c.metadata()))
        ctl = md.controller_id
        full, third = [n.node_id for n in c.nodes if n.node_id != ctl]
        others = [[ctl, third]]

        def create(name, via):
            a = AdminClient({"bootstrap.servers": via, "log_level": 0})
            a.create_topics([NewTopic(name, num_partitions=len(others), replica_assignment=others)], request_timeout=10)[name].result(15)

        filler = fill_disk(c.node(full).disk)
        # Metadata entries reach the full voter while it has no room (the
        # topics' replicas are on the other two nodes).
        for i in range(3):
            create(f"while-full-{i}", c.bootstrap)
        time.sleep(2)
        os.unlink(filler)
        create("after", c.bootstrap)
        wanted = {"while-full-0", "while-full-1", "while-full-2", "after"}
        wait_for(f"node {full} applies what was written while its disk was full",
                 lambda: (lambda m: m is not None and wanted <= set(m.topics))(own_answer(c.node(full))))
        # Without the controller, the two left are a majority only if the
        # voter whose disk filled still votes.
        c.node(ctl).kill9()
        rest = f"{c.node(full).bootstrap},{c.node(third).bootstrap}"
        others = [[full, third]]

        def created_without_the_old_controller():
            try:
                create("without-the-old-controller", rest)
            except KafkaException as e:
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
            return True
        wait_for("a topic created by the two nodes left", created_without_the_old_controller, timeout=40)
    finally:
        c.stop()
