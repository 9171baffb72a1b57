package policy

import (
	"context"
	"strconv"
	"testing"
)

// paths10k are 10,000 distinct REST paths (ids in the path), the shape of
// real traffic that a per-path decision cache cannot hide.
func paths10k() []string {
	out := make([]string, 10000)
	for i := range out {
		out[i] = "/api/v30/orders/" + strconv.Itoa(100000+i*7919%1000003)
	}
	return out
}

func runBenchPaths(b *testing.B, e *Engine, paths []string) {
	ctx := context.Background()
	req := benchRequest(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	i := 0
	for b.Loop() {
		req.Path = paths[i]
		if i++; i == len(paths) {
			i = 0
		}
		if d := e.Authorize(ctx, req); !d.Allow {
			b.Fatalf("decision %+v", d)
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkRego50Paths10k is one decision of the 50-rule namespace (plus
// mesh-wide rules) with the calls spread over 10,000 distinct paths, the
// decision cache on (as a sidecar runs).
func BenchmarkRego50Paths10k(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	runBenchPaths(b, e, paths10k())
}

// BenchmarkRego50Paths10kUncached is the same with the decision cache off.
func BenchmarkRego50Paths10kUncached(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.opts.NoDecisionCache = true
	runBenchPaths(b, e, paths10k())
}

// The same with every decision evaluated by OPA (the engine of record), for
// comparison with the compiled Rego.

func BenchmarkRego50UncachedOPA(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.opts.NoDecisionCache, e.opts.NoRegoCompile = true, true
	runBench(b, e, benchRequest(b), true)
}

func BenchmarkRego50Paths10kOPA(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.opts.NoRegoCompile = true
	runBenchPaths(b, e, paths10k())
}

func BenchmarkRego50Paths10kUncachedOPA(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.opts.NoDecisionCache, e.opts.NoRegoCompile = true, true
	runBenchPaths(b, e, paths10k())
}

// BenchmarkRego50Deny10k is a denied call (a mesh-wide and a namespace deny
// reason) over 10,000 distinct paths, cache off.
func BenchmarkRego50Deny10k(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.opts.NoDecisionCache = true
	ctx := context.Background()
	req := benchRequest(b)
	req.Caller = ident(b, "cluster.local", "default", "banned3")
	paths := paths10k()
	for i := range paths {
		paths[i] = "/Admin" + paths[i]
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	i := 0
	for b.Loop() {
		req.Path = paths[i]
		if i++; i == len(paths) {
			i = 0
		}
		if d := e.Authorize(ctx, req); d.Allow || d.Reason != "admin routes are closed mesh-wide; blocked 3" {
			b.Fatalf("decision %+v", d)
		}
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}
