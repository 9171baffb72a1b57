// Package policy_test is the end-to-end proof of policy: real sentry, real
// meshd sidecars and echo apps on 127.0.0.1; calls go app -> caller sidecar
// -> mTLS -> callee sidecar (policy) -> app, and the policy files are
// edited on disk while the sidecars run.
package policy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

const meshRego = `package mesh.authz

deny contains "admin routes are closed mesh-wide" if {
	startswith(lower(input.request.path), "/admin")
}

deny contains "caller from a foreign trust domain" if {
	input.source.trust_domain != "cluster.local"
}
`

const ordersRego = `package mesh.authz

allow if {
	input.destination.app_id == "orders"
	input.source.namespace == "default"
	input.source.app_id == "frontend"
	input.request.method in {"GET", "POST"}
	startswith(input.request.path, "/orders")
}

deny contains "DELETE is forbidden" if input.request.method == "DELETE"
`

// Dapr's documented scenario: deny all, except app "web" in namespace shop
// calling /op1 with POST or PUT (trust domain cluster.local, meshd's).
const cartConfig = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: cartconfig
spec:
  accessControl:
    defaultAction: deny
    trustDomain: "cluster.local"
    policies:
    - appId: web
      defaultAction: deny
      trustDomain: 'cluster.local'
      namespace: "shop"
      operations:
      - name: /op1
        httpVerb: ['POST', 'PUT']
        action: allow
      - name: /items/**
        httpVerb: ['GET']
        action: allow
`

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type answer struct {
	code int
	body string
	err  struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}
}

// call invokes target's method through caller's sidecar; rawMethod is sent
// byte for byte (no client-side cleaning).
func call(t *testing.T, caller *harness.Sidecar, verb, target, rawMethod string) answer {
	t.Helper()
	req, err := http.NewRequest(verb, caller.HTTPURL()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = "/v1.0/invoke/" + target + "/method" + rawMethod
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", verb, rawMethod, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{code: resp.StatusCode, body: string(b)}
	if resp.StatusCode >= 400 {
		_ = json.Unmarshal(b, &a.err)
	}
	return a
}

func TestPolicyEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bins := harness.Build(t)
	sentry := harness.StartSentry(t, bins, "")
	tmp := t.TempDir()
	policyDir := filepath.Join(tmp, "policies")
	write(t, filepath.Join(policyDir, "_mesh", "base.rego"), meshRego)
	write(t, filepath.Join(policyDir, "default", "orders.rego"), ordersRego)
	cartCfg := filepath.Join(tmp, "cart-config.yaml")
	write(t, cartCfg, cartConfig)

	ordersPorts, cartPorts := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	resolver := filepath.Join(tmp, "resolver.yaml")
	harness.WriteStatic(t, resolver,
		harness.StaticApp{AppID: "orders", Namespace: "default", Addresses: []string{ordersPorts.InternalAddr()}},
		harness.StaticApp{AppID: "cart", Namespace: "shop", Addresses: []string{cartPorts.InternalAddr()}})

	ordersApp := harness.StartEcho(t, bins, "orders-1", 0)
	cartApp := harness.StartEcho(t, bins, "cart-1", 0)
	orders := harness.StartSidecar(t, bins, sentry, harness.SidecarConfig{AppID: "orders", Namespace: "default",
		AppPort: ordersApp.Port, Ports: ordersPorts, ResolverFile: resolver,
		Extra: []string{"--policy-dir", policyDir, "--policy-default", "deny"}})
	cart := harness.StartSidecar(t, bins, sentry, harness.SidecarConfig{AppID: "cart", Namespace: "shop",
		AppPort: cartApp.Port, Ports: cartPorts, ResolverFile: resolver,
		Extra: []string{"--config", cartCfg, "--policy-allow-log-every", "1"}})
	start := func(app, ns string) *harness.Sidecar {
		return harness.StartSidecar(t, bins, sentry, harness.SidecarConfig{AppID: app, Namespace: ns, ResolverFile: resolver})
	}
	frontend := start("frontend", "default")
	billing := start("billing", "default")
	stagingFrontend := start("frontend", "staging")
	web := start("web", "shop")

	const allow, forbidden, rejected = 200, 403, 400
	type tc struct {
		name    string
		caller  *harness.Sidecar
		verb    string
		target  string
		method  string
		want    int    // 200, 403, or 400 (the caller's sidecar rejects the path before any policy)
		message string // in the JSON error message
	}
	cases := []tc{
		{"allowed GET", frontend, "GET", "orders.default", "/orders/42", allow, ""},
		{"allowed POST", frontend, "POST", "orders", "/orders", allow, ""},
		{"allowed nested", frontend, "GET", "orders.default", "/orders/42/items", allow, ""},
		{"traversal to an allowed route", frontend, "GET", "orders.default", "/x/../orders/1", allow, ""},
		{"other namespace", stagingFrontend, "GET", "orders.default", "/orders/42", forbidden, "no policy rule allows"},
		{"different app", billing, "GET", "orders.default", "/orders/42", forbidden, "no policy rule allows"},
		{"forbidden verb PUT", frontend, "PUT", "orders.default", "/orders/42", forbidden, "no policy rule allows PUT"},
		{"forbidden verb PATCH", frontend, "PATCH", "orders.default", "/orders/42", forbidden, "no policy rule allows PATCH"},
		{"forbidden verb DELETE", frontend, "DELETE", "orders.default", "/orders/42", forbidden, "DELETE is forbidden"},
		{"forbidden path", frontend, "GET", "orders.default", "/payments", forbidden, "no policy rule allows GET /payments"},
		{"admin", frontend, "GET", "orders.default", "/admin", forbidden, "admin routes are closed mesh-wide"},
		{"dot-dot to admin", frontend, "GET", "orders.default", "/a/../admin", forbidden, "admin routes are closed mesh-wide"},
		{"dot-dot after allowed prefix", frontend, "GET", "orders.default", "/orders/../admin", forbidden, "admin routes are closed mesh-wide"},
		{"dot segments", frontend, "GET", "orders.default", "/./orders/./../admin/users", forbidden, "admin routes are closed mesh-wide"},
		{"double slash", frontend, "GET", "orders.default", "//admin", forbidden, "admin routes are closed mesh-wide"},
		{"double slash inside", frontend, "GET", "orders.default", "/orders//..//admin", forbidden, "admin routes are closed mesh-wide"},
		{"mixed case", frontend, "GET", "orders.default", "/ADMIN", forbidden, "admin routes are closed mesh-wide"},
		{"mixed case nested", frontend, "GET", "orders.default", "/AdMin/users", forbidden, "admin routes are closed mesh-wide"},
		{"percent-encoded letter", frontend, "GET", "orders.default", "/%61dmin", forbidden, "admin routes are closed mesh-wide"},
		{"encoded dots", frontend, "GET", "orders.default", "/orders/%2e%2e/admin", rejected, "encoded dot"},
		{"encoded dots upper", frontend, "GET", "orders.default", "/orders/%2E%2E/admin", rejected, "encoded dot"},
		{"encoded slash", frontend, "GET", "orders.default", "/orders%2f..%2fadmin", rejected, "encoded slash"},
		{"above the root", frontend, "GET", "orders.default", "/../admin", rejected, "above the root"},
		{"encoded NUL", frontend, "GET", "orders.default", "/orders/%00", rejected, "control character"},
		{"other namespace traversal", stagingFrontend, "GET", "orders.default", "/orders/../admin", forbidden, "admin routes are closed"},
		// Dapr accessControl (--config on cart.shop), Dapr's documented decisions.
		{"dapr: web POST /op1", web, "POST", "cart.shop", "/op1", allow, ""},
		{"dapr: web PUT /op1", web, "PUT", "cart.shop", "/op1", allow, ""},
		{"dapr: web GET /op1 (verb not listed: app default deny)", web, "GET", "cart.shop", "/op1", forbidden, "access control policy has denied access to id: spiffe://cluster.local/ns/shop/web operation: /op1 verb: GET"},
		{"dapr: web POST /op2 (no operation: app default deny)", web, "POST", "cart.shop", "/op2", forbidden, "app defaultAction"},
		{"dapr: case-insensitive HTTP", web, "POST", "cart.shop", "/OP1", allow, ""},
		{"dapr: ** wildcard", web, "GET", "cart.shop", "/items/a/b", allow, ""},
		{"dapr: traversal out of /items", web, "GET", "cart.shop", "/items/../op2", forbidden, "operation: /op2"},
		{"dapr: other app (global default deny)", frontend, "POST", "cart.shop", "/op1", forbidden, "global defaultAction"},
	}
	for _, c := range cases {
		a := call(t, c.caller, c.verb, c.target, c.method)
		if a.code != c.want {
			t.Errorf("%s: %s %s%s from %s: %d %s, want %d", c.name, c.verb, c.target, c.method, c.caller.AppID+"."+c.caller.Namespace, a.code, a.body, c.want)
			continue
		}
		switch c.want {
		case forbidden:
			if a.err.ErrorCode != "ERR_PERMISSION_DENIED" || !strings.Contains(a.err.Message, c.message) {
				t.Errorf("%s: 403 body %s, want ERR_PERMISSION_DENIED with %q", c.name, a.body, c.message)
			}
		case rejected:
			if !strings.Contains(a.err.Message, c.message) {
				t.Errorf("%s: 400 body %s, want %q", c.name, a.body, c.message)
			}
		}
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}

	// Hot reload: allow billing by editing the file; within 2 s, no restart.
	write(t, filepath.Join(policyDir, "default", "orders.rego"), ordersRego+`
allow if {
	input.source.app_id == "billing"
	input.request.method == "GET"
	input.request.path == "/invoices"
}
`)
	waitCode := func(what string, caller *harness.Sidecar, verb, method string, want int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			a := call(t, caller, verb, "orders.default", method)
			if a.code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %d %s after 2s, want %d", what, a.code, a.body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCode("edit allows billing", billing, "GET", "/invoices", allow)
	if a := call(t, billing, "GET", "orders.default", "/orders/1"); a.code != forbidden {
		t.Errorf("billing /orders/1 after edit: %d", a.code)
	}

	// A broken file changes nothing and is reported with file:line.
	write(t, filepath.Join(policyDir, "default", "broken.rego"), "package mesh.authz\n\nallow if {\n")
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(orders.Log(), "reload rejected") {
		if time.Now().After(deadline) {
			t.Fatalf("broken file not reported within 2s:\n%s", orders.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(orders.Log(), "default/broken.rego:4") {
		t.Errorf("rejection lacks file:line:\n%s", orders.Log())
	}
	for _, c := range []struct {
		caller *harness.Sidecar
		method string
		want   int
	}{{billing, "/invoices", allow}, {frontend, "/orders/1", allow}, {billing, "/orders/1", forbidden}, {frontend, "/admin", forbidden}} {
		if a := call(t, c.caller, "GET", "orders.default", c.method); a.code != c.want {
			t.Errorf("after a broken file: %s GET %s = %d, want %d (last good set)", c.caller.AppID, c.method, a.code, c.want)
		}
	}
	// Fixing it restores reloads: removing the broken file and revoking billing.
	if err := os.Remove(filepath.Join(policyDir, "default", "broken.rego")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(policyDir, "default", "orders.rego"), ordersRego)
	waitCode("revoking billing", billing, "GET", "/invoices", forbidden)

	// Every deny is in the callee's decision log with the caller's identity.
	if !strings.Contains(orders.Log(), "policy: deny") || !strings.Contains(orders.Log(), "source=spiffe://cluster.local/ns/staging/frontend") {
		t.Errorf("decision log lacks denials:\n%s", orders.Log())
	}
	// Allows are sampled: one in 100 by default (orders saw a handful, none
	// logged), every one with --policy-allow-log-every 1 (cart).
	if strings.Contains(orders.Log(), "policy: allow") {
		t.Errorf("orders logged an allow although it saw fewer than 100:\n%s", orders.Log())
	}
	if !strings.Contains(cart.Log(), "msg=\"policy: allow\" source=spiffe://cluster.local/ns/shop/web destination=cart.shop protocol=http method=POST path=/op1") {
		t.Errorf("cart (--policy-allow-log-every 1) did not log web's allowed POST /op1:\n%s", cart.Log())
	}
}

// A bad --policy-allow-log-every stops meshd with a clear error.
func TestPolicyAllowLogEveryRejected(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bins := harness.Build(t)
	out, err := exec.Command(bins.Meshd, "--app-id", "x", "--policy-allow-log-every", "-5").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--policy-allow-log-every -5: want 0 (no allows) or more") {
		t.Fatalf("meshd accepted --policy-allow-log-every -5 (err %v):\n%s", err, out)
	}
}
