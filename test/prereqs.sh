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
