#!/usr/bin/env bash
# make soak: long-running end-to-end tests (build tag "soak"): sustained calls
# through a sidecar pair across many certificate and root rotations.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -tags soak -run Soak -count=1 -timeout "${SOAK_TIMEOUT:-60m}" -v ./tests/...
