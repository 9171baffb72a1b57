package chaos

import (
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestLoopbackRootRotationMissed (found by make chaos, #18: a partition
// while sentry was down and a root rotation ran): sidecars whose trust
// bundle stream was down while sentry published a new root and switched
// its own certificate to it could not verify sentry any more with the
// bundle they held, so they never learnt the new root, their certificates
// expired, and every call failed (503 for good). Now a sidecar also trusts
// its --trust-anchors-file (sentry's bundle.pem, kept current) for its
// connections to sentry: it reconnects, takes the new bundle, renews, and
// calls keep working past the old certificates' lifetime. Here sentry is
// down while the rotation is staged and switches at once when it is back
// (propagation delay 1ms), and both sidecars are stopped (SIGSTOP) until it
// has, so they miss the window.
func TestLoopbackRootRotationMissed(t *testing.T) {
	b := binaries(t)
	const ttl = 10 * time.Second
	s := harness.StartSentry(t, b, "", "--workload-ttl", ttl.String(),
		"--rotation-propagation-delay", "1ms", "--rotation-retire-margin", "2s")
	app := &instance{name: "echo-1", record: t.TempDir() + "/record"}
	app.startApp(t, b, 0)
	callee := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "echo", AppPort: app.app.Port})
	static := t.TempDir() + "/static.yaml"
	harness.WriteStatic(t, static, harness.StaticApp{AppID: "echo", Addresses: []string{callee.Ports.InternalAddr()}})
	caller := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "front", ResolverFile: static})
	m := &loopMesh{caller: caller}
	c := &http.Client{Timeout: 5 * time.Second}
	if code, body := m.get(c, "before"); code != 200 {
		t.Fatalf("call before the rotation: %d %s", code, body)
	}
	// Both sidecars are hung (as if cut off) from before sentry goes down
	// until it has switched to the new root.
	for _, sc := range []*harness.Sidecar{caller, callee} {
		if err := sc.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sc.Signal(syscall.SIGCONT) })
	}
	if err := s.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(b.Sentry, "rotate-root", "--data-dir", s.DataDir).CombinedOutput(); err != nil {
		t.Fatalf("sentry rotate-root: %v: %s", err, out)
	}
	s.Restart(t)
	for start := time.Now(); !strings.Contains(s.Log(), "signing switched to the new issuer"); time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("sentry did not switch to the new root:\n%s", s.Log())
		}
	}
	for _, sc := range []*harness.Sidecar{caller, callee} {
		if err := sc.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	// Past the lifetime of every certificate issued before the rotation:
	// each sidecar has renewed under the new root, or has none left.
	deadline := time.Now().Add(3 * ttl)
	var code int
	var body string
	for time.Now().Before(deadline) {
		code, body = m.get(c, "after")
		if code != 200 {
			t.Logf("call %s after sentry came back: %d %s", time.Until(deadline).Round(time.Second), code, body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 200 {
		t.Fatalf("call %s after the rotation: %d %s", 3*ttl, code, body)
	}
	for _, sc := range []*harness.Sidecar{caller, callee} {
		if strings.Contains(sc.Log(), "CANNOT GET AN IDENTITY") || strings.Count(sc.Log(), "trust bundle updated") == 0 {
			t.Errorf("%s did not follow the rotation:\n%s", sc.Ports.InternalAddr(), sc.Log())
		}
	}
}
