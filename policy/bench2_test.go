package policy

import (
	"log/slog"
	"testing"

	"github.com/meshd/meshd/policy/decisionlog"
)

func BenchmarkRegoTrivial(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": "package mesh.authz\n\nallow if input.source.app_id == \"svc30\"\n"})
	runBench(b, e, benchRequest(b), true)
}

func BenchmarkRego50NoMesh(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50()})
	runBench(b, e, benchRequest(b), true)
}

// BenchmarkRego50Uncached is the cost of one OPA evaluation (cache off).
func BenchmarkRego50Uncached(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.opts.NoDecisionCache = true
	runBench(b, e, benchRequest(b), true)
}

func BenchmarkRegoTrivialUncached(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": "package mesh.authz\n\nallow if input.source.app_id == \"svc30\"\n"})
	e.opts.NoDecisionCache = true
	runBench(b, e, benchRequest(b), true)
}

// BenchmarkRego50NoRing is BenchmarkRego50 without the ring of recent
// decisions: the difference is the ring's cost per decision.
func BenchmarkRego50NoRing(b *testing.B) {
	e := benchEngine(b, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	e.dlog = decisionlog.New(slog.New(slog.DiscardHandler), 0)
	runBench(b, e, benchRequest(b), true)
}
