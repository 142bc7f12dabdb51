"""An exactly-once consume-transform-produce processor for the crash
tests: reads `in`, writes one `out` record per input record (its value
with "-out" appended, on the same partition) and commits its input offsets
in the same transaction (send_offsets_to_transaction). Exits 0 once every
input partition's committed offset reaches its end; an abortable error
aborts and rewinds to the committed offsets; a fatal one exits 2.

    python3 eos_processor.py BOOTSTRAP TXN_ID GROUP IN OUT PARTITIONS
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def main():
    bootstrap, txn_id, group, src, dst, partitions = sys.argv[1:7]
    partitions = int(partitions)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "log_level": 0,
    })
    tps = [TopicPartition(src, p) for p in range(partitions)]
    consumer.assign(tps)
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
        "transaction.timeout.ms": 10000,
        "log_level": 0,
    })
    producer.init_transactions(60)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(src, p), timeout=30)[1] for p in range(partitions)}

    def rewind():
        for tp in consumer.committed(tps, timeout=30):
            consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))

    def commit():
        while True:
            try:
                producer.commit_transaction(60)
                return
            except KafkaException as e:
                if not e.args[0].retriable():
                    raise

    rewind()
    while True:
        committed = consumer.committed(tps, timeout=30)
        if all(tp.offset >= ends[tp.partition] for tp in committed):
            return 0
        msgs = [m for m in consumer.consume(10, 1.0) if m.error() is None]
        if not msgs:
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(dst, value=m.value() + b"-out", partition=m.partition())
            producer.send_offsets_to_transaction(consumer.position(tps), consumer.consumer_group_metadata(), 60)
            commit()
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                print(f"fatal: {err}", file=sys.stderr)
                return 2
            print(f"aborting: {err}", file=sys.stderr)
            try:
                producer.abort_transaction(60)
            except KafkaException as again:
                if again.args[0].fatal():
                    print(f"fatal: {again}", file=sys.stderr)
                    return 2
            time.sleep(0.2)
            rewind()


if __name__ == "__main__":
    sys.exit(main())
