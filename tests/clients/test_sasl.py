"""SASL_PLAINTEXT with real clients: librdkafka (confluent-kafka), Debian's
kcat, kafka-python and the Java client, with PLAIN (users from the JAAS
setting) and SCRAM-SHA-256/512 (users made through AlterUserScramCredentials
on the broker's PLAINTEXT listener). Wrong passwords, unknown users and a
plaintext client on the SASL port are refused, and the broker keeps
serving the others."""
import subprocess
import tempfile
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
from kafka.admin import KafkaAdminClient

from conftest import Broker, free_ports
from secured import first_error, java_classpath, kafka_python_round_trip, kcat, librdkafka_round_trip

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_alice="alice-secret" user_admin="admin-secret";')
USERS = {
    "SCRAM-SHA-512": ("bob", "bob-secret"),
    "SCRAM-SHA-256": ("carol", "carol-secret"),
    "PLAIN": ("alice", "alice-secret"),
}


class SaslBroker:
    def __init__(self, broker, sasl_port, admin_port):
        self.broker = broker
        self.plain = broker.bootstrap
        self.sasl = f"127.0.0.1:{sasl_port}"
        self.admin_port = admin_port

    def conf(self, mechanism, user=None, password=None):
        u, p = USERS[mechanism]
        return {"bootstrap.servers": self.sasl, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": mechanism, "sasl.username": user or u, "sasl.password": password or p}

    def metric(self, name, labels):
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10).read().decode()
        for line in body.splitlines():
            if line.startswith(name + "{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="module")
def sasl():
    with tempfile.TemporaryDirectory() as tmp:
        port, sasl_port, admin_port = free_ports(3)
        b = Broker(tmp, port, [
            "num.partitions=1",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}",
            "connection.failed.authentication.delay.ms=200",
            "connections.max.reauth.ms=1500",
            f"sluice.admin.listen=127.0.0.1:{admin_port}",
        ], listeners=f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}")
        b.start()
        try:
            admin = AdminClient({"bootstrap.servers": b.bootstrap})
            ups = [UserScramCredentialUpsertion(u, ScramCredentialInfo(getattr(ScramMechanism, m.replace("-", "_")),
                                                                         4096), p.encode())
                   for m, (u, p) in USERS.items() if m != "PLAIN"]
            for user, f in admin.alter_user_scram_credentials(ups).items():
                assert f.result() is None, user
            d = admin.describe_user_scram_credentials(["bob", "carol"])
            assert d["bob"].result().scram_credential_infos[0].iterations == 4096
            yield SaslBroker(b, sasl_port, admin_port)
        finally:
            b.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_librdkafka_authenticates_with_each_mechanism(sasl, mechanism):
    conf = sasl.conf(mechanism)
    admin = librdkafka_round_trip(conf, f"sasl-{mechanism.lower()}-{uuid.uuid4().hex[:6]}")
    md = admin.list_topics(timeout=30)
    # Metadata through the SASL listener names the SASL listener's endpoint.
    assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", int(sasl.sasl.split(":")[1]))]


def test_wrong_passwords_unknown_users_and_plaintext_clients_are_refused(sasl):
    before = sasl.metric("sluice_sasl_authentications_total", 'result="failure"')
    for conf in [sasl.conf("SCRAM-SHA-512", password="wrong"), sasl.conf("SCRAM-SHA-512", user="mallory"),
                 sasl.conf("PLAIN", password="wrong"), sasl.conf("PLAIN", user="mallory")]:
        err = first_error(conf)
        assert isinstance(err, KafkaError) and err.code() == KafkaError._AUTHENTICATION, (conf["sasl.username"], err)
        assert "Authentication failed" in err.str(), err.str()
    assert sasl.metric("sluice_sasl_authentications_total", 'result="failure"') >= before + 4
    # A client that skips SASL on the SASL port gets nothing: its first
    # request closes the connection.
    p = Producer({"bootstrap.servers": sasl.sasl, "socket.timeout.ms": 3000})
    with pytest.raises(Exception):
        p.list_topics(timeout=3)
    # The broker serves the others all the while.
    librdkafka_round_trip(sasl.conf("SCRAM-SHA-512"), f"after-{uuid.uuid4().hex[:6]}", n=50)


def test_sessions_are_renewed_by_reauthentication(sasl):
    """connections.max.reauth.ms=1500: librdkafka re-authenticates on its
    connections; a produce loop across several session lifetimes loses
    nothing."""
    before = sasl.metric("sluice_sasl_authentications_total", 'result="success"')
    conf = sasl.conf("SCRAM-SHA-256")
    topic = f"reauth-{uuid.uuid4().hex[:6]}"
    p = Producer(dict(conf, acks="all", **{"linger.ms": 5}))
    delivered, failed = [], []
    end = time.time() + 5
    i = 0
    while time.time() < end:
        p.produce(topic, value=str(i).encode(),
                  on_delivery=lambda e, m: failed.append(e) if e else delivered.append(m.offset()))
        i += 1
        p.poll(0.01)
    assert p.flush(30) == 0
    assert not failed, failed[:3]
    assert len(delivered) == i
    # More successes than connections: sessions were renewed in place.
    after = sasl.metric("sluice_sasl_authentications_total", 'result="success"')
    assert after - before >= 4, (before, after)


def test_kcat_scram(sasl):
    u, pw = USERS["SCRAM-SHA-256"]
    common = ["-b", sasl.sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256",
              "-X", f"sasl.username={u}"]
    topic = f"kc-sasl-{uuid.uuid4().hex[:6]}"
    kcat(*common, "-X", f"sasl.password={pw}", "-P", "-t", topic,
         stdin="".join(f"line-{i}\n" for i in range(200)).encode())
    out = kcat(*common, "-X", f"sasl.password={pw}", "-C", "-t", topic, "-e", "-o", "beginning", "-f", "%s\n")
    assert out.stdout.decode().splitlines() == [f"line-{i}" for i in range(200)]
    r = kcat(*common, "-X", "sasl.password=wrong", "-L", "-m", "5", check=False)
    assert r.returncode != 0
    assert b"Authentication failed" in r.stderr, r.stderr.decode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_kafka_python(sasl, mechanism, caplog):
    u, pw = USERS[mechanism]
    conf = dict(bootstrap_servers=sasl.sasl, security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                sasl_plain_username=u, sasl_plain_password=pw)
    kafka_python_round_trip(conf, f"kp-sasl-{mechanism.lower()}", f"kp-{mechanism}")
    if mechanism == "PLAIN":
        return
    bad = dict(conf, sasl_plain_password="wrong")
    with pytest.raises(Exception):
        KafkaAdminClient(request_timeout_ms=5_000, reconnect_backoff_max_ms=500, **bad)
    # kafka-python retries until its bootstrap times out; each try was
    # refused as Kafka refuses it.
    assert "SaslAuthenticationFailedError" in caplog.text


def test_java_client(sasl):
    cp = java_classpath()
    r = subprocess.run(["java", "-cp", cp, "SaslCheck", sasl.sasl, sasl.plain], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sasl ok" in r.stdout
