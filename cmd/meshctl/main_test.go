package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func meshctl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String() + errOut.String()
}

func TestPolicyTest(t *testing.T) {
	code, out := meshctl(t, "policy", "test", "-v", "testdata/policies")
	if code != 0 || !strings.Contains(out, "PASS: 6/6") || !strings.Contains(out, "default/orders_test.rego:15: data.mesh.authz_test.test_delete_denied: PASS") {
		t.Errorf("passing suite: code %d\n%s", code, out)
	}
	code, out = meshctl(t, "policy", "test", "testdata/failing")
	if code != 1 || !strings.Contains(out, "test_wrongly_expects_post: FAIL") || !strings.Contains(out, "FAIL: 1/2") || strings.Contains(out, "test_get_allowed") {
		t.Errorf("failing suite: code %d\n%s", code, out)
	}
	code, out = meshctl(t, "policy", "test", t.TempDir())
	if code != 1 || !strings.Contains(out, "no tests") {
		t.Errorf("empty dir: code %d\n%s", code, out)
	}
	code, out = meshctl(t, "policy", "test", "testdata/does-not-exist")
	if code != 1 || !strings.Contains(out, "no such file") {
		t.Errorf("missing dir: code %d\n%s", code, out)
	}
}

func TestPolicyExplain(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"allowed", []string{"--from", "spiffe://cluster.local/ns/default/frontend", "--to", "orders.default", "--method", "GET", "--path", "/orders/1"},
			0, []string{"decision: ALLOW", "default/orders.rego:4: allow if {"}},
		{"traversal to admin", []string{"--from", "spiffe://cluster.local/ns/default/frontend", "--to", "orders", "--method", "delete", "--path", "/orders/../Admin"},
			2, []string{"decision: DENY (403)", "path: /Admin (normalized from /orders/../Admin)", "reason: admin routes are closed mesh-wide; DELETE is forbidden",
				"_mesh/base.rego:4: deny contains", "default/orders.rego:12: deny contains"}},
		{"other app", []string{"--from", "spiffe://cluster.local/ns/default/billing", "--to", "orders.default", "--path", "/orders/1"},
			2, []string{"decision: DENY", "no policy rule allows GET /orders/1 to orders.default"}},
		{"encoded dots", []string{"--from", "spiffe://cluster.local/ns/default/frontend", "--to", "orders.default", "--path", "/orders/%2e%2e/admin"},
			2, []string{"REJECTED (400 before policy)", "encoded dot"}},
		{"dapr yaml allow", []string{"--from", "spiffe://cluster.local/ns/shop/web", "--to", "cart.shop", "--path", "/CART/1"},
			0, []string{"decision: ALLOW", "decided by: shop/acl.yaml:15", "operation /cart/**"}},
		{"dapr yaml verb", []string{"--from", "spiffe://cluster.local/ns/shop/web", "--to", "cart.shop", "--method", "PUT", "--path", "/cart/1"},
			2, []string{"decision: DENY", "access control policy has denied access to id: spiffe://cluster.local/ns/shop/web operation: /cart/1 verb: PUT", "app defaultAction at shop/acl.yaml:10"}},
		{"no policy, default deny", []string{"--from", "spiffe://cluster.local/ns/default/x", "--to", "y.empty", "--policy-default", "deny"},
			2, []string{"namespace empty has no policy and the default is deny"}},
		{"bad from", []string{"--from", "http://x", "--to", "y"}, 1, []string{"--from"}},
		{"bad to", []string{"--from", "spiffe://cluster.local/ns/a/b", "--to", "a.b.c"}, 1, []string{"--to"}},
	} {
		args := append([]string{"policy", "explain", "--policy-dir", "testdata/policies"}, tc.args...)
		code, out := meshctl(t, args...)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s", tc.name, code, tc.code, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, out)
			}
		}
	}
	bad := t.TempDir()
	if err := os.MkdirAll(filepath.Join(bad, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "default", "p.rego"), []byte("package mesh.authz\n\nallow if {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := meshctl(t, "policy", "explain", "--policy-dir", bad, "--from", "spiffe://cluster.local/ns/a/b", "--to", "y")
	if code != 1 || !strings.Contains(out, "default/p.rego:4: rego_parse_error") {
		t.Errorf("broken policy: code %d\n%s", code, out)
	}
}
