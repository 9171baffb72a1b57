#!/usr/bin/env bash
# Builds Consul v1.16.3 (MPL-2.0; later releases are BUSL and must not be used)
# from the Go module proxy into .cache/consul/v1.16.3/consul under the repository,
# only when that binary is missing. Prints the binary's path on stdout.
#
# Recipe A of the feasibility notes: a throwaway module that imports
# github.com/hashicorp/consul, with Consul's own go.sum appended (sumdb has no
# entry for some of its dependencies) and GONOSUMDB for two submodules.
# Cold build: about 4-5 minutes on 2 cores; afterwards it is a file check.
set -euo pipefail

VERSION=v1.16.3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="${CONSUL_CACHE_DIR:-$ROOT/.cache/consul/$VERSION}"
BIN="$DEST/consul"

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

echo "consul: building Consul $VERSION from the Go module proxy into $DEST (takes a few minutes, once)" >&2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
cat > go.mod <<'MOD'
module meshd.local/consulbuild

go 1.26

exclude (
	github.com/hashicorp/go-msgpack v1.1.5
	github.com/hashicorp/go-msgpack v1.1.6
)
MOD
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/hashicorp/consul"\n' > tools.go
# The build must not touch the repository's own module.
export GOFLAGS=-mod=mod GOWORK=off
export GONOSUMDB=github.com/hashicorp/consul/envoyextensions,github.com/hashicorp/consul/troubleshoot
"$GO" mod download "github.com/hashicorp/consul@$VERSION" >&2
cat "$("$GO" env GOMODCACHE)/github.com/hashicorp/consul@$VERSION/go.sum" >> go.sum
"$GO" get "github.com/hashicorp/consul@$VERSION" >&2
# The version in the binary must be the MPL one.
grep -q "github.com/hashicorp/consul $VERSION" go.mod || { echo "consul: go.mod does not pin $VERSION" >&2; exit 1; }
"$GO" build -trimpath -ldflags "-s -w" -o "$WORK/consul" github.com/hashicorp/consul >&2
mv "$WORK/consul" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "consul: built $BIN" >&2
echo "$BIN"
