package xds_test

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestStaticBackendCallsFlow: the control plane watches a static file;
// sidecars on --resolver xds call each other round robin; an instance
// added to the file is followed.
func TestStaticBackendCallsFlow(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	dir := t.TempDir()
	apps := filepath.Join(dir, "apps.yaml")
	p1, p2 := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	harness.WriteStatic(t, apps, harness.StaticApp{AppID: "orders", Addresses: []string{p1.InternalAddr()}})
	cp := harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", apps)

	e1, e2 := harness.StartEcho(t, b, "o1", 0), harness.StartEcho(t, b, "o2", 0)
	xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "orders", AppPort: e1.Port, Ports: p1})
	xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "orders", AppPort: e2.Port, Ports: p2})
	front := xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "frontend"})

	if got := spread(t, front, "orders", 20); got["o1"] != 20 {
		t.Fatalf("one instance in the file: answers %v, want 20 from o1", got)
	}
	harness.WriteStatic(t, apps, harness.StaticApp{AppID: "orders", Addresses: []string{p1.InternalAddr(), p2.InternalAddr()}})
	eventually(t, 10*time.Second, "the second instance gets calls", func() error {
		if got := spread(t, front, "orders", 10); got["o2"] == 0 {
			return errorf("answers %v", got)
		}
		return nil
	})
	if got := spread(t, front, "orders", 100); got["o1"] != 50 || got["o2"] != 50 {
		t.Errorf("two instances: answers %v, want 50/50", got)
	}
	if code, body, _ := call(front, "nosuch", "x"); code != http.StatusNotFound && code != http.StatusServiceUnavailable && code != http.StatusBadGateway {
		t.Logf("unknown app: %d %s", code, body)
	}
}
