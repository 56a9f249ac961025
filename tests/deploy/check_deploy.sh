#!/usr/bin/env bash
# The deploy/ checks the test suite runs (tests/CMakeLists.txt), offline:
#   check_deploy.sh manifests BUILD_DIR     kustomize builds, schemas, strict keys, flags
#   check_deploy.sh dashboard BUILD_DIR     Grafana types, every expression parses (promtool)
#   check_deploy.sh rules                   promtool check rules + promtool test rules
#   check_deploy.sh dockerfiles BUILD_DIR   multi-stage Debian 12, non-root where possible, and
#                                           the runtime stage installs every library the binary links
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cmd="$1"
build="${2:-$root/build}"

case "$cmd" in
manifests)
  "$root/deploy/overlays/dev/make-certs.sh" "$build/control/portcullis-control" >/dev/null
  node "$root/deploy/checks/check.mjs" manifests "$build/agent/portcullis-agent" \
    "$build/control/portcullis-control"
  ;;
dashboard)
  rules="$(mktemp --suffix=.yaml)"
  trap 'rm -f "$rules"' EXIT
  node "$root/deploy/checks/check.mjs" dashboard "$rules"
  promtool check rules "$rules"
  ;;
rules)
  cd "$root/deploy/prometheus"
  promtool check rules alerts.yaml
  promtool test rules alerts_test.yaml
  ;;
dockerfiles)
  # Libraries every debian:12-slim image has (apt's own dependencies).
  slim="libc6 libgcc-s1 libstdc++6 zlib1g libzstd1 liblz4-1 libgcrypt20 libgpg-error0 libsystemd0 liblzma5 libcap2"
  fail=0
  for pair in agent:agent/portcullis-agent control:control/portcullis-control \
              portcullisctl:cli/portcullisctl; do
    name="${pair%%:*}"; binary="$build/${pair#*:}"
    file="$root/deploy/docker/Dockerfile.$name"
    froms="$(grep -E '^FROM ' "$file" | awk '{print $2}' | tr '\n' ' ')"
    if [[ "$froms" != "debian:12 debian:12-slim " ]]; then
      echo "FAIL $file: stages are '$froms', expected a debian:12 build and a debian:12-slim runtime"; fail=1
    fi
    user="$(grep -E '^USER ' "$file" | tail -1 | awk '{print $2}')"
    if [[ "$name" != agent && ( -z "$user" || "$user" == 0* || "$user" == root* ) ]]; then
      echo "FAIL $file: runs as root ('$user'); only the agent needs to"; fail=1
    fi
    # The runtime stage's apt-get install list.
    runtime="$(awk '/^FROM debian:12-slim/{r=1} r' "$file" | tr -d '\\' |
               sed -n '/apt-get install/,/rm -rf/p' | tr ' ' '\n' |
               grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|rm|rf)$' | sort -u)"
    for p in $runtime; do
      if ! apt-cache show "$p" >/dev/null 2>&1; then
        echo "FAIL $file: no Debian 12 package '$p'"; fail=1
      fi
    done
    # What apt installs with them (their dependencies, recursively).
    closure="$( (echo "$runtime"; apt-cache depends --recurse --no-recommends --no-suggests \
                 --no-conflicts --no-breaks --no-replaces --no-enhances $runtime 2>/dev/null |
                 grep -E '^[a-z0-9]' ) | sed 's/:.*//' | sort -u)"
    for lib in $(ldd "$binary" | awk '/=>/{print $3}'); do
      real="$(readlink -f "$lib")"
      pkg="$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || true)"
      pkg="${pkg%%:*}"
      if [[ -z "$pkg" ]]; then echo "FAIL $name: no package owns $real"; fail=1; continue; fi
      if ! grep -qx "$pkg" <<<"$closure" && [[ " $slim " != *" $pkg "* ]]; then
        echo "FAIL $file: $(basename "$binary") links $real from $pkg, which the runtime stage does not install"
        fail=1
      fi
    done
  done
  ((fail == 0)) && echo "dockerfiles: ok"
  exit "$fail"
  ;;
*)
  echo "usage: $0 manifests|dashboard|rules|dockerfiles [BUILD_DIR]" >&2
  exit 2
  ;;
esac
