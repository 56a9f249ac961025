#!/usr/bin/env bash
# Installs every Debian 12 package that the build, tests, benchmarks and demo
# need. Idempotent: packages already present are skipped, and apt-get update
# runs only when something is missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang llvm
  # BPF
  libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
  # C++ libraries
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev
  protobuf-compiler-grpc libyaml-cpp-dev libpcap-dev libsqlite3-dev libssl-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  # tests, benchmarks and demo
  iproute2 xdp-tools nftables util-linux nginx-light curl ethtool openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
