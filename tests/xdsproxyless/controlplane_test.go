package xdsproxyless_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestProxylessThroughControlPlane is the product path end to end: meshd's
// own control plane (cmd/controlplane, --resolver static, proxyless
// resources on by default) serves a plain grpc-go xDS client, which calls
// three sidecars round robin with mTLS, follows a scale-down, and is
// refused by the callees' policy when its identity is not allowed.
func TestProxylessThroughControlPlane(t *testing.T) {
	b := harness.Build(t)
	tools(t)
	s := harness.StartSentry(t, b, "")
	policyDir := t.TempDir()
	writeEchoPolicy(t, policyDir)

	var addrs []string
	for _, n := range []string{"g1", "g2", "g3"} {
		a := harness.StartGRPCEcho(t, b, n, 0)
		sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{
			AppID: app, Namespace: ns, AppPort: a.Port, AppProtocol: "grpc",
			Extra: []string{"--policy-dir", policyDir, "--policy-default", "deny"},
		})
		harness.WaitServing(t, sc.Ports.InternalAddr(), 30*time.Second)
		addrs = append(addrs, sc.Ports.InternalAddr())
	}
	static := filepath.Join(t.TempDir(), "apps.yaml")
	harness.WriteStatic(t, static, harness.StaticApp{AppID: app, Namespace: ns, Addresses: addrs})
	cp := harness.StartControlPlane(t, b, s, "--resolver", "static", "--resolver-config", static)

	c := startClient(t, s, cp.Addr, "client", clientOpts{checkID: true, noSPIFFE: true})
	all3 := func(r result) bool { return len(r.Errors) == 0 && len(r.Instances) == 3 }
	c.until("unary 6", 30*time.Second, all3)

	t.Run("UnaryRoundRobin", func(t *testing.T) {
		checkSpread(t, c.do("unary 30"), map[string]int{"g1": 10, "g2": 10, "g3": 10})
	})
	t.Run("StreamingRoundRobin", func(t *testing.T) {
		checkSpread(t, c.do("stream 30"), map[string]int{"g1": 10, "g2": 10, "g3": 10})
	})
	t.Run("ScaleDownFollowed", func(t *testing.T) {
		harness.WriteStatic(t, static, harness.StaticApp{AppID: app, Namespace: ns, Addresses: addrs[:2]})
		c.until("unary 6", 15*time.Second, func(r result) bool {
			return len(r.Errors) == 0 && len(r.Instances) == 2 && r.Instances["g3"] == 0
		})
		checkSpread(t, c.do("unary 30"), map[string]int{"g1": 15, "g2": 15})
	})
	t.Run("PolicyDeniesCaller", func(t *testing.T) {
		x := startClient(t, s, cp.Addr, "intruder", clientOpts{checkID: true, noSPIFFE: true})
		r := x.until("unary 2", 30*time.Second, func(r result) bool { return len(r.Errors) > 0 })
		if len(r.Instances) != 0 {
			t.Fatalf("intruder reached %v", r.Instances)
		}
		for e := range r.Errors {
			if !strings.HasPrefix(e, "PermissionDenied: ") ||
				!strings.Contains(e, "denied for spiffe://cluster.local/ns/default/intruder POST /grpc.testing.TestService/") {
				t.Errorf("intruder got %q, want PermissionDenied naming its SPIFFE ID", e)
			}
		}
	})
}
