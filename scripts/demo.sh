#!/usr/bin/env bash
# The main job, end to end, on this machine: builds Portcullis, checks the
# example policy (validate, then simulate over a capture), then builds a
# Kubernetes node in network namespaces, wired as a CNI wires one (the lab of
# the tests, tests/support/node_lab.h: an uplink on a switch, pods behind
# host-side veths, a NodePort, two VXLAN overlays to a second node), starts
# the control service with its embedded store and --dev certificates,
# pushes the node's policy with portcullisctl, runs the real agent in
# control-service mode as the DaemonSet runs it, with nginx as the ingress
# pod, and sends real traffic: a client through the NodePort, an outsider, a
# blocklisted host, remote pods over the overlays (one blocklisted), the
# ingress pod to its backend, the node's own probe, a SYN flood; then judges
# a reviewed change in shadow on live traffic, shows its report, promotes it
# and shows it arrive. Prints what was dropped, why and at
# which hook, and cleans everything up. All addresses are in 198.18.0.0/15
# and 2001:db8::/32, inside namespaces this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root (network namespaces and BPF)" >&2
  exit 1
fi
bash scripts/build.sh

P="pd$$"
work=$(mktemp -d)
pin_dir="/sys/fs/bpf/portcullis-demo-$$"
example=docs/examples/edge-prod.yaml
policy=docs/examples/k8s-node.yaml
agent=build/agent/portcullis-agent
ctl=build/cli/portcullisctl
lab=build/tests/portcullis-node-lab
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if ip netns list | grep -q "^${P}n1"; then
    nsenter --net="/run/netns/${P}n1" "$agent" --uninstall --pin-dir "$pin_dir" \
      --state-dir "$work/state" >/dev/null 2>&1
  fi
  "$lab" down "$P"
  rm -rf "$work" "$pin_dir"
}
trap cleanup EXIT

in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }
http() { in_ns "$1" curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-2}" "$2" || true; }

echo
echo "== 1. validate a policy, and simulate it over a recorded capture"
build/cli/portcullisctl validate "$example"
build/tests/portcullis-demo-capture "$work/ingress.pcap"
build/cli/portcullisctl simulate --policy "$example" --pcap "$work/ingress.pcap" --format json |
  tail -n 1

echo
echo "== 2. a Kubernetes node, in namespaces (tests/support/node_lab.h)"
"$lab" up "$P"
cat <<'TOPOLOGY'
   switch: cli 198.18.2.9 (client)   out 198.18.4.1 (outsider)   bad 198.18.3.3 (blocklisted)
           atk 198.18.66.6 (a client that floods)   ctl 198.18.0.2 (portcullis-control)
           n1 198.18.0.10 / 2001:db8::10 (the node: uplink eth0)   n2 198.18.0.11 (a second node)
   n1 pods, behind host-side veths (/32 routes, gateway 169.254.1.1):
           ing 198.19.1.10 / 2001:db8:1:1::10 (nginx, the ingress pod: caliing)   be 198.19.1.20
   n1 NodePort (kube-proxy, nftables): node:30443 -> ing:8443
   n2 pods: rp 198.19.2.10 over VXLAN 4789, fp 198.19.3.10 over flannel's VXLAN 8472,
            rb 198.19.2.66 (blocklisted)
TOPOLOGY
start_nginx() {  # namespace, then listen addresses
  local ns=$1; shift
  mkdir -p "$work/nginx-$ns"
  {
    echo "pid $work/nginx-$ns/nginx.pid; error_log $work/nginx-$ns/error.log; events {}"
    echo "http { access_log off; server {"
    for l in "$@"; do echo "  listen $l;"; done
    echo "  location / { return 200 \"$ns\n\"; } } }"
  } >"$work/nginx-$ns/nginx.conf"
}
start_nginx ing 198.19.1.10:8443 '[2001:db8:1:1::10]:8443'
start_nginx be 198.19.1.20:8080
# Started directly (not through in_ns: a backgrounded function is a
# subshell, and killing it left nginx running) so that $! is nginx itself
# (ip netns exec execs it).
ip netns exec "${P}ing" nginx -c "$work/nginx-ing/nginx.conf" -p "$work/nginx-ing" \
  -g 'daemon off;' &
