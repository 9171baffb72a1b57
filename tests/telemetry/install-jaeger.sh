#!/usr/bin/env bash
# Builds Jaeger v2 (Apache-2.0; an OpenTelemetry Collector distribution with an
# OTLP receiver, an in-memory store and the Jaeger query API) from the Go module
# proxy into .cache/jaeger/v1.76.0/jaeger under the repository, only when that
# binary is missing. Prints the binary's path on stdout; progress goes to stderr.
#
# A throwaway module in a temporary directory takes the program as a tool
# (`go get -tool`), so the repository's own go.mod is never touched.
# Cold build: several minutes on 2 cores; afterwards it is a file check.
set -euo pipefail

VERSION=v1.76.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="${JAEGER_CACHE_DIR:-$ROOT/.cache/jaeger/$VERSION}"
BIN="$DEST/jaeger"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

GO=${GO:-go}
mkdir -p "$DEST"
# One builder at a time (parallel test packages may both ask).
exec 9>"$DEST/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

echo "jaeger: building Jaeger $VERSION from the Go module proxy into $DEST (takes several minutes, once)" >&2
START=$(date +%s)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
printf 'module meshd.local/jaegerbuild\n\ngo 1.26\n' > go.mod
# The build must not touch the repository's own module.
export GOFLAGS=-mod=mod GOWORK=off
"$GO" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$VERSION" >&2
grep -q "github.com/jaegertracing/jaeger $VERSION" go.mod || { echo "jaeger: go.mod does not pin $VERSION" >&2; exit 1; }
"$GO" build -trimpath -ldflags "-s -w" -o "$WORK/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2
mv "$WORK/jaeger" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "jaeger: built $BIN in $(( $(date +%s) - START ))s" >&2
echo "$BIN"
