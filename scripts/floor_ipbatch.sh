#!/bin/sh
# The floor for the lab benchmark: the same namespaces and veth pairs a lab of N pods has
# (a switch, NODES nodes with a bridge each, N pods with an addressed veth to a node bridge),
# made with bare `ip -batch` and nothing else. Usage: floor_ipbatch.sh up|down N [NODES]
set -eu
ACTION=$1; N=$2; NODES=${3:-4}
P=fl
if [ "$ACTION" = down ]; then
  { for i in $(seq 1 "$N"); do echo "netns del ${P}p$i"; done
    for n in $(seq 1 "$NODES"); do echo "netns del ${P}n$n"; done; echo "netns del ${P}sw"; } | ip -force -batch - 2>/dev/null || true
  exit 0
fi
{ echo "netns add ${P}sw"; for n in $(seq 1 "$NODES"); do echo "netns add ${P}n$n"; done
  for i in $(seq 1 "$N"); do echo "netns add ${P}p$i"; done; } | ip -batch -
{ echo "link add br0 type bridge"; echo "link set br0 up"
  for n in $(seq 1 "$NODES"); do echo "link add n$n type veth peer name eth0 netns ${P}n$n"; echo "link set n$n master br0 up"; done
} | ip -n ${P}sw -batch -
for n in $(seq 1 "$NODES"); do
  printf 'link set lo up\naddr add 10.254.0.%d/24 dev eth0\nlink set eth0 up\nlink add cni0 type bridge\naddr add 10.%d.0.1/16 dev cni0\nlink set cni0 up\n' "$n" "$((200 + n))" | ip -n ${P}n$n -batch -
done
# pods round-robin over the nodes
for n in $(seq 1 "$NODES"); do
  i=$n
  while [ "$i" -le "$N" ]; do
    echo "link add v$i type veth peer name eth0 netns ${P}p$i"; echo "link set v$i master cni0 up"
    i=$((i + NODES))
  done | ip -n ${P}n$n -batch -
done
for i in $(seq 1 "$N"); do
  n=$(( (i - 1) % NODES + 1 ))
  printf 'link set lo up\naddr add 10.%d.%d.%d/16 dev eth0\nlink set eth0 up\nroute add default via 10.%d.0.1\n' \
    "$((200 + n))" "$((i / 250 + 1))" "$((i % 250 + 2))" "$((200 + n))" | ip -n ${P}p$i -batch -
done
