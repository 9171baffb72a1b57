package harness

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// ControlPlane is a running cmd/controlplane.
type ControlPlane struct {
	*Process
	bin  string
	Addr string // the ADS port, host:port
	args []string
}

// ControlPlaneID is the SPIFFE ID of a control plane started by
// StartControlPlane (its defaults).
const ControlPlaneID = "spiffe://cluster.local/ns/meshd-system/controlplane"

// StartControlPlane starts the control plane against sentry s with a join
// token for its identity, on a free loopback port, with extra flags
// (--resolver, --resolver-config, --policy-dir, ...), and waits until its
// ADS port accepts connections (it opens it once the backend's first state
// and the policies are read).
func StartControlPlane(t testing.TB, b Binaries, s *Sentry, extra ...string) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{bin: b.ControlPlane, Addr: "127.0.0.1:" + strconv.Itoa(FreePort(t))}
	tok := s.TokenFile(t, "controlplane", "meshd-system")
	cp.args = append([]string{"--listen", cp.Addr, "--sentry-address", s.Addr,
		"--trust-anchors-file", s.BundleFile(), "--token-file", tok, "--debounce", "50ms"}, extra...)
	cp.Process = Start(t, "controlplane", cp.bin, cp.args...)
	WaitTCP(t, cp.Addr, 30*time.Second)
	return cp
}

// Restart stops the control plane (SIGTERM) and starts it again with the
// same flags and port, and waits until it serves.
func (cp *ControlPlane) Restart(t testing.TB) {
	t.Helper()
	if err := cp.Stop(10 * time.Second); err != nil {
		t.Logf("stop control plane: %v", err)
	}
	cp.Process = Start(t, "controlplane", cp.bin, cp.args...)
	WaitTCP(t, cp.Addr, 30*time.Second)
}

// XDSResolverFile writes a meshd --resolver-config file for --resolver xds
// naming the control plane at addr.
func XDSResolverFile(t testing.TB, addr string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "xds.yaml")
	body := "address: " + addr + "\ncontrolPlaneID: " + ControlPlaneID + "\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
