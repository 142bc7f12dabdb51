"""One consumer-group member for the group tests, as its own process so a
test can stop it cleanly (SIGTERM: close and leave the group) or kill it
(SIGKILL). Prints one JSON object per line on stdout:

  {"ev": "assigned", "partitions": [..]}   after each assignment
  {"ev": "revoked", "partitions": [..]}    before each revocation
  {"ev": "msg", "p": P, "o": O}            for each message, before its commit
  {"ev": "committed", "p": P, "o": O}      after a synchronous commit of O

Usage: group_member.py BOOTSTRAP TOPIC GROUP [--instance ID] [--session-ms N]
"""
import argparse
import json
import signal
import sys

from confluent_kafka import Consumer

ap = argparse.ArgumentParser()
ap.add_argument("bootstrap")
ap.add_argument("topic")
ap.add_argument("group")
ap.add_argument("--instance")
ap.add_argument("--session-ms", type=int, default=6000)
a = ap.parse_args()

stop = [False]
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))


def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


conf = {
    "bootstrap.servers": a.bootstrap,
    "group.id": a.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": a.session_ms,
    "heartbeat.interval.ms": 300,
    "enable.partition.eof": False,
}
if a.instance:
    conf["group.instance.id"] = a.instance
c = Consumer(conf)
c.subscribe(
    [a.topic],
    on_assign=lambda _c, ps: emit(ev="assigned", partitions=sorted(p.partition for p in ps)),
    on_revoke=lambda _c, ps: emit(ev="revoked", partitions=sorted(p.partition for p in ps)),
)
while not stop[0]:
    m = c.poll(0.1)
    if m is None:
        continue
    if m.error():
        emit(ev="error", error=str(m.error()))
        continue
    emit(ev="msg", p=m.partition(), o=m.offset())
    c.commit(message=m, asynchronous=False)
    emit(ev="committed", p=m.partition(), o=m.offset() + 1)
c.close()
emit(ev="closed")
