#!/usr/bin/env bash
# The one test command (README, .ci/run). Installs what the tests need on a
# fresh machine, then runs formatting, lints and every test target,
# benchmarks included (criterion runs each once, at tiny sizes, under test).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
