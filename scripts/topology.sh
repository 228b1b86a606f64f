#!/usr/bin/env bash
# Test topology: network namespaces joined by veth pairs.
#
#   scripts/topology.sh up   [-p PREFIX] [--impair] [--impair-upstream]
#                                          build it (idempotent: rebuilds if present)
#   scripts/topology.sh down [-p PREFIX]   remove it (idempotent, also after a crash;
#                                          removes PREFIX-imp too if there is one)
#   scripts/topology.sh show [-p PREFIX]   print what exists
#
#   namespace PREFIX-cli            namespace PREFIX-dut                namespace PREFIX-up
#   cli0 10.10.1.2/24  <--veth-->  PREFIX-c0 (data plane port 0)
#                                  PREFIX-u0 (data plane port 1)  <--veth-->  up0 10.10.2.2/24
#
# With --impair the client link goes through a fourth namespace, PREFIX-imp,
# where tests run tests/scripts/impair.py (an L2 forwarder that drops,
# duplicates, reorders and delays TCP frames; this kernel has no netem):
#
#   PREFIX-cli                      PREFIX-imp                          PREFIX-dut
#   cli0 10.10.1.2/24  <--veth-->  imp-c    imp-d  <--veth-->  PREFIX-c0 (data plane port 0)
#
#   ip netns exec PREFIX-imp tests/scripts/impair.py --a imp-c --b imp-d --seed 7 ...
#
# With --impair-upstream the upstream link goes through PREFIX-imp as well
# (up0 <--veth--> imp-u, imp-v <--veth--> PREFIX-u0), for a second impair.py
# with --a imp-v --b imp-u.
#
# imp-c / imp-d (and imp-u / imp-v) carry no address and have GRO/GSO/TSO and checksum offloads
# off, so that AF_PACKET sees (and sends) plain frames of at most 1514 bytes.
# Without impair.py running, nothing crosses PREFIX-imp.
#
# The data plane runs inside PREFIX-dut (`ip netns exec PREFIX-dut dataplane ...`)
# and opens PREFIX-c0 / PREFIX-u0 with net_af_xdp (or net_af_packet). They carry
# no kernel address: the user-space stack owns 10.10.1.1 and 10.10.2.1.
# The kernel peers get TX checksum offload turned off: on veth the kernel
# would otherwise send partial checksums that a user-space stack rightly drops.
# PREFIX defaults to "dp" (the embedded default config's names); tests pass
# their own so that each has private namespaces and interfaces.
set -euo pipefail

die() { echo "topology: error: $*" >&2; exit 1; }

cmd=${1:-}
shift || true
P=dp
IMPAIR=0
IMPAIR_UP=0
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--prefix) P=$2; shift 2;;
    --impair) IMPAIR=1; shift;;
    --impair-upstream) IMPAIR_UP=1; shift;;
    *) die "unknown argument $1 (see the header of $0)";;
  esac
done
[ "$(id -u)" = 0 ] || die "must run as root (network namespaces need it)"
[ ${#P} -le 10 ] || die "prefix '$P' too long: interface names are limited to 15 characters"
command -v ip >/dev/null || die "iproute2 missing: run scripts/setup-host.sh"

CLI=$P-cli DUT=$P-dut UP=$P-up IMP=$P-imp

# Turn offloads off one at a time: a driver that refuses one (or does not
# have it) must not keep the others on.
offloads_off() {
  local ns=$1 ifc=$2 f
  for f in gro gso tso tx rx; do
    ip netns exec "$ns" ethtool -K "$ifc" "$f" off >/dev/null 2>&1 || true
  done
}

down() {
  for ns in "$CLI" "$DUT" "$UP" "$IMP"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  command -v ethtool >/dev/null || die "ethtool missing: run scripts/setup-host.sh"
  down
  local nss=("$CLI" "$DUT" "$UP")
  if [ "$IMPAIR" = 1 ] || [ "$IMPAIR_UP" = 1 ]; then nss+=("$IMP"); fi
  for ns in "${nss[@]}"; do
    ip netns add "$ns"
    # IPv4 only: no IPv6 neighbour/router chatter on the test links.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  # veths are created directly in their namespaces: nothing touches the host's.
  if [ "$IMPAIR" = 1 ]; then
    ip link add cli0 netns "$CLI" type veth peer name imp-c netns "$IMP"
    ip link add "$P-c0" netns "$DUT" type veth peer name imp-d netns "$IMP"
    for ifc in imp-c imp-d; do
      ip -n "$IMP" link set "$ifc" mtu 1500 up
      offloads_off "$IMP" "$ifc"
    done
  else
    ip link add "$P-c0" netns "$DUT" type veth peer name cli0 netns "$CLI"
  fi
  if [ "$IMPAIR_UP" = 1 ]; then
    ip link add up0 netns "$UP" type veth peer name imp-u netns "$IMP"
    ip link add "$P-u0" netns "$DUT" type veth peer name imp-v netns "$IMP"
    for ifc in imp-u imp-v; do
      ip -n "$IMP" link set "$ifc" mtu 1500 up
      offloads_off "$IMP" "$ifc"
    done
  else
    ip link add "$P-u0" netns "$DUT" type veth peer name up0 netns "$UP"
  fi

  for ns in "${nss[@]}"; do ip -n "$ns" link set lo up; done
  for ifc in "$P-c0" "$P-u0"; do
    # One queue: veth has only separate rx/tx channels, and DPDK 22.11's AF_XDP
    # driver counts "combined" ones, so it cannot open more than one here.
    ip -n "$DUT" link set "$ifc" mtu 1500 up
  done

  ip -n "$CLI" addr add 10.10.1.2/24 dev cli0
  ip -n "$CLI" link set cli0 mtu 1500 up
  ip -n "$CLI" route add 10.10.2.0/24 via 10.10.1.1
  ip netns exec "$CLI" ethtool -K cli0 tx off >/dev/null

  ip -n "$UP" addr add 10.10.2.2/24 dev up0
  ip -n "$UP" link set up0 mtu 1500 up
  ip -n "$UP" route add 10.10.1.0/24 via 10.10.2.1
  ip netns exec "$UP" ethtool -K up0 tx off >/dev/null
  if [ "$IMPAIR" = 1 ]; then
    echo "topology $P up: $CLI(cli0 10.10.1.2) <-> $IMP(imp-c, imp-d) <-> $DUT($P-c0, $P-u0) <-> $UP(up0 10.10.2.2)"
  else
    echo "topology $P up: $CLI(cli0 10.10.1.2) <-> $DUT($P-c0, $P-u0) <-> $UP(up0 10.10.2.2)"
  fi
}

show() {
  for ns in "$CLI" "$IMP" "$DUT" "$UP"; do
    if ip netns list | grep -qw "$ns"; then
      echo "== $ns"; ip -n "$ns" -br addr; ip -n "$ns" -d link show | grep -o 'prog/xdp id [0-9]*' || true
    fi
  done
}

case "$cmd" in
  up) up;;
  down) down;;
  show) show;;
  *) die "usage: $0 up [-p PREFIX] [--impair] [--impair-upstream] | down|show [-p PREFIX]";;
esac