pids+=($!)
ip netns exec "${P}be" nginx -c "$work/nginx-be/nginx.conf" -p "$work/nginx-be" -g 'daemon off;' &
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
version=$(push "$policy" "demo: the node's policy")
echo "   portcullisctl push $policy -> version $version"
printf '   a viewer tries to push: '
as viewer push "$policy" --reason "not allowed" 2>&1 >/dev/null | sed 's/^portcullisctl: //' || true
# As the DaemonSet runs it: XDP on the uplink, the pod hook on the ingress
# pod's host-side interface (nsenter --net keeps the host's bpffs).
nsenter --net="/run/netns/${P}n1" "$agent" --control 198.18.0.2:9443 --ca "$tls/ca.crt" \
  --cert "$tls/agent.crt" --key "$tls/agent.key" --server-name portcullis-control \
  --interfaces eth0 --tc-interfaces caliing --pin-dir "$pin_dir" --state-dir "$work/state" \
  --metrics-addr 127.0.0.1:9469 --node n1 --report-interval-seconds 1 \
  2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do
  [[ $(http n1 http://127.0.0.1:9469/readyz) == 200 ]] && break
  sleep 0.1
done
grep -E '"connected to the control service"|"attached XDP"|"attached TC|"policy applied"' \
  "$work/agent.log" | sed 's/^/   /'

echo
echo "== 4. traffic (each path's hook: docs/ARCHITECTURE.md, \"Where packets are judged\")"
printf '   client   -> NodePort 198.18.0.10:30443   : %s (XDP, on 30443)\n' \
  "$(http cli http://198.18.0.10:30443/)"
printf '   client   -> NodePort [2001:db8::10]:30443: %s\n' "$(http cli 'http://[2001:db8::10]:30443/')"
printf '   outsider -> NodePort                     : %s (XDP: not allowlisted)\n' \
  "$(http out http://198.18.0.10:30443/ 1)"
printf '   blocked  -> NodePort                     : %s (XDP: blocklist)\n' \
  "$(http bad http://198.18.0.10:30443/ 1)"
printf '   remote pod over VXLAN   -> ing:8443      : %s (TC at the pod, inner source)\n' \
  "$(http rp http://198.19.1.10:8443/)"
printf '   remote pod over flannel -> ing:8443      : %s\n' "$(http fp http://198.19.1.10:8443/)"
printf '   blocklisted remote pod  -> ing:8443      : %s (TC at the pod: blocklist)\n' \
  "$(http rb http://198.19.1.10:8443/ 1)"
printf '   ingress pod -> its backend :8080         : %s (its own traffic)\n' \
  "$(http ing http://198.19.1.20:8080/)"
printf '   the node (kubelet probe) -> ing:8443     : %s (TC at the pod)\n' \
  "$(http n1 http://198.19.1.10:8443/)"
echo "   a client floods: 100000 SYNs to the NodePort while another makes 200 requests ..."
in_ns atk build/tests/portcullis-synsend 198.18.66.6 198.18.0.10 30443 100000 30 >/dev/null &
flood=$!
ok=0
for _ in $(seq 200); do
  [[ $(http cli http://198.18.0.10:30443/) == 200 ]] && ok=$((ok + 1))
done
wait "$flood"

echo
echo "== 5. a policy change: open the NodePort to a partner network, reviewed with diff,"
echo "   judged in shadow on live traffic, then promoted"
sed -e 's|^    clients: \[.*\].*$|&\n    partners: [198.18.4.0/24]|' \
  -e 's|^    - {ports: \[30443\], proto: tcp, from: \[clients\]}.*$|    - {ports: [30443], proto: tcp, from: [clients, partners]}|' \
  "$policy" >"$work/k8s-node-v2.yaml"
printf '   outsider -> NodePort : %s (before)\n' "$(http out http://198.18.0.10:30443/ 1)"
as editor diff "$work/k8s-node-v2.yaml" | sed 's/^/   /'
as editor push "$work/k8s-node-v2.yaml" --shadow --reason "demo: partners reach the ingress" \
  >/dev/null 2>"$work/push.err" || { sed 's/^/   /' "$work/push.err"; exit 1; }
sed 's/^portcullisctl: //; s/^/   /' "$work/push.err"
for _ in $(seq 100); do
  grep -q '"shadow candidate loaded' "$work/agent.log" && break
  sleep 0.1
done
printf '   outsider -> NodePort : %s (the candidate is judged, not enforced)\n' \
  "$(http out http://198.18.0.10:30443/ 1)"
for _ in $(seq 20); do http cli http://198.18.0.10:30443/ >/dev/null; done
sleep 1.2  # one status report
echo "   portcullisctl shadow report:"
as viewer shadow report | sed 's/^/     /'
start=$(date +%s%N)
version=$(as editor shadow promote --reason "demo: reviewed in shadow" 2>"$work/push.err") ||
  { sed 's/^/   /' "$work/push.err"; exit 1; }
for _ in $(seq 200); do
  in_ns n1 curl -s --max-time 1 http://127.0.0.1:9469/metrics |
    grep -qx "portcullis_policy_version $version" && break
  sleep 0.01
done
echo "   promoted as version $version; enforced on the node $(( ($(date +%s%N) - start) / 1000000 )) ms later"
printf '   outsider -> NodePort : %s (after: a partner now)\n' "$(http out http://198.18.0.10:30443/)"
printf '   blocked  -> NodePort : %s (still refused)\n' "$(http bad http://198.18.0.10:30443/ 1)"
sleep 1.2  # one status report
as viewer status | sed 's/^/   /'

echo
echo "== 6. report (from the agent's /metrics)"
metrics=$(in_ns n1 curl -s --max-time 2 http://127.0.0.1:9469/metrics)
echo "   drops by hook and reason:"
grep -E '^portcullis_packets_total\{.*verdict="drop"' <<<"$metrics" |
  sed -E 's/.*hook="([a-z]+)".*reason="([a-z_]+)".*\} ([0-9.e+]+)/\1 \2 \3/' |
  awk '{ n[$1 " " $2] += $3 } END { for (k in n) { split(k, a, " "); printf "     %-4s %-18s %d\n", a[1], a[2], n[k] } }' |
  sort -k3 -nr
echo "   legitimate requests through the NodePort during the flood: $ok/200 succeeded"
echo "   policy version on the node: $(grep -E '^portcullis_policy_version ' <<<"$metrics" | awk '{print $2}')"
echo "   sample drop log line:"
grep -m1 '"drop sample"' "$work/agent.log" | sed 's/^/     /'
echo "   audit log:"
as viewer audit | sed 's/^/     /'
echo
echo "   metrics were at http://127.0.0.1:9469/metrics inside namespace ${P}n1 (the agent)"
echo "   and http://127.0.0.1:9470/metrics inside ${P}ctl (the control service);"
echo "   in a cluster: every node's :9469 and the portcullis-control Service's :9470,"
echo "   scraped by the PodMonitor and ServiceMonitor of deploy/, shown by deploy/grafana/."
echo
echo "== 7. cleaning up: agent uninstalled, control stopped, namespaces and pins removed"
