package policy

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
)

// TestRegoNotCompiled: a module with a shape the compiler does not handle
// leaves its namespace to OPA, says why (debug log, RegoEngines, Explain,
// RegoNamespaces), and decides every call as OPA does.
func TestRegoNotCompiled(t *testing.T) {
	const head = "package mesh.authz\n\n"
	for _, tc := range []struct {
		name, body, why string
	}{
		{"helper set", "methods := {\"GET\"}\n\nallow if input.request.method in methods\n", "p.rego:3: rule methods with a value that is not true or false"},
		{"function", "is_get(m) if m == \"GET\"\n\nallow if is_get(input.request.method)\n", "p.rego:3: rule is_get (only allow, deny and boolean helper rules are compiled)"},
		{"helper := false", "h := false if input.request.method == \"GET\"\n\nallow if h\n", "p.rego:3: h := false"},
		{"some", "allow if {\n\tsome m in [\"GET\"]\n\tinput.request.method == m\n}\n", "p.rego:4: expression"},
		{"reason variable", "deny contains msg if {\n\tinput.request.method == \"DELETE\"\n\tmsg := sprintf(\"no %s\", [input.request.path])\n}\n", "p.rego:3: deny reason that is not a string literal"},
		{"query", "allow if input.request.query.q[0] == \"x\"\n", "p.rego:3: expression"},
		{"unknown field", "allow if input.request.body == \"x\"\n", "p.rego:3: expression"},
		{"else", "allow if {\n\tinput.request.method == \"GET\"\n} else := true if {\n\tinput.request.method == \"POST\"\n}\n", "p.rego:3: else"},
		{"with", "allow if {\n\tinput.request.method == \"GET\" with input.request.method as \"GET\"\n}\n", "p.rego:4: with"},
		{"glob escape", "allow if glob.match(\"/a/\\\\*\", [\"/\"], input.request.path)\n", "p.rego:3: glob.match pattern with a \\ escape"},
		{"bare call", "allow if lower(input.request.method)\n", "p.rego:3: expression"},
		{"count", "allow if count(input.request.path) > 3\n", "p.rego:3: expression"},
		{"allow := false", "allow := false if input.request.method == \"GET\"\n\nallow if input.request.method == \"POST\"\n", "p.rego:3: allow := false"},
		{"import", "import data.x\n\nallow if input.request.method == \"GET\"\n", "p.rego:3: import data.x"},
		{"literal first", "allow if startswith(\"/orders/42\", input.request.path)\n", "p.rego:3: expression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{"default/p.rego": head + tc.body, "_mesh/base.rego": meshRego}
			dir := t.TempDir()
			writeFiles(t, dir, files)
			var logs bytes.Buffer
			e := newEngine(t, Options{Source: Source{Dir: dir}, Default: DefaultDeny, NoDecisionCache: true,
				Logger:      slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
				DecisionLog: decisionlog.New(slog.New(slog.DiscardHandler), 0)})
			why := e.Snapshot().RegoEngines()["default"]
			if !strings.HasPrefix(why, "default/") || !strings.Contains(why, tc.why) {
				t.Fatalf("RegoEngines()[default] = %q, want it to contain %q", why, tc.why)
			}
			if got := e.Snapshot().RegoEngines()[MeshDir]; got != "" {
				t.Errorf("mesh-wide rules not compiled: %s", got)
			}
			if c, o := e.RegoNamespaces(); c != 1 || o != 1 {
				t.Errorf("RegoNamespaces() = %d compiled, %d opa; want 1, 1", c, o)
			}
			if !strings.Contains(logs.String(), "policy: rego not compiled; OPA evaluates every call") || !strings.Contains(logs.String(), "namespace=default") {
				t.Errorf("no debug log for the namespace left to OPA:\n%s", logs.String())
			}
			x := e.Explain(context.Background(), authz.Request{Caller: ident(t, "cluster.local", "default", "frontend"),
				Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http", Method: "GET", Path: "/orders/1"})
			if !containsLine(x.Steps, "rego: calls are evaluated by OPA (not compiled: "+why+")") {
				t.Errorf("explain steps %q do not say OPA evaluates the namespace", x.Steps)
			}
			_, opa := diffEngines(t, files)
			for _, m := range []string{"GET", "POST", "DELETE"} {
				for _, p := range []string{"/orders/42", "/a/*", "/admin"} {
					req := authz.Request{Caller: ident(t, "cluster.local", "default", "frontend"),
						Destination: discovery.Target{AppID: "orders", Namespace: "default"},
						Protocol:    "http", Method: m, Path: p, Header: http.Header{}}
					if got, want := e.Authorize(context.Background(), req), opa.Authorize(context.Background(), req); got != want {
						t.Errorf("%s %s: %+v, OPA %+v", m, p, got, want)
					}
				}
			}
		})
	}
}

func containsLine(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

// TestCompiledExplain: explain of a compiled namespace is OPA's, as before
// (steps, matched rules with file:line), plus the line saying what decides
// the calls.
func TestCompiledExplain(t *testing.T) {
	e := newEngine(t, Options{Source: Source{Dir: testDir(t)}, Default: DefaultDeny})
	if why := e.Snapshot().RegoEngines()["default"]; why != "" {
		t.Fatalf("default not compiled: %s", why)
	}
	frontend := ident(t, "cluster.local", "default", "frontend")
	orders := discovery.Target{AppID: "orders", Namespace: "default"}
	x := e.Explain(context.Background(), authz.Request{Caller: frontend, Destination: orders, Protocol: "http", Method: "DELETE", Path: "/admin/x"})
	if x.Allow || x.Reason != "admin routes are closed mesh-wide; DELETE is forbidden" {
		t.Fatalf("explain: allow=%v reason %q", x.Allow, x.Reason)
	}
	if !containsLine(x.Steps, "rego: calls are decided by the Rego compiled to Go; explained here by OPA, the engine of record") {
		t.Errorf("steps %q", x.Steps)
	}
	want := []string{`_mesh/base.rego:4: deny contains "admin routes are closed mesh-wide" if { ...`,
		`default/orders.rego:24: deny contains "DELETE is forbidden" if input.request.method == "DELETE"`}
	if strings.Join(x.Matched, "\n") != strings.Join(want, "\n") {
		t.Errorf("matched %q, want %q", x.Matched, want)
	}
	// The call itself, decided by the compiled matcher: same reason.
	d := e.Authorize(context.Background(), authz.Request{Caller: frontend, Destination: orders, Protocol: "http", Method: "DELETE", Path: "/admin/x"})
	if d.Allow || d.Reason != x.Reason {
		t.Errorf("Authorize %+v, explain reason %q", d, x.Reason)
	}
}

// TestCompiledAmbiguousHeader: two header names that differ only in case
// (a hand-built http.Header) make OPA's input depend on map order; the
// compiled matcher declines and OPA decides.
func TestCompiledAmbiguousHeader(t *testing.T) {
	e := newEngine(t, Options{Source: Source{Dir: testDir(t)}, Default: DefaultDeny, NoDecisionCache: true})
	rs := regoSetFor(e.Snapshot(), "default")
	req := authz.Request{Caller: ident(t, "cluster.local", "default", "reporting"),
		Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http", Method: "GET", Path: "/stats",
		Header: http.Header{"X-Report": {"yes"}, "x-report": {"yes"}}}
	if _, _, ok := rs.prog.decide(&req); ok {
		t.Fatal("compiled matcher decided a call with X-Report and x-report")
	}
	if d := e.Authorize(context.Background(), req); !d.Allow {
		t.Errorf("OPA's decision: %+v", d)
	}
	req.Header = http.Header{"x-report": {"yes"}} // one name, not canonical: fine
	if v, _, ok := rs.prog.decide(&req); !ok || v != "allow" {
		t.Errorf("x-report: %s %v", v, ok)
	}
	req.Header = http.Header{"X-Report": {"yes", "no"}} // joined: "yes, no"
	if v, _, ok := rs.prog.decide(&req); !ok || v != "none" {
		t.Errorf("X-Report: yes, no: %s %v", v, ok)
	}
}

// TestSpiffeIDIs: the piecewise comparison equals comparing with the
// string OPA's input holds.
func TestSpiffeIDIs(t *testing.T) {
	ids := []certs.Identity{{}, ident(t, "cluster.local", "default", "svc1"), ident(t, "a.b", "x", "y"),
		{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Namespace: "bad ns", AppID: "x"}, // not a valid SPIFFE ID: ""
		{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Namespace: "", AppID: ""},
		{Namespace: "default", AppID: "svc1"}, // no trust domain: anonymous
	}
	lits := []string{"", "spiffe://cluster.local/ns/default/svc1", "spiffe://cluster.local/ns/default/svc", "spiffe://cluster.local/ns/bad ns/x",
		"spiffe://a.b/ns/x/y", "spiffe://a.b/ns/x/yy", "spiffe://a.bb/ns/x/y", "spiffe://cluster.local/ns//", "spiffe://a.b/nsx/x/y", "spiffe:/a.b/ns/x/y!"}
	for _, id := range ids {
		for _, lit := range lits {
			if got, want := spiffeIDIs(id, lit), spiffeIDString(id) == lit; got != want {
				t.Errorf("spiffeIDIs(%+v, %q) = %v, want %v", id, lit, got, want)
			}
		}
	}
}

// TestCompiledHotPathAllocs: the compiled decision of the 50-rule namespace
// allocates nothing on an allow.
func TestCompiledHotPathAllocs(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"default/p.rego": rules50(), "_mesh/base.rego": meshRego})
	quiet := slog.New(slog.DiscardHandler)
	e := newEngine(t, Options{Source: Source{Dir: dir}, Default: DefaultDeny, Logger: quiet,
		DecisionLog: decisionlog.New(quiet, 0), NoDecisionCache: true})
	req := authz.Request{Caller: ident(t, "cluster.local", "default", "svc30"),
		Destination: discovery.Target{AppID: "orders", Namespace: "default"},
		Protocol:    "http", Method: "GET", Path: "/api/v30/orders/42", Header: http.Header{"Content-Type": {"application/json"}}}
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		if !e.Authorize(ctx, req).Allow {
			t.Fatal("denied")
		}
	}); n != 0 {
		t.Errorf("a compiled allow allocates %v times", n)
	}
}

