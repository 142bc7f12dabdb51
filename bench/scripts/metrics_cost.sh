#!/usr/bin/env bash
# What the operator metrics' counting costs, as a share of the broker's CPU
# time: starts a release broker on core 0 (admin listener on), runs each
# workload with sluice-bench on core 1, and sets the counting steps the
# broker did (requests, appended batches, segment writes and fdatasyncs,
# read back from /metrics) at their per-step cost from
# `cargo bench -p sluice --bench metrics` against the CPU time the broker
# used (/proc/PID/stat).
#
#   bench/scripts/metrics_cost.sh SECS CLOCK_PAIR_NS REQUEST_NS SENT_NS APPENDED_NS OBSERVE_NS WORKLOAD...
#
# The per-step figures are criterion's medians from the same machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=$1 clock=$2 request=$3 sent=$4 appended=$5 observe=$6
shift 6
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
taskset -c 0 target/release/sluice --cores 1 --listen 127.0.0.1:19092 --data-dir "$dir/data" \
  -o sluice.admin.listen=127.0.0.1:19644 > "$dir/log" 2>&1 &
pid=$!
until curl -sf 127.0.0.1:19644/ready > /dev/null; do sleep 0.1; done
for w in "$@"; do
  curl -s 127.0.0.1:19644/metrics > "$dir/m0"
  c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  taskset -c 1 target/release/sluice-bench run --bootstrap 127.0.0.1:19092 --cores 1 \
    --test-secs "$secs" --warmup-secs 0 --progress-secs 0 "$w" > "$dir/bench.out" 2>&1
  c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  curl -s 127.0.0.1:19644/metrics > "$dir/m1"
  python3 - "$w" "$dir" "$c0" "$c1" "$(getconf CLK_TCK)" "$clock" "$request" "$sent" "$appended" "$observe" <<'PY'
import sys
w, d, c0, c1, tck = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
clock, request, sent, appended, observe = map(float, sys.argv[6:11])

def parse(f):
    m = {}
    for line in open(f):
        if not line.startswith("#") and line.strip():
            k, v = line.rsplit(" ", 1)
            m[k] = float(v)
    return m

a, b = parse(f"{d}/m0"), parse(f"{d}/m1")

def delta(pred):
    return sum(v - a.get(k, 0.0) for k, v in b.items() if pred(k))

req = delta(lambda k: k.startswith("sluice_requests_total"))
io = delta(lambda k: k in ("sluice_log_write_seconds_count", "sluice_log_fdatasync_seconds_count"))
batches = delta(lambda k: k == "sluice_log_group_commit_batches_sum")
cpu_ns = (c1 - c0) / tck * 1e9
# Every request: a clock pair and its counter and bucket; counted as if each
# also sent one partition to a consumer (an upper bound for produce).
cost = req * (clock + request + sent) + batches * appended + io * (clock + observe)
print(f"{w}: {req:.0f} requests, {batches:.0f} batches, {io:.0f} writes and syncs; "
      f"broker CPU {cpu_ns / 1e9:.2f} s = {cpu_ns / req / 1e3:.1f} us per request; "
      f"counting {cost / req:.0f} ns per request = {100 * cost / cpu_ns:.2f} % of the broker's CPU")
PY
done
