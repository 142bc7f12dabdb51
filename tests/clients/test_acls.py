"""ACLs with real clients: librdkafka's, kafka-python's and the Java
client's admin APIs make, list and delete ACLs; each principal then gets
Kafka's answer per resource (TOPIC_ / GROUP_AUTHORIZATION_FAILED), sees
only the topics it may describe, and a DENY beats an ALLOW."""
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)
from kafka import KafkaProducer
from kafka.errors import TopicAuthorizationFailedError

from conftest import Broker, free_ports
from secured import java_classpath, kcat

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret" user_carol="carol-secret";')


class AclBroker:
    def __init__(self, broker, sasl_port):
        self.broker = broker
        self.sasl = f"127.0.0.1:{sasl_port}"

    def conf(self, user):
        return {"bootstrap.servers": self.sasl, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN",
                "sasl.username": user, "sasl.password": f"{user}-secret"}


@pytest.fixture(scope="module")
def acl():
    with tempfile.TemporaryDirectory() as tmp:
        port, sasl_port = free_ports(2)
        b = Broker(tmp, port, [
            "num.partitions=1",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:admin",
            "auto.create.topics.enable=false",
        ], listeners=f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}")
        b.start()
        try:
            a = AclBroker(b, sasl_port)
            admin = AdminClient(a.conf("admin"))
            for f in admin.create_topics([NewTopic(t, 1, 1) for t in ("alice-in", "alice-secret", "other")]).values():
                f.result(30)
            yield a
        finally:
            b.stop()


def first_consumer_error(conf, group, topic):
    """The first error a consumer of `topic` in `group` polls (None within 20 s)."""
    c = Consumer(dict(conf, **{"group.id": group, "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    err = None
    deadline = time.time() + 20
    while err is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is not None:
            err = m.error()
    c.close()
    return err


def binding(rt, name, pattern, principal, op, perm):
    return AclBinding(rt, name, pattern, principal, "*", op, perm)


def test_librdkafka_acls_decide_per_principal_and_resource(acl):
    admin = AdminClient(acl.conf("admin"))
    acls = [
        binding(ResourceType.TOPIC, "alice-", ResourcePatternType.PREFIXED, "User:alice", AclOperation.ALL,
                AclPermissionType.ALLOW),
        binding(ResourceType.TOPIC, "alice-secret", ResourcePatternType.LITERAL, "User:alice", AclOperation.READ,
                AclPermissionType.DENY),
        binding(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice", AclOperation.READ,
                AclPermissionType.ALLOW),
    ]
    for f in admin.create_acls(acls).values():
        assert f.result(30) is None
    listed = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                                  AclOperation.ANY, AclPermissionType.ANY)).result(30)
    assert sorted((b.name, b.operation.name, b.permission_type.name) for b in listed) == sorted(
        [("alice-", "ALL", "ALLOW"), ("alice-secret", "READ", "DENY"), ("alice-", "READ", "ALLOW")])

    # alice sees only her topics; produces and consumes in her group.
    alice = acl.conf("alice")
    md = AdminClient(alice).list_topics(timeout=30)
    assert sorted(md.topics) == ["alice-in", "alice-secret"]
    p = Producer(dict(alice, acks="all"))
    errors = []
    for topic in ("alice-in", "other"):
        for i in range(10):
            p.produce(topic, value=f"{topic}-{i}".encode(),
                      on_delivery=lambda e, m: errors.append((m.topic(), e.code())) if e else None)
    p.flush(30)
    assert sorted(set(errors)) == [("other", KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    c = Consumer(dict(alice, **{"group.id": "alice-g", "auto.offset.reset": "earliest"}))
    c.subscribe(["alice-in"])
    got = []
    deadline = time.time() + 30
    while len(got) < 10 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.commit(asynchronous=False)
    c.close()
    assert len(got) == 10
    # DENY READ beats the prefixed ALLOW ALL.
    err = first_consumer_error(alice, "alice-g2", "alice-secret")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # A group she has no ACL for.
    err = first_consumer_error(alice, "bobs-group", "alice-in")
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    # Creating a topic outside her prefix needs CREATE on it or the cluster.
    alice_admin = AdminClient(alice)
    with pytest.raises(KafkaException) as e:
        alice_admin.create_topics([NewTopic("not-alices", 1, 1)])["not-alices"].result(30)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # bob has no ACL: nothing.
    assert AdminClient(acl.conf("bob")).list_topics(timeout=30).topics == {}

    # kcat as alice lists her topics only.
    out = kcat("-b", acl.sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
               "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret", "-L").stdout.decode()
    assert 'topic "alice-in"' in out and 'topic "other"' not in out, out

    # The DENY deleted: alice reads alice-secret.
    deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "alice-secret", ResourcePatternType.LITERAL,
                                                  None, None, AclOperation.ANY, AclPermissionType.DENY)])
    for f in deleted.values():
        assert len(f.result(30)) == 1
    c = Consumer(dict(alice, **{"group.id": "alice-g3", "auto.offset.reset": "earliest"}))
    c.assign([__import__("confluent_kafka").TopicPartition("alice-secret", 0, 0)])
    m = c.poll(5)
    c.close()
    assert m is None or m.error() is None, m.error()


