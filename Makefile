# meshd — see README.md. Everything here needs only Go (and root for the
# network-namespace tests, which skip with a message otherwise).
GO        ?= go
BIN       := bin
BINARIES  := meshd sentry meshctl controlplane
PKGS      := ./...
TEST_TIMEOUT ?= 25m

.PHONY: all build test vet race bench bench-xds fuzz fuzz-smoke soak chaos demo clean consul jaeger kubernetes chromium image manifests

all: build

# The version --version prints: the nearest tag and the commit (or "dev").
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/meshd/meshd/internal/version.Version=$(VERSION)
# meshd's runtime default keeps sysmon out of its deep sleep without the
# re-exec at start (cmd/meshd/sysmon.go; docs/sidecar.md, "sysmon").
MESHD_GODEBUG := schedtrace=2147483647
MESHD_LDFLAGS := -X runtime.godebugDefault=$(MESHD_GODEBUG) -X main.builtinGODEBUG=$(MESHD_GODEBUG)

# Static binaries, as in the images (CGO off): a cgo build maps libc and the
# dynamic loader into every sidecar, ~5 MB more VmRSS (docs/performance.md).
BUILD_CGO ?= 0
# A slim meshd leaves discovery backends out: MESHD_TAGS=meshd_nokube,
# meshd_noconsul and/or meshd_noxds (comma-separated). The default keeps
# every backend; docs/performance.md, "Slim builds", has what each saves.
MESHD_TAGS ?=
build:
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
	  extra=; tags=; [ $$b = meshd ] && extra="$(MESHD_LDFLAGS)" && tags="$(MESHD_TAGS)"; \
	  if [ -d cmd/$$b ]; then CGO_ENABLED=$(BUILD_CGO) $(GO) build -tags "$$tags" -ldflags "$(LDFLAGS) $$extra" -o $(BIN)/$$b ./cmd/$$b || exit 1; fi; \
	done
	@$(GO) build -o $(BIN)/echo ./examples/apps/echo   # the sample app of the README

# Container images without a Docker daemon (internal/ociimage,
# go-containerregistry): for each of IMAGES, a static binary (CGO off) per
# architecture of IMAGE_ARCHS in one layer, non-root user 65532. Written as
# $(IMAGE_DIR)/NAME.tar, an OCI image layout tarball holding one image index
# over all the architectures (what crane push, skopeo copy oci-archive: and
# podman load read), and $(IMAGE_DIR)/NAME-ARCH.tar, one architecture each
# (docker load, kind load image-archive), all tagged
# $(IMAGE_REPO)/NAME:$(VERSION).
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null)
IMAGES      ?= meshd sentry controlplane
IMAGE_ARCHS ?= amd64 arm64
IMAGE_DIR   ?= $(BIN)/images
IMAGE_REPO  ?= ghcr.io/meshd
IMAGE_LDFLAGS := -s -w $(LDFLAGS)

image:
	@mkdir -p $(IMAGE_DIR)
	@for b in $(IMAGES); do \
	  if [ -d cmd/$$b ]; then \
	    bins=""; extra=; tags=; [ $$b = meshd ] && extra="$(MESHD_LDFLAGS)" && tags="$(MESHD_TAGS)"; \
	    for a in $(IMAGE_ARCHS); do \
	      CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -tags "$$tags" -ldflags "$(IMAGE_LDFLAGS) $$extra" -o $(BIN)/linux_$$a/$$b ./cmd/$$b || exit 1; \
	      bins="$$bins --binary $$a=$(BIN)/linux_$$a/$$b"; \
	    done; \
	    SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) $(GO) run ./internal/ociimage/mkimage $$bins --name $$b \
	      --version $(VERSION) --revision '$(REVISION)' --tag $(IMAGE_REPO)/$$b:$(VERSION) --out $(IMAGE_DIR)/$$b.tar || exit 1; \
	    echo "$(IMAGE_DIR)/$$b.tar"; \
	  else echo "make image: no cmd/$$b here; skipped" >&2; fi; \
	done

