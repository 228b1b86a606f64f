#!/usr/bin/env bash
# Benchmark (not a test): bulk throughput and request/response of the data
# plane's test services on our TCP against the same services on the kernel's
# TCP, same veth link, same pinned server core, same clients, alternating
# rounds in one run; medians and ratios. Server on CPU 1, clients on CPU 0.
#   scripts/bench-tcp.sh [--runs N] [--seconds S] [--conns C] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-tcp: must run as root" >&2; exit 1; }
scripts/setup-host.sh >/dev/null
cargo build --release -p dataplane -p bench --quiet
exec target/release/bench tcp-service "$@"
