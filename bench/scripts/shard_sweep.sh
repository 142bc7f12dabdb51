#!/usr/bin/env bash
# The shard-scaling sweep: runs workloads against a spawned Sluice with
# N = 1, 2, 4, ... shards (pinned to cores 0..N-1) and the load generator
# on the remaining cores, then prints, per workload and N, the publish
# MB/s, the broker's CPU seconds per GB published and the p99 latencies,
# with CPU per GB as a ratio to N=1 from the same run.
#
#   bench/scripts/shard_sweep.sh [--max-shards N] [--repeat R] [--threads T]
#       [--vs HOST:PORT] [--out DIR] [--test-secs S] [--broker-arg ARG ...]
#       [-- WORKLOAD.yaml ...]
#
# --max-shards defaults to half the cores (at least 1). Where the broker's
#   shards leave no core for the generator (a 2-core box at N=2), the
#   generator shares the broker's cores; CPU time is counted per process,
#   so CPU per GB stays a fair figure, latency does not.
# --vs runs every workload against a second broker too (A B pairs, e.g. a
#   Tansu pinned to the same cores), and the table shows its MB/s.
# --broker-arg passes an argument to the spawned broker, e.g.
#   --broker-arg -o --broker-arg sluice.shard.listeners=true
#   (each shard its own broker: the generator sends each partition to the
#   shard that owns it).
# Default workloads: bench/workloads/shards-*.yaml.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cores=$(nproc)
max=$(( cores / 2 )); [ "$max" -ge 1 ] || max=1
repeat=1; threads=""; vs=""; out=""; test_secs=""
workloads=(); broker_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --max-shards) max=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --vs) vs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --test-secs) test_secs=$2; shift 2 ;;
    --broker-arg) broker_args+=("--broker-arg=$2"); shift 2 ;;
    --) shift; workloads+=("$@"); break ;;
    *) workloads+=("$1"); shift ;;
  esac
done
[ ${#workloads[@]} -gt 0 ] || workloads=("$ROOT"/bench/workloads/shards-*.yaml)
out=${out:-$(mktemp -d /tmp/shard-sweep.XXXXXX)}
mkdir -p "$out"
BIN=${SLUICE_BENCH_BIN:-$ROOT/target/release/sluice-bench}
BROKER=${SLUICE_BIN:-$ROOT/target/release/sluice}
[ -x "$BIN" ] && [ -x "$BROKER" ] || { echo "build first: cargo build --release -p sluice -p sluice-bench" >&2; exit 2; }
reports=()
n=1
while [ "$n" -le "$max" ]; do
  if [ "$n" -lt "$cores" ]; then
    gen_cores=$(seq -s, "$n" $(( cores - 1 )))
  else
    gen_cores=$(seq -s, 0 $(( cores - 1 )))
  fi
  t=${threads:-$(( cores - n < 1 ? 1 : (cores - n > 8 ? 8 : cores - n) ))}
  args=(run --spawn --broker-bin "$BROKER" --broker-cores "$n" --cores "$gen_cores"
        --threads "$t" --repeat "$repeat" --progress-secs 0 --json "$out/shards-$n.json")
  [ -n "$vs" ] && args+=(--vs "$vs")
  [ -n "$test_secs" ] && args+=(--test-secs "$test_secs")
  [ ${#broker_args[@]} -gt 0 ] && args+=("${broker_args[@]}")
  echo "== $n shard(s), generator on cores $gen_cores, $t thread(s)" >&2
  "$BIN" "${args[@]}" "${workloads[@]}" >&2
  reports+=("$out/shards-$n.json")
  n=$(( n * 2 ))
done
python3 "$ROOT/bench/scripts/sweep_table.py" "${reports[@]}"
echo "reports in $out" >&2
