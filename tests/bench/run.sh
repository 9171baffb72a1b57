#!/usr/bin/env bash
# make bench: hot-path micro-benchmarks (-benchmem), sentry signing throughput,
# and the side-by-side pair benchmark (direct vs through two meshd sidecars).
# Writes tables to stdout and JSON into tests/bench/results/.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .cache/bin tests/bench/results
if [ ! -x .cache/bin/fortio ]; then
  echo "installing fortio v1.68.2 into .cache/bin (once)"
  GOBIN="$PWD/.cache/bin" go install fortio.org/fortio@v1.68.2
fi

echo "== hot-path micro-benchmarks (go test -bench -benchmem)"
go test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:-1s}" \
  ./certs/... ./discovery/... ./proxy/... ./policy/... 2>/dev/null | grep -E '^(Benchmark|ok|PASS|FAIL|pkg)' | tee tests/bench/results/micro.txt || true

if [ -d tests/bench/signbench ]; then
  echo "== sentry signing throughput"
  go run ./tests/bench/signbench -bin bin
fi

echo "== sidecar pair vs direct"
go run ./tests/bench/pairbench -bin bin -fortio .cache/bin/fortio "$@"
