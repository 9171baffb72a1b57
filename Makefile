# meshd — see README.md. Everything here needs only Go (and root for the
# network-namespace tests, which skip with a message otherwise).
GO        ?= go
BIN       := bin
BINARIES  := meshd sentry meshctl
PKGS      := ./...
TEST_TIMEOUT ?= 25m

.PHONY: all build test vet race bench fuzz fuzz-smoke soak chaos demo clean consul jaeger kubernetes

all: build

build:
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
	  if [ -d cmd/$$b ]; then $(GO) build -o $(BIN)/$$b ./cmd/$$b || exit 1; fi; \
	done

vet:
	$(GO) vet $(PKGS)
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

# What CI runs (.ci/run). Unit tests, end-to-end tests against real processes
# on loopback, all with the race detector.
test: vet consul jaeger kubernetes
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	./tests/fuzz.sh --smoke

bench: build
	./tests/bench/run.sh

FUZZTIME ?= 30s
fuzz:
	./tests/fuzz.sh $(FUZZTIME)

# Every fuzz target for FUZZSMOKE (2s) each: part of make test.
FUZZSMOKE ?= 2s
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
