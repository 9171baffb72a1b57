package accesscontrol

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshd/meshd/certs"
)

func id(t testing.TB, td, ns, app string) certs.Identity {
	t.Helper()
	i, err := certs.NewIdentity(td, ns, app)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func mustParse(t testing.TB, y string) *ACL {
	t.Helper()
	acls, err := Parse("cfg.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if len(acls) != 1 {
		t.Fatalf("got %d ACLs, want 1", len(acls))
	}
	return acls[0]
}

const header = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: appconfig\nspec:\n"

// The scenarios of Dapr's "How-To: Apply access control list configuration
// for service invocation", with the decisions Dapr documents.
var daprDocs = []struct {
	name, yaml string
	cases      []daprCase
}{
	{"scenario 1: deny all except app1 in default/public", header + `  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: allow
      trustDomain: 'public'
      namespace: "default"
`, []daprCase{
		{"public", "default", "app1", "http", "GET", "/anything", true, LevelApp},
		{"public", "default", "app1", "grpc", "POST", "/pkg.S/M", true, LevelApp},
		{"public", "default", "app2", "http", "GET", "/anything", false, LevelGlobal},
		{"public", "other", "app1", "http", "GET", "/anything", false, LevelGlobal},
		{"cluster.local", "default", "app1", "http", "GET", "/anything", false, LevelGlobal},
	}},
	{"scenario 2: only app1 calling op1 with POST or PUT", header + `  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: deny
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /op1
        httpVerb: ['POST', 'PUT']
        action: allow
`, []daprCase{
		{"public", "default", "app1", "http", "POST", "/op1", true, LevelOperation},
		{"public", "default", "app1", "http", "PUT", "/op1", true, LevelOperation},
		{"public", "default", "app1", "http", "GET", "/op1", false, LevelApp},
		{"public", "default", "app1", "http", "POST", "/op2", false, LevelApp},
		{"public", "default", "app2", "http", "POST", "/op1", false, LevelGlobal},
	}},
	{"scenario 3: deny /foo for all verbs, allow the rest", header + `  accessControl:
    defaultAction: allow
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: allow
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /foo/*
        httpVerb: ['*']
        action: deny
`, []daprCase{
		{"public", "default", "app1", "http", "GET", "/foo/bar", false, LevelOperation},
		{"public", "default", "app1", "http", "DELETE", "/FOO/bar", false, LevelOperation},
		{"public", "default", "app1", "http", "GET", "/bar", true, LevelApp},
		{"public", "default", "app2", "http", "GET", "/foo/bar", true, LevelGlobal},
	}},
	{"scenario 4: gRPC, only app1 calling op1", header + `  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: deny
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /op1
        httpVerb: ['*']
        action: allow
`, []daprCase{
		{"public", "default", "app1", "grpc", "POST", "/op1", true, LevelOperation},
		{"public", "default", "app1", "grpc", "POST", "/op2", false, LevelApp},
		{"public", "default", "app1", "grpc", "POST", "/OP1", false, LevelApp}, // gRPC keeps case
		{"public", "default", "app2", "grpc", "POST", "/op1", false, LevelGlobal},
	}},
	{"scenario 5: wildcards in operations", header + `  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: deny
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /op1/*
        httpVerb: ['POST', 'PUT']
        action: allow
      - name: /op2/**
        httpVerb: ['*']
        action: allow
`, []daprCase{
		{"public", "default", "app1", "http", "POST", "/op1/a", true, LevelOperation},
		{"public", "default", "app1", "http", "POST", "/op1/a/b", false, LevelApp},
		{"public", "default", "app1", "http", "GET", "/op1/a", false, LevelApp},
		{"public", "default", "app1", "http", "GET", "/op2/a/b/c", true, LevelOperation},
	}},
	{"full example: three apps, two trust domains", header + `  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: app1
      defaultAction: allow
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /op1
        httpVerb: ['POST', 'GET']
        action: deny
      - name: /op2/*
        httpVerb: ["*"]
        action: allow
    - appId: app2
      defaultAction: deny
      trustDomain: 'myDomain'
      namespace: "ns1"
      operations:
      - name: /op3
        httpVerb: ['POST', 'PUT']
        action: deny
    - appId: app3
      defaultAction: deny
      trustDomain: 'public'
      namespace: "default"
      operations:
      - name: /op4
        httpVerb: ['POST', 'PUT']
        action: allow
`, []daprCase{
		{"public", "default", "app1", "http", "POST", "/op1", false, LevelOperation},
		{"public", "default", "app1", "http", "PUT", "/op1", true, LevelApp},
		{"public", "default", "app1", "http", "DELETE", "/op2/x", true, LevelOperation},
		{"public", "default", "app1", "http", "GET", "/op3", true, LevelApp},
		{"mydomain", "ns1", "app2", "http", "GET", "/op3", false, LevelApp},
		{"mydomain", "ns1", "app2", "http", "POST", "/op3", false, LevelOperation},
		{"public", "ns1", "app2", "http", "GET", "/op3", false, LevelGlobal},
		{"public", "default", "app3", "http", "PUT", "/op4", true, LevelOperation},
		{"public", "default", "app3", "http", "GET", "/op4", false, LevelApp},
		{"public", "default", "app4", "http", "GET", "/op4", false, LevelGlobal},
	}},
}

type daprCase struct {
	td, ns, app, proto, verb, path string
	allow                          bool
	level                          Level
}

func TestDaprDocumentedDecisions(t *testing.T) {
	for _, sc := range daprDocs {
		a := mustParse(t, sc.yaml)
		for _, c := range sc.cases {
			r := a.Decide(id(t, c.td, c.ns, c.app), c.proto, c.verb, c.path)
			if r.Allow != c.allow || r.Level != c.level {
				t.Errorf("%s: %s/%s/%s %s %s %s = allow %v by %v, want %v by %v",
					sc.name, c.td, c.ns, c.app, c.proto, c.verb, c.path, r.Allow, r.Level, c.allow, c.level)
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	caller := id(t, "public", "default", "x")
	// Empty spec: no ACL at all.
	if acls, err := Parse("c.yaml", []byte(header+"  accessControl: {}\n")); err != nil || len(acls) != 0 {
		t.Errorf("empty accessControl: %v %v, want no ACL", acls, err)
	}
	// Unset default + no policies → allow.
	a := mustParse(t, header+"  accessControl:\n    trustDomain: public\n")
	if r := a.Decide(caller, "http", "GET", "/"); !r.Allow {
		t.Error("unset default without policies should allow")
	}
	// Unset default + policies → deny.
	a = mustParse(t, header+"  accessControl:\n    policies:\n    - {appId: y, trustDomain: public, namespace: default}\n")
	if r := a.Decide(caller, "http", "GET", "/"); r.Allow {
		t.Error("unset default with policies should deny")
	}
	// No identity (no mTLS): global default only.
	a = mustParse(t, header+"  accessControl:\n    defaultAction: deny\n    policies:\n    - {appId: x, trustDomain: public, namespace: default, defaultAction: allow}\n")
	if r := a.Decide(certs.Identity{}, "http", "GET", "/"); r.Allow || r.Level != LevelGlobal {
		t.Errorf("no identity: %+v", r)
	}
	// Operation without action: deny (Dapr's code).
	a = mustParse(t, header+"  accessControl:\n    defaultAction: allow\n    policies:\n    - appId: x\n      trustDomain: public\n      namespace: default\n      defaultAction: allow\n      operations:\n      - {name: /op, httpVerb: ['GET']}\n")
	if r := a.Decide(caller, "http", "GET", "/op"); r.Allow {
		t.Error("operation without action should deny")
	}
	if r := a.Decide(caller, "http", "", "/op"); !r.Allow || r.Level != LevelApp {
		t.Errorf("verb NONE should take the app default: %+v", r)
	}
}

func TestWildcardsAndAudit(t *testing.T) {
	a := mustParse(t, header+`  accessControl:
    defaultAction: deny
    policies:
    - appId: "*"
      namespace: "team-*"
      trustDomain: cluster.local
      defaultAction: allow
      operations:
      - name: /admin/**
        httpVerb: ['*']
        action: deny
    - appId: "front*"
      namespace: "*"
      trustDomain: "*"
      defaultAction: allow
    - appId: frontend
      namespace: default
      trustDomain: cluster.local
      defaultAction: deny
`)
	for _, c := range []struct {
		ns, app, path string
		allow         bool
	}{
		{"team-a", "billing", "/x", true},
		{"team-a", "billing", "/admin/users", false},
		{"team-a", "frontend", "/x", true},   // first glob wins
		{"default", "frontend", "/x", false}, // exact wins over glob
		{"default", "frontend2", "/x", true},
		{"prod", "orders", "/x", false},
	} {
		if r := a.Decide(id(t, "cluster.local", c.ns, c.app), "http", "GET", c.path); r.Allow != c.allow {
			t.Errorf("%s/%s %s: allow=%v want %v", c.ns, c.app, c.path, r.Allow, c.allow)
		}
	}
	audit := mustParse(t, header+"  accessControl:\n    mode: audit\n    defaultAction: deny\n")
	r := audit.Decide(id(t, "cluster.local", "default", "x"), "http", "GET", "/")
	if !r.Allow || !r.WouldDeny {
		t.Errorf("audit: %+v, want allow with WouldDeny", r)
	}
	if msg := r.Reason(audit, id(t, "cluster.local", "default", "x"), "GET", "/"); !strings.Contains(msg, "spiffe://cluster.local/ns/default/x") || !strings.Contains(msg, "cfg.yaml:") {
		t.Errorf("reason %q", msg)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		line       int
		want       string
	}{
		{"bad yaml", header + "  accessControl: [\n", 6, "yaml"},
		{"wrong kind", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\n", 2, "want Configuration"},
		{"missing trustDomain", header + "  accessControl:\n    policies:\n    - appId: a\n      namespace: default\n", 8, "missing trustDomain"},
		{"missing appId", header + "  accessControl:\n    policies:\n    - trustDomain: public\n      namespace: default\n", 8, "missing appId"},
		{"bad action", header + "  accessControl:\n    defaultAction: maybe\n", 7, "maybe"},
		{"typo", header + "  accessControl:\n    defaultaction: deny\n", 7, "unknown field \"defaultaction\""},
		{"bad op action", header + "  accessControl:\n    policies:\n    - appId: a\n      namespace: d\n      trustDomain: p\n      operations:\n      - name: /x\n        action: permit\n", 13, "permit"},
		{"empty op name", header + "  accessControl:\n    policies:\n    - appId: a\n      namespace: d\n      trustDomain: p\n      operations:\n      - name: ''\n        action: allow\n", 12, "empty operation"},
		{"verbs not a list", header + "  accessControl:\n    policies:\n    - appId: a\n      namespace: d\n      trustDomain: p\n      operations:\n      - name: /x\n        httpVerb: GET\n", 13, "httpVerb"},
		{"duplicate", header + "  accessControl:\n    policies:\n    - {appId: a, namespace: d, trustDomain: p}\n    - {appId: a, namespace: d, trustDomain: p}\n", 9, "duplicate"},
		{"bad mode", header + "  accessControl:\n    mode: dry\n", 7, "mode"},
	} {
		_, err := Parse("f.yaml", []byte(tc.yaml))
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: err %v, want *Error", tc.name, err)
			continue
		}
		if e.File != "f.yaml" || e.Line != tc.line || !strings.Contains(e.Error(), tc.want) {
			t.Errorf("%s: %v (line %d), want line %d containing %q", tc.name, err, e.Line, tc.line, tc.want)
		}
	}
}

func TestDuplicateOperationsMergeVerbs(t *testing.T) {
	a := mustParse(t, header+`  accessControl:
    defaultAction: deny
    policies:
    - appId: a
      namespace: default
      trustDomain: cluster.local
      operations:
      - {name: /op, httpVerb: ['GET'], action: allow}
      - {name: /op, httpVerb: ['POST'], action: allow}
      - {name: /op, httpVerb: ['GET'], action: deny}
`)
	c := id(t, "cluster.local", "default", "a")
	for verb, want := range map[string]bool{"GET": true, "POST": true, "PUT": false} {
		if r := a.Decide(c, "http", verb, "/op"); r.Allow != want {
			t.Errorf("%s /op: %v want %v", verb, r.Allow, want)
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	a := mustParse(b, daprDocs[5].yaml)
	c := id(b, "public", "default", "app1")
	b.ReportAllocs()
	for b.Loop() {
		if !a.Decide(c, "http", "GET", "/op2/orders").Allow {
			b.Fatal("denied")
		}
	}
}
