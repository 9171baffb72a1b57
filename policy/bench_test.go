package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
)

// rules50 is a realistic namespace policy: 45 allow rules (caller app,
// verbs, path prefixes and globs) and 5 deny rules.
func rules50() string {
	var b strings.Builder
	b.WriteString("package mesh.authz\n\n")
	for i := range 45 {
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, "allow if {\n\tinput.source.app_id == \"svc%d\"\n\tinput.source.namespace == \"default\"\n\tinput.request.method in {\"GET\", \"POST\"}\n\tstartswith(input.request.path, \"/api/v%d/\")\n}\n\n", i, i)
		case 1:
			fmt.Fprintf(&b, "allow if {\n\tinput.source.app_id == \"svc%d\"\n\tinput.request.method == \"GET\"\n\tglob.match(\"/items/*/detail%d\", [\"/\"], input.request.path)\n}\n\n", i, i)
		default:
			fmt.Fprintf(&b, "allow if {\n\tinput.source.spiffe_id == \"spiffe://cluster.local/ns/default/svc%d\"\n\tinput.request.path == \"/exact/%d\"\n}\n\n", i, i)
		}
	}
	for i := range 5 {
		fmt.Fprintf(&b, "deny contains \"blocked %d\" if {\n\tinput.source.app_id == \"banned%d\"\n}\n\n", i, i)
	}
	return b.String()
}

const daprBenchYAML = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: bench
spec:
  accessControl:
    defaultAction: deny
    trustDomain: cluster.local
    policies:
    - appId: svc30
      namespace: default
      trustDomain: cluster.local
      defaultAction: deny
      operations:
      - {name: /api/v1/*, httpVerb: ['GET'], action: allow}
      - {name: /api/v30/**, httpVerb: ['GET', 'POST'], action: allow}
      - {name: /api/v30/admin/**, httpVerb: ['*'], action: deny}
      - {name: /items/*/detail, httpVerb: ['GET'], action: allow}
    - appId: svc1
      namespace: default
      trustDomain: cluster.local
      defaultAction: allow
`

// benchEngine is an engine as meshd runs it: every decision kept in the
// ring of recent decisions (--policy-recent-decisions), none logged.
func benchEngine(b *testing.B, files map[string]string) *Engine {
	dir := b.TempDir()
	writeFiles(b, dir, files)
	return newEngine(b, Options{Source: Source{Dir: dir}, Default: DefaultDeny,
		Logger: slog.New(slog.DiscardHandler), DecisionLog: decisionlog.New(slog.New(slog.DiscardHandler), 0, decisionlog.WithRecent(decisionlog.DefaultRecent))})
}

func benchRequest(b *testing.B) authz.Request {
	return authz.Request{Caller: ident(b, "cluster.local", "default", "svc30"),
		Destination: discovery.Target{AppID: "orders", Namespace: "default"},
		Protocol:    "http", Method: "GET", Path: "/api/v30/orders/42",
		Header: http.Header{"Content-Type": {"application/json"}, "Dapr-Caller-App-Id": {"svc30"}}}
}

func runBench(b *testing.B, e *Engine, req authz.Request, wantAllow bool) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for b.Loop() {
		if d := e.Authorize(ctx, req); d.Allow != wantAllow {
			b.Fatalf("decision %+v", d)
		}
	}
	// CPU time per op: the wall clock is noisy on a shared machine.
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user+system CPU time in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkRego50 is one decision against a 50-rule namespace policy plus
// mesh-wide rules.
func BenchmarkRego50(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	runBench(b, e, benchRequest(b), true)
}

func BenchmarkRego50Deny(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	req := benchRequest(b)
	req.Path = "/nowhere"
	runBench(b, e, req, false)
}

func BenchmarkRego50Parallel(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	req := benchRequest(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !e.Authorize(ctx, req).Allow {
				b.Fatal("denied")
			}
		}
	})
}

// BenchmarkDaprYAML is one decision against a Dapr accessControl (no OPA).
func BenchmarkDaprYAML(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/acl.yaml": daprBenchYAML})
	runBench(b, e, benchRequest(b), true)
}

func BenchmarkNoPolicy(b *testing.B) {
	e := benchEngine(b, map[string]string{})
	e.opts.Default = DefaultAllow
	runBench(b, e, benchRequest(b), true)
}
