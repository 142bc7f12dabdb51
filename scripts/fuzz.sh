#!/usr/bin/env bash
# Fuzzes the broker for SECONDS (default 300): half the time the in-process
# harness (server/tests/fuzz.rs: mutated frames straight into the handlers),
# half sluice-wire-fuzz against a release broker over TCP, each in rounds
# with fresh seeds. Stops at the first failure, which prints its seed.
#   scripts/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-300}
FRAMES=${FRAMES:-200000}
cargo build --release --locked -p sluice -p sluice-tools 2>&1 | tail -n 1
half=$((SECONDS_TOTAL / 2))
end=$((SECONDS + half))
round=0
while [ "$SECONDS" -lt "$end" ]; do
  round=$((round + 1))
  FUZZ_FRAMES=$FRAMES FUZZ_SEED=$(date +%s%N) cargo test --release --locked -p sluice --test fuzz -- --nocapture 2>&1 \
    | grep -E '^fuzz:|panicked|FUZZ_SEED|test result'
done
data=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
target/release/sluice --listen 127.0.0.1:$port --data-dir "$data" -o sluice.fetch.max.wait.ms=100 \
  -o group.initial.rebalance.delay.ms=0 -o sluice.max.partitions=2000 > "$data.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
sleep 0.5
end=$((SECONDS + half))
while [ "$SECONDS" -lt "$end" ]; do
  target/release/sluice-wire-fuzz -b 127.0.0.1:$port --frames "$FRAMES"
done
echo "broker RSS $(ps -o rss= -p $broker) KiB, open fds $(ls /proc/$broker/fd | wc -l)"
