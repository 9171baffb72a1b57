package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/decisionlog"
)

// BenchmarkInvokePolicy is BenchmarkInvoke with the callee deciding every
// call with the policy engine (one Rego rule), keeping every decision in the
// ring of recent decisions (meshd's default) or not: the per-call cost of
// the ring, end to end.
func BenchmarkInvokePolicy(b *testing.B) {
	for _, bc := range []struct {
		name   string
		recent int
	}{{"ring", decisionlog.DefaultRecent}, {"no-ring", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "default"), 0o755); err != nil {
				b.Fatal(err)
			}
			rego := "package mesh.authz\n\nallow if {\n\tinput.source.app_id == \"frontend\"\n\tinput.request.method == \"GET\"\n}\n"
			if err := os.WriteFile(filepath.Join(dir, "default", "p.rego"), []byte(rego), 0o644); err != nil {
				b.Fatal(err)
			}
			discard := slog.New(slog.DiscardHandler)
			eng, err := policy.New(context.Background(), policy.Options{Source: policy.Source{Dir: dir}, Default: policy.DefaultDeny,
				Logger: discard, DecisionLog: decisionlog.New(discard, 100, decisionlog.WithRecent(bc.recent))})
			if err != nil {
				b.Fatal(err)
			}
			ca := newCA(b, "cluster.local")
			res := newResolver()
			ch := benchApp(b)
			callee := startSidecar(b, ca, Config{Identity: mustIdentity(b, "orders"), Resolver: res, App: ch, Authorizer: eng})
			caller := startSidecar(b, ca, Config{Identity: mustIdentity(b, "frontend"), Resolver: res})
			res.set("orders", callee.internal)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			benchGET(b, client, caller.httpURL+"/v1.0/invoke/orders/method/api/orders/42?x=1")
			if (eng.DecisionLog().Recent() != nil) != (bc.recent > 0) {
				b.Fatal("ring")
			}
		})
	}
}
