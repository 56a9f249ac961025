#!/usr/bin/env bash
# Fails when a C or C++ file in git differs from its .clang-format: Google
# style (the root's) for the C++, kernel style (bpf/.clang-format) for the BPF
# C. Prints each file and the command that formats it.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=()
while IFS= read -r f; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.cc' '*.h' | grep -v '\.pb\.')
if ((${#bad[@]})); then
  printf 'check_format: not formatted: %s\n' "${bad[@]}" >&2
  echo "check_format: run: clang-format -i ${bad[*]}" >&2
  exit 1
fi
echo "check_format: $(git ls-files '*.c' '*.cc' '*.h' | grep -vc '\.pb\.') files formatted"
