#!/usr/bin/env bash
# A local cluster in one command: N combined nodes (broker and controller
# quorum voter) on loopback, each with its own data directory.
#
#   scripts/dev-cluster.sh [--nodes N] [--brokers M] [--cores C] [--dir DIR] [--bin PATH] [-- -o KEY=VALUE ...]
#
# --brokers adds M broker-only nodes (process.roles=broker), numbered after
# the voters; they follow the voters' metadata log without voting.
# Node i (1-based) serves clients on 127.0.0.1:2<i>092 and controller
# traffic on 127.0.0.1:2<i>093, keeps its data in DIR/node-<i> (default
# ./sluice-dev) and logs to DIR/node-<i>.log. The bootstrap list is printed
# once every node listens. Ctrl-C (or SIGTERM) stops them all; a node that
# exits or is killed leaves the others running.
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=3
brokers=0
cores=1
dir=./sluice-dev
bin=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --brokers) brokers=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "dev-cluster: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$nodes" -lt 1 ] || [ $((nodes + brokers)) -gt 9 ]; then
  echo "dev-cluster: --nodes must be at least 1, and --nodes plus --brokers at most 9" >&2
  exit 2
fi
if [ -z "$bin" ]; then
  cargo build --release --locked -p sluice 2>&1 | tail -n 1
  bin=target/release/sluice
fi

voters=""
for i in $(seq 1 "$nodes"); do
  voters+="${voters:+,}$i@127.0.0.1:2${i}093"
done

mkdir -p "$dir"
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

bootstrap=""
total=$((nodes + brokers))
for i in $(seq 1 "$total"); do
  roles=broker,controller
  [ "$i" -gt "$nodes" ] && roles=broker
  "$bin" --listen "127.0.0.1:2${i}092" --data-dir "$dir/node-$i" --cores "$cores" \
    -o "node.id=$i" -o "process.roles=$roles" -o "controller.quorum.voters=$voters" \
    -o "default.replication.factor=$(( total < 3 ? total : 3 ))" \
    "${extra[@]}" >"$dir/node-$i.log" 2>&1 &
  pids+=($!)
  bootstrap+="${bootstrap:+,}127.0.0.1:2${i}092"
done

for i in $(seq 1 "$total"); do
  for _ in $(seq 1 300); do
    if grep -q "listening on" "$dir/node-$i.log"; then break; fi
    if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then
      echo "dev-cluster: node $i exited; its log:" >&2
      cat "$dir/node-$i.log" >&2
      exit 1
    fi
    sleep 0.1
  done
done
echo "sluice dev cluster: $nodes voter(s), $brokers broker-only node(s), data in $dir"
echo "bootstrap.servers=$bootstrap"
# A node that exits (or is killed, to try a failover) leaves the others
# running; the script ends when all have exited or on Ctrl-C.
for _ in "${pids[@]}"; do
  wait -n "${pids[@]}" 2>/dev/null || true
  echo "dev-cluster: a node exited" >&2
done
