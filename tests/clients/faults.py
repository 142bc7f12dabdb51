"""The fault-injection harness (docs/reliability.md): a three-node cluster
whose nodes each have their own loopback address and a small tmpfs for
data, a workload of real clients recording a history for `sluice-check`,
and the faults (nemeses) that the short suite (`test_faults.py`) runs once
each and the soak (`soak.py`, `scripts/soak.sh`) runs at random.

Every fault is real: kill -9 and SIGSTOP of processes, nftables rules that
drop or rate-limit the packets between two nodes' addresses, a filled
filesystem, a segment file cut short. Each fault is undone by `heal`, which
is always safe to call and is called on every way out."""
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, free_port, records_to_end
from history import History, now_ms

TOPIC = "faults"
# Written by the transactional producer only, read with read_committed.
TXN_TOPIC = "faults-txn"
PARTITIONS = 3
# Keyed writes to a compacted topic whose small segments the cleaner of
# every replica keeps cleaning; checked by `Compacted`.
COMPACTED_TOPIC = "faults-compacted"
COMPACTED_CONFIG = {"cleanup.policy": "compact", "segment.ms": "2000", "min.cleanable.dirty.ratio": "0.01",
                    "delete.retention.ms": "0"}
KEYS = 60
GROUP = "faults-group"
SESSION_MS = 3000

FAULTS = [
    "kill_leader", "kill_follower", "kill_controller", "kill_majority", "pause_leader",
    "partition_leader", "partition_follower", "partition_controller", "one_way_leader",
    "slow_follower", "disk_full", "lose_tail", "lose_tail_leader", "lose_tail_last_isr", "bounce",
]


def sh(cmd):
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd}: {out.stderr.strip()}")
    return out.stdout


def fill_disk(disk):
    """Takes every free block of the filesystem at `disk` with one file;
    returns its path (unlinking it gives the room back)."""
    filler = os.path.join(disk, "filler")
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, max(free, 4096))
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


class Secured:
    """Every listener of a FaultCluster secured: clients on SASL_SSL (PLAIN,
    as `admin`), the brokers' own connections on an SSL listener with
    mutual TLS (each node's certificate names it `broker`), the controller
    quorum on SASL_SSL (PLAIN, as `broker`), and the authorizer on: only
    the super users `broker` and `admin` may do anything, so every
    replica fetch, transaction marker, registration and heartbeat is
    checked against the identity it comes with."""

    def __init__(self, root, hosts):
        from tls_certs import Certs
        certs_dir = os.path.join(root, "certs")
        os.makedirs(certs_dir)
        self.certs = Certs(certs_dir)
        self.keystore = self.certs.node("node", "broker", hosts)
        jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required"
        self.settings = [
            "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SASL_SSL",
            "inter.broker.listener.name=INTERNAL",
            "controller.listener.names=CONTROLLER",
            f"ssl.keystore.location={self.keystore}",
            f"ssl.truststore.location={self.certs.ca}",
            "ssl.client.auth=requested",
            "ssl.principal.mapping.rules=RULE:^CN=([^,]*),.*$/$1/,DEFAULT",
            f'listener.name.client.plain.sasl.jaas.config={jaas} user_admin="admin-secret";',
            # `intruder` may log in to the controllers but is no super user.
            f'listener.name.controller.plain.sasl.jaas.config={jaas} username="broker" password="quorum-secret" '
            'user_broker="quorum-secret" user_intruder="intruder-secret";',
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users=User:broker;User:admin",
        ]
        self.client = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "admin",
                       "sasl.password": "admin-secret", "ssl.ca.location": self.certs.ca}


