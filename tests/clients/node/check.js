// kafkajs 2.2.4 against Sluice: admin, an idempotent acks=all producer,
// a consumer group of two members that commits, and a new member that
// resumes at the commits. Usage: node check.js BOOTSTRAP
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
const kafka = new Kafka({ clientId: 'kafkajs-check', brokers: [bootstrap], logLevel: logLevel.WARN });
const TOPIC = 'kjs';
const PARTITIONS = 4;

function check(ok, what) {
  if (!ok) {
    throw new Error(what);
  }
}

async function produce(from, to) {
  const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await p.connect();
  const messages = [];
  for (let i = from; i < to; i++) {
    messages.push({ key: `k${i}`, value: `v${i}`, partition: i % PARTITIONS });
  }
  const res = await p.send({ topic: TOPIC, acks: -1, messages });
  await p.disconnect();
  return res;
}

// Runs `members` consumers of `group` until `want` records are seen (each once).
async function consume(group, members, seen, want) {
  const consumers = [];
  const assigned = [];
  for (let i = 0; i < members; i++) {
    const c = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 });
    await c.connect();
    await c.subscribe({ topic: TOPIC, fromBeginning: true });
    const mine = new Set();
    assigned.push(mine);
    c.on(c.events.GROUP_JOIN, (e) => {
      mine.clear();
      for (const p of e.payload.memberAssignment[TOPIC] || []) {
        mine.add(p);
      }
    });
    await c.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        const id = `${partition}/${message.offset}`;
        check(!seen.has(id), `read twice: ${id}`);
        seen.add(id);
        await c.commitOffsets([{ topic: TOPIC, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
      },
    });
    consumers.push(c);
  }
  // Every record read, and the members' last assignments settled (a
  // rebalance may still run after the last record arrived).
  const settled = () => {
    const all = assigned.flatMap((s) => [...s]);
    return all.length === PARTITIONS && new Set(all).size === PARTITIONS && assigned.every((s) => s.size > 0);
  };
  const deadline = Date.now() + 60000;
  while ((seen.size < want || !settled()) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  check(seen.size === want, `read ${seen.size} of ${want}`);
  // The assignments as they stand now: disconnecting one member makes the
  // others rejoin and take its partitions before they disconnect too.
  const final = assigned.map((s) => new Set(s));
  for (const c of consumers) {
    await c.disconnect();
  }
  return final;
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: TOPIC, numPartitions: PARTITIONS }], waitForLeaders: true });
  const meta = await admin.fetchTopicMetadata({ topics: [TOPIC] });
  check(meta.topics[0].partitions.length === PARTITIONS, 'four partitions');

  const sent = await produce(0, 400);
  check(sent.length === PARTITIONS && sent.every((r) => r.errorCode === 0), `produce: ${JSON.stringify(sent)}`);
  const seen = new Set();
  const assigned = await consume('kjs-group', 2, seen, 400);
  const total = assigned.reduce((n, s) => n + s.size, 0);
  check(assigned.every((s) => s.size > 0) && total === PARTITIONS, `two members share: ${assigned.map((s) => [...s])}`);
  const offsets = await admin.fetchOffsets({ groupId: 'kjs-group', topics: [TOPIC] });
  const committed = offsets[0].partitions.reduce((n, p) => n + Number(p.offset), 0);
  check(committed === 400, `committed ${committed}`);

  await produce(400, 440);
  await consume('kjs-group', 1, seen, 440);
  const groups = await admin.listGroups();
  check(groups.groups.some((g) => g.groupId === 'kjs-group'), 'the group is listed');
  await admin.disconnect();
  console.log('kafkajs: admin, produce, group, commit, resume: ok');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
