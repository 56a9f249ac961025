#!/usr/bin/env bash
# Installs every Debian 12 package that the build, tests, benchmarks and demo
# need, and the npm packages of the deployment checks. Idempotent: packages
# already present are skipped, and apt-get update runs only when something is
# missing. `bootstrap.sh --build-only` installs just what building needs (the
# Dockerfiles' build stage).
set -euo pipefail

BUILD_PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang llvm clang-format
  # BPF
  libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
  # C++ libraries
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev
  protobuf-compiler-grpc libyaml-cpp-dev libpcap-dev libsqlite3-dev libssl-dev libnftables-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  # etcd's API protos, from which the `--store etcd` stubs are generated
  golang-etcd-server-dev
)
TEST_PACKAGES=(
  # tests, benchmarks and demo
  iproute2 xdp-tools nftables util-linux nginx-light curl ethtool openssl
  # deployment checks: kustomize (kubectl), promtool and a real Prometheus,
  # Node.js for the schema and type checks
  kubectl prometheus nodejs
  # a real etcd cluster for the `--store etcd` tests and benchmark
  etcd-server etcd-client
  # the fuzz build (clang with libFuzzer)
  libclang-rt-14-dev
)

build_only=false
[[ "${1:-}" == "--build-only" ]] && build_only=true
PACKAGES=("${BUILD_PACKAGES[@]}")
$build_only || PACKAGES+=("${TEST_PACKAGES[@]}")
here="$(cd "$(dirname "$0")" && pwd)"

# The deployment checks' npm packages, pinned by deploy/checks/package-lock.json.
npm_install() {
  $build_only && return 0
  local dir="$here/../deploy/checks"
  if [[ ! -d "$dir/node_modules" || "$dir/package-lock.json" -nt "$dir/node_modules" ]]; then
    echo "bootstrap: npm ci in deploy/checks"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) && touch "$dir/node_modules"
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  npm_install
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
npm_install
