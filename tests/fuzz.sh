#!/usr/bin/env bash
# make fuzz: runs every go test -fuzz target in the repository for FUZZTIME
# each (default 30s). A crash leaves its input in the package's testdata/fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
time_each="${1:-30s}"
status=0
while IFS= read -r line; do
  file="${line%%:*}"; name="${line##*func }"; name="${name%%(*}"
  pkg="./$(dirname "$file")"
  echo "== $pkg $name ($time_each)"
  go test -run "^$" -fuzz "^${name}\$" -fuzztime "$time_each" -fuzzminimizetime=1000x "$pkg" || status=1
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '/.cache/')
exit $status
