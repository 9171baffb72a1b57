package xds_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestControlPlaneFlags: a sidecar names its control plane with
// --control-plane-address (and --control-plane-namespace), without a
// --resolver-config file, as the Kubernetes injector starts it: it calls
// through the control plane's endpoints. A wrong control plane namespace
// (so a wrong SPIFFE ID), a bad address and the flags together with a
// file are refused with the reason.
func TestControlPlaneFlags(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	apps := t.TempDir() + "/apps.yaml"
	p1 := harness.NewSidecarPorts(t)
	harness.WriteStatic(t, apps, harness.StaticApp{AppID: "orders", Addresses: []string{p1.InternalAddr()}})
	cp := harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", apps)
	e1 := harness.StartEcho(t, b, "o1", 0)
	xdsSidecar(t, b, s, cp, harness.SidecarConfig{AppID: "orders", AppPort: e1.Port, Ports: p1})
	front := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend",
		Extra: []string{"--resolver", "xds", "--control-plane-address", cp.Addr, "--control-plane-namespace", "meshd-system"}})
	if code, body, err := call(front, "orders", "x"); err != nil || code != http.StatusOK {
		t.Fatalf("call through the control plane named by flags: %d %s %v", code, body, err)
	}

	refused := func(name, want string, extra ...string) {
		t.Helper()
		args := append([]string{"--app-id", name, "--sentry-address", s.Addr, "--trust-anchors-file", s.BundleFile(),
			"--token-file", s.TokenFile(t, name, "default"),
			"--http-port", strconv.Itoa(harness.FreePort(t)), "--grpc-port", strconv.Itoa(harness.FreePort(t)),
			"--internal-port", strconv.Itoa(harness.FreePort(t)), "--metrics-port", strconv.Itoa(harness.FreePort(t)),
			"--resolver", "xds"}, extra...)
		p := harness.Start(t, "meshd-"+name, b.Meshd, args...)
		if err := p.Wait(30 * time.Second); err == nil || !strings.Contains(p.Log(), want) {
			t.Errorf("%s: exit %v, want a failure saying %q:\n%s", name, err, want, p.Log())
		}
	}
	// The control plane's certificate is .../ns/meshd-system/controlplane.
	refused("wrongns", "authentication handshake failed: unexpected ID",
		"--control-plane-address", cp.Addr, "--control-plane-namespace", "elsewhere")
	refused("badaddr", `--control-plane-address: address "controlplane": want host:port`, "--control-plane-address", "controlplane")
	refused("both", "give one", "--control-plane-address", cp.Addr, "--resolver-config", harness.XDSResolverFile(t, cp.Addr))
	refused("none", "no control plane given")
}
