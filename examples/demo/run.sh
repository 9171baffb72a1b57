#!/bin/sh
# make demo: build the sample apps and the demo into bin/ (make build has
# built meshd and sentry), then run the demo. Extra arguments go to the demo.
set -e
cd "$(dirname "$0")/../.."
go build -o bin/echo ./examples/apps/echo
go build -o bin/grpcecho ./examples/apps/grpcecho
go build -o bin/demo ./examples/demo
exec bin/demo --bin bin "$@"
