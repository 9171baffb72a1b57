#!/usr/bin/env bash
# Builds the Kubernetes control plane the kubernetes tests run against:
# kube-apiserver and kube-controller-manager from k8s.io/kubernetes (the
# same release as the client-go meshd uses) and etcd from go.etcd.io, all
# from the Go module proxy, into .cache/kubernetes/$VERSION/ under the
# repository, only when a binary is missing. Prints the directory on stdout.
#
# A throwaway module requires k8s.io/kubernetes and replaces each of its
# ./staging modules with the published k8s.io module of the same release
# (the proxy serves all of them). Cold build: about 8-10 minutes on 2 cores;
# afterwards it is a file check.
set -euo pipefail

VERSION=v1.37.2           # k8s.io/kubernetes; client-go is v0.37.2
STAGING=v0.37.2
ETCD_VERSION=v3.7.3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="${KUBE_CACHE_DIR:-$ROOT/.cache/kubernetes/$VERSION}"

have_all() { [ -x "$DEST/kube-apiserver" ] && [ -x "$DEST/kube-controller-manager" ] && [ -x "$DEST/etcd" ]; }
if have_all; then
  echo "$DEST"
  exit 0
fi

GO=${GO:-go}
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if have_all; then
  echo "$DEST"
  exit 0
fi

export GOFLAGS=-mod=mod GOWORK=off
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ ! -x "$DEST/kube-apiserver" ] || [ ! -x "$DEST/kube-controller-manager" ]; then
  echo "kubernetes: building kube-apiserver and kube-controller-manager $VERSION into $DEST (several minutes, once)" >&2
  mkdir "$WORK/k8s" && cd "$WORK/k8s"
  "$GO" mod download -json "k8s.io/kubernetes@$VERSION" >/dev/null
  MOD="$("$GO" env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$VERSION.mod"
  {
    echo "module meshd.local/k8sbuild"; echo; echo "go 1.26"; echo
    echo "require k8s.io/kubernetes $VERSION"; echo; echo "replace ("
    for s in $(grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' "$MOD" | awk '{print $1}'); do
      echo "	$s => $s $STAGING"
    done
    echo ")"
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n)\n' > tools.go
  "$GO" mod tidy >&2
  MINOR=$(echo "$VERSION" | cut -d. -f2)
  LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$MINOR"
  for cmd in kube-apiserver kube-controller-manager; do
    "$GO" build -trimpath -ldflags "$LDFLAGS" -o "$WORK/$cmd" "k8s.io/kubernetes/cmd/$cmd" >&2
    mv "$WORK/$cmd" "$DEST/$cmd"
  done
fi

if [ ! -x "$DEST/etcd" ]; then
  echo "kubernetes: building etcd $ETCD_VERSION into $DEST" >&2
  mkdir "$WORK/etcd" && cd "$WORK/etcd"
  printf 'module meshd.local/etcdbuild\n\ngo 1.26\n' > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
  "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "go.etcd.io/etcd/server/v3/etcdmain@$ETCD_VERSION" >&2
  "$GO" mod tidy >&2
  "$GO" build -trimpath -ldflags "-s -w" -o "$WORK/etcd-bin" go.etcd.io/etcd/server/v3 >&2
  mv "$WORK/etcd-bin" "$DEST/etcd"
fi

echo "kubernetes: built $DEST" >&2
echo "$DEST"