# The plain manifests for people without Helm, rendered from the chart with
# Helm's Go library (tests/kubernetes/helm fails when they are stale).
manifests:
	$(GO) run ./internal/helmchart/render deploy/helm/meshd deploy/kubernetes/meshd.yaml

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags meshd_nokube,meshd_noconsul,meshd_noxds ./sidecar/ ./cmd/meshd/
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

# Consul v1.16.3 (MPL-2.0; never a newer, BUSL one) for the consul discovery
# tests: built from the Go module proxy into .cache/consul/ once per checkout
# (about 6 minutes of a cold build on 2 cores), afterwards a file check. The
# tests build it themselves too (tests/harness.ConsulBinary); building it
# here first keeps that time out of the test timeout.
consul:
	./tests/consul/install.sh >/dev/null

# Jaeger v2 (Apache-2.0) v1.76.0, the real OTLP receiver of the tracing
# tests (tests/telemetry): built from the Go module proxy into .cache/jaeger/
# once per checkout (several minutes cold), afterwards a file check. The
# tests build it themselves too (tests/harness.JaegerBinary).
jaeger:
	./tests/telemetry/install-jaeger.sh >/dev/null

# Kubernetes v1.37.2 (Apache-2.0): kube-apiserver, kube-controller-manager
# and etcd v3.7.3, the real control plane of the kubernetes tests
# (tests/kubernetes): built from the Go module proxy into
# .cache/kubernetes/ once per checkout (about 10 minutes cold on 2 cores),
# afterwards a file check. The tests build it themselves too
# (tests/harness.KubeDir).
kubernetes:
	./tests/kubernetes/install.sh >/dev/null

# Debian's chromium for the dashboard test (tests/dashboard): installed
# with apt-get when root (CI), else the script says what to run.
chromium:
	./tests/dashboard/install-chromium.sh

# What CI runs (.ci/run). Unit tests, end-to-end tests against real processes
# on loopback, all with the race detector.
test: vet consul jaeger kubernetes chromium
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	./tests/fuzz.sh --smoke

# BENCH_SHORT=1 make bench: only the pair benchmark, 5 s windows (a quick check).
bench: build
	./tests/bench/run.sh

# The control plane at scale by simulation (not in make test): XDS_CLIENTS
# simulated sidecars (each its own ADS stream) × XDS_APPS apps × XDS_EPS
# endpoints against cmd/controlplane, delta then state of the world; see
# docs/xds.md. Several minutes on 2 cores at the defaults.
XDS_CLIENTS ?= 2000
XDS_APPS    ?= 1000
XDS_EPS     ?= 5
bench-xds:
	@mkdir -p tests/bench/results
	for m in delta sotw; do \
	  XDS_MODE=$$m XDS_CLIENTS=$(XDS_CLIENTS) XDS_APPS=$(XDS_APPS) XDS_EPS=$(XDS_EPS) \
	    $(GO) test -run '^$$' -bench BenchmarkXDSScale -benchtime 1x -timeout 30m ./tests/bench/xdsbench/ 2>&1 | \
	    grep -E '^(Benchmark|ok|FAIL|---)|xdsbench_test' ; \
	done | tee tests/bench/results/xds.txt

FUZZTIME ?= 30s
fuzz:
	./tests/fuzz.sh $(FUZZTIME)

# Every fuzz target for FUZZSMOKE (20000x: inputs, not seconds) each: part of make test.
FUZZSMOKE ?= 20000x
fuzz-smoke:
	./tests/fuzz.sh --smoke $(FUZZSMOKE)

# The fault suite across hosts (network namespaces; root): the issue's fault
# durations at 500 calls/s, Consul down for 2 minutes, sentry down, root
# rotation on a full disk, rolling restart. Figures to CHAOS_OUT (JSON; see
# docs/reliability.md). Its short form runs in make test.
CHAOS_OUT ?= docs/reliability.json
chaos: build consul
	MESHD_CHAOS=full MESHD_CHAOS_OUT=$(abspath $(CHAOS_OUT)) $(GO) test -count=1 -timeout 60m -v -run 'TestHosts' ./tests/chaos/

soak: build
	./tests/soak.sh

demo: build
	./examples/demo/run.sh

clean:
	rm -rf $(BIN)