// TestCompiledUndefinedOperands: where OPA reads an absent header (inside
// or before a `not`) decides the rule; each shape against OPA, with the
// header absent and present.
func TestCompiledUndefinedOperands(t *testing.T) {
	for _, expr := range []string{
		`not input.request.headers.a == "x"`,
		`not "x" = input.request.headers.a`,
		`not input.request.headers.a != "x"`,
		`not input.request.headers.a`,
		`not input.request.headers.a == input.request.headers.b`,
		`not input.request.headers.a == lower(input.request.headers.b)`,
		`not lower(input.request.headers.a) == input.request.headers.b`,
		`not input.request.headers.a != input.request.headers.b`,
		`not input.request.headers.a == input.request.path`,
		`not input.request.path != input.request.headers.a`,
		`not startswith(input.request.headers.a, "x")`,
		`not input.request.headers.a in {"x"}`,
		`not glob.match("*", null, input.request.headers.a)`,
		`not regex.match("x", input.request.headers.a)`,
		`not upper(input.request.headers.a) == "X"`,
	} {
		files := map[string]string{"default/p.rego": "package mesh.authz\n\nallow if {\n\t" + expr + "\n}\n"}
		fast, opa := diffEngines(t, files)
		var reqs []authz.Request
		for _, h := range []http.Header{{}, {"A": {"x"}}, {"B": {"x"}}, {"A": {"x"}, "B": {"x"}}, {"A": {"x"}, "B": {"X"}}, {"A": {"y"}}} {
			reqs = append(reqs, authz.Request{Caller: ident(t, "cluster.local", "default", "web"),
				Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http", Method: "GET", Path: "x", Header: h})
		}
		compareDecisions(t, files, fast, opa, reqs)
	}
}
