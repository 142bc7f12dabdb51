"""One consumer-group member for the group tests, as its own process so a
test can stop it cleanly (SIGTERM: close and leave the group) or kill it
(SIGKILL). Prints one JSON object per line on stdout, each with its wall
clock time "t":

  {"ev": "assigned", "partitions": [..]}   partitions added (all of them
                                           under the classic protocol)
  {"ev": "revoked", "partitions": [..]}    before partitions are taken away
  {"ev": "msg", "p": P, "o": O}            for each message, before its commit
  {"ev": "committed", "p": P, "o": O}      after a synchronous commit of O

Usage: group_member.py BOOTSTRAP TOPIC GROUP [--instance ID] [--session-ms N]
       [--protocol classic|consumer] [--heartbeat-ms N] [--auto-commit]
With --protocol consumer (KIP-848) the coordinator assigns and times the
session; a TOPIC starting with ^ is a pattern.
"""
import argparse
import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException

ap = argparse.ArgumentParser()
ap.add_argument("bootstrap")
ap.add_argument("topic")
ap.add_argument("group")
ap.add_argument("--instance")
ap.add_argument("--session-ms", type=int, default=6000)
ap.add_argument("--protocol", default="classic")
ap.add_argument("--heartbeat-ms", type=int, default=300, help="classic protocol only")
ap.add_argument("--auto-commit", action="store_true", help="commit in the background, not after each record")
a = ap.parse_args()

stop = [False]
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))


def emit(**kw):
    sys.stdout.write(json.dumps(dict(kw, t=time.time())) + "\n")
    sys.stdout.flush()


conf = {
    "bootstrap.servers": a.bootstrap,
    "group.id": a.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": a.auto_commit,
    "enable.partition.eof": False,
}
if a.protocol == "consumer":
    conf["group.protocol"] = "consumer"
else:
    conf["session.timeout.ms"] = a.session_ms
    conf["heartbeat.interval.ms"] = a.heartbeat_ms
if a.instance:
    conf["group.instance.id"] = a.instance
c = Consumer(conf)
c.subscribe(
    [a.topic],
    on_assign=lambda _c, ps: emit(ev="assigned", partitions=sorted(p.partition for p in ps)),
    on_revoke=lambda _c, ps: emit(ev="revoked", partitions=sorted(p.partition for p in ps)),
)


def commit(m):
    """Commits past `m`. Under the consumer protocol a commit sent just as
    the member's epoch moves is refused (STALE_MEMBER_EPOCH, as Kafka
    does); it is sent again once the member heartbeated, unless the
    partition has gone meanwhile. So is one refused with a retriable error
    (the coordinator moving)."""
    for _ in range(300):
        try:
            c.commit(message=m, asynchronous=False)
            emit(ev="committed", p=m.partition(), o=m.offset() + 1)
            return
        except KafkaException as e:
            err = e.args[0]
            if err.code() != KafkaError.STALE_MEMBER_EPOCH and not err.retriable():
                raise
            emit(ev="commit_retry", p=m.partition(), error=str(e))
            time.sleep(0.1)
            if all(tp.partition != m.partition() for tp in c.assignment()):
                return
    raise RuntimeError("commit kept failing")


while not stop[0]:
    m = c.poll(0.1)
    if m is None:
        continue
    if m.error():
        emit(ev="error", error=str(m.error()))
        continue
    emit(ev="msg", p=m.partition(), o=m.offset())
    if not a.auto_commit:
        commit(m)
c.close()
emit(ev="closed")