class FaultCluster:
    """Three combined nodes on 127.0.0.<base>, <base+1>, <base+2>, each
    with its data on its own tmpfs of `disk_mb` MiB (so a disk can fill) and
    its connections to the other nodes starting from its own address (so a
    link can be cut). Runs with different bases can share a host. With
    `secured`, every listener is secured (`Secured`) and the brokers talk
    to each other on a listener of their own."""

    def __init__(self, root, n=3, disk_mb=192, extra=(), base=31, secured=False, cores=1):
        self.root = root
        # With shard endpoints clients see each shard as a broker
        # (node x 1024 + shard); `metadata` maps them back to nodes.
        self.sharded = "sluice.shard.listeners=true" in extra
        self.base = base
        self.mounts = []
        hosts = [f"127.0.0.{base + i}" for i in range(n)]
        ports = [(free_port(h), free_port(h)) for h in hosts]
        voters = ",".join(f"{i + 1}@{h}:{c}" for i, (h, (_, c)) in enumerate(zip(hosts, ports)))
        # Each voter's controller address.
        self.voters = {i + 1: (h, c) for i, (h, (_, c)) in enumerate(zip(hosts, ports))}
        self.secured = Secured(root, hosts) if secured else None
        # librdkafka's security settings of every client of the cluster.
        self.security = self.secured.client if secured else {}
        self.nodes = []
        for i, (h, (p, _)) in enumerate(zip(hosts, ports)):
            disk = os.path.join(root, f"node-{i + 1}")
            os.makedirs(disk)
            sh(f"mount -t tmpfs -o size={disk_mb}m sluice-faults {disk}")
            self.mounts.append(disk)
            data = os.path.join(disk, "data")
            os.makedirs(data)
            settings = [
                f"node.id={i + 1}",
                f"controller.quorum.voters={voters}",
                f"sluice.outbound.address={h}",
                "default.replication.factor=3",
                "min.insync.replicas=2",
                "offsets.topic.num.partitions=3",
                "transaction.state.log.num.partitions=3",
                # A transaction its producer left open ends within seconds.
                "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                f"broker.session.timeout.ms={SESSION_MS}",
                "broker.heartbeat.interval.ms=500",
                "sluice.controller.write.timeout.ms=5000",
                "replica.lag.time.max.ms=4000",
                "replica.fetch.backoff.ms=200",
                "log.segment.bytes=4194304",
                "sluice.storage.min.free.bytes=16777216",
                "num.partitions=1",
                # Follower writes of any size go past the page cache (ADR
                # 0017), so every fault meets that path.
                "sluice.replica.direct.writes.min.bytes=0",
                "log.cleaner.backoff.ms=500",
            ] + list(extra)
            listeners, inter_port = None, p
            if self.secured:
                inter_port = free_port(h)
                listeners = f"CLIENT://{h}:{p},INTERNAL://{h}:{inter_port}"
                settings += self.secured.settings
            b = Broker(data, p, settings, cores=cores, host=h, log_path=os.path.join(root, f"node-{i + 1}.log"),
                       listeners=listeners)
            b.node_id = i + 1
            b.disk = disk
            # The port other brokers fetch from.
            b.inter_port = inter_port
            self.nodes.append(b)

    def start(self):
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_listening()

    def node(self, node_id):
        return self.nodes[node_id - 1]

    def live(self):
        return [n for n in self.nodes if n.proc is not None]

    @property
    def bootstrap(self):
        return ",".join(n.bootstrap for n in self.nodes)

    def admin(self):
        return AdminClient({**self.security, "bootstrap.servers": self.bootstrap, "log_level": 0})

    def metadata(self, timeout=5):
        return self.by_node(self.admin().list_topics(timeout=timeout))

    def by_node(self, md):
        """Metadata with every broker id as its node's id (with shard
        endpoints a client sees node x 1024 + shard)."""
        if not self.sharded:
            return md
        node = lambda i: i // 1024 if i >= 0 else i
        md.brokers = {node(i): b for i, b in md.brokers.items()}
        md.controller_id = node(md.controller_id)
        for t in md.topics.values():
            for p in t.partitions.values():
                p.leader = node(p.leader)
                p.replicas = [node(r) for r in p.replicas]
                p.isrs = [node(r) for r in p.isrs]
        return md

    def create_topic(self):
        # librdkafka's own account of finding the controller goes to a file
        # next to the nodes' logs, for a set-up that fails.
        logger = logging.getLogger(f"faults-admin-{id(self)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(logging.FileHandler(os.path.join(self.root, "admin-create.log")))
        a = AdminClient({**self.security, "bootstrap.servers": self.bootstrap, "log_level": 7,
                         "debug": "admin,broker,metadata", "logger": logger})
        deadline = time.time() + 60
        while True:
            try:
                if len(self.by_node(a.list_topics(timeout=5)).brokers) == len(self.nodes):
                    break
            except KafkaException:
                pass
            if time.time() > deadline:
                raise AssertionError("brokers did not register")
            time.sleep(0.2)
        topics = [NewTopic(t, num_partitions=PARTITIONS, replication_factor=3) for t in (TOPIC, TXN_TOPIC)]
        topics.append(NewTopic(COMPACTED_TOPIC, num_partitions=PARTITIONS, replication_factor=3,
                               config=COMPACTED_CONFIG))
        fs = a.create_topics(topics, request_timeout=20)
        try:
            for t in (TOPIC, TXN_TOPIC, COMPACTED_TOPIC):
                fs[t].result(timeout=25)
        except KafkaException as e:
            a.poll(0)  # hands the queued log lines to the logger
            raise AssertionError(f"creating {TOPIC}: {e}; each node's view: {self.views()}; "
                                 f"librdkafka's log: {os.path.join(self.root, 'admin-create.log')}") from e
        if not self.settled(30):
            raise AssertionError("the new topic did not get leaders and full ISRs")

    def views(self):
        """What each live node's Metadata says of brokers and controller."""
        out = {}
        for n in self.live():
            try:
                conf = {**self.security, "bootstrap.servers": n.bootstrap, "log_level": 0}
                md = AdminClient(conf).list_topics(timeout=3)
                out[n.node_id] = {"answered_by": md.orig_broker_name, "brokers": sorted(md.brokers),
                                  "controller": md.controller_id}
            except KafkaException as e:
                out[n.node_id] = str(e)
        return out

    def settled(self, timeout):
        """Waits until every node is registered and every partition of the
        workload's topics, of __consumer_offsets and of __transaction_state
        (once they exist) has a leader and its full ISR; returns whether it
        happened in time."""
        deadline = time.time() + timeout
        self.last_view = None
        while time.time() < deadline:
            try:
                md = self.metadata()
                ok = len(md.brokers) == len(self.nodes) and TOPIC in md.topics
                view = {"brokers": sorted(md.brokers), "controller": md.controller_id}
                for name in (TOPIC, TXN_TOPIC, "__consumer_offsets", "__transaction_state"):
                    for p, x in md.topics[name].partitions.items() if name in md.topics else []:
                        ok = ok and x.leader >= 0 and sorted(x.isrs) == sorted(x.replicas)
                        view[f"{name}-{p}"] = [x.leader, sorted(x.isrs)]
                self.last_view = view
                if ok:
                    return True
            except KafkaException as e:
                self.last_view = str(e)
            time.sleep(0.25)
        return False

    def stop(self):
        """Kills every node (paused ones too) and removes the mounts; safe
        to call at any point."""
        for n in self.nodes:
            if n.proc is not None:
                if n.proc.poll() is None:
                    try:
                        os.kill(n.proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
                n.kill9()
        for m in self.mounts:
            subprocess.run(["umount", "-l", m], capture_output=True)
        self.mounts = []


class Nemesis:
    """Starts one fault at a time and heals it."""

    def __init__(self, cluster, rng):
        self.c = cluster
        self.rng = rng
        self.undo = []
        # One nftables table per cluster, so runs on other addresses keep
        # theirs.
        self.table = f"sluice_faults_{cluster.base}"
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)

    def _leader(self):
        md = self.c.metadata()
        p = self.rng.randrange(PARTITIONS)
        leader = md.topics[TOPIC].partitions[p].leader
        if leader < 1:
            raise RuntimeError(f"partition {p} has no leader")
        return leader

    def _controller(self):
        ctl = self.c.metadata().controller_id
        if ctl < 1:
            raise RuntimeError("no active controller")
        return ctl

    def _target(self, role):
        """A node in `role`: a random partition's leader or one of its
        followers, or the active controller."""
        if role == "controller":
            return self._controller()
        leader = self._leader()
        return leader if role == "leader" else self._other(leader)

    def _other(self, node_id):
        return self.rng.choice([n.node_id for n in self.c.nodes if n.node_id != node_id])

    def _kill(self, node_id):
        node = self.c.node(node_id)
        node.kill9()
        self.undo.append(lambda: node.start(wait=False))

    def _nft(self, rules):
        sh(f"nft add table inet {self.table}")
        sh(f"nft add chain inet {self.table} out '{{ type filter hook output priority 0; policy accept; }}'")
        for r in rules:
            sh(f"nft add rule inet {self.table} out {r}")
        self.undo.append(lambda: subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True))

    def _isolate(self, node_id, both_ways=True):
        me = self.c.node(node_id).host
        others = ", ".join(n.host for n in self.c.nodes if n.node_id != node_id)
        rules = [f"ip saddr {me} ip daddr {{ {others} }} drop"]
        if both_ways:
            rules.append(f"ip saddr {{ {others} }} ip daddr {me} drop")
        self._nft(rules)

    def _newest_segments(self, node):
        """{partition directory name: (newest segment, its size)}."""
        out = {}
        for d in os.listdir(node.data_dir):
            path = os.path.join(node.data_dir, d)
            logs = sorted(f for f in os.listdir(path) if f.endswith(".log")) if os.path.isdir(path) else []
            if logs:
                seg = os.path.join(path, logs[-1])
                out[d] = (seg, os.path.getsize(seg))
        return out

    def _cut_tails(self, node, since=None):
        """Cuts each of a stopped node's partitions' newest segment by up to
        256 KiB: the writes its page cache had not synced. With `since` (an
        earlier `_newest_segments`), cuts each segment that has not rolled
        since then to below its size then: everything written after that
        moment is lost too."""
        for d, (seg, size) in self._newest_segments(node).items():
            cut = size - self.rng.randrange(1, 256 << 10)
            if since and since.get(d, (None, 0))[0] == seg:
                cut = min(cut, since[d][1] - self.rng.randrange(1, 64 << 10))
            os.truncate(seg, max(0, cut))

    def _partition_isr(self, p):
        x = self.c.metadata().topics[TOPIC].partitions[p]
        return x.leader, sorted(x.isrs)

    def _lose_tail_last_isr(self):
        """The followers of one partition's leader stop reaching its client
        port (the controller port stays open) until the leader's ISR is
        itself alone: from then on acks=all is refused and its high
        watermark stands still. Then the leader is killed, loses the unsynced
        tail of its logs (back to before the followers were cut off, so
        writes acknowledged with the followers in the ISR go too) and
        restarts at once. The followers hold every acknowledged write; the
        restarted leader, the ISR's last member, must not lead from its
        shorter log."""
        p = self.rng.randrange(PARTITIONS)
        leader, _ = self._partition_isr(p)
        if leader < 1:
            raise RuntimeError(f"partition {p} has no leader")
        node = self.c.node(leader)
        others = ", ".join(n.host for n in self.c.nodes if n.node_id != leader)
        before = self._newest_segments(node)
        self._nft([f"ip saddr {{ {others} }} ip daddr {node.host} tcp dport {node.inter_port} drop"])
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self._partition_isr(p) == (leader, [leader]):
                    break
            except KafkaException:
                pass
            time.sleep(0.25)
        else:
            raise RuntimeError(f"partition {p}'s ISR did not shrink to its leader {leader}")
        node.kill9()
        self._cut_tails(node, since=before)
        self.heal()
        node.start(wait=False)
        return [leader]

    def start(self, kind):
        """Starts fault `kind`; returns what it did."""
        assert not self.undo, "one fault at a time"
        nodes = []
        action, _, role = kind.partition("_")
        if action in ("kill", "partition") and role in ("leader", "follower", "controller"):
            nodes = [self._target(role)]
            (self._kill if action == "kill" else self._isolate)(nodes[0])
        elif kind == "kill_majority":
            nodes = self.rng.sample([n.node_id for n in self.c.nodes], 2)
            for n in nodes:
                self._kill(n)
        elif kind == "pause_leader":
            nodes = [self._leader()]
            pid = self.c.node(nodes[0]).proc.pid
            os.kill(pid, signal.SIGSTOP)
            self.undo.append(lambda: os.kill(pid, signal.SIGCONT))
        elif kind == "one_way_leader":
            # The leader hears the others but cannot answer them.
            nodes = [self._leader()]
            self._isolate(nodes[0], both_ways=False)
        elif kind == "slow_follower":
            leader = self._leader()
            nodes = [leader, self._other(leader)]
            src, dst = self.c.node(nodes[0]).host, self.c.node(nodes[1]).host
            self._nft([f"ip saddr {src} ip daddr {dst} limit rate over 64 kbytes/second drop"])
        elif kind == "disk_full":
            nodes = [self.rng.choice(self.c.nodes).node_id]
            filler = fill_disk(self.c.node(nodes[0]).disk)
            self.undo.append(lambda: os.unlink(filler))
        elif kind == "lose_tail":
            # A follower crashes and loses what it had not synced; it comes
            # back when the fault heals.
            nodes = [self._target("follower")]
            node = self.c.node(nodes[0])
            node.kill9()
            self._cut_tails(node)
            self.undo.append(lambda: node.start(wait=False))
        elif kind == "lose_tail_leader":
            # The leader crashes, loses what it had not synced and restarts
            # at once, well within its session: it must not lead again from
            # the metadata it had.
            nodes = [self._leader()]
            node = self.c.node(nodes[0])
            node.kill9()
            self._cut_tails(node)
            node.start(wait=False)
        elif kind == "lose_tail_last_isr":
            nodes = self._lose_tail_last_isr()
        elif kind == "bounce":
            nodes = [self.rng.choice(self.c.nodes).node_id]
            node = self.c.node(nodes[0])
            node.kill9()
            node.start(wait=False)
        else:
            raise ValueError(kind)
        return nodes

    def heal(self):
        while self.undo:
            f = self.undo.pop()
            try:
                f()
            except (OSError, RuntimeError):
                pass
        for n in self.c.live():
            n.wait_listening()


