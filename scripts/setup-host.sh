#!/usr/bin/env bash
# Idempotent host preparation for building, running and testing the data plane.
#
#   scripts/setup-host.sh            # packages + hugepages + hugetlbfs/bpffs mounts
#   HUGEPAGES=2048 scripts/setup-host.sh
#
# Safe to run repeatedly: each step checks before it acts. Needs root.
set -euo pipefail

die() { echo "setup-host: error: $*" >&2; exit 1; }
say() { echo "setup-host: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root (hugepages, mounts and apt need it); try: sudo $0"

# 2 MiB pages to reserve. 1024 pages = 2 GiB: enough for a data plane and a
# testpmd/memif peer at the same time.
HUGEPAGES=${HUGEPAGES:-1024}

# --- packages -------------------------------------------------------------
# Build: DPDK 22.11 LTS headers/libs, bindgen's libclang, pkg-config.
# Run/test: iproute2/ethtool for the topology, ping/scapy/tcpdump/nc/curl as
# kernel-side peers, nftables for loss injection, trafgen (netsniff-ng) and
# hping3 for floods, wrk and h2load (HTTP/1.1
# with --h1) for load, prometheus (its promtool checks /stats/prometheus; a
# test starts its own server in a namespace).
PKGS=(
  dpdk dpdk-dev libdpdk-dev pkg-config clang libclang-dev
  iproute2 ethtool iputils-ping python3-scapy tcpdump netcat-openbsd
  nftables curl wrk nghttp2-client procps kmod nginx libnginx-mod-stream haproxy python3-venv
  netsniff-ng hping3
  prometheus
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (is the Debian mirror reachable?)"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install failed for: ${missing[*]}"
else
  say "packages present"
fi
# The prometheus package starts a system-wide server on :9090; the tests run
# their own, so it stays off.
if systemctl is-enabled prometheus >/dev/null 2>&1 || systemctl is-active prometheus >/dev/null 2>&1; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

ver=$(pkg-config --modversion libdpdk 2>/dev/null) || die "libdpdk not found by pkg-config after install"
case "$ver" in
  2[2-9].*|[3-9][0-9].*) say "DPDK $ver";;
  *) die "DPDK $ver is too old: need >= 22.11 (Debian bookworm's libdpdk-dev)";;
esac

# --- hugepages --------------------------------------------------------------
nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
[ -w "$nr" ] || die "$nr not writable: this kernel has no 2 MiB hugepage support"
cur=$(cat "$nr")
if [ "$cur" -lt "$HUGEPAGES" ]; then
  echo "$HUGEPAGES" > "$nr"
  got=$(cat "$nr")
  [ "$got" -ge "$HUGEPAGES" ] || die "asked for $HUGEPAGES hugepages, kernel gave $got (memory fragmented? free memory and retry)"
  say "hugepages: $cur -> $got"
else
  say "hugepages: $cur reserved"
fi

if ! mountpoint -q /dev/hugepages; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages || die "cannot mount hugetlbfs on /dev/hugepages"
  say "mounted hugetlbfs on /dev/hugepages"
fi

# bpffs: AF_XDP's libbpf/libxdp pin maps here; without it they warn and fall back.
if ! mountpoint -q /sys/fs/bpf; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf || die "cannot mount bpffs on /sys/fs/bpf"
  say "mounted bpffs on /sys/fs/bpf"
fi

mkdir -p /var/run/dpdk
say "host ready"
