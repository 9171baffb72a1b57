// Package dropin_test proves that meshd is a drop-in for daprd with clients
// nobody here wrote: the Dapr JavaScript SDK from npm (pinned in
// jssdk/package.json, installed by the test with `npm ci`), the Dapr Go SDK,
// and launchers that speak daprd's flags. It runs the real sentry and meshd
// binaries on 127.0.0.1.
//
// One mesh is started per test binary run (TestDropIn) and shared by the
// subtests:
//
//   - "server": the callee, an app in this process that echoes what it
//     receives and counts its calls; its sidecar sends APP_API_TOKEN.
//   - "jsclient": a caller sidecar without token.
//   - "guarded": a caller sidecar that requires DAPR_API_TOKEN.
//   - "socketed": a caller sidecar serving its API on unix sockets only,
//     also behind DAPR_API_TOKEN.
package dropin_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// Names and tokens of the mesh.
const (
	appServer   = "server"
	appJS       = "jsclient"
	appGuarded  = "guarded"
	appSocketed = "socketed"
	appGRPC     = "grpcapp" // a gRPC app (AppCallback), made with the Go SDK's service package
	appUnknown  = "nosuchapp"

	apiToken    = "caller-secret-0123456789-abcdefghij"
	appAPIToken = "sidecar-to-app-9876543210"
)

type mesh struct {
	bins     harness.Binaries
	sentry   *harness.Sentry
	resolver string

	server   *harness.Sidecar
	app      *echoApp
	grpcSide *harness.Sidecar
	grpcHits *atomic.Int64
	js       *harness.Sidecar
	guarded  *harness.Sidecar
	socketed *harness.Sidecar
	sockDir  string
}

// echoed is what the echo app answers: what it received.
type echoed struct {
	Method      string              `json:"method"`
	Path        string              `json:"path"`
	RawQuery    string              `json:"rawQuery"`
	Headers     map[string][]string `json:"headers"`
	Body        string              `json:"body"`
	CallerAppID string              `json:"callerAppId"`
}

// echoApp is the callee app: it echoes every request as JSON and counts the
// requests, so a test can prove a refused call never reached it.
type echoApp struct {
	port int
	hits atomic.Int64
}

func startEchoApp(t *testing.T) *echoApp {
	t.Helper()
	a := &echoApp{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.port = l.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Headers: r.Header, Body: string(body), CallerAppID: r.Header.Get("Dapr-Caller-App-Id")})
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return a
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startMesh(t *testing.T) *mesh {
	t.Helper()
	m := &mesh{bins: harness.Build(t)}
	m.sentry = harness.StartSentry(t, m.bins, "")
	dir := t.TempDir()
	m.resolver = filepath.Join(dir, "resolver.yaml")
	// Unix socket paths are short (108 bytes): a directory of its own.
	sockDir, err := os.MkdirTemp("", "meshd-uds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	m.sockDir = sockDir

	sp := harness.NewSidecarPorts(t)
	gp := harness.NewSidecarPorts(t)
	harness.WriteStatic(t, m.resolver, harness.StaticApp{AppID: appServer, Addresses: []string{sp.InternalAddr()}},
		harness.StaticApp{AppID: appGRPC, Addresses: []string{gp.InternalAddr()}})
	m.app = startEchoApp(t)
	grpcPort := startGRPCApp(t, m)
	tokFile := writeFile(t, filepath.Join(dir, "api.token"), apiToken+"\n")
	appTokFile := writeFile(t, filepath.Join(dir, "app.token"), appAPIToken)

	sc := func(c harness.SidecarConfig) *harness.Sidecar {
		c.ResolverFile, c.NoWait = m.resolver, true
		return harness.StartSidecar(t, m.bins, m.sentry, c)
	}
	m.server = sc(harness.SidecarConfig{AppID: appServer, Ports: sp, AppPort: m.app.port,
		Extra: []string{"--app-api-token-file", appTokFile}})
	m.grpcSide = sc(harness.SidecarConfig{AppID: appGRPC, Ports: gp, AppPort: grpcPort, AppProtocol: "grpc",
		Extra: []string{"--app-api-token-file", appTokFile}})
	m.js = sc(harness.SidecarConfig{AppID: appJS})
	m.guarded = sc(harness.SidecarConfig{AppID: appGuarded, Extra: []string{"--dapr-api-token-file", tokFile}})
	m.socketed = sc(harness.SidecarConfig{AppID: appSocketed,
		Extra: []string{"--dapr-api-token-file", tokFile, "--unix-domain-socket", sockDir}})
	for _, s := range []*harness.Sidecar{m.server, m.grpcSide, m.js, m.guarded} {
		harness.WaitHTTP(t, s.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
	}
	waitUnixHealthz(t, m.httpSocket(), 30*time.Second)

	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range []*harness.Sidecar{m.server, m.grpcSide, m.js, m.guarded, m.socketed} {
			wg.Go(func() {
				if err := s.Stop(10 * time.Second); err != nil || s.ExitCode() != 0 {
					t.Errorf("%s: SIGTERM: %v, exit code %d", s.Name, err, s.ExitCode())
				}
			})
		}
		wg.Wait()
	})
	return m
}

func (m *mesh) httpSocket() string {
	return filepath.Join(m.sockDir, "dapr-"+appSocketed+"-http.socket")
}

func (m *mesh) grpcSocket() string {
	return filepath.Join(m.sockDir, "dapr-"+appSocketed+"-grpc.socket")
}

// unixClient is an HTTP client that dials the unix socket path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func waitUnixHealthz(t *testing.T, path string, d time.Duration) {
	t.Helper()
	c := unixClient(path)
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get("http://unix/v1.0/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: /v1.0/healthz did not answer 204 within %s (last: %s)", path, d, last)
}

// TestDropIn runs every proof against one mesh.
func TestDropIn(t *testing.T) {
	m := startMesh(t)
	t.Run("Metadata", func(t *testing.T) { testMetadata(t, m) })
	t.Run("NotSupported", func(t *testing.T) { testNotSupported(t, m) })
	t.Run("Tokens", func(t *testing.T) { testTokens(t, m) })
	t.Run("UnixSocket", func(t *testing.T) { testUnixSocket(t, m) })
	t.Run("GoSDK", func(t *testing.T) { testGoSDK(t, m) })
	t.Run("Traceparent", func(t *testing.T) { testTraceparent(t, m) })
	t.Run("GRPCApp", func(t *testing.T) { testGRPCApp(t, m) })
	t.Run("JSSDK", func(t *testing.T) { testJSSDK(t, m) })
}

// errBody is the sidecar's JSON error.
type errBody struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

// do sends one request and returns the status, headers and body.
func do(t *testing.T, c *http.Client, method, url string, header map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}
