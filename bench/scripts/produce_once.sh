#!/usr/bin/env bash
# One rdkafka_performance produce run (1 M x 1 KiB) against a fresh Sluice on
# core 0, the load on core 1. Prints wall time, MB/s and the broker's CPU
# ticks (1/100 s). Usage: produce_once.sh ACKS PARTITIONS [broker -o args...]
set -euo pipefail
ACKS=$1; PARTS=$2; shift 2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PERF=${PERF:-/tmp/peers/bin/rdkafka_performance}; PY=${PY:-/tmp/peers/venv/bin/python}
DATA=${DATA:-/tmp/sluice-produce-once}; PORT=${PORT:-19095}
rm -rf "$DATA"
taskset -c 0 "$ROOT/target/release/sluice" --cores 1 --listen 127.0.0.1:$PORT --data-dir "$DATA" "$@" \
  > "$DATA.log" 2>&1 &
BP=$!
trap 'kill $BP 2>/dev/null; wait $BP 2>/dev/null || true' EXIT
sleep 0.5
"$PY" "$ROOT/../shared/peers/kafka_topic.py" create t1 "$PARTS" --bootstrap=127.0.0.1:$PORT >/dev/null
t0=$(awk '{print $14+$15}' /proc/$BP/stat)
taskset -c 1 "$PERF" -P -t t1 -b 127.0.0.1:$PORT -s 1024 -c 1000000 -a "$ACKS" \
  -X linger.ms=5 -X batch.size=1000000 -X queue.buffering.max.messages=1000000 \
  -X queue.buffering.max.kbytes=1048576 2>&1 | grep 'messages produced' | tail -1 \
  | sed -E 's/.*in ([0-9]+)ms.*and ([0-9.]+) MB.*/\1 ms \2 MB\/s/'
echo "broker cpu ticks: $(( $(awk '{print $14+$15}' /proc/$BP/stat) - t0 ))"
