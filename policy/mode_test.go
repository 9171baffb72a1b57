package policy

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
)

const auditYAML = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: audit
spec:
  accessControl:
    mode: audit
    defaultAction: deny
`

func TestMode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		files      map[string]string
		def        Default
		mode       string
		namespaces []string
		mesh       bool
		audit      []string
	}{
		{"no policy", map[string]string{}, DefaultDeny, ModeEnforce, []string{}, false, nil},
		{"rego and enforced accessControl", map[string]string{"_mesh/base.rego": meshRego, "default/orders.rego": ordersRego, "shop/acl.yaml": shopYAML},
			DefaultAllow, ModeEnforce, []string{"default", "shop"}, true, nil},
		{"audit only", map[string]string{"shop/acl.yaml": auditYAML}, DefaultAllow, ModeAudit, []string{"shop"}, false, []string{"shop/acl.yaml"}},
		{"audit beside rego", map[string]string{"shop/acl.yaml": auditYAML, "default/orders.rego": ordersRego}, DefaultDeny, ModeMixed,
			[]string{"default", "shop"}, false, []string{"shop/acl.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			m := newEngine(t, Options{Source: Source{Dir: dir}, Default: tc.def}).Mode()
			if m.Mode != tc.mode || m.Default != tc.def || m.Mesh != tc.mesh || m.Files != len(tc.files) ||
				!slices.Equal(m.Namespaces, tc.namespaces) || !slices.Equal(m.AuditFiles, tc.audit) {
				t.Errorf("mode %+v, want %s default %s namespaces %v mesh %v files %d audit %v", m, tc.mode, tc.def, tc.namespaces, tc.mesh, len(tc.files), tc.audit)
			}
		})
	}
}

// TestAuthorizeKeepsEveryDecision: with a Ring, every decision is kept —
// allows too, which the log samples — with its reason and rule.
func TestAuthorizeKeepsEveryDecision(t *testing.T) {
	dl := decisionlog.New(slog.New(slog.DiscardHandler), 100, decisionlog.WithRecent(16))
	e := newEngine(t, Options{Source: Source{Dir: testDir(t)}, DecisionLog: dl})
	ctx := context.Background()
	orders := discovery.Target{AppID: "orders", Namespace: "default"}
	fe := ident(t, "cluster.local", "default", "frontend")
	calls := []authz.Request{
		{Caller: fe, Destination: orders, Protocol: "http", Method: "GET", Path: "/orders/1", Query: "x=1"},
		{Caller: fe, Destination: orders, Protocol: "http", Method: "GET", Path: "/orders/2"},
		{Caller: fe, Destination: orders, Protocol: "http", Method: "DELETE", Path: "/orders/2"},
		{Caller: fe, Destination: orders, Protocol: "http", Method: "GET", Path: "/admin"},
	}
	for _, c := range calls {
		e.Authorize(ctx, c)
	}
	got, last, missed := dl.Recent().Since(0)
	if len(got) != 4 || last != 4 || missed != 0 {
		t.Fatalf("kept %d, last %d, missed %d; want 4, 4, 0", len(got), last, missed)
	}
	for i, want := range []struct {
		allow  bool
		reason string
	}{{true, ""}, {true, ""}, {false, "DELETE is forbidden"}, {false, "admin routes are closed mesh-wide"}} {
		g := got[i]
		if g.Allow != want.allow || g.Reason != want.reason || g.Path != calls[i].Path || g.Query != calls[i].Query ||
			g.Caller != fe || g.Destination != orders || g.Rule == "" || g.Time == 0 {
			t.Errorf("decision %d: %+v, want allow %v reason %q", i, g, want.allow, want.reason)
		}
	}
}

// TestAuthorizeAllocations: keeping every decision adds no allocation to
// a cached decision.
func TestAuthorizeAllocations(t *testing.T) {
	req := authz.Request{Caller: ident(t, "cluster.local", "default", "frontend"), Destination: discovery.Target{AppID: "orders", Namespace: "default"},
		Protocol: "http", Method: "GET", Path: "/orders/1"}
	ctx := context.Background()
	var allocs [2]float64
	for i, opts := range [][]decisionlog.Option{nil, {decisionlog.WithRecent(decisionlog.DefaultRecent)}} {
		e := newEngine(t, Options{Source: Source{Dir: testDir(t)}, DecisionLog: decisionlog.New(slog.New(slog.DiscardHandler), 0, opts...)})
		e.Authorize(ctx, req) // fills the decision cache
		allocs[i] = testing.AllocsPerRun(1000, func() {
			if !e.Authorize(ctx, req).Allow {
				t.Fatal("denied")
			}
		})
	}
	if allocs[1] != allocs[0] {
		t.Errorf("Authorize allocates %v times keeping recent decisions, %v without", allocs[1], allocs[0])
	}
}
