#!/usr/bin/env bash
# The long runs (docs/RELIABILITY.md): each fuzzer for FUZZ_SECONDS (300),
# 100 kills of the agent during applies, the control and agent fault suites,
# and the differential model over more frames. Bounded: about half an hour.
# Run as root: `sudo bash scripts/soak.sh` (or the `soak` CMake target).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
seconds="${FUZZ_SECONDS:-300}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
for f in fuzz_policy_yaml fuzz_policy_proto fuzz_pcap fuzz_control_request; do
  mkdir -p "$out/$f"
  cp tests/fuzz/corpus/$f/* "$out/$f/"
  echo "== $f for ${seconds}s"
  if ! build-fuzz/tests/fuzz/$f -max_total_time="$seconds" -rss_limit_mb=2048 \
      -artifact_prefix="$out/$f-" "$out/$f" >"$out/$f.log" 2>&1; then
    echo "   CRASH: $(ls "$out"/$f-* 2>/dev/null | head -1) (add it to tests/fuzz/corpus/$f)"
    tail -30 "$out/$f.log"
    status=1
  fi
  grep -E '^#[0-9]+ *DONE|Done [0-9]+ runs' "$out/$f.log" | tail -2 | sed 's/^/   /' || true
done
echo "== 100 kills of the agent during applies"
PORTCULLIS_FAULT_ITERATIONS=100 build/tests/agent_faults_tests \
  --gtest_filter='*KillDuringApplies*' | grep -E 'kills|OK|FAILED' || status=1
echo "== the differential model over 2,000,000 frames"
PORTCULLIS_DIFFERENTIAL_FRAMES=2000000 build/tests/datapath_tests \
  --gtest_filter='Differential*' | grep -E 'frames|OK|FAILED' || status=1
echo "== control faults, 3 rounds"
build/tests/control_faults_tests --gtest_repeat=3 | grep -E '^\[  (PASSED|FAILED)' || status=1
exit "$status"
