// Package xds_test proves the control plane end to end: cmd/controlplane
// watching a real backend, meshd sidecars on --resolver xds, real calls.
package xds_test

import (
	"encoding/json"
	"fmt"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/meshd/meshd/discovery/xds/policypb"
	"github.com/meshd/meshd/xds"
	"google.golang.org/protobuf/proto"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/tests/harness"
)

type echoReply struct {
	Name        string `json:"name"`
	CallerAppID string `json:"callerAppId"`
}

var client = &http.Client{Timeout: 10 * time.Second}

// call invokes app's method through the sidecar and returns the status and
// the answering instance (or the body, on an error).
func call(sc *harness.Sidecar, target, method string) (int, string, error) {
	resp, err := client.Get(sc.HTTPURL() + "/v1.0/invoke/" + target + "/method/" + method)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(b), nil
	}
	var e echoReply
	if err := json.Unmarshal(b, &e); err != nil {
		return resp.StatusCode, string(b), fmt.Errorf("not an echo answer: %w", err)
	}
	return resp.StatusCode, e.Name, nil
}

// eventually retries fn until it returns nil or d passes.
func eventually(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spread makes n calls and counts the answering instances.
func spread(t *testing.T, sc *harness.Sidecar, target string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		code, who, err := call(sc, target, "who")
		if err != nil || code != http.StatusOK {
			got[fmt.Sprintf("error %d %v %s", code, err, who)]++
			continue
		}
		got[who]++
	}
	return got
}

func writeFile(t *testing.T, path, body string) {
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

// xdsSidecar starts a sidecar on --resolver xds against cp.
func xdsSidecar(t *testing.T, b harness.Binaries, s *harness.Sentry, cp *harness.ControlPlane, c harness.SidecarConfig) *harness.Sidecar {
	t.Helper()
	c.Extra = append(c.Extra, "--resolver", "xds", "--resolver-config", harness.XDSResolverFile(t, cp.Addr))
	return harness.StartSidecar(t, b, s, c)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func target(app, ns string) discovery.Target { return discovery.Target{AppID: app, Namespace: ns} }

func readBundle(s *harness.Sentry) ([]byte, error) { return os.ReadFile(s.BundleFile()) }

// resourceName decodes a served resource and returns its xDS name.
func resourceName(t *testing.T, typeURL string, b []byte) string {
	t.Helper()
	var m proto.Message
	switch typeURL {
	case xds.TypeURLs[0]:
		m = &clusterv3.Cluster{}
	case xds.TypeURLs[1]:
		m = &endpointv3.ClusterLoadAssignment{}
	case policypb.TypeURL:
		m = &policypb.PolicySet{}
	default:
		t.Fatalf("type %s", typeURL)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
	return cachev3.GetResourceName(m)
}
