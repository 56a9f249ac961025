#!/usr/bin/env bash
# The whole test suite: installs, builds, and runs every test with CTest.
# BPF tests need root (CI runs as root); as another user they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [[ $(id -u) -ne 0 ]]; then
  echo "test: not root: the BPF_PROG_TEST_RUN tests will be skipped" >&2
elif ! mountpoint -q /sys/fs/bpf; then
  # Pin tests need the host's bpffs, as the agent's DaemonSet mounts it;
  # a bare machine or container may not have it mounted.
  mount -t bpf bpf /sys/fs/bpf
fi
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
