package policy

import "testing"

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
