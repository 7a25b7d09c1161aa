#!/usr/bin/env bash
# Two network namespaces as two "hosts" for multi-node torch.distributed tests (needs root):
#   harness-a: 10.77.0.1/24 on veth hv-a   <->   harness-b: 10.77.0.2/24 on veth hv-b
# Usage: .ci/netns-hosts.sh up|down|status
# Exit 2 = this environment cannot do it (no root, netns not permitted): tests should skip.
#
# Running torchrun inside them (one command per namespace, same --rdzv-endpoint):
#   ip netns exec harness-a env GLOO_SOCKET_IFNAME=hv-a python -m torch.distributed.run \
#     --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 10.77.0.1:29400 \
#     --rdzv-id test --rdzv-conf is_host=1,join_timeout=60 --local-addr 10.77.0.1 --max-restarts 0 x.py
#   ip netns exec harness-b env GLOO_SOCKET_IFNAME=hv-b python -m torch.distributed.run \
#     ...same... --rdzv-conf join_timeout=60 --local-addr 10.77.0.2 ... x.py
# Why the extras: both namespaces share one hostname, which resolves to 127.0.0.1, so
#  - is_host=1: torchrun only hosts the rendezvous store if the endpoint is one of the hostname's
#    addresses; otherwise both agents act as clients and wait for a store nobody runs;
#  - --local-addr: rank 0 advertises it as MASTER_ADDR (default: its FQDN, here "localhost");
#  - GLOO_SOCKET_IFNAME: gloo binds to and advertises the hostname's address unless told an interface.
#  - join_timeout (default 600 s): how long an agent waits for a peer that never starts.
# Failure detection: a peer killed (even SIGKILL) closes its sockets, so the survivor fails at once;
# a silent peer (link down) is only noticed by the init_process_group(timeout=...) of the workers
# (gloo default 30 min); see tcp_retries2 below for the agents.
set -euo pipefail

NS=(harness-a harness-b)
IF=(hv-a hv-b)
IP=(10.77.0.1 10.77.0.2)

cant() { echo "netns-hosts: cannot run here: $*" >&2; exit 2; }

up() {
  [[ $EUID -eq 0 ]] || cant "needs root (ip netns add)"
  if ! command -v ip >/dev/null; then
    command -v apt-get >/dev/null || cant "no ip(8) and no apt-get to install iproute2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null 2>&1 \
      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2; } >/dev/null 2>&1 \
      || cant "apt-get install iproute2 failed"
  fi
  local i err
  for i in 0 1; do
    if [[ ! -e /run/netns/${NS[i]} ]]; then
      # fails in unprivileged containers (no CAP_SYS_ADMIN, or /run/netns not mountable)
      err=$(ip netns add "${NS[i]}" 2>&1) || cant "ip netns add: $err"
    fi
  done
  if ! ip -n "${NS[0]}" link show "${IF[0]}" >/dev/null 2>&1; then
    ip -n "${NS[1]}" link del "${IF[1]}" 2>/dev/null || true    # half of an earlier pair
    err=$(ip link add "${IF[0]}" netns "${NS[0]}" type veth peer name "${IF[1]}" netns "${NS[1]}" 2>&1) \
      || cant "veth pair: $err"
  fi
  for i in 0 1; do
    # a TCP peer that stops answering (partition) is given up after ~13 s instead of ~15 min
    # (tcp_retries2=15): torchrun's agent otherwise blocks, deaf to SIGTERM, in a store recv()
    ip netns exec "${NS[i]}" sysctl -qw net.ipv4.tcp_retries2=5
    ip -n "${NS[i]}" link set lo up
    ip -n "${NS[i]}" addr replace "${IP[i]}/24" dev "${IF[i]}"
    ip -n "${NS[i]}" link set "${IF[i]}" up
  done
  # the link is usable once the address is no longer "tentative" (IPv6 DAD does not matter here)
  # and a TCP connect gets an answer (refused is fine: it proves the path).
  for _ in $(seq 50); do
    if [[ $(ip netns exec "${NS[0]}" timeout 1 bash -c "exec 3<>/dev/tcp/${IP[1]}/9" 2>&1) == *refused* ]]; then
      echo "netns-hosts: up (${NS[0]} ${IP[0]} dev ${IF[0]} <-> ${NS[1]} ${IP[1]} dev ${IF[1]})"; return
    fi
    sleep 0.1
  done
  echo "netns-hosts: ${NS[0]} cannot reach ${IP[1]}" >&2; exit 1
}

down() {
  local i p
  for i in 0 1; do
    [[ -e /run/netns/${NS[i]} ]] || continue
    # processes started in the namespace (a test's torchrun) would keep it alive: end them first
    for p in $(ip netns pids "${NS[i]}" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "${NS[i]}"                  # also removes the veth pair
  done
  echo "netns-hosts: down"
}

status() {
  local i
  for i in 0 1; do
    echo "== ${NS[i]}"; ip -n "${NS[i]}" -br addr 2>/dev/null || echo "(absent)"
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
