package dropin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

const componentYAML = `apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: orders
spec:
  topic: orders
  route: /orders
  pubsubname: pubsub
`

const resiliencyYAML = `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: resiliency
spec:
  policies:
    timeouts:
      short: 5s
  targets:
    apps:
      server:
        timeout: short
`

// TestDaprdFlags: meshd started with daprd's flag names only, as `dapr run`
// or a daprd unit starts daprd: it serves on the ports named the daprd way,
// uses the Resiliency document of --resources-path, names what it does not
// load and warns once for each flag it ignores; harmful flags are refused.
func TestDaprdFlags(t *testing.T) {
	bins := harness.Build(t)
	sentry := harness.StartSentry(t, bins, "")
	dir := t.TempDir()
	res := filepath.Join(dir, "resources")
	if err := os.Mkdir(res, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(res, "statestore.yaml"), componentYAML)
	writeFile(t, filepath.Join(res, "resiliency.yaml"), resiliencyYAML)
	writeFile(t, filepath.Join(res, "README.md"), "not YAML")
	empty := writeFile(t, filepath.Join(dir, "no-apps.yaml"), "apps: []\n")
	ports := harness.NewSidecarPorts(t)
	// Single dashes too, as daprd takes them (-app-id x, -dapr-http-port=N).
	args := []string{"-app-id", "daprflags", "--mode", "standalone",
		"-dapr-http-port=" + strconv.Itoa(ports.HTTP), "--dapr-grpc-port", strconv.Itoa(ports.GRPC),
		"--dapr-internal-grpc-port", strconv.Itoa(ports.Internal), "--dapr-internal-grpc-listen-address", "127.0.0.1",
		"--dapr-listen-addresses", "127.0.0.1", "--metrics-port", strconv.Itoa(ports.Metrics),
		"--sentry-address", sentry.Addr, "--trust-anchors-file", sentry.BundleFile(),
		"--token-file", sentry.TokenFile(t, "daprflags", "default"),
		"--resolver", "static", "--resolver-config", empty,
		"--resources-path", res, "--placement-host-address", "localhost:50005", "--scheduler-host-address", "localhost:50006",
		"--app-max-concurrency", "-1", "--log-as-json", "--log-level", "info", "--enable-mtls", "--enable-api-logging",
		"--dapr-graceful-shutdown-seconds", "2", "--dapr-http-max-request-size", "-1", "--max-body-size", "8Mi", "--read-buffer-size", "4Ki",
		"--control-plane-trust-domain", "cluster.local",
		// What Dapr's injector gives daprd: meshd's control plane flag, but
		// on resolver static there is no control plane to reach.
		"--control-plane-address", "dapr-api.dapr-system.svc.cluster.local:443",
	}
	p := harness.Start(t, "meshd-daprflags", bins.Meshd, args...)
	url := "http://127.0.0.1:" + strconv.Itoa(ports.HTTP)
	harness.WaitHTTP(t, url+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)

	code, _, body := do(t, nil, http.MethodGet, url+"/v1.0/metadata", nil, "")
	var md struct {
		ID              string   `json:"id"`
		EnabledFeatures []string `json:"enabledFeatures"`
	}
	if err := json.Unmarshal(body, &md); err != nil || code != 200 || md.ID != "daprflags" {
		t.Fatalf("metadata: %d %s", code, body)
	}
	if !strings.Contains(strings.Join(md.EnabledFeatures, ","), "Resiliency") {
		t.Errorf("enabledFeatures %v: the Resiliency document of --resources-path is not in force", md.EnabledFeatures)
	}
	// gRPC port, named the daprd way.
	harness.WaitTCP(t, "127.0.0.1:"+strconv.Itoa(ports.GRPC), 5*time.Second)
	harness.WaitServing(t, ports.InternalAddr(), 5*time.Second)

	if err := p.Stop(10 * time.Second); err != nil || p.ExitCode() != 0 {
		t.Fatalf("SIGTERM: %v, exit code %d", err, p.ExitCode())
	}
	// --log-as-json: every line is JSON. One warning per ignored flag.
	warned := map[string]int{}
	var notLoaded string
	for _, line := range strings.Split(strings.TrimSpace(p.Log()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("--log-as-json: a line is not JSON: %q", line)
			continue
		}
		if rec["msg"] == "meshd: daprd flag ignored" {
			warned[rec["flag"].(string)]++
		}
		if msg, _ := rec["msg"].(string); strings.Contains(msg, "--resources-path: not loaded") {
			notLoaded, _ = rec["resources"].(string)
		}
	}
	for _, f := range []string{"--mode", "--placement-host-address", "--scheduler-host-address", "--enable-api-logging", "--control-plane-trust-domain", "--read-buffer-size", "--control-plane-address"} {
		if warned[f] != 1 {
			t.Errorf("%s: warned %d times, want once", f, warned[f])
		}
	}
	if len(warned) != 7 {
		t.Errorf("warnings for %v; want exactly the seven ignored flags given", warned)
	}
	if !strings.Contains(notLoaded, "Component in") || !strings.Contains(notLoaded, "Subscription in") || !strings.Contains(notLoaded, "statestore.yaml") {
		t.Errorf("the not-loaded warning names %q; want the component and the subscription with their file", notLoaded)
	}
}

