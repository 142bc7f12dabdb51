"""aiokafka (asyncio, its own protocol implementation) against Sluice:
produce with acks=all and idempotence, fetch from the start, and a
classic consumer group of two members that commits and resumes."""
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def make_topic(bootstrap, name, partitions):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap, topic, values, partitions):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await p.start()
    try:
        sent = [await p.send_and_wait(topic, value=v, key=v, partition=i % partitions)
                for i, v in enumerate(values)]
    finally:
        await p.stop()
    return sent


def test_aiokafka_produce_and_fetch(broker):
    async def run():
        await make_topic(broker.bootstrap, "aio", 1)
        values = [f"v{i}".encode() for i in range(300)]
        sent = await produce(broker.bootstrap, "aio", values, 1)
        assert [m.offset for m in sent] == list(range(300))
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        await c.start()
        try:
            tp = TopicPartition("aio", 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            got = []
            while len(got) < 300:
                batch = await c.getmany(tp, timeout_ms=5000)
                assert batch, f"nothing more after {len(got)}"
                got.extend((m.offset, m.value) for m in batch[tp])
        finally:
            await c.stop()
        assert got == list(enumerate(values))

    asyncio.run(asyncio.wait_for(run(), 120))


def test_aiokafka_group_commits_and_a_new_member_resumes(broker):
    async def member(group):
        c = AIOKafkaConsumer("aio-g", bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=10_000, heartbeat_interval_ms=500)
        await c.start()
        return c

    async def read(consumers, want, seen):
        deadline = asyncio.get_running_loop().time() + 60
        while len(seen) < want and asyncio.get_running_loop().time() < deadline:
            for c in consumers:
                batches = await c.getmany(timeout_ms=200)
                for msgs in batches.values():
                    for m in msgs:
                        assert (m.partition, m.offset) not in seen, f"read twice: {m.partition}/{m.offset}"
                        seen.add((m.partition, m.offset))
        assert len(seen) == want, f"read {len(seen)} of {want}"

    async def run():
        await make_topic(broker.bootstrap, "aio-g", 4)
        await produce(broker.bootstrap, "aio-g", [f"a{i}".encode() for i in range(200)], 4)
        a, b = await member("aio-group"), await member("aio-group")
        seen = set()
        try:
            await read([a, b], 200, seen)
            assert a.assignment() and b.assignment(), (a.assignment(), b.assignment())
            assert not (a.assignment() & b.assignment())
            await a.commit()
            await b.commit()
        finally:
            await a.stop()
            await b.stop()
        await produce(broker.bootstrap, "aio-g", [f"b{i}".encode() for i in range(40)], 4)
        c = await member("aio-group")
        try:
            await read([c], 240, seen)
            committed = {p: await c.committed(TopicPartition("aio-g", p)) for p in range(4)}
            assert sum(committed.values()) == 200
        finally:
            await c.stop()

    asyncio.run(asyncio.wait_for(run(), 180))
