#!/bin/bash
# Context switches per second and CPU of a Sluice broker with SHARDS shards
# under WORKLOAD (8 s in the middle of a 16 s run), summed over all its threads
# (io_uring workers included): what a cross-shard hand-off costs at a fixed rate.
#
#   bench/scripts/ctx_switches.sh BIN_DIR WORKLOAD.yaml SHARDS
#
# BIN_DIR holds `sluice` and `sluice-bench`; the generator runs on core 1 (and
# core 0 too with 2 shards or more).
B=$1; W=$2; N=$3
D=$(mktemp -d); PORT=$((19100+N))
$B/sluice --listen 127.0.0.1:$PORT --data-dir $D --cores $N >/dev/null 2>&1 &
P=$!; sleep 1
if [ $N -ge 2 ]; then GC=0,1; else GC=1; fi
$B/sluice-bench run --bootstrap 127.0.0.1:$PORT --cores $GC --progress-secs 0 --test-secs 14 --warmup-secs 2 $W >/dev/null 2>&1 &
G=$!
snap() { local cs=0 cpu; for t in /proc/$P/task/*/status; do cs=$((cs + $(awk '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/{s+=$2} END{print s}' $t))); done; cpu=$(awk '{print $14+$15}' /proc/$P/stat); echo "$cs $cpu"; }
sleep 6; read c0 u0 <<<"$(snap)"; sleep 8; read c1 u1 <<<"$(snap)"
wait $G; kill $P; wait $P 2>/dev/null; rm -rf $D
echo "shards=$N ctx_switches_per_s=$(( (c1-c0)/8 )) broker_cores=$(python3 -c "print(round(($u1-$u0)/100/8,3))")"
