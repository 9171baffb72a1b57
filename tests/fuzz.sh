#!/usr/bin/env bash
# make fuzz: runs every go test -fuzz target in the repository for FUZZTIME
# each (default 30s). A crash leaves its input in the package's testdata/fuzz.
#
# make fuzz-smoke (and make test): tests/fuzz.sh --smoke [TIME] runs every
# target for TIME (default 20000x: twenty thousand inputs, about a second;
# a count rather than a duration, because go test -fuzz can fail a
# duration-bound run with "context deadline exceeded" when its deadline
# falls inside an input's run), packages in turn; a found crash fails the
# run the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [ "${1:-}" = "--smoke" ]; then
  smoke=1
  shift
fi
time_each="${1:-30s}"
if [ "$smoke" = 1 ] && [ -z "${1:-}" ]; then
  time_each=20000x
fi
status=0
n=0
start=$(date +%s)
while IFS= read -r line; do
  file="${line%%:*}"; name="${line##*func }"; name="${name%%(*}"
  pkg="./$(dirname "$file")"
  echo "== $pkg $name ($time_each)"
  n=$((n + 1))
  go test -run "^$" -fuzz "^${name}\$" -fuzztime "$time_each" -fuzzminimizetime=1000x "$pkg" || status=1
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '/.cache/' | sort)
echo "fuzz: $n targets, $time_each each, $(( $(date +%s) - start ))s in all"
exit $status
