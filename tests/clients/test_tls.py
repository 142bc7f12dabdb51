"""TLS with real clients: SSL, SASL_SSL (PLAIN and SCRAM-SHA-512) and
mutual TLS, with librdkafka (confluent-kafka), Debian's kcat, kafka-python
and the Java client; wrong and expired certificates, a plaintext client on
a TLS port and a TLS client on the plaintext port are refused, and the
broker keeps serving; a changed certificate file is picked up without a
restart."""
import os
import socket
import ssl
import subprocess
import tempfile
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from conftest import Broker, free_ports
from secured import first_error, java_classpath, kafka_python_round_trip, kcat, librdkafka_round_trip
from tls_certs import Certs

JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
        'user_alice="alice-secret";')


class TlsBroker:
    def __init__(self, broker, ports, certs):
        self.broker = broker
        self.plain = broker.bootstrap
        self.ports = ports
        self.certs = certs

    def addr(self, listener):
        return f"127.0.0.1:{self.ports[listener]}"

    def ssl_conf(self, **more):
        return dict({"bootstrap.servers": self.addr("SSL"), "security.protocol": "SSL",
                     "ssl.ca.location": self.certs.ca}, **more)

    def sasl_ssl_conf(self, mechanism, user, password):
        return {"bootstrap.servers": self.addr("SASL_SSL"), "security.protocol": "SASL_SSL",
                "ssl.ca.location": self.certs.ca, "sasl.mechanisms": mechanism, "sasl.username": user,
                "sasl.password": password}


def start(tmp, certs, extra, listeners, env=None):
    ports = dict(zip(listeners, free_ports(len(listeners))))
    spec = ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items())
    b = Broker(os.path.join(tmp, "data"), ports[listeners[0]], [
        "num.partitions=1",
        f"ssl.keystore.location={certs.keystore}",
        f"ssl.truststore.location={certs.ca}",
        "connection.failed.authentication.delay.ms=100",
    ] + extra, listeners=spec)
    os.makedirs(b.data_dir, exist_ok=True)
    if env:
        b.env = dict(os.environ, **env)
    b.start()
    return TlsBroker(b, ports, certs)


@pytest.fixture(scope="module")
def tls():
    with tempfile.TemporaryDirectory() as tmp:
        certs = Certs(tmp)
        t = start(tmp, certs, [f"listener.name.sasl_ssl.plain.sasl.jaas.config={JAAS}",
                               "sluice.ssl.keystore.reload.check.ms=100"],
                  ["PLAINTEXT", "SSL", "SASL_SSL"])
        try:
            admin = AdminClient({"bootstrap.servers": t.plain})
            up = UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                              b"bob-secret")
            admin.alter_user_scram_credentials([up])["bob"].result()
            yield t
        finally:
            t.broker.stop()


@pytest.fixture(scope="module")
def mtls():
    with tempfile.TemporaryDirectory() as tmp:
        certs = Certs(tmp)
        t = start(tmp, certs, ["ssl.client.auth=required",
                               r"ssl.principal.mapping.rules=RULE:^CN=([^,]*),.*$/$1/L,DEFAULT"],
                  ["PLAINTEXT", "SSL"], env={"RUST_LOG": "info,sluice::net=debug"})
        try:
            yield t
        finally:
            t.broker.stop()


def test_librdkafka_over_ssl(tls):
    admin = librdkafka_round_trip(tls.ssl_conf(), f"ssl-{uuid.uuid4().hex[:6]}")
    md = admin.list_topics(timeout=30)
    assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", tls.ports["SSL"])]


def test_librdkafka_large_records_over_ssl(tls):
    """Records larger than a TLS record (16 KiB) and fetches of many
    megabytes: the fetch path reads the log and encrypts it."""
    conf = tls.ssl_conf()
    topic = f"ssl-big-{uuid.uuid4().hex[:6]}"
    p = Producer(dict(conf, acks="all"))
    payloads = [os.urandom(200_000) for _ in range(30)]
    for v in payloads:
        p.produce(topic, value=v)
    assert p.flush(30) == 0
    c = Consumer(dict(conf, **{"group.id": topic, "auto.offset.reset": "earliest",
                               "fetch.max.bytes": 8 << 20}))
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < len(payloads) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == payloads


@pytest.mark.parametrize("mechanism,user,password", [("PLAIN", "alice", "alice-secret"),
                                                     ("SCRAM-SHA-512", "bob", "bob-secret")])
def test_librdkafka_over_sasl_ssl(tls, mechanism, user, password):
    librdkafka_round_trip(tls.sasl_ssl_conf(mechanism, user, password), f"sasl-ssl-{uuid.uuid4().hex[:6]}")


