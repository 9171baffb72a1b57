#!/usr/bin/env bash
# Builds Dapr's daprd and sentry v1.18.0 (Apache-2.0) from the Go module proxy
# into .cache/bin/ under the repository (daprd, dapr-sentry), only when they
# are missing: the peer that `make bench` measures meshd against. Prints the
# daprd path on stdout.
#
# `go install` fails on dapr's replace directives, so a throwaway module
# requires github.com/dapr/dapr and copies its replace block; daprd needs
# -tags stablecomponents (without a component tag it panics at start).
# Cold build: 5 minutes of both cores on a quiet machine (40 on a busy one);
# afterwards it is a file check.
set -euo pipefail

VERSION=v1.18.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="${DAPRD_CACHE_DIR:-$ROOT/.cache/bin}"
BIN="$DEST/daprd"
SENTRY="$DEST/dapr-sentry"

if [ -x "$BIN" ] && [ -x "$SENTRY" ]; then
  echo "$BIN"
  exit 0
fi

GO=${GO:-go}
mkdir -p "$DEST"
# One builder at a time (.cache is shared between worktrees).
exec 9>"$DEST/.daprd.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [ -x "$BIN" ] && [ -x "$SENTRY" ]; then
  echo "$BIN"
  exit 0
fi

echo "daprd: building Dapr $VERSION (daprd, sentry) from the Go module proxy into $DEST (takes about 5 minutes, once)" >&2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
# The build must not touch the repository's own module.
export GOFLAGS=-mod=mod GOWORK=off
"$GO" mod download -json "github.com/dapr/dapr@$VERSION" >/dev/null
M=$("$GO" env GOMODCACHE)/cache/download/github.com/dapr/dapr/@v/$VERSION.mod
{
  echo "module meshd.local/daprbuild"; echo
  echo "go 1.26"; echo
  echo "require github.com/dapr/dapr $VERSION"; echo
  echo "replace ("
  grep -E '^\s+[^/].* => .* v' "$M" || true
  echo ")"
} > go.mod
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/dapr/dapr/cmd/daprd"\n\t_ "github.com/dapr/dapr/cmd/sentry"\n)\n' > tools.go
"$GO" mod tidy >&2
grep -q "github.com/dapr/dapr $VERSION" go.mod || { echo "daprd: go.mod does not pin $VERSION" >&2; exit 1; }
"$GO" build -trimpath -tags stablecomponents -o "$WORK/daprd" github.com/dapr/dapr/cmd/daprd >&2
"$GO" build -trimpath -o "$WORK/dapr-sentry" github.com/dapr/dapr/cmd/sentry >&2
mv "$WORK/dapr-sentry" "$SENTRY.tmp" && mv "$SENTRY.tmp" "$SENTRY"
mv "$WORK/daprd" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
echo "daprd: built $BIN and $SENTRY" >&2
echo "$BIN"
