#!/usr/bin/env bash
# Benchmark (not a test): the data plane's raw RX→TX loop against dpdk-testpmd
# macswap, busy TSC cycles per packet, medians of several alternating runs.
# Generator on CPU 0, the device under test's forwarding core on CPU 1.
#   scripts/bench-l2.sh [--runs N] [--seconds S] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-l2: must run as root" >&2; exit 1; }
scripts/setup-host.sh >/dev/null
cargo build --release -p dataplane -p bench --quiet
exec target/release/bench l2-reflect "$@"
