"""kill -9 while acks=all producers run: every acknowledged message is there
after restart, exactly once and in order."""
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import consume_all, create


def test_acknowledged_messages_survive_kill_9(broker):
    create(broker, "crash", 4)
    acked = {p: [] for p in range(4)}
    lock = threading.Lock()
    stop = threading.Event()

    def run(pid):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 1,
                      "message.timeout.ms": 5000, "retries": 0})

        def report(err, msg):
            if err is None:
                with lock:
                    acked[msg.partition()].append(msg.value())

        i = 0
        while not stop.is_set() and i < 20_000:
            p.produce("crash", partition=pid, value=f"{pid}-{i}".encode(), on_delivery=report)
            p.poll(0)
            i += 1
            if i % 50 == 0:
                time.sleep(0.005)
        p.flush(6)

    threads = [threading.Thread(target=run, args=(pid,)) for pid in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    broker.kill9()
    stop.set()
    for t in threads:
        t.join()
    broker.start()
    total = sum(len(v) for v in acked.values())
    assert total > 100, "producers got acknowledgements before the kill"
    for part in range(4):
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks", "enable.auto.commit": False})
        lo, hi = c.get_watermark_offsets(TopicPartition("crash", part), timeout=10)
        c.close()
        assert lo == 0 and hi >= len(acked[part]), f"partition {part}: {hi} stored, {len(acked[part])} acked"
        values = [m.value() for m in consume_all(broker, "crash", [part], hi)]
        # Acknowledged messages are a prefix of what is stored, once each.
        assert values[:len(acked[part])] == acked[part], f"partition {part}"
        assert len(set(values)) == len(values), "no duplicates"
