#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages: a Docker engine
# (the tests start their own dockerds in network namespaces), etcd, iproute2,
# ping, a static busybox (the test image is built from it), iperf3 (benchmarks),
# curl, openssl (TLS certificates for the etcd TLS test) and nsenter. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Keep the packages' scripts from starting system-wide dockerd/etcd services:
# the tests start their own, each in its own network namespace.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; own_policy=1; fi
trap 'if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi' EXIT

apt-get update -qq </dev/null
apt-get install -y -qq \
  docker.io etcd-server etcd-client iproute2 iputils-ping busybox-static iperf3 curl openssl util-linux </dev/null >/dev/null

# ---- Docker Engine 28.5 (today's platform) from Debian forky, in a root
# filesystem of its own: forky's packages need a newer libc than Debian 12's,
# so the lab starts that dockerd with pivot_root into this tree
# (test/lab/host.ts). Built once with debootstrap (about 600 MB, 1 to 4
# minutes) and cached: a rerun finds it complete and skips it.
FORKY_ROOTFS="${WEFT_FORKY_ROOTFS:-/var/tmp/weft-forky}"
FORKY_PACKAGES="docker.io,docker-cli,docker-compose,iproute2,iptables,ca-certificates,procps,kmod"
stamp="$FORKY_ROOTFS/.weft-rootfs"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$FORKY_PACKAGES" ] && [ -x "$FORKY_ROOTFS/usr/sbin/dockerd" ]; then
  echo "prereqs: forky root filesystem already at $FORKY_ROOTFS ($("$FORKY_ROOTFS/usr/bin/docker" --version))"
else
  apt-get install -y -qq debootstrap </dev/null >/dev/null
  # the Debian mirror apt already uses (deb822 sources first, then the one-line format)
  mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "prereqs: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
  # bookworm's debootstrap has no script for forky; sid's fits
  script=/usr/share/debootstrap/scripts/sid
  tmp="$FORKY_ROOTFS.partial"
  rm -rf "$tmp"
  echo "prereqs: building the forky root filesystem (Docker 28.5) in $FORKY_ROOTFS from $mirror"
  if ! debootstrap --variant=minbase --include="$FORKY_PACKAGES" forky "$tmp" "$mirror" "$script" >/tmp/weft-debootstrap.log 2>&1; then
    tail -n 30 /tmp/weft-debootstrap.log >&2
    echo "prereqs: debootstrap of forky failed (full log: /tmp/weft-debootstrap.log)" >&2
    exit 1
  fi
  # no services of their own inside (dockerd is started by the lab)
  rm -f "$tmp/etc/docker/daemon.json"
  echo "$FORKY_PACKAGES" >"$tmp/.weft-rootfs"
  rm -rf "$FORKY_ROOTFS"
  mv "$tmp" "$FORKY_ROOTFS"
  echo "prereqs: $("$FORKY_ROOTFS/usr/bin/docker" --version), $("$FORKY_ROOTFS/usr/libexec/docker/cli-plugins/docker-compose" version)"
fi

# ---- Encrypted networks (issue 13): the userspace WireGuard, since this
# machine's kernel has no WireGuard module. wireguard-go makes the TUN-backed
# interface that weft configures over its UAPI socket; wg (wireguard-tools)
# is for the tests and for inspection only; tcpdump captures the underlay in
# the encryption test.
apt-get install -y -qq wireguard-go wireguard-tools tcpdump </dev/null >/dev/null
echo "prereqs: $(wireguard-go --version 2>&1 | head -n1), $(wg --version 2>&1 | head -n1), $(tcpdump --version 2>&1 | head -n1)"
