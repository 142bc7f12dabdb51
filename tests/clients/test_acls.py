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

from conftest import Broker, free_port
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
        port, sasl_port = free_port(), free_port()
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
    c = Consumer(dict(alice, **{"group.id": "alice-g2", "auto.offset.reset": "earliest"}))
    c.subscribe(["alice-secret"])
    err = None
    deadline = time.time() + 20
    while err is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is not None:
            err = m.error()
    c.close()
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # A group she has no ACL for.
    c = Consumer(dict(alice, **{"group.id": "bobs-group", "auto.offset.reset": "earliest"}))
    c.subscribe(["alice-in"])
    err = None
    deadline = time.time() + 20
    while err is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is not None:
            err = m.error()
    c.close()
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
