package policy

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/proxy/route"
)

const meshRego = `package mesh.authz

# Admin routes are closed everywhere, whatever the case.
deny contains "admin routes are closed mesh-wide" if {
	startswith(lower(input.request.path), "/admin")
}

deny contains "caller from a foreign trust domain" if {
	input.source.trust_domain != "cluster.local"
}

# Health checks are open to every workload of the mesh.
allow if {
	input.request.method == "GET"
	input.request.path == "/healthz"
}
`

const ordersRego = `package mesh.authz

allow if {
	input.destination.app_id == "orders"
	input.request.protocol == "http"
	input.source.namespace == "default"
	input.source.app_id == "frontend"
	input.request.method in {"GET", "POST"}
	startswith(input.request.path, "/orders")
}

allow if {
	input.request.protocol == "grpc"
	input.source.app_id == "frontend"
	input.request.path == "/orders.v1.Orders/Get"
}

allow if {
	input.source.app_id == "reporting"
	input.request.method == "GET"
	input.request.headers["x-report"] == "yes"
}

deny contains "DELETE is forbidden" if input.request.method == "DELETE"
`

const shopYAML = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: shop
spec:
  accessControl:
    defaultAction: deny
    policies:
    - appId: web
      namespace: shop
      trustDomain: cluster.local
      defaultAction: deny
      operations:
      - name: /cart/**
        httpVerb: ['GET', 'POST']
        action: allow
      - name: /cart/admin/**
        httpVerb: ['*']
        action: deny
`

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func testDir(t testing.TB) string {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"_mesh/base.rego":     meshRego,
		"default/orders.rego": ordersRego,
		"shop/acl.yaml":       shopYAML,
	})
	return dir
}

func newEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ident(t testing.TB, td, ns, app string) certs.Identity {
	t.Helper()
	i, err := certs.NewIdentity(td, ns, app)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestAuthorizeTable drives the Engine as the data plane does: the raw path
// goes through route.Normalize first; a path the proxy rejects (400) never
// reaches policy.
func TestAuthorizeTable(t *testing.T) {
	e := newEngine(t, Options{Source: Source{Dir: testDir(t)}, Default: DefaultDeny})
	frontend := ident(t, "cluster.local", "default", "frontend")
	web := ident(t, "cluster.local", "shop", "web")
	orders := discovery.Target{AppID: "orders", Namespace: "default"}
	cart := discovery.Target{AppID: "cart", Namespace: "shop"}
	type want int
	const (
		allow want = iota
		deny
		reject // route.Normalize refuses the path: the proxy answers 400
	)
	for _, tc := range []struct {
		name    string
		caller  certs.Identity
		dest    discovery.Target
		proto   string
		method  string
		rawPath string
		header  http.Header
		want    want
		reason  string
	}{
		{"allowed GET", frontend, orders, "http", "GET", "/orders/42", nil, allow, ""},
		{"allowed POST", frontend, orders, "http", "POST", "/orders", nil, allow, ""},
		{"allowed nested", frontend, orders, "http", "GET", "/orders/42/items", nil, allow, ""},
		{"other namespace", ident(t, "cluster.local", "staging", "frontend"), orders, "http", "GET", "/orders/42", nil, deny, "no policy rule allows"},
		{"different app", ident(t, "cluster.local", "default", "billing"), orders, "http", "GET", "/orders/42", nil, deny, "no policy rule allows"},
		{"forbidden verb PUT", frontend, orders, "http", "PUT", "/orders/42", nil, deny, "no policy rule allows"},
		{"forbidden verb DELETE", frontend, orders, "http", "DELETE", "/orders/42", nil, deny, "DELETE is forbidden"},
		{"forbidden path", frontend, orders, "http", "GET", "/payments", nil, deny, "no policy rule allows"},
		{"admin", frontend, orders, "http", "GET", "/admin", nil, deny, "admin routes are closed"},
		{"traversal to admin", frontend, orders, "http", "GET", "/orders/../admin", nil, deny, "admin routes are closed"},
		{"dot segments", frontend, orders, "http", "GET", "/./orders/./../admin/x", nil, deny, "admin routes are closed"},
		{"double slash", frontend, orders, "http", "GET", "//admin", nil, deny, "admin routes are closed"},
		{"double slash inside", frontend, orders, "http", "GET", "/orders//..//admin", nil, deny, "admin routes are closed"},
		{"mixed case", frontend, orders, "http", "GET", "/ADMIN", nil, deny, "admin routes are closed"},
		{"mixed case 2", frontend, orders, "http", "GET", "/AdMiN/users", nil, deny, "admin routes are closed"},
		{"encoded a", frontend, orders, "http", "GET", "/%61dmin", nil, deny, "admin routes are closed"},
		{"encoded dots", frontend, orders, "http", "GET", "/orders/%2e%2e/admin", nil, reject, ""},
		{"encoded dots upper", frontend, orders, "http", "GET", "/orders/%2E%2E/admin", nil, reject, ""},
		{"encoded slash", frontend, orders, "http", "GET", "/orders%2f..%2fadmin", nil, reject, ""},
		{"backslash", frontend, orders, "http", "GET", "/orders\\..\\admin", nil, reject, ""},
		{"above root", frontend, orders, "http", "GET", "/../admin", nil, reject, ""},
		{"NUL", frontend, orders, "http", "GET", "/orders/%00", nil, reject, ""},
		{"traversal to allowed", frontend, orders, "http", "GET", "/x/../orders/1", nil, allow, ""},
		{"prefix trick", frontend, orders, "http", "GET", "/ordersX/../payments", nil, deny, "no policy rule allows"},
		{"foreign trust domain", ident(t, "evil.example", "default", "frontend"), orders, "http", "GET", "/orders/1", nil, deny, "foreign trust domain"},
		{"no identity", certs.Identity{}, orders, "http", "GET", "/orders/1", nil, deny, "foreign trust domain"},
		{"mesh-wide health", ident(t, "cluster.local", "other", "prober"), orders, "http", "GET", "/healthz", nil, allow, ""},
		{"health POST", ident(t, "cluster.local", "other", "prober"), orders, "http", "POST", "/healthz", nil, deny, "no policy rule allows"},
		{"grpc allowed", frontend, orders, "grpc", "POST", "/orders.v1.Orders/Get", nil, allow, ""},
		{"grpc other method", frontend, orders, "grpc", "POST", "/orders.v1.Orders/Delete", nil, deny, "no policy rule allows"},
		{"header rule", ident(t, "cluster.local", "default", "reporting"), orders, "http", "GET", "/stats", http.Header{"X-Report": {"yes"}}, allow, ""},
		{"header rule no header", ident(t, "cluster.local", "default", "reporting"), orders, "http", "GET", "/stats", nil, deny, "no policy rule allows"},
		// Namespace with Dapr YAML.
		{"yaml allowed", web, cart, "http", "GET", "/cart/1", nil, allow, ""},
		{"yaml mixed case", web, cart, "http", "POST", "/CART/1", nil, allow, ""},
		{"yaml verb", web, cart, "http", "DELETE", "/cart/1", nil, deny, "access control policy has denied"},
		{"yaml specific deny", web, cart, "http", "GET", "/cart/admin/x", nil, deny, "operation action at shop/acl.yaml:17"}, // the more specific operation wins
		{"yaml traversal", web, cart, "http", "GET", "/cart/x/../admin/y", nil, deny, "access control policy has denied"},
		{"yaml other app", ident(t, "cluster.local", "shop", "api"), cart, "http", "GET", "/cart/1", nil, deny, "global defaultAction"},
		{"yaml mesh deny first", web, cart, "http", "GET", "/admin", nil, deny, "admin routes are closed"},
		// Namespace without policy: default deny (mesh health allow still applies).
		{"no policy ns", frontend, discovery.Target{AppID: "x", Namespace: "empty"}, "http", "GET", "/x", nil, deny, "has no policy"},
		{"no policy ns health", frontend, discovery.Target{AppID: "x", Namespace: "empty"}, "http", "GET", "/healthz", nil, allow, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := route.Normalize(tc.rawPath)
			if err != nil {
				if tc.want != reject {
					t.Fatalf("Normalize(%q): %v", tc.rawPath, err)
				}
				return
			}
			if tc.want == reject {
				t.Fatalf("Normalize(%q) = %q, want rejection", tc.rawPath, path)
			}
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			d := e.Authorize(context.Background(), authz.Request{Caller: tc.caller, Destination: tc.dest,
				Protocol: tc.proto, Method: tc.method, Path: path, Header: h})
			if d.Allow != (tc.want == allow) {
				t.Fatalf("%s %s (%s): allow=%v reason=%q", tc.method, tc.rawPath, path, d.Allow, d.Reason)
			}
			if !d.Allow && !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, tc.reason)
			}
		})
	}
}
