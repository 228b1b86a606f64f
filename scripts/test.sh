#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this).
#
# Prepares the host (packages, hugepages, mounts), builds everything once in
# the release profile, checks formatting and lints, and runs every test:
# unit tests (no DPDK) and end-to-end tests (the real binary in namespaces).
# Prints how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "test: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (the end-to-end tests use DPDK and namespaces); try: sudo $0"
command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"

declare -a TIMES=()
# stage NAME CMD...: run CMD, record how long it took; a failure ends the
# script with CMD's status, after saying which stage failed. CMD runs in a
# subshell with errexit on, so a shell function fails at its first failing
# command, as it would at top level (called from `if` or `||`, errexit
# would be off inside it).
stage() {
  local name=$1; shift
  echo "=== $name"
  local t0=$SECONDS rc
  set +e
  (
    set -e
    "$@"
  )
  rc=$?
  set -e
  if [ "$rc" -ne 0 ]; then
    TIMES+=("$(printf '%-28s %4ds  FAILED (exit %d)' "$name" $((SECONDS - t0)) "$rc")")
    echo "test: stage \"$name\" failed (exit $rc)" >&2
    exit "$rc"
  fi
  TIMES+=("$(printf '%-28s %4ds' "$name" $((SECONDS - t0)))")
}

# Anything a killed test run may have left (its Drop guards did not run).
sweep() {
  # Agents and Envoys the tests started (they outlive a killed test process).
  pkill -f 'control-agent --dataplane-socket /tmp/dp-e2e-' 2>/dev/null || true
  pkill -f 'envoy -c /tmp/dp-e2e-' 2>/dev/null || true
  # Test prefixes: one or two letters and the test process's pid (unique_prefix).
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^([a-z]{1,2}[0-9]+|pq)-(cli|dut|up|imp)$' || true); do
    ip netns del "$ns" || true
  done
  rm -f /dev/hugepages/e2e-*map_* 2>/dev/null || true
  rm -rf /var/run/dpdk/e2e-* /tmp/dp-e2e-* /tmp/nginx-[a-z]*[0-9]* /tmp/bench-quick.* /tmp/bench-proxy-* \
    /tmp/dp-state-*.json /tmp/xds-*.sock 2>/dev/null || true
}

report() {
  [ "${#TIMES[@]}" -gt 0 ] || return 0
  echo "=== stage times"
  printf '  %s\n' "${TIMES[@]}"
}
# One trap for every way out: the stage times (a failed stage included),
# then the sweep, which runs even if the report fails.
trap 'report || true; sweep' EXIT

stage "host setup" scripts/setup-host.sh
stage "format check" cargo fmt --all -- --check
stage "build (release)" cargo build --release --workspace --all-targets --locked
stage "clippy" cargo clippy --release --workspace --all-targets --locked --quiet -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  stage "tests (nextest)" cargo nextest run --release --workspace --locked --profile ci
else
  echo "test: cargo-nextest not found; using cargo test (one test at a time)"
  stage "tests (cargo test)" cargo test --release --workspace --locked -- --test-threads=1
fi

# The proxy comparison, quick (one repetition, 3-second runs, 500 idle
# connections): it must run to completion against every incumbent and write
# every measurement. Its numbers are not judged here (see docs/benchmarks.md).
# Each failure is reported, and any of them fails the stage.
bench_quick() {
  local out rc=0 f
  out=$(mktemp -d /tmp/bench-quick.XXXXXX)
  if ! target/release/bench proxy-compare --runs 1 --seconds 3 --idle-conns 500 --bulk-mib 64 \
    --prefix pq --out "$out" 2>"$out/progress.log" | tail -n 14; then
    echo "test: bench proxy-compare failed; the end of its log:" >&2
    tail -n 40 "$out/progress.log" | sed 's/^/    /' >&2
    rm -rf "$out"
    return 1
  fi
  if ! python3 - "$out/latest.json" <<'PY'; then
import json, math, sys
doc = json.load(open(sys.argv[1]))
proxies = ["direct", "dataplane", "envoy", "haproxy", "nginx"]
measures = ["keepalive_rps", "conn_rps", "p50_us", "p99_us", "p999_us", "cpu_us_per_req",
            "cpu_us_per_req_busy", "bulk_gbps", "idle_conn_bytes"]
bad = []
for p in proxies:
    for m in measures:
        v = doc.get("proxies", {}).get(p, {}).get(m)
        s = doc.get("spread", {}).get(p, {}).get(m, {})
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            bad.append(f"proxies.{p}.{m} = {v!r}")
        if set(s) != {"min", "max"}:
            bad.append(f"spread.{p}.{m} = {s!r}")
    for m in ["keepalive_rps", "conn_rps", "bulk_gbps", "p50_us"]:
        v = doc.get("proxies", {}).get(p, {}).get(m)
        if isinstance(v, (int, float)) and not v > 0:
            bad.append(f"proxies.{p}.{m} is not positive: {v}")
for m in measures:
    if not isinstance(doc.get("ratios_vs_envoy", {}).get(m), (int, float)):
        bad.append(f"ratios_vs_envoy.{m} missing")
if bad:
    sys.exit("bench JSON incomplete:\n  " + "\n  ".join(bad))
print(f"bench JSON complete: {len(proxies)} proxies x {len(measures)} measurements")
PY
    echo "test: bench proxy-compare's latest.json is missing or incomplete (above)" >&2
    rc=1
  fi
  for f in latest.md latency.svg; do
    [ -s "$out/$f" ] || { echo "test: bench wrote no $f" >&2; rc=1; }
  done
  rm -rf "$out"
  return $rc
}
stage "bench (quick)" bench_quick
