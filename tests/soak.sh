#!/usr/bin/env bash
# make soak: long-running end-to-end tests (build tag "soak"): sustained calls
# through a sidecar pair across many certificate and root rotations
# (TestSoakRotations, SOAK_DURATION, 10m), and 1000 calls/s with the RSS, fds
# and goroutines of every sidecar and sentry sampled every 10 s
# (TestSoakResources, SOAK_RES_DURATION, 30m; SOAK_RES_OUT=FILE for JSON).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -tags soak -run Soak -count=1 -timeout "${SOAK_TIMEOUT:-60m}" -v ./tests/...
