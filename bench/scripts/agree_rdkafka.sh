#!/usr/bin/env bash
# Does sluice-bench measure what rdkafka_performance measures? One Sluice
# (core 0) and the same producer settings for both generators (1 KiB,
# acks=1, batch 128 KiB, linger 1 ms, 5 in flight, 1 partition, no
# consumer), run in alternation on core 1: A B A B ... Prints msgs/s of each
# run and the ratio of each pair. Retention keeps the disk bounded.
# Usage: agree_rdkafka.sh [PAIRS]
set -euo pipefail
PAIRS=${1:-5}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PERF=${PERF:-/tmp/peers/bin/rdkafka_performance}
BIN=$ROOT/target/release
PORT=${PORT:-19500}
D=$(mktemp -d)
W=$D/agree.yaml
cat > "$W" <<'YAML'
name: agree-1kb
topics: 1
partitionsPerTopic: 1
messageSize: 1024
producerRate: 0
subscriptionsPerTopic: 0
acks: 1
batchSizeBytes: 131072
lingerMs: 1
maxInFlight: 5
testDurationSeconds: 5
warmupDurationSeconds: 1
YAML
taskset -c 0 "$BIN/sluice" --cores 1 --listen 127.0.0.1:$PORT --data-dir "$D/data" \
  -o log.segment.bytes=268435456 -o log.retention.bytes=1073741824 \
  -o log.retention.check.interval.ms=1000 > "$D/broker.log" 2>&1 &
BP=$!
trap 'kill $BP 2>/dev/null; wait $BP 2>/dev/null || true; rm -rf "$D"' EXIT
sleep 0.5
"$PERF" -P -t agree -b 127.0.0.1:$PORT -s 1024 -c 1 -a 1 >/dev/null 2>&1 || true  # creates the topic
bench() {
  taskset -c 1 "$BIN/sluice-bench" run --bootstrap 127.0.0.1:$PORT --cores 1 --progress-secs 0 "$W" \
    2>/dev/null | sed -n 2p | awk '{print $4}'
}
perf() {
  taskset -c 1 "$PERF" -P -t agree -b 127.0.0.1:$PORT -s 1024 -c 4000000 -a 1 \
      -X linger.ms=1 -X batch.size=131072 -X max.in.flight=5 \
      -X queue.buffering.max.messages=1000000 -X queue.buffering.max.kbytes=1048576 2>&1 \
    | grep 'messages produced' | tail -1 | sed -E 's/.* ([0-9]+) msgs\/s.*/\1/'
}
# Odd pairs run sluice-bench first, even pairs second (A B B A ...), so
# neither always meets the colder page cache.
for pair in $(seq 1 "$PAIRS"); do
  if [ $((pair % 2)) = 1 ]; then a=$(bench); b=$(perf); else b=$(perf); a=$(bench); fi
  echo "pair $pair sluice-bench $a rdkafka_performance $b ratio $(python3 -c "print(round($a/$b, 3))")"
done
