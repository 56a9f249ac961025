#!/usr/bin/env bash
# The whole test suite: installs, builds, and runs every test with CTest.
# BPF tests need root (CI runs as root); as another user they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [[ $(id -u) -ne 0 ]]; then
  echo "test: not root: the BPF_PROG_TEST_RUN tests will be skipped" >&2
fi
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
