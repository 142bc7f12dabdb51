#!/usr/bin/env bash
# Broker CPU of two builds on one workload, in alternating runs (A B A B
# ...), each build spawned by sluice-bench on the same cores; prints each
# run's broker cores and the medians. For before/after figures on a noisy
# machine.
#
#   bench/scripts/ab_cpu.sh DIR_A DIR_B WORKLOAD.yaml [PAIRS] [SHARDS] [TEST_SECS]
#
# DIR_A and DIR_B each hold a `sluice` and a `sluice-bench` binary.
set -euo pipefail
a=$1; b=$2; w=$3; pairs=${4:-5}; shards=${5:-1}; secs=${6:-10}
run() {
  "$1/sluice-bench" run --spawn --broker-bin "$1/sluice" --broker-cores "$shards" \
    --progress-secs 0 --test-secs "$secs" "$w" 2>&1 |
    sed -n 's/.*broker CPU [0-9.]* s (\([0-9.]*\) cores).*/\1/p'
}
as=(); bs=()
for i in $(seq "$pairs"); do
  x=$(run "$a"); y=$(run "$b")
  echo "pair $i: A $x cores, B $y cores" >&2
  as+=("$x"); bs+=("$y")
done
python3 - "${as[*]}" "${bs[*]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"median broker cores: A {ma:.3f}, B {mb:.3f}, B/A {mb / ma:.2f} ({len(a)} pairs)")
PY
