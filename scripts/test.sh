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
stage() { # stage NAME CMD...
  local name=$1; shift
  echo "=== $name"
  local t0=$SECONDS
  "$@"
  TIMES+=("$(printf '%-28s %4ds' "$name" $((SECONDS - t0)))")
}

# Anything a killed test run may have left (its Drop guards did not run).
sweep() {
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^[xps][0-9]+-(cli|dut|up)$' || true); do
    ip netns del "$ns" || true
  done
  rm -f /dev/hugepages/e2e-*map_* 2>/dev/null || true
  rm -rf /var/run/dpdk/e2e-* /tmp/dp-e2e-* /tmp/nginx-[xps][0-9]* 2>/dev/null || true
}
trap sweep EXIT

report() {
  echo "=== stage times"
  printf '  %s\n' "${TIMES[@]}"
}
trap 'report; sweep' EXIT

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