class Compacted:
    """Keyed writes to COMPACTED_TOPIC and their check. An idempotent
    acks=all producer writes `i` under key `i % KEYS` (each key on one
    partition), every seventh round a tombstone; each record carries `i`
    in a header. What must hold once the writes stop and the cleaners of
    all replicas ran: reading each partition from its start, every record
    is one that was sent, in the order sent, and each key's last record is
    at or after its last acknowledged write, or the key is gone and that
    write was a tombstone. (Compaction may keep more, never less.)"""

    def __init__(self):
        self.acked = {}  # key -> highest i acknowledged
        self.tombstone = set()  # the i written as tombstones
        self.sent = 0
        self.lock = threading.Lock()

    def produce(self, bootstrap, stopping, rate=100, security=None):
        p = Producer({**(security or {}), "bootstrap.servers": bootstrap, "acks": -1, "enable.idempotence": True,
                      "linger.ms": 5,
                      "message.timeout.ms": 120000, "request.timeout.ms": 10000, "retry.backoff.ms": 100,
                      "log_level": 0})
        start = time.time()
        while not stopping.is_set():
            while self.sent < int((time.time() - start) * rate):
                i = self.sent
                key = i % KEYS
                dead = (i // KEYS) % 7 == 6 and key % 3 == 0

                def done(err, _msg, i=i, key=key):
                    if err is None:
                        with self.lock:
                            self.acked[key] = max(self.acked.get(key, -1), i)
                try:
                    p.produce(COMPACTED_TOPIC, key=f"k{key}", value=None if dead else f"v{i}",
                              partition=key % PARTITIONS, headers=[("i", str(i).encode())], on_delivery=done)
                except BufferError:
                    break
                if dead:
                    self.tombstone.add(i)
                self.sent += 1
            p.poll(0.01)
        p.flush(120)

    def check(self, bootstrap, security=None):
        """Drains the topic; returns (anomalies, stats)."""
        last, anomalies, records = {}, [], 0
        for part in range(PARTITIONS):
            got, whole = records_to_end(bootstrap, COMPACTED_TOPIC, part, timeout=60, strict=False,
                                         security=security)
            if not whole:
                anomalies.append({"kind": "compacted_unread", "partition": part})
            for m in got:
                records += 1
                key = int(m.key().decode()[1:])
                i = int(dict(m.headers())["i"])
                fine = i < self.sent and i % KEYS == key and key % PARTITIONS == part and \
                    (m.value() is None) == (i in self.tombstone) and (m.value() is None or m.value() == f"v{i}".encode())
                if not fine or i <= last.get(key, -1):
                    anomalies.append({"kind": "compacted_wrong_record", "key": key, "i": i, "offset": m.offset()})
                last[key] = i
        for key, acked in self.acked.items():
            if last.get(key, -1) < acked and not (key not in last and acked in self.tombstone):
                anomalies.append({"kind": "compacted_lost", "key": key, "acked": acked, "last_read": last.get(key)})
        return anomalies, {"sent": self.sent, "acked_keys": len(self.acked), "records_read": records}


class Workload:
    """Three producers (idempotent acks=all, plain acks=all, acks=1) writing
    uniquely numbered values round-robin to the topic's partitions, one
    consumer reading every partition by assignment, two consumers in a
    group committing their positions, and a watcher fetching the group's
    committed offsets; beside them a transactional producer writing
    transactions of four values over the partitions of its own topic
    (every fourth aborted after a flush) and a read_committed consumer of
    that topic; everything recorded in `hist`."""

    def __init__(self, bootstrap, hist, rate=150, security=None):
        self.bootstrap = bootstrap
        # librdkafka's security settings of every client (none: PLAINTEXT).
        self.security = security or {}
        self.hist = hist
        self.rate = rate
        self.stopping = threading.Event()
        self.threads = []
        self.errors = []
        self.compacted = Compacted()

    def start(self):
        producers = [("idem", True, -1), ("plain", False, -1), ("one", False, 1)]
        for name, idem, acks in producers:
            self._spawn(self._produce, name, idem, acks)
        self._spawn(self._read_assigned)
        for name in ("g1", "g2"):
            self._spawn(self._read_group, name)
        self._spawn(self._watch_commits)
        self._spawn(self._transact)
        self._spawn(self._read_committed)
        self._spawn(self.compacted.produce, self.bootstrap, self.stopping, 100, self.security)

    def stop(self):
        """Stops the clients; returns the errors that ended any of them."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=150)
        return list(self.errors)

    def _spawn(self, f, *args):
        def run():
            try:
                f(*args)
            except Exception as e:  # reported by stop()
                self.errors.append(f"{f.__name__}{args}: {e!r}")
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def _produce(self, name, idempotent, acks):
        p = Producer({
            **self.security, "bootstrap.servers": self.bootstrap, "acks": acks, "enable.idempotence": idempotent,
            "linger.ms": 5, "message.timeout.ms": 120000, "request.timeout.ms": 10000,
            "retry.backoff.ms": 100, "log_level": 0,
        })
        outstanding = {}
        start, i = time.time(), 0
        while not self.stopping.is_set():
            target = int((time.time() - start) * self.rate)
            while i < target:
                value = f"{name}-{i}"
                part = i % PARTITIONS
                record = self.hist.sender(name, TOPIC, part, value, idempotent, acks)
                outstanding[value] = (now_ms(), part)

                def done(err, msg, record=record, value=value):
                    outstanding.pop(value, None)
                    record(err, msg)
                try:
                    p.produce(TOPIC, value=value.encode(), partition=part, on_delivery=done)
                except BufferError:
                    outstanding.pop(value, None)
                    break
                i += 1
            p.poll(0.01)
        p.flush(120)
        for value, (t, part) in list(outstanding.items()):
            self.hist.unknown(name, t, TOPIC, part, value, idempotent, acks)

    def _transact(self, per_second=10):
        """Transactions of four values; each recorded with how it ended for
        the producer: committed, aborted, or unknown (an error while
        committing; the producer is then made anew, whose init aborts the
        transaction if it is still open)."""
        p, n = None, 0
        start = time.time()
        while not self.stopping.is_set():
            if p is None:
                p = Producer({**self.security, "bootstrap.servers": self.bootstrap, "transactional.id": "faults-txn",
                              "transaction.timeout.ms": 10000, "linger.ms": 5, "log_level": 0})
                try:
                    p.init_transactions(30)
                except KafkaException:
                    p = None
                    time.sleep(1)
                    continue
            if n >= (time.time() - start) * per_second:
                time.sleep(0.02)
                continue
            values = [(j % PARTITIONS, f"txn-{n}-{j}") for j in range(4)]
            t0, outcome = now_ms(), "info"
            try:
                p.begin_transaction()
                for part, v in values:
                    p.produce(TXN_TOPIC, value=v.encode(), partition=part)
                if n % 4 == 3:
                    p.flush(30)
                    p.abort_transaction(30)
                    outcome = "fail"
                else:
                    p.commit_transaction(30)
                    outcome = "ok"
            except KafkaException as e:
                if e.args[0].txn_requires_abort():
                    try:
                        p.abort_transaction(30)
                        outcome = "fail"
                    except KafkaException:
                        p = None
                else:
                    p = None
            self.hist.add({"op": "txn", "process": "txn", "start_ms": t0, "end_ms": now_ms(), "outcome": outcome,
                           "topic": TXN_TOPIC, "values": [[part, v] for part, v in values]})
            n += 1

    def _read_committed(self):
        c = Consumer({**self.security, "bootstrap.servers": self.bootstrap, "group.id": f"committed-{time.time()}",
                      "enable.auto.commit": False, "isolation.level": "read_committed",
                      "fetch.wait.max.ms": 100, "log_level": 0})
        c.assign([TopicPartition(TXN_TOPIC, p, 0) for p in range(PARTITIONS)])
        while not self.stopping.is_set():
            for m in c.consume(500, 0.1):
                if not m.error():
                    self.hist.read_committed("committed", "live", TXN_TOPIC, m.partition(), m.offset(),
                                             m.value().decode())
        c.close()

    def _read_assigned(self):
        c = Consumer({**self.security, "bootstrap.servers": self.bootstrap, "group.id": f"reader-{time.time()}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 100, "log_level": 0})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        while not self.stopping.is_set():
            for m in c.consume(500, 0.1):
                if not m.error():
                    self.hist.read("reader", "assigned", TOPIC, m.partition(), m.offset(), m.value().decode())
        c.close()

    def _read_group(self, name):
        session = [None]
        generation = [0]

        def assigned(consumer, parts):
            generation[0] += 1
            session[0] = f"{name}-{generation[0]}"

        c = Consumer({**self.security, "bootstrap.servers": self.bootstrap, "group.id": GROUP, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100, "session.timeout.ms": 10000,
                      "heartbeat.interval.ms": 1000, "log_level": 0})
        c.subscribe([TOPIC], on_assign=assigned)
        last_commit = time.time()
        while not self.stopping.is_set():
            for m in c.consume(500, 0.1):
                if not m.error():
                    self.hist.read(name, session[0], TOPIC, m.partition(), m.offset(), m.value().decode())
            if time.time() - last_commit >= 1.0:
                last_commit = time.time()
                self._commit(c, name)
        c.close()

    def _commit(self, c, name):
        try:
            positions = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
        except KafkaException:
            return
        if not positions:
            return
        start = now_ms()
        try:
            result = c.commit(offsets=positions, asynchronous=False)
            outcome = {(tp.partition): "ok" if tp.error is None else "fail" for tp in result}
        except KafkaException:
            outcome = {}
        end = now_ms()
        for tp in positions:
            self.hist.add({"op": "commit", "process": name, "start_ms": start, "end_ms": end,
                           "outcome": outcome.get(tp.partition, "info"), "group": GROUP, "topic": TOPIC,
                           "partition": tp.partition, "offset": tp.offset})

    def _watch_commits(self):
        c = Consumer({**self.security, "bootstrap.servers": self.bootstrap, "group.id": GROUP, "log_level": 0})
        parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        while not self.stopping.wait(1.0):
            start = now_ms()
            try:
                got = c.committed(parts, timeout=5)
            except KafkaException:
                continue
            end = now_ms()
            for tp in got:
                if tp.error is None and tp.offset >= 0:
                    self.hist.add({"op": "fetch_committed", "process": "watcher", "start_ms": start,
                                   "end_ms": end, "group": GROUP, "topic": TOPIC, "partition": tp.partition,
                                   "offset": tp.offset})
        c.close()


def longest_gap(hist_path, windows, process="idem"):
    """For each (kind, start_ms, end_ms) window, the longest time in seconds
    without an acknowledged send of `process` that overlaps the window."""
    acks = []
    with open(hist_path) as f:
        for line in f:
            if f'"process": "{process}"' in line and '"outcome": "ok"' in line:
                acks.append(json.loads(line)["end_ms"])
    acks.sort()
    out = []
    for kind, start, end in windows:
        worst, prev = 0.0, None
        for t in acks:
            if prev is not None and t >= start and prev <= end:
                worst = max(worst, t - prev)
            prev = t
            if t > end:
                break
        out.append((kind, worst / 1000.0))
    return out


def run_faults(root, schedule, seed, hold, rate=150, settle=60, disk_mb=192, base=31, extra=(), log=print,
               secured=False, cores=1):
    """Runs `schedule` (fault kinds, in order; any iterable) against a
    fresh cluster under the workload: each fault is held for `hold(rng)`
    seconds, healed, and followed by a wait for the cluster to settle.
    Drains and checks the history; returns a dict report."""
    rng = random.Random(seed)
    cluster = FaultCluster(root, disk_mb=disk_mb, extra=extra, base=base, secured=secured, cores=cores)
    nemesis = Nemesis(cluster, rng)
    hist = History(os.path.join(root, "history.jsonl"), keep=False)
    faults, unsettled = [], 0
    started = time.time()
    try:
        cluster.start()
        cluster.create_topic()
        work = Workload(cluster.bootstrap, hist, rate=rate, security=cluster.security)
        work.start()
        time.sleep(3)
        for kind in schedule:
            t0 = now_ms()
            nodes = nemesis.start(kind)
            secs = hold(rng)
            log(f"{time.strftime('%H:%M:%S')} fault {kind} on node(s) {nodes} for {secs:.1f}s")
            time.sleep(secs)
            nemesis.heal()
            t1 = now_ms()
            ok = cluster.settled(settle)
            unsettled += 0 if ok else 1
            faults.append({"fault": kind, "nodes": nodes, "start_ms": t0, "healed_ms": t1,
                           "settled_ms": now_ms(), "settled": ok})
            if not ok:
                log(f"not settled: {cluster.last_view}")
            if work.errors:
                # A client gave up (a fatal error such as a desynchronized
                # idempotent producer): that is a finding, and the rest of
                # the schedule would only run without it.
                log(f"{time.strftime('%H:%M:%S')} a client stopped: {work.errors}; ending the run")
                break
            time.sleep(rng.uniform(1, 3))
        time.sleep(2)
        client_errors = work.stop()
        hist.drain(cluster.bootstrap, TOPIC, PARTITIONS, security=cluster.security)
        hist.drain_committed(cluster.bootstrap, TXN_TOPIC, PARTITIONS, security=cluster.security)
        compacted_anomalies, compacted = work.compacted.check(cluster.bootstrap, security=cluster.security)
        # The replicas whose cleaner finished a pass over each partition.
        compacted["cleaned_on"] = {
            p: [n.node_id for n in cluster.nodes
                if os.path.exists(os.path.join(n.data_dir, f"{COMPACTED_TOPIC}-{p}", "cleaner-offset-checkpoint"))]
            for p in range(PARTITIONS)}
    finally:
        try:
            nemesis.heal()
        finally:
            cluster.stop()
    report, anomalies = hist.check()
    # Each client a fatal error stopped counts as an anomaly of its own.
    for e in client_errors:
        report["anomalies"].append({"kind": "client_stopped", "message": e, "ops": []})
        report["counts"]["client_stopped"] = report["counts"].get("client_stopped", 0) + 1
    anomalies += len(client_errors)
    for a in compacted_anomalies:
        report["anomalies"].append(dict(a, ops=[]))
        report["counts"][a["kind"]] = report["counts"].get(a["kind"], 0) + 1
    anomalies += len(compacted_anomalies)
    report["forbidden"] = anomalies
    gaps = longest_gap(hist.path, [(f["fault"], f["start_ms"], f["settled_ms"]) for f in faults])
    availability = {}
    for kind, g in gaps:
        availability[kind] = max(availability.get(kind, 0.0), g)
    return {
        "seed": seed, "seconds": round(time.time() - started, 1), "faults": faults,
        "fault_counts": {k: sum(1 for f in faults if f["fault"] == k) for k in sorted({f["fault"] for f in faults})},
        "unsettled": unsettled, "operations": dict(hist.counts), "availability_longest_gap_s": availability,
        "compacted": compacted,
        "check": report, "anomalies": anomalies,
    }
