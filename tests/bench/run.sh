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

# The nginx mTLS pair (docs/performance.md) is measured in the
# same run as the reference floor; nginx comes from Debian's packages.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's nginx-light for the nginx reference pair (once)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light >/dev/null ||
      echo "nginx-light did not install: the nginx pair is left out of this run"
  else
    echo "no nginx and no root to install it: the nginx pair is left out of this run"
  fi
fi

# daprd v1.18.0 and Dapr's sentry, built from source once into .cache/bin
# (about 5 minutes of both cores, afterwards a file check): the daprd pair.
if [ "${DAPRD:-on}" != off ]; then
  ./tests/bench/daprd.sh >/dev/null || echo "daprd did not build: the daprd pair is left out of this run"
fi

# BENCH_SHORT=1: only the pair benchmark, in its quick mode (5 s windows).
if [ -n "${BENCH_SHORT:-}" ]; then
  echo "== sidecar pair vs direct, nginx and daprd (short)"
  exec go run ./tests/bench/pairbench -bin bin -fortio .cache/bin/fortio -short "$@"
fi

echo "== hot-path micro-benchmarks (go test -bench -benchmem)"
go test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:-1s}" \
  ./certs/... ./discovery/... ./proxy/... ./policy/... 2>/dev/null | grep -E '^(Benchmark|ok|PASS|FAIL|pkg)' | tee tests/bench/results/micro.txt || true

echo "== sentry signing throughput (concurrent clients over gRPC+TLS)"
for c in 1 4 16; do go run ./tests/bench/signbench -c "$c" -d 5s -json; done | tee tests/bench/results/signing.txt

echo "== sentry signing with the kubernetes token validator (real kube-apiserver; review cache off/on)"
go test -run '^$' -bench SignKubernetes -benchtime "${BENCHTIME:-3s}" ./tests/kubernetes/ 2>/dev/null |
  grep -E '^(Benchmark|ok|FAIL)' | tee tests/bench/results/signing-kubernetes.txt || true

echo "== sidecar pair vs direct, nginx and daprd"
go run ./tests/bench/pairbench -bin bin -fortio .cache/bin/fortio -reps "${REPS:-2}" -policy-rounds "${POLICY_ROUNDS:-0}" "$@"
