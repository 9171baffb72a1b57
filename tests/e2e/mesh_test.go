// Package e2e_test is the end-to-end proof of the meshd sidecar: it runs the
// real sentry and meshd binaries and the sample apps as processes on
// 127.0.0.1 and checks what a user of the mesh sees, with plain HTTP
// clients, grpc-go, the Dapr Go SDK and go-spiffe.
//
// One mesh is started per test binary run (TestMesh) and shared by the
// subtests; subtests that change the state of an app run in sequence, the
// others in parallel.
package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// Flags that make the app health checks of the instances react fast.
var healthFlags = []string{"--enable-app-health-check", "--app-health-probe-interval", "200ms",
	"--app-health-probe-timeout", "150ms", "--app-health-threshold", "1"}

// mesh is the shared set of processes.
type mesh struct {
	bins     harness.Binaries
	sentry   *harness.Sentry
	resolver string
	// netHTTPServer: the sidecars serve HTTP/1.x with net/http
	// (--h1-server nethttp), not proxy/internal/h1.
	netHTTPServer bool

	frontend *harness.Sidecar // caller, no app

	orders    *harness.Sidecar // callee with the echo app "orders-1"
	ordersApp *harness.App
	wlSocket  string // orders' Workload API socket

	grpcsvc *harness.Sidecar // callee with grpcecho "g1"
	grpcApp *harness.App

	inventory     [3]*harness.Sidecar // three instances, echo apps i1..i3, health checks on
	inventoryApps [3]*harness.App

	audit     *harness.Sidecar // callee whose app is spyApp (in this process)
	spyHits   *atomic.Int64
	sick      *harness.Sidecar // one instance whose app is unhealthy
	sickApp   *harness.App
	sickSince time.Time

	ghostAddr string // in the resolver file; nothing listens there
	hangAddr  string // in the resolver file; accepts connections, never answers

	// Reserved for TestMesh/Shutdown: in the resolver file, started there.
	slowPorts harness.SidecarPorts
}

// Names in the resolver file.
const (
	appFrontend = "frontend"
	appOrders   = "orders"
	appGRPC     = "grpcsvc"
	appInv      = "inventory"
	appAudit    = "audit"
	appPayments = "payments" // mapped to audit's address: a callee identity mismatch
	appSick     = "sick"
	appGhost    = "ghost"
	appSlow     = "slow"
	appHang     = "hang"
)

