#!/usr/bin/env bash
# One Sluice on core 0 (with the given extra broker args), then N produce
# runs as the peer matrix makes them: create a topic of PARTITIONS
# partitions, produce 1 M x 1 KiB with rdkafka_performance on core 1 with
# the given acks, delete the topic. Prints MB/s and the broker's CPU ticks
# (1/100 s) per run; the first run writes into cold memory
# (docs/benchmarks.md). Usage: produce_runs.sh ACKS PARTITIONS [broker args...]
set -euo pipefail
ACKS=${1:?usage: produce_runs.sh ACKS PARTITIONS [broker args...]}; PARTS=${2:?partitions}; shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PERF=${PERF:-/tmp/peers/bin/rdkafka_performance}; PY=${PY:-/tmp/peers/venv/bin/python}
DATA=${DATA:-/tmp/sluice-produce-runs}; PORT=${PORT:-19095}; N=${N:-4}
TOPIC_TOOL="$ROOT/bench/peers/kafka_topic.py"
rm -rf "$DATA"
taskset -c 0 "$ROOT/target/release/sluice" --cores 1 --listen 127.0.0.1:$PORT --data-dir "$DATA" "$@" \
  > "$DATA.log" 2>&1 &
BP=$!
trap 'kill $BP 2>/dev/null; wait $BP 2>/dev/null || true' EXIT
sleep 0.5
for i in $(seq 1 "$N"); do
  "$PY" "$TOPIC_TOOL" create "t$i" "$PARTS" --bootstrap=127.0.0.1:$PORT >/dev/null
  sleep 1
  t0=$(awk '{print $14+$15}' /proc/$BP/stat)
  r=$(taskset -c 1 "$PERF" -P -t "t$i" -b 127.0.0.1:$PORT -s 1024 -c 1000000 -a "$ACKS" \
    -X linger.ms=5 -X batch.size=1000000 -X queue.buffering.max.messages=1000000 \
    -X queue.buffering.max.kbytes=1048576 2>&1 | grep 'messages produced' | tail -1 \
    | sed -E 's/.*and ([0-9.]+) MB.*/\1 MB\/s/')
  echo "run $i: $r, broker cpu $(( $(awk '{print $14+$15}' /proc/$BP/stat) - t0 )) ticks"
  "$PY" "$TOPIC_TOOL" delete "t$i" --bootstrap=127.0.0.1:$PORT >/dev/null
done