def test_kafka_python_is_refused_per_topic(acl):
    admin = AdminClient(acl.conf("admin"))
    for f in admin.create_acls([binding(ResourceType.TOPIC, "kp-ok", ResourcePatternType.LITERAL, "User:bob",
                                        AclOperation.WRITE, AclPermissionType.ALLOW)]).values():
        f.result(30)
    admin.create_topics([NewTopic("kp-ok", 1, 1)])["kp-ok"].result(30)
    p = KafkaProducer(bootstrap_servers=acl.sasl, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                      sasl_plain_username="bob", sasl_plain_password="bob-secret", acks="all", max_block_ms=10_000)
    assert p.send("kp-ok", b"v").get(timeout=30).offset == 0
    with pytest.raises(TopicAuthorizationFailedError):
        p.send("alice-in", b"v").get(timeout=30)
    p.close()


def test_java_admin_acls(acl):
    cp = java_classpath()
    r = subprocess.run(["java", "-cp", cp, "AclCheck", acl.sasl], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "acl ok" in r.stdout


def test_cli_manages_acls_and_scram_users_over_sasl(acl, tmp_path):
    """`sluice acl` and `sluice user scram` with --command-config (Kafka's
    client property names), as the super user on the SASL listener."""
    import json
    import os
    from conftest import BINARY
    admin_cfg = tmp_path / "admin.properties"
    admin_cfg.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                         "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
                         'username="admin" password="admin-secret";\n')

    def cli(*args, config=admin_cfg, stdin=None):
        r = subprocess.run([BINARY, *args, "--brokers", acl.sasl, "--command-config", str(config)],
                           input=stdin, capture_output=True, text=True, timeout=60)
        return r

    r = cli("acl", "add", "--topic", "cli-", "--prefixed", "--principal", "User:dave", "--operation", "ALL")
    assert r.returncode == 0, r.stderr
    r = cli("acl", "list", "--principal", "User:dave", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"resource_type": "TOPIC", "name": "cli-", "pattern": "PREFIXED",
                                     "principal": "User:dave", "host": "*", "operation": "ALL",
                                     "permission": "ALLOW"}]
    # A SCRAM user, its password from standard input.
    r = cli("user", "scram", "set", "dave", "--mechanism", "SCRAM-SHA-256", "--iterations", "4096",
            stdin="dave-pw\n")
    assert r.returncode == 0, r.stderr
    r = cli("user", "scram", "list", "--json")
    assert {"user": "dave", "mechanism": "SCRAM-SHA-256", "iterations": 4096} in json.loads(r.stdout), r.stdout
    # dave, by SCRAM, creates and sees topics under his prefix only.
    dave_cfg = tmp_path / "dave.properties"
    dave_cfg.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanisms=SCRAM-SHA-256\n"
                        "sasl.username=dave\nsasl.password=dave-pw\n")
    r = cli("topic", "create", "cli-t", "--partitions", "1", config=dave_cfg)
    assert r.returncode == 0, r.stderr
    r = cli("topic", "list", "--json", config=dave_cfg)
    assert [t["topic"] for t in json.loads(r.stdout)] == ["cli-t"], r.stdout
    r = cli("topic", "create", "elsewhere", config=dave_cfg)
    assert r.returncode == 1 and "TOPIC_AUTHORIZATION_FAILED" in r.stderr, r.stderr
    # A wrong password is refused before any request.
    bad_cfg = tmp_path / "bad.properties"
    bad_cfg.write_text(dave_cfg.read_text().replace("dave-pw", "nope"))
    r = cli("topic", "list", config=bad_cfg)
    assert r.returncode != 0 and "SASL authentication refused" in r.stderr, r.stderr
    # Removing the ACL takes dave's rights away.
    r = cli("acl", "remove", "--topic", "cli-", "--prefixed", "--principal", "User:dave")
    assert r.returncode == 0 and "removed 1" in r.stdout, r.stdout + r.stderr
    r = cli("topic", "list", "--json", config=dave_cfg)
    assert json.loads(r.stdout) == [], r.stdout
    r = cli("user", "scram", "delete", "dave", "--mechanism", "SCRAM-SHA-256")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(BINARY)
