#!/usr/bin/env bash
# Quick start: prepare the host, build, and run the data plane on the embedded
# default configuration: DPDK AF_XDP ports on veths in network namespaces (no
# NIC needed), proxying TCP port 8080 to an nginx in the upstream namespace.
#
#   scripts/run.sh            demo: ping both ports, curl and wrk through the proxy,
#                             a live update by control-agent (Envoy's bootstrap format,
#                             config/envoy-example.yaml: adds port 9090) while wrk runs,
#                             print stats, stop (draining), clean up
#   scripts/run.sh --keep     stay up until Ctrl-C
#                             (try: ip netns exec dp-cli curl http://10.10.1.1:8080/)
#
# Falls back to AF_PACKET if AF_XDP cannot start on this kernel. Everything it
# creates (namespaces, veths, XDP programs, sockets) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
die() { echo "run: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (DPDK, hugepages, namespaces); try: sudo $0"
scripts/setup-host.sh
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

echo "run: building (release)"
cargo build --release -p dataplane -p control-agent --quiet
BIN=target/release/dataplane
AGENT=target/release/control-agent
$BIN --check

WORK=$(mktemp -d /tmp/dataplane-run.XXXXXX)
DP_PID=
UP_PID=
AG_PID=
WRK_PID=
# stop_pid PID SECONDS: SIGTERM, up to SECONDS for it to exit, then SIGKILL;
# then reap it. Never fails: the process may have exited already.
stop_pid() {
  local pid=$1 tenths=$(($2 * 10)) i
  [ -n "$pid" ] || return 0
  if kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < tenths; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "run: pid $pid still running $2 s after SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}
# Runs on every exit. Each step runs whatever the ones before it did (errexit
# is off here: a failing kill or wait must not end the trap), and the topology
# goes last, once nothing runs in its namespaces. A second Ctrl-C does not cut
# it short; every wait in it is bounded.
cleanup() {
  set +e
  trap '' INT TERM
  stop_pid "$WRK_PID" 5
  stop_pid "$AG_PID" 5
  stop_pid "$DP_PID" 15 # drains first: drain_timeout_ms is 5 s in the default config
  stop_pid "$UP_PID" 5
  rm -rf "$WORK"
  scripts/topology.sh down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/topology.sh up

# The upstream: nginx in dp-up on 10.10.2.2:80 (the benchmark's configuration).
mkdir -p "$WORK/upstream"
head -c 1048576 /dev/urandom >"$WORK/upstream/big"
sed -e 's/{UPSTREAM_ADDR}/10.10.2.2/g' -e 's/{UPSTREAM_PORT}/80/g' -e "s|{DIR}|$WORK/upstream|g" \
  bench/proxies/upstream-nginx.conf >"$WORK/upstream/nginx.conf"
ip netns exec dp-up nginx -c "$WORK/upstream/nginx.conf" >"$WORK/upstream/log" 2>&1 &
UP_PID=$!

start() { # start CONFIG_ARGS...: launch in dp-dut, wait for the admin socket
  ip netns exec dp-dut "$BIN" "$@" >"$WORK/dataplane.log" 2>&1 &
  DP_PID=$!
  for _ in $(seq 1 100); do
    if ! kill -0 "$DP_PID" 2>/dev/null; then return 1; fi
    if $BIN stats "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

CFG=()
if ! start; then
  echo "run: AF_XDP did not start; log:"; sed 's/^/    /' "$WORK/dataplane.log"
  echo "run: falling back to AF_PACKET"
  stop_pid "$DP_PID" 15
  $BIN default-config | sed -e 's/net_af_xdp/net_af_packet/' -e 's/,busy_budget=0//' >"$WORK/af_packet.yaml"
  CFG=(--config "$WORK/af_packet.yaml")
  start "${CFG[@]}" || { sed 's/^/    /' "$WORK/dataplane.log"; die "the data plane did not start"; }
fi
grep -E "port |running" "$WORK/dataplane.log" | sed 's/^/    /'

echo "run: ping from namespace dp-cli to the data plane's 10.10.1.1"
ip netns exec dp-cli ping -c 5 -i 0.2 -W 2 10.10.1.1
echo "run: ping from namespace dp-up to the data plane's 10.10.2.1"
ip netns exec dp-up ping -c 5 -i 0.2 -W 2 10.10.2.1
echo "run: curl through the proxy (10.10.1.1:8080 -> nginx at 10.10.2.2:80)"
ip netns exec dp-cli curl -sS -m 5 -i http://10.10.1.1:8080/
echo "run: wrk through the proxy for 3 s (64 keep-alive connections)"
ip netns exec dp-cli wrk -t1 -c64 -d3s http://10.10.1.1:8080/ | sed 's/^/    /'
echo "run: live update: control-agent --bootstrap config/envoy-example.yaml, under wrk"
SOCK=/run/dataplane/admin.sock # the embedded default's (and the AF_PACKET fallback's)
ip netns exec dp-cli wrk -t1 -c16 -d3s http://10.10.1.1:8080/ >"$WORK/wrk-update.txt" &
WRK_PID=$!
sleep 1
"$AGENT" --bootstrap config/envoy-example.yaml --dataplane-socket "$SOCK" >"$WORK/agent.log" 2>&1 &
AG_PID=$!
for _ in $(seq 1 50); do
  ip netns exec dp-cli curl -sf -m 1 -o /dev/null http://10.10.1.1:9090/ && break
  sleep 0.2
done
wait "$WRK_PID"; WRK_PID=
grep -E "requests in|Socket errors|Non-2xx" "$WORK/wrk-update.txt" | sed 's/^/    /'
grep -E "applied" "$WORK/agent.log" | sed 's/^.*INFO //; s/^/    /'
echo "run: curl the listener the update added (10.10.1.1:9090)"
ip netns exec dp-cli curl -sS -m 5 http://10.10.1.1:9090/
stop_pid "$AG_PID" 5; AG_PID=
echo "run: dataplane stats"
$BIN stats "${CFG[@]}"

if [ "$KEEP" = 1 ]; then
  echo "run: running until Ctrl-C (ip netns exec dp-cli ping 10.10.1.1; $BIN stats)"
  wait "$DP_PID"
else
  kill -TERM "$DP_PID"; wait "$DP_PID"; DP_PID=
  tail -1 "$WORK/dataplane.log" | sed 's/^/    /'
  echo "run: OK"
fi
