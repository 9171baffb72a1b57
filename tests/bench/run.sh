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

echo "== sentry signing throughput (concurrent clients over gRPC+TLS)"
for c in 1 4 16; do go run ./tests/bench/signbench -c "$c" -d 5s -json; done | tee tests/bench/results/signing.txt

echo "== sidecar pair vs direct"
go run ./tests/bench/pairbench -bin bin -fortio .cache/bin/fortio -policy-rounds "${POLICY_ROUNDS:-4}" "$@"
