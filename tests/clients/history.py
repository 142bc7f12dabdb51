"""Recording a client-side history in the checker's format (JSON Lines,
`tools/src/history.rs`) and judging it with `sluice-check`."""
import json
import os
import subprocess
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from conftest import ROOT

CHECKER = os.path.join(ROOT, "target", "release", "sluice-check")


def now_ms():
    return time.time() * 1000.0


class History:
    """Operations appended from any thread, written to `path` as they come;
    with `keep`, also held in `ops`."""

    def __init__(self, path, keep=True):
        self.path = path
        self.keep = keep
        self.ops = []
        self.counts = {}
        self._lock = threading.Lock()
        self._file = open(path, "w")

    def add(self, op):
        line = json.dumps(op) + "\n"
        with self._lock:
            self._file.write(line)
            key = op["op"] if op["op"] != "send" else f"send_{op['outcome']}"
            self.counts[key] = self.counts.get(key, 0) + 1
            if self.keep:
                self.ops.append(op)

    def sender(self, process, topic, partition, value, idempotent, acks):
        """A delivery callback that records the send of `value`, started now."""
        start = now_ms()

        def done(err, msg):
            op = {"op": "send", "process": process, "start_ms": start, "end_ms": now_ms(),
                  "outcome": "ok" if err is None else "fail", "topic": topic, "partition": partition,
                  "value": value, "idempotent": idempotent, "acks": acks}
            if err is None:
                op["offset"] = msg.offset()
                op["partition"] = msg.partition()
            self.add(op)
        return done

    def unknown(self, process, start, topic, partition, value, idempotent, acks):
        """A send whose outcome never came (the producer was closed first)."""
        self.add({"op": "send", "process": process, "start_ms": start, "end_ms": now_ms(), "outcome": "info",
                  "topic": topic, "partition": partition, "value": value, "idempotent": idempotent,
                  "acks": acks})

    def read(self, process, session, topic, partition, offset, value):
        t = now_ms()
        self.add({"op": "read", "process": process, "session": session, "start_ms": t, "end_ms": t,
                  "topic": topic, "partition": partition, "offset": offset, "value": value})

    def read_committed(self, process, session, topic, partition, offset, value):
        t = now_ms()
        self.add({"op": "read_committed", "process": process, "session": session, "start_ms": t, "end_ms": t,
                  "topic": topic, "partition": partition, "offset": offset, "value": value})

    def drain_committed(self, bootstrap, topic, partitions, timeout=60, security=None):
        """Reads every partition of `topic` with read_committed as the
        `final` session, once no transaction is open there (its last stable
        offset reached its high watermark: the coordinator aborts what a
        producer left open) or `timeout` passed."""
        committed = Consumer({**(security or {}), "bootstrap.servers": bootstrap, "group.id": f"drain-rc-{time.time()}",
                              "enable.auto.commit": False, "isolation.level": "read_committed",
                              "log_level": 0})
        plain = Consumer({**(security or {}), "bootstrap.servers": bootstrap, "group.id": f"drain-hw-{time.time()}",
                          "enable.auto.commit": False, "log_level": 0})
        for p in range(partitions):
            tp = TopicPartition(topic, p)
            deadline = time.time() + timeout
            while True:
                try:
                    stable = committed.get_watermark_offsets(tp, timeout=10)[1]
                    high = plain.get_watermark_offsets(tp, timeout=10)[1]
                except KafkaException:
                    stable, high = -1, 0
                if (stable == high and stable >= 0) or time.time() > deadline:
                    break
                time.sleep(0.5)
            committed.assign([TopicPartition(topic, p, 0)])
            quiet_until = time.time() + 5
            while time.time() < quiet_until:
                for m in committed.consume(1000, 0.5):
                    if m.error():
                        continue
                    quiet_until = time.time() + 5
                    self.read_committed("drain", "final", topic, p, m.offset(), m.value().decode())
                    if m.offset() >= stable - 1:
                        quiet_until = 0
        committed.close()
        plain.close()

    def drain(self, bootstrap, topic, partitions, timeout=30, security=None):
        """Reads every partition from its start to its high watermark as the
        `final` session; `timeout` bounds each wait for the next record."""
        c = Consumer({**(security or {}), "bootstrap.servers": bootstrap, "group.id": f"drain-{time.time()}",
                      "enable.auto.commit": False, "log_level": 0})
        for p in range(partitions):
            deadline = time.time() + timeout
            high = None
            while high is None:
                try:
                    _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                except KafkaException:
                    # A new leader answers OFFSET_NOT_AVAILABLE until its
                    # high watermark reaches its epoch's start.
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
            c.assign([TopicPartition(topic, p, 0)])
            last = -1
            # `timeout` bounds each wait for progress, not the whole read.
            deadline = time.time() + timeout
            while last < high - 1 and time.time() < deadline:
                for m in c.consume(1000, 0.5):
                    if m.error():
                        continue
                    last = m.offset()
                    deadline = time.time() + timeout
                    self.read("drain", "final", topic, p, m.offset(), m.value().decode())
        c.close()

    def check(self, allow_unclean=False):
        """Closes the history and runs the checker; returns its report and
        the number of forbidden anomalies."""
        with self._lock:
            self._file.close()
        cmd = [CHECKER, self.path] + (["--allow-unclean"] if allow_unclean else [])
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = out.stdout.rstrip().split("\n")
        assert lines[-1].startswith("anomalies: "), out.stdout + out.stderr
        report = json.loads("\n".join(lines[:-1]))
        n = int(lines[-1].split()[1])
        assert (out.returncode == 0) == (n == 0), out
        return report, n
