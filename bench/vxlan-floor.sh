#!/bin/bash
# The floor of a VXLAN overlay's ping RTT on this machine, by hand, with no
# Docker, no weft and no netfilter: two "hosts" (network namespaces on a
# bridge, 192.0.2.1 and .2) and, between them, three overlays built with
# iproute2 the way the kernel allows:
#   bridge  - weft's VXLAN layout: container veth -> bridge -> VXLAN device
#             in a network namespace (10.90.0.0/24, VNI 100);
#   macvlan - the container's interface a macvlan on the VXLAN device
#             (10.90.0.0/24, VNI 101; the branch `vxlan-macvlan`);
#   floor   - the VXLAN device itself as the container's interface
#             (10.91.0.0/24, VNI 102): nothing but encapsulation, the least
#             any VXLAN overlay can cost.
# It pings each path as the bench does (200 pings 5 ms apart, one path after
# the other, ratios to the underlay per round) and then interleaved (one
# ping process per path, 20 ms apart, started 5 ms apart, so the machine's
# drift weighs on every path alike). Usage: bash bench/vxlan-floor.sh [rounds]
# Removes everything it made on exit (also on failure or Ctrl-C).
set -euo pipefail
P=wvf
ROUNDS=${1:-5}
NSES="ul h1 h2 n1b n2b n1m n2m c1b c2b c1m c2m c1f c2f"
cleanup() { for n in $NSES; do ip netns del $P-$n 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for n in $NSES; do ip netns add $P-$n; ip -n $P-$n link set lo up; done
ip -n $P-ul link add ulbr type bridge; ip -n $P-ul link set ulbr up
for i in 1 2; do
  ip -n $P-ul link add ul$i type veth peer name eth0 netns $P-h$i
  ip -n $P-ul link set ul$i master ulbr up
  ip -n $P-h$i addr add 192.0.2.$i/24 dev eth0; ip -n $P-h$i link set eth0 up
done
for i in 1 2; do
  o=$((3 - i))
  for L in b m; do
    vni=$([ $L = b ] && echo 100 || echo 101)
    ip netns exec $P-n$i$L sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip netns exec $P-n$i$L sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0 2>/dev/null || true
    ip -n $P-h$i link add vx type vxlan id $vni local 192.0.2.$i dstport 4789 nolearning proxy udpcsum
    ip -n $P-h$i link set vx netns $P-n$i$L
    ip -n $P-n$i$L link set vx mtu 1450
    if [ $L = b ]; then
      ip -n $P-n$i$L link add brx type bridge; ip -n $P-n$i$L link set brx mtu 1450 up
      ip -n $P-n$i$L link set vx master brx up
      ip -n $P-n$i$L link add wfb mtu 1450 type veth peer name eth0 netns $P-c$i$L
      ip -n $P-n$i$L link set wfb master brx up
      ip -n $P-c$i$L link set eth0 address 02:42:0a:5a:00:0$i mtu 1450
    else
      ip -n $P-n$i$L link set vx up
      ip -n $P-n$i$L link add eth0 link vx address 02:42:0a:5a:00:0$i mtu 1450 type macvlan mode bridge
      ip -n $P-n$i$L link set eth0 netns $P-c$i$L
    fi
    ip -n $P-c$i$L addr add 10.90.0.$i/24 dev eth0; ip -n $P-c$i$L link set eth0 up
    ip netns exec $P-n$i$L bridge fdb append 02:42:0a:5a:00:0$o dev vx dst 192.0.2.$o self permanent
    ip -n $P-n$i$L neigh replace 10.90.0.$o lladdr 02:42:0a:5a:00:0$o dev vx nud permanent
  done
  ip -n $P-h$i link add vxf type vxlan id 102 local 192.0.2.$i dstport 4789 nolearning udpcsum
  ip -n $P-h$i link set vxf netns $P-c${i}f
  ip -n $P-c${i}f link set vxf name eth0 address 02:42:0a:5b:00:0$i mtu 1450 up
  ip -n $P-c${i}f addr add 10.91.0.$i/24 dev eth0
  ip netns exec $P-c${i}f bridge fdb append 02:42:0a:5b:00:0$o dev eth0 dst 192.0.2.$o self permanent
  ip -n $P-c${i}f neigh replace 10.91.0.$o lladdr 02:42:0a:5b:00:0$o dev eth0 nud permanent
done
for p in "h1 192.0.2.2" "c1b 10.90.0.2" "c1m 10.90.0.2" "c1f 10.91.0.2"; do
  set -- $p; ip netns exec $P-$1 ping -c 20 -i 0.005 -q -W 1 $2 > /dev/null
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
med() { python3 -c 'import sys,re,statistics; v=[float(m)*1000 for m in re.findall(r"time=([\d.]+)", sys.stdin.read())]; print("%.1f" % statistics.median(v))'; }
echo "one path after the other (200 pings 5 ms apart), median RTT in us, and ratios to the underlay:"
for r in $(seq "$ROUNDS"); do
  U=$(ip netns exec $P-h1 ping -c 200 -i 0.005 192.0.2.2 | med)
  B=$(ip netns exec $P-c1b ping -c 200 -i 0.005 10.90.0.2 | med)
  M=$(ip netns exec $P-c1m ping -c 200 -i 0.005 10.90.0.2 | med)
  F=$(ip netns exec $P-c1f ping -c 200 -i 0.005 10.91.0.2 | med)
  python3 -c "u,b,m,f=$U,$B,$M,$F; print('  underlay %.1f  bridge %.1f (%.2fx)  macvlan %.1f (%.2fx)  floor %.1f (%.2fx)' % (u,b,b/u,m,m/u,f,f/u))"
done
echo "interleaved (one ping process per path, 20 ms apart, started 5 ms apart):"
d=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
  ip netns exec $P-h1 ping -c 200 -i 0.02 192.0.2.2 > "$d/u" & sleep 0.005
  ip netns exec $P-c1b ping -c 200 -i 0.02 10.90.0.2 > "$d/b" & sleep 0.005
  ip netns exec $P-c1m ping -c 200 -i 0.02 10.90.0.2 > "$d/m" & sleep 0.005
  ip netns exec $P-c1f ping -c 200 -i 0.02 10.91.0.2 > "$d/f" &
  wait
  U=$(med < "$d/u"); B=$(med < "$d/b"); M=$(med < "$d/m"); F=$(med < "$d/f")
  python3 -c "u,b,m,f=$U,$B,$M,$F; print('  underlay %.1f  bridge %.1f (%.2fx)  macvlan %.1f (%.2fx)  floor %.1f (%.2fx)' % (u,b,b/u,m,m/u,f,f/u))"
done
rm -rf "$d"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
