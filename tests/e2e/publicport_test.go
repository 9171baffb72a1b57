package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// TestPublicHealthPort: --public-port (the kubelet's probes of an injected
// pod) answers /v1.0/healthz on all interfaces: 503 until the sidecar holds
// its certificate, 204 after; nothing else is served there.
func TestPublicHealthPort(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	pub := harness.FreePort(t)
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "pub", Extra: []string{"--dapr-public-port", strconv.Itoa(pub)}})
	base := "http://127.0.0.1:" + strconv.Itoa(pub)
	harness.WaitHTTP(t, base+"/v1.0/healthz", http.StatusNoContent, 10*time.Second)
	for path, want := range map[string]int{"/v1.0/healthz/outbound": 204, "/v1.0/invoke/pub/method/x": 404, "/metrics": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s on the public port: %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Post(base+"/v1.0/healthz", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST on the public port: %d, want 405", resp.StatusCode)
	}

	// No sentry to answer: not ready.
	pub2 := harness.FreePort(t)
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "pub2", NoWait: true,
		Extra: []string{"--sentry-address", "127.0.0.1:" + strconv.Itoa(harness.FreePort(t)), "--public-port", strconv.Itoa(pub2)}})
	harness.WaitHTTP(t, "http://127.0.0.1:"+strconv.Itoa(pub2)+"/v1.0/healthz", http.StatusServiceUnavailable, 10*time.Second)
}
