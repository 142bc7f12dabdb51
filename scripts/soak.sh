#!/usr/bin/env bash
# The soak (docs/reliability.md): random faults (kill -9, SIGSTOP, network
# partitions and slow links with nftables, a full disk, a lost unsynced
# tail, fast bounces) against a three-node cluster of the release binaries
# under a recording workload of real clients, for SECONDS; then the history
# checker. Builds nothing. Needs root.
#
#   scripts/soak.sh SECONDS [SEED]
#
# Writes target/soak/<time>-seed<SEED>/{report.json,summary.txt,...}; the
# last line is `anomalies: N` and the exit status is non-zero when N > 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: scripts/soak.sh SECONDS [SEED]" >&2
  exit 2
fi
command -v nft >/dev/null 2>&1 || { echo "soak: nft is missing (apt-get install nftables)" >&2; exit 2; }
exec python3 tests/clients/soak.py --seconds "$1" ${2:+--seed "$2"}
