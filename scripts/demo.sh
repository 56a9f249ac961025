#!/usr/bin/env bash
# The main job, end to end, on this machine: builds Portcullis, checks the
# example policy (validate, then simulate over a capture), then runs the real
# agent in front of an nginx "ingress pod" in a network namespace and sends it
# real traffic from a client, an admin, an outsider, a blocklisted host and a
# SYN flood. Prints what was dropped and why, and cleans everything up.
# All hosts are in 198.18.0.0/16, inside namespaces this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root (network namespaces and BPF)" >&2
  exit 1
fi
bash scripts/build.sh

P="pcdemo$$"
work=$(mktemp -d)
pin_dir="/sys/fs/bpf/$P"
policy=docs/examples/edge-prod.yaml
agent=build/agent/portcullis-agent
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if ip netns list | grep -q "^${P}ing"; then
    nsenter --net="/run/netns/${P}ing" "$agent" --uninstall --pin-dir "$pin_dir" \
      --state-dir "$work/state" >/dev/null 2>&1
  fi
  for ns in ing cli adm out blk atk lan; do ip netns del "$P$ns" 2>/dev/null; done
  rm -rf "$work" "$pin_dir"
}
trap cleanup EXIT

in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }
http() { in_ns "$1" curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-2}" "$2" || true; }

echo
echo "== 1. validate the policy, and simulate it over a recorded capture"
build/cli/portcullisctl validate "$policy"
build/tests/portcullis-demo-capture "$work/ingress.pcap"
build/cli/portcullisctl simulate --policy "$policy" --pcap "$work/ingress.pcap" --format json |
  tail -n 1

echo
echo "== 2. a network: an ingress pod (nginx, 198.18.0.10) and five hosts on one bridge"
ip netns add "${P}lan"
ip -n "${P}lan" link add br0 type bridge
ip -n "${P}lan" link set br0 up
add_host() {  # name address
  ip netns add "$P$1"
  ip link add "$P${1}0" type veth peer name "$P${1}1"
  ip link set "$P${1}0" netns "$P$1"
  ip link set "$P${1}1" netns "${P}lan"
  ip -n "${P}lan" link set "$P${1}1" master br0 up
  ip -n "$P$1" addr add "$2/16" dev "$P${1}0"
  ip -n "$P$1" link set "$P${1}0" up
  ip -n "$P$1" link set lo up
  printf '   %-9s %s\n' "$1" "$2"
}
add_host ing 198.18.0.10
add_host cli 198.18.2.9      # office
add_host adm 198.18.1.5      # admins
add_host out 198.18.30.9     # anyone
add_host blk 198.18.200.1    # blocklisted
add_host atk 198.18.66.6     # attacker
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {}
http { access_log off; server {
  listen 198.18.0.10:80; listen 198.18.0.10:443; listen 198.18.0.10:10254; listen 198.18.0.10:31000;
  location / { return 200 "ok\n"; } } }
CONF
# Started directly (not through a function) so that $! is nginx itself.
ip netns exec "${P}ing" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' &
pids+=($!)

echo
echo "== 3. portcullis-agent enforces $policy on ${P}ing0"
nsenter --net="/run/netns/${P}ing" "$agent" --policy-file "$policy" --interfaces "${P}ing0" \
  --pin-dir "$pin_dir" --state-dir "$work/state" --metrics-addr 127.0.0.1:9469 --node demo \
  2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do
  [[ $(http ing http://127.0.0.1:9469/readyz) == 200 ]] && break
  sleep 0.1
done
grep -E '"attached XDP"|"policy applied"' "$work/agent.log" | sed 's/^/   /'

echo
echo "== 4. traffic"
printf '   client  -> 443    : %s\n' "$(http cli http://198.18.0.10:443/)"
printf '   client  -> 31000  : %s (office NodePort)\n' "$(http cli http://198.18.0.10:31000/)"
printf '   admin   -> 10254  : %s (admin endpoint)\n' "$(http adm http://198.18.0.10:10254/)"
printf '   outsider-> 10254  : %s (segmented: refused)\n' "$(http out http://198.18.0.10:10254/ 1)"
printf '   outsider-> 8080   : %s (no rule: refused)\n' "$(http out http://198.18.0.10:8080/ 1)"
printf '   blocked -> 443    : %s (blocklist)\n' "$(http blk http://198.18.0.10:443/ 1)"
echo "   attacker: 100000 SYNs to 443 while the client makes 200 requests ..."
in_ns atk build/tests/portcullis-synsend 198.18.66.6 198.18.0.10 443 100000 30 >/dev/null &
flood=$!
ok=0
for _ in $(seq 200); do
  [[ $(http cli http://198.18.0.10:443/) == 200 ]] && ok=$((ok + 1))
done
wait "$flood"

echo
echo "== 5. report (from the agent's /metrics)"
metrics=$(in_ns ing curl -s --max-time 2 http://127.0.0.1:9469/metrics)
echo "   drops by reason:"
grep -E '^portcullis_packets_total\{.*verdict="drop"' <<<"$metrics" |
  sed -E 's/.*reason="([a-z_]+)"\} ([0-9.e+]+)/\1 \2/' |
  awk '{ n[$1] += $2 } END { for (r in n) printf "     %-18s %d\n", r, n[r] }' | sort -k2 -nr
echo "   legitimate requests during the flood: $ok/200 succeeded"
echo "   policy version on the node: $(grep -E '^portcullis_policy_version ' <<<"$metrics" | awk '{print $2}')"
echo "   sample drop log line:"
grep -m1 '"drop sample"' "$work/agent.log" | sed 's/^/     /'
echo
echo "   metrics were at http://127.0.0.1:9469/metrics inside namespace ${P}ing"
echo "   (in a cluster: the agent's --metrics-addr on every node)."
echo
echo "== 6. cleaning up: agent uninstalled, namespaces and pins removed"
