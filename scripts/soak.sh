#!/usr/bin/env bash
# The chaos soak (tests/tests/soak.rs): echo transfers through the L4 proxy
# while both links drop, duplicate and reorder, upstream endpoints are killed
# and restarted, xDS churns and the control agent is killed and restarted.
# It prints what it measured (transfers and their outcomes, the chaos done,
# connections/buffers/mbufs at the end, resident memory every 30 s) and
# fails if a transfer was corrupted or cut short or anything was left over.
#
#   scripts/soak.sh [--minutes M]     default 30 (CI runs 2 in scripts/test.sh)
#
# As root, after scripts/setup-host.sh (the test suite's prerequisites).
# The data plane's worker runs on CPU 1; everything else on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=30
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?--minutes needs a number}; shift 2;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
done
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "soak: --minutes must be a number, not '$minutes'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "soak: must run as root (namespaces, AF_XDP)" >&2; exit 1; }
cargo build --release -p dataplane -p control-agent
SOAK_MINUTES=$minutes exec cargo test --release -p e2e-tests --test soak -- --nocapture
