package xds_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

const allowFrontend = `package mesh.authz

allow if input.source.app_id == "frontend"
`

const closeWho = `package mesh.authz

deny contains "who is closed" if input.request.path == "/who"
`

const meshAdmin = `package mesh.authz

deny contains "admin routes are closed mesh-wide" if startswith(input.request.path, "/admin")
`

// TestPolicyOverXDS: the policies of the control plane's --policy-dir reach
// the callee's sidecar, which has no policy directory; a change is pushed
// and takes effect; a broken file is refused by the control plane and the
// last good policy stays in force everywhere.
func TestPolicyOverXDS(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy")
	writeFile(t, filepath.Join(pol, "default", "authz.rego"), allowFrontend)
	writeFile(t, filepath.Join(pol, "_mesh", "admin.rego"), meshAdmin)
	apps := filepath.Join(dir, "apps.yaml")
	p1 := harness.NewSidecarPorts(t)
	harness.WriteStatic(t, apps, harness.StaticApp{AppID: "orders", Addresses: []string{p1.InternalAddr()}})
	cp := harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", apps, "--policy-dir", pol)

	e1 := harness.StartEcho(t, b, "o1", 0)
	orders := xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "orders", AppPort: e1.Port, Ports: p1,
		Extra: []string{"--policy-default", "deny"}})
	front := xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "frontend"})
	other := xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "other"})

	expect := func(t *testing.T, sc *harness.Sidecar, method string, want int, reason string) {
		t.Helper()
		code, body, err := call(sc, "orders", method)
		if err != nil || code != want || (reason != "" && !strings.Contains(body, reason)) {
			t.Errorf("%s → orders/%s: %d %q %v; want %d %q", sc.AppID, method, code, body, err, want, reason)
		}
	}
	expect(t, front, "who", http.StatusOK, "o1")
	expect(t, other, "who", http.StatusForbidden, "ERR_PERMISSION_DENIED")
	expect(t, front, "admin/x", http.StatusForbidden, "ERR_PERMISSION_DENIED")

	// A change: pushed, in force within seconds.
	writeFile(t, filepath.Join(pol, "default", "close.rego"), closeWho)
	start := time.Now()
	eventually(t, 10*time.Second, "the new deny rule applies", func() error {
		if code, body, _ := call(front, "orders", "who"); code != http.StatusForbidden {
			return errorf("%d %s", code, body)
		}
		return nil
	})
	t.Logf("policy change in force at the callee %s after the write", time.Since(start).Round(time.Millisecond))
	expect(t, front, "other", http.StatusOK, "o1")

	// A broken file: the control plane refuses the tree; the last good
	// policy stays in force at the sidecar.
	writeFile(t, filepath.Join(pol, "default", "broken.rego"), "package mesh.authz\n\nallow if {\n")
	eventually(t, 5*time.Second, "the control plane refuses the broken tree", func() error {
		if !strings.Contains(cp.Log(), "policy directory rejected") || !strings.Contains(cp.Log(), "default/broken.rego:") {
			return errorf("not yet in the log")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	expect(t, front, "who", http.StatusForbidden, "ERR_PERMISSION_DENIED")
	expect(t, front, "other", http.StatusOK, "o1")
	expect(t, other, "other", http.StatusForbidden, "ERR_PERMISSION_DENIED")
	if strings.Contains(orders.Log(), "policy: update rejected") {
		t.Errorf("the broken tree reached the sidecar:\n%s", orders.Log())
	}
}