def test_refusals_leave_the_broker_serving(tls):
    # A wrong SASL password over TLS.
    err = first_error(tls.sasl_ssl_conf("SCRAM-SHA-512", "bob", "wrong"))
    assert err is not None and err.code() == KafkaError._AUTHENTICATION, err
    # A client that does not trust the broker's CA.
    with tempfile.TemporaryDirectory() as other:
        stranger = Certs(other)
        err = first_error(tls.ssl_conf(**{"ssl.ca.location": stranger.ca}))
        assert err is not None and err.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), err
    # A plaintext client on the TLS port: nothing is served.
    p = Producer({"bootstrap.servers": tls.addr("SSL"), "socket.timeout.ms": 3000})
    with pytest.raises(Exception):
        p.list_topics(timeout=3)
    # A TLS client on the plaintext port: refused at its first record.
    ctx = ssl.create_default_context(cafile=tls.certs.ca)
    with socket.create_connection(("127.0.0.1", int(tls.plain.split(":")[1])), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.recv(1)
    # A Kafka request in the clear on the TLS port: at most an alert back,
    # then the connection closes.
    with socket.create_connection(("127.0.0.1", tls.ports["SSL"]), timeout=10) as raw:
        raw.sendall(b"\x00\x00\x00\x10" + b"x" * 16)
        got = b""
        while True:
            chunk = raw.recv(100)
            if not chunk:
                break
            got += chunk
        assert len(got) < 64 and not got.startswith(b"\x00\x00"), got
    librdkafka_round_trip(tls.ssl_conf(), f"after-{uuid.uuid4().hex[:6]}", n=20)


def test_a_changed_certificate_is_served_without_a_restart(tls):
    ctx = ssl.create_default_context(cafile=tls.certs.ca)

    def served_name():
        with socket.create_connection(("127.0.0.1", tls.ports["SSL"]), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                cert = s.getpeercert()
        return dict(x[0] for x in cert["subject"])["commonName"]

    assert served_name() == "broker"
    tls.certs.write_keystore("broker-renewed")
    deadline = time.time() + 10
    while served_name() != "broker-renewed" and time.time() < deadline:
        time.sleep(0.2)
    assert served_name() == "broker-renewed"
    tls.certs.write_keystore("broker")


@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL"])
def test_kcat(tls, listener):
    common = ["-b", tls.addr(listener), "-X", f"security.protocol={listener}", "-X", f"ssl.ca.location={tls.certs.ca}"]
    if listener == "SASL_SSL":
        common += ["-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=bob", "-X", "sasl.password=bob-secret"]
    topic = f"kc-{listener.lower()}-{uuid.uuid4().hex[:6]}"
    kcat(*common, "-P", "-t", topic, stdin="".join(f"line-{i}\n" for i in range(200)).encode())
    out = kcat(*common, "-C", "-t", topic, "-e", "-o", "beginning", "-f", "%s\n")
    assert out.stdout.decode().splitlines() == [f"line-{i}" for i in range(200)]


@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL"])
def test_kafka_python(tls, listener):
    conf = dict(bootstrap_servers=tls.addr(listener), security_protocol=listener, ssl_cafile=tls.certs.ca)
    if listener == "SASL_SSL":
        conf.update(sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob", sasl_plain_password="bob-secret")
    kafka_python_round_trip(conf, f"kp-{listener.lower()}", f"kp-{listener}")


def test_mutual_tls(mtls):
    """The client certificate's subject, through
    ssl.principal.mapping.rules, is the connection's principal."""
    alice = mtls.certs.alice
    conf = mtls.ssl_conf(**{"ssl.certificate.location": alice["cert"], "ssl.key.location": alice["key"]})
    librdkafka_round_trip(conf, f"mtls-{uuid.uuid4().hex[:6]}", n=50)
    # No certificate, one from another CA, an expired one: refused.
    for more in [{}, {"ssl.certificate.location": mtls.certs.untrusted["cert"],
                      "ssl.key.location": mtls.certs.untrusted["key"]},
                 {"ssl.certificate.location": mtls.certs.expired["cert"],
                  "ssl.key.location": mtls.certs.expired["key"]}]:
        assert first_error(mtls.ssl_conf(**more), seconds=8) is not None, more
    librdkafka_round_trip(conf, f"mtls-after-{uuid.uuid4().hex[:6]}", n=10)
    import re
    with open(mtls.broker.log_path, errors="replace") as f:
        log = re.sub(r"\x1b\[[0-9;]*m", "", f.read())
    assert "principal=User:alice" in log, "CN=alice,OU=eng,O=Example,C=US mapped by the rule"


def test_cli_over_ssl_sasl_ssl_and_mutual_tls(tls, mtls, tmp_path):
    """`sluice --command-config` with Kafka's client properties and PEM
    stores: over SSL, SASL_SSL (SCRAM-SHA-512) and mutual TLS."""
    from conftest import BINARY
    configs = {
        tls.addr("SSL"): f"security.protocol=SSL\nssl.truststore.location={tls.certs.ca}\n",
        tls.addr("SASL_SSL"): (f"security.protocol=SASL_SSL\nssl.truststore.location={tls.certs.ca}\n"
                               "sasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security."
                               'scram.ScramLoginModule required username="bob" password="bob-secret";\n'),
        mtls.addr("SSL"): (f"security.protocol=SSL\nssl.truststore.location={mtls.certs.ca}\n"
                           f"ssl.keystore.location={mtls.certs.alice['pem']}\n"),
    }
    for i, (addr, text) in enumerate(configs.items()):
        cfg = tmp_path / f"{i}.properties"
        cfg.write_text(text)
        r = subprocess.run([BINARY, "cluster", "info", "--json", "--brokers", addr, "--command-config", str(cfg)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (addr, r.stderr)
        assert str(addr.split(":")[1]) in r.stdout, r.stdout
    # Without the client certificate the mutual-TLS broker refuses.
    cfg = tmp_path / "nocert.properties"
    cfg.write_text(f"security.protocol=SSL\nssl.truststore.location={mtls.certs.ca}\n")
    r = subprocess.run([BINARY, "cluster", "info", "--brokers", mtls.addr("SSL"), "--command-config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr


def test_java_client(tls, mtls):
    cp = java_classpath()
    alice = mtls.certs.alice["pem"]
    r = subprocess.run(["java", "-cp", cp, "TlsCheck", tls.addr("SSL"), tls.addr("SASL_SSL"), tls.certs.ca,
                        mtls.addr("SSL"), mtls.certs.ca, alice], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tls ok" in r.stdout
