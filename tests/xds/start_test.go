package xds_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestSidecarWithoutControlPlane: a sidecar on --resolver xds whose
// control plane does not answer has nothing to route with: it never
// reports ready, and exits with an error that says why. A sidecar with
// --insecure (no SVID) cannot use xds at all.
func TestSidecarWithoutControlPlane(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	cfg := filepath.Join(t.TempDir(), "xds.yaml")
	dead := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)) // nothing listens
	if err := os.WriteFile(cfg, []byte("address: "+dead+"\nstartTimeout: 1s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend", NoWait: true,
		Extra: []string{"--resolver", "xds", "--resolver-config", cfg}})
	deadline := time.Now().Add(20 * time.Second)
	for !sc.Exited() && time.Now().Before(deadline) {
		if resp, err := http.Get(sc.HTTPURL() + "/v1.0/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				t.Fatal("the sidecar reported ready without its control plane")
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := sc.Wait(time.Second); err == nil {
		t.Fatalf("the sidecar did not fail (exited: %v)", sc.Exited())
	}
	if !strings.Contains(sc.Log(), "not starting without endpoints") || !strings.Contains(sc.Log(), dead) {
		t.Errorf("the error does not say why:\n%s", sc.Log())
	}

	insecure := harness.Start(t, "meshd-insecure", b.Meshd, "--app-id", "x", "--insecure",
		"--http-port", strconv.Itoa(harness.FreePort(t)), "--grpc-port", strconv.Itoa(harness.FreePort(t)),
		"--internal-port", strconv.Itoa(harness.FreePort(t)), "--metrics-port", strconv.Itoa(harness.FreePort(t)),
		"--resolver", "xds", "--resolver-config", cfg)
	if err := insecure.Wait(15 * time.Second); err == nil || !strings.Contains(insecure.Log(), "not usable with --insecure") {
		t.Errorf("--insecure with --resolver xds: %v\n%s", err, insecure.Log())
	}
}
