#!/usr/bin/env bash
# The main job, end to end, on this machine: builds Portcullis, checks the
# example policy (validate, then simulate over a capture), starts the control
# service with its embedded store and --dev certificates, pushes the policy
# with portcullisctl, runs the real agent in control-service mode in front of
# an nginx "ingress pod" in a network namespace, and sends it real traffic
# from a client, an admin, an outsider, a blocklisted host and a SYN flood;
# then pushes a change and shows it arrive. Prints what was dropped and why,
# and cleans everything up. All hosts are in 198.18.0.0/16, inside namespaces
# this script creates.
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
ctl=build/cli/portcullisctl
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if ip netns list | grep -q "^${P}ing"; then
    nsenter --net="/run/netns/${P}ing" "$agent" --uninstall --pin-dir "$pin_dir" \
      --state-dir "$work/state" >/dev/null 2>&1
  fi
  for ns in ing ctl cli adm out blk atk lan; do ip netns del "$P$ns" 2>/dev/null; done
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
echo "== 2. a network: an ingress pod (nginx, 198.18.0.10), the control service and five hosts"
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
add_host ctl 198.18.0.2      # portcullis-control
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
  listen 198.18.0.10:8080;
  location / { return 200 "ok\n"; } } }
CONF
# Started directly (not through a function) so that $! is nginx itself.
ip netns exec "${P}ing" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' &
pids+=($!)

echo
echo "== 3. portcullis-control (--dev certificates, SQLite in a temp dir); push; the agent"
nsenter --net="/run/netns/${P}ctl" build/control/portcullis-control --dev \
  --state-dir "$work/control" --listen 0.0.0.0:9443 --metrics-addr 127.0.0.1:9470 \
  2>"$work/control.log" &
pids+=($!)
tls="$work/control/tls"
for _ in $(seq 100); do
  [[ $(http ctl http://127.0.0.1:9470/readyz) == 200 ]] && break
  sleep 0.1
done
as() {  # role, then portcullisctl arguments; on the control service's loopback
  local role=$1; shift
  nsenter --net="/run/netns/${P}ctl" "$ctl" --control 127.0.0.1:9443 --ca "$tls/ca.crt" \
    --cert "$tls/$role.crt" --key "$tls/$role.key" "$@"
}
push() {  # file reason: prints the version; on failure, why
  as editor push "$1" --reason "$2" 2>"$work/push.err" || { sed 's/^/   /' "$work/push.err"; exit 1; }
}
version=$(push "$policy" "demo: first policy")
echo "   portcullisctl push $policy -> version $version"
printf '   a viewer tries to push: '
as viewer push "$policy" --reason "not allowed" 2>&1 >/dev/null | sed 's/^portcullisctl: //' || true
nsenter --net="/run/netns/${P}ing" "$agent" --control 198.18.0.2:9443 --ca "$tls/ca.crt" \
  --cert "$tls/agent.crt" --key "$tls/agent.key" --server-name portcullis-control \
  --interfaces "${P}ing0" --pin-dir "$pin_dir" --state-dir "$work/state" \
  --metrics-addr 127.0.0.1:9469 --node demo-node --report-interval-seconds 1 \
  2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do
  [[ $(http ing http://127.0.0.1:9469/readyz) == 200 ]] && break
  sleep 0.1
done
grep -E '"connected to the control service"|"attached XDP"|"policy applied"' "$work/agent.log" |
  sed 's/^/   /'

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
echo "== 5. a policy change: open 8080 to the office, reviewed with diff, then pushed"
sed 's|    - {ports: \[443\], proto: udp, from: any}|&\n    - {ports: [8080], proto: tcp, from: [office]}|' \
  "$policy" >"$work/edge-prod-v2.yaml"
printf '   client  -> 8080   : %s (before)\n' "$(http cli http://198.18.0.10:8080/ 1)"
as editor diff "$work/edge-prod-v2.yaml" | sed 's/^/   /'
start=$(date +%s%N)
version=$(push "$work/edge-prod-v2.yaml" "demo: office reaches 8080")
for _ in $(seq 200); do
  in_ns ing curl -s --max-time 1 http://127.0.0.1:9469/metrics |
    grep -qx "portcullis_policy_version $version" && break
  sleep 0.01
done
echo "   pushed version $version; enforced on the node $(( ($(date +%s%N) - start) / 1000000 )) ms later"
printf '   client  -> 8080   : %s (after)\n' "$(http cli http://198.18.0.10:8080/)"
printf '   outsider-> 8080   : %s (still refused)\n' "$(http out http://198.18.0.10:8080/ 1)"
sleep 1.2  # one status report
as viewer status | sed 's/^/   /'

echo
echo "== 6. report (from the agent's /metrics)"
metrics=$(in_ns ing curl -s --max-time 2 http://127.0.0.1:9469/metrics)
echo "   drops by reason:"
grep -E '^portcullis_packets_total\{.*verdict="drop"' <<<"$metrics" |
  sed -E 's/.*reason="([a-z_]+)"\} ([0-9.e+]+)/\1 \2/' |
  awk '{ n[$1] += $2 } END { for (r in n) printf "     %-18s %d\n", r, n[r] }' | sort -k2 -nr
echo "   legitimate requests during the flood: $ok/200 succeeded"
echo "   policy version on the node: $(grep -E '^portcullis_policy_version ' <<<"$metrics" | awk '{print $2}')"
echo "   sample drop log line:"
grep -m1 '"drop sample"' "$work/agent.log" | sed 's/^/     /'
echo "   audit log:"
as viewer audit | sed 's/^/     /'
echo
echo "   metrics were at http://127.0.0.1:9469/metrics inside namespace ${P}ing (the agent)"
echo "   and http://127.0.0.1:9470/metrics inside ${P}ctl (the control service);"
echo "   in a cluster: every node's :9469 and the portcullis-control Service's :9470,"
echo "   scraped by the PodMonitor and ServiceMonitor of deploy/, shown by deploy/grafana/."
echo
echo "== 7. cleaning up: agent uninstalled, control stopped, namespaces and pins removed"
