#!/usr/bin/env bash
# The main job, end to end: builds Portcullis, then shows a security team's
# pre-flight check of a policy. `portcullisctl validate` checks the example
# policy; `portcullisctl simulate` loads the real XDP program and judges a
# few seconds of ingress traffic (legitimate clients, admins, a port scan, a
# blocklisted network, a SYN flood) with BPF_PROG_TEST_RUN.
# Live enforcement on interfaces arrives with portcullis-agent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: simulate loads BPF programs; run as root" >&2
  exit 1
fi
bash scripts/build.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

policy=docs/examples/edge-prod.yaml
capture="$work/ingress.pcap"
echo
echo "== 1. validate the policy"
build/cli/portcullisctl validate "$policy"
echo
echo "== 2. record traffic (generated: build/tests/portcullis-demo-capture)"
build/tests/portcullis-demo-capture "$capture"
echo "$capture"
echo
echo "== 3. simulate the policy over it, in the kernel"
build/cli/portcullisctl simulate --policy "$policy" --pcap "$capture" --format table
echo
echo "== 4. the same, as JSON lines (first 3 and the summary)"
build/cli/portcullisctl simulate --policy "$policy" --pcap "$capture" --format json >"$work/out.json"
head -n 3 "$work/out.json"
tail -n 1 "$work/out.json"