// TestDaprdFlagsRefused: flags whose meaning meshd cannot honour, and
// contradicting or broken ones, stop meshd at once with a message that
// names them; --version answers without other flags.
func TestDaprdFlagsRefused(t *testing.T) {
	bins := harness.Build(t)
	dir := t.TempDir()
	two := filepath.Join(dir, "two")
	if err := os.Mkdir(two, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(two, "a.yaml"), resiliencyYAML)
	writeFile(t, filepath.Join(two, "b.yml"), resiliencyYAML)
	bad := filepath.Join(dir, "bad")
	if err := os.Mkdir(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bad, "x.yaml"), "kind: [unclosed\n")
	emptyTok := writeFile(t, filepath.Join(dir, "empty.token"), "\n  \n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"app concurrency limit", []string{"--app-max-concurrency", "10"}, "--app-max-concurrency 10"},
		{"API on all interfaces", []string{"--dapr-listen-addresses", "0.0.0.0"}, "loopback"},
		{"API on a list with a public address", []string{"--dapr-listen-addresses", "127.0.0.1,10.0.0.1"}, "10.0.0.1"},
		{"both names of a port", []string{"--http-port", "3600", "--dapr-http-port", "3601"}, "same setting"},
		{"both names of the grace", []string{"--shutdown-grace", "1s", "--dapr-graceful-shutdown-seconds", "1"}, "same setting"},
		{"negative grace", []string{"--dapr-graceful-shutdown-seconds", "-1"}, "want 0 or more"},
		{"huge request size", []string{"--dapr-http-max-request-size", "2048"}, "at most 1024"},
		{"bad body size", []string{"--max-body-size", "4MB"}, "--max-body-size"},
		{"two Resiliency files", []string{"--resources-path", two}, "meshd reads one"},
		{"broken YAML in resources", []string{"--resources-path", bad}, "x.yaml"},
		{"missing resources dir", []string{"--resources-path", filepath.Join(dir, "nope")}, "--resources-path"},
		{"empty token file", []string{"--dapr-api-token-file", emptyTok}, "empty"},
		{"missing token file", []string{"--dapr-api-token-file", filepath.Join(dir, "nope")}, "--dapr-api-token-file"},
		{"empty app token file", []string{"--app-api-token-file", emptyTok}, "empty"},
		{"bad probe interval", []string{"--app-health-probe-interval", "soon"}, "seconds"},
		{"negative probe timeout", []string{"--app-health-probe-timeout=-5"}, "out of range"},
		{"app-ssl with h2c", []string{"--app-ssl", "--app-protocol", "h2c"}, "--app-ssl"},
		{"two Configuration files", []string{"--config", "a.yaml", "--config", "b.yaml"}, "more than once"},
		{"no app id", nil, "app-id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--app-id", "x", "--insecure", "--resolver", "static"}, tc.args...)
			if tc.args == nil {
				args = []string{"--insecure"}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out bytes.Buffer
			cmd := exec.CommandContext(ctx, bins.Meshd, args...)
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("meshd %v: %v (it should refuse at once)\n%s", args, err, out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("meshd %v said %q; want it to name %q", args, out.String(), tc.want)
			}
		})
	}
	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bins.Meshd, "--version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "meshd ") {
			t.Errorf("--version: %v %q", err, out)
		}
	})
	t.Run("daprd duration units", func(t *testing.T) {
		// Accepted: the start then fails on the missing sentry address,
		// after the flags were read.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, bins.Meshd, "--app-id", "x", "--app-health-probe-interval", "3",
			"--app-health-probe-timeout", "250", "--resolver", "static", "--http-port", "1", "--version").CombinedOutput()
		if !strings.HasPrefix(string(out), "meshd ") {
			t.Errorf("daprd's integer probe flags refused: %q", out)
		}
	})
}