// startMesh starts the shared mesh; extra flags go to every sidecar.
func startMesh(t *testing.T, extra ...string) *mesh {
	t.Helper()
	m := &mesh{bins: harness.Build(t)}
	m.sentry = harness.StartSentry(t, m.bins, "", "--workload-ttl", "10s")
	m.resolver = filepath.Join(t.TempDir(), "resolver.yaml")

	fp := harness.NewSidecarPorts(t)
	op := harness.NewSidecarPorts(t)
	gp := harness.NewSidecarPorts(t)
	ap := harness.NewSidecarPorts(t)
	sp := harness.NewSidecarPorts(t)
	var ip [3]harness.SidecarPorts
	for i := range ip {
		ip[i] = harness.NewSidecarPorts(t)
	}
	m.slowPorts = harness.NewSidecarPorts(t)
	m.ghostAddr = "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	m.hangAddr = startBlackHole(t)

	harness.WriteStatic(t, m.resolver,
		harness.StaticApp{AppID: appFrontend, Addresses: []string{fp.InternalAddr()}},
		harness.StaticApp{AppID: appOrders, Namespace: "default", Addresses: []string{op.InternalAddr()}},
		harness.StaticApp{AppID: appGRPC, Addresses: []string{gp.InternalAddr()}},
		harness.StaticApp{AppID: appInv, Addresses: []string{ip[0].InternalAddr(), ip[1].InternalAddr(), ip[2].InternalAddr()}},
		harness.StaticApp{AppID: appAudit, Addresses: []string{ap.InternalAddr()}},
		harness.StaticApp{AppID: appPayments, Addresses: []string{ap.InternalAddr()}},
		harness.StaticApp{AppID: appSick, Addresses: []string{sp.InternalAddr()}},
		harness.StaticApp{AppID: appGhost, Addresses: []string{m.ghostAddr}},
		harness.StaticApp{AppID: appSlow, Addresses: []string{m.slowPorts.InternalAddr()}},
		harness.StaticApp{AppID: appHang, Addresses: []string{m.hangAddr}},
	)

	// Apps first, so the sidecars' health probes find them.
	m.ordersApp = harness.StartEcho(t, m.bins, "orders-1", 0)
	m.grpcApp = harness.StartGRPCEcho(t, m.bins, "g1", 0)
	for i := range m.inventoryApps {
		m.inventoryApps[i] = harness.StartEcho(t, m.bins, "i"+strconv.Itoa(i+1), 0)
	}
	m.sickApp = harness.StartEcho(t, m.bins, "sick-1", 0)
	m.spyHits = new(atomic.Int64)
	spyPort := startSpyApp(t, m.spyHits)

	m.wlSocket = filepath.Join(t.TempDir(), "wl.sock")
	sc := func(c harness.SidecarConfig) *harness.Sidecar {
		c.ResolverFile, c.NoWait = m.resolver, true
		c.Extra = append(append(c.Extra, "--log-level", "debug"), extra...)
		return harness.StartSidecar(t, m.bins, m.sentry, c)
	}
	m.frontend = sc(harness.SidecarConfig{AppID: appFrontend, Ports: fp})
	m.orders = sc(harness.SidecarConfig{AppID: appOrders, Ports: op, AppPort: m.ordersApp.Port,
		Extra: []string{"--workload-api-socket", m.wlSocket}})
	m.grpcsvc = sc(harness.SidecarConfig{AppID: appGRPC, Ports: gp, AppPort: m.grpcApp.Port, AppProtocol: "grpc"})
	for i := range m.inventory {
		m.inventory[i] = sc(harness.SidecarConfig{AppID: appInv, Ports: ip[i], AppPort: m.inventoryApps[i].Port, Extra: healthFlags})
	}
	m.audit = sc(harness.SidecarConfig{AppID: appAudit, Ports: ap, AppPort: spyPort})
	m.sick = sc(harness.SidecarConfig{AppID: appSick, Ports: sp, AppPort: m.sickApp.Port, Extra: healthFlags})

	for _, s := range []*harness.Sidecar{m.frontend, m.orders, m.grpcsvc, m.inventory[0], m.inventory[1], m.inventory[2], m.audit, m.sick} {
		harness.WaitHTTP(t, s.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
	}
	mustGet(t, "http://"+m.sickApp.Addr()+"/admin/fail", http.StatusOK)
	m.sickSince = time.Now()

	// Registered last, so it runs first: stop the sidecars in parallel
	// (each takes about a second), then the harness cleanups find them
	// gone. The apps and sentry stop after them.
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range []*harness.Sidecar{m.frontend, m.orders, m.grpcsvc, m.inventory[0], m.inventory[1], m.inventory[2], m.audit, m.sick} {
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

// startSpyApp is an app in this process that counts the requests it gets,
// so a test can prove that a refused call never reached the app.
func startSpyApp(t *testing.T, hits *atomic.Int64) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"app": "spy", "path": r.URL.Path,
			"caller": r.Header.Get("Dapr-Caller-App-Id")})
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// startBlackHole listens on loopback, accepts connections and never
// answers (not even the TLS handshake): a callee that hangs.
func startBlackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestMesh runs every end-to-end check against one shared mesh.
func TestMesh(t *testing.T) { runMesh(t, startMesh(t)) }

// TestMeshNetHTTP runs them again with Go's net/http as the sidecars'
// HTTP/1.x server and client and HTTP/2 server (--h1-server/--h1-client
// nethttp, --h2-server nethttp), the fallback from meshd's own h1 and h2:
// it must behave the same, except where docs/sidecar.md ("The net/http
// fallback") says how it differs.
func TestMeshNetHTTP(t *testing.T) {
	m := startMesh(t, "--h1-server", "nethttp", "--h1-client", "nethttp", "--h2-server", "nethttp")
	m.netHTTPServer = true
	runMesh(t, m)
}

func runMesh(t *testing.T, m *mesh) {
	par := func(f func(*testing.T, *mesh)) func(*testing.T) {
		return func(t *testing.T) { t.Parallel(); f(t, m) }
	}
	t.Run("group", func(t *testing.T) {
		t.Run("Invoke", par(testInvoke))                      // 1
		t.Run("CallerIdentity", par(testCallerIdentity))      // 2
		t.Run("GRPC", par(testGRPC))                          // 3
		t.Run("DaprSDK", par(testDaprSDK))                    // 4
		t.Run("WorkloadAPI", par(testWorkloadAPI))            // 5
		t.Run("MTLSRefusals", par(testMTLSRefusals))          // 8
		t.Run("Errors", par(testErrors))                      // 9
		t.Run("HealthzAndShutdown", par(testHealthzShutdown)) // 10
		t.Run("Balancing", par(func(t *testing.T, m *mesh) {  // 6 then 7: same instances
			t.Run("RoundRobin", func(t *testing.T) { testRoundRobin(t, m) })
			if t.Failed() {
				return
			}
			t.Run("Failover", func(t *testing.T) { testFailover(t, m) })
		}))
	})
}

// ---- helpers ----

// echoReply is the JSON the echo app answers with.
type echoReply struct {
	Name            string              `json:"name"`
	Method          string              `json:"method"`
	Path            string              `json:"path"`
	RawQuery        string              `json:"rawQuery"`
	RequestURI      string              `json:"requestURI"`
	Headers         map[string][]string `json:"headers"`
	BodyLength      int64               `json:"bodyLength"`
	BodySHA256      string              `json:"bodySha256"`
	CallerAppID     string              `json:"callerAppId"`
	CallerNamespace string              `json:"callerNamespace"`
	CalleeAppID     string              `json:"calleeAppId"`
}

// errorReply is the sidecar's JSON error body.
type errorReply struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

var plainClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 60 * time.Second}

type result struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, c *http.Client, method, url string, h http.Header, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c == nil {
		c = plainClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

func mustGet(t testing.TB, url string, want int) result {
	t.Helper()
	r := do(t, nil, http.MethodGet, url, nil, nil)
	if r.status != want {
		t.Fatalf("GET %s: %d, want %d; body %s", url, r.status, want, r.body)
	}
	return r
}

func decodeEcho(t testing.TB, r result) echoReply {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", r.status, r.body)
	}
	var e echoReply
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("echo reply %q: %v", r.body, err)
	}
	return e
}

// rawHTTP sends exactly the bytes of request line and headers given (no
// client-side path cleaning) and reads the answer.
func rawHTTP(t testing.TB, addr, method, target string, headers ...string) result {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, body}
}

func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// eventually polls f every 50ms until it returns nil or d passes.
func eventually(ctx context.Context, d time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", d, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
