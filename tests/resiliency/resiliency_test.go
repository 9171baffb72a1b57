// Package resiliency_test proves meshd's Resiliency support end to end:
// real sentry and meshd processes, a test app served from the test process,
// and Dapr Resiliency YAML loaded with --resiliency.
package resiliency_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// proofPolicy is the caller's Resiliency document.
const proofPolicy = `apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: proof
spec:
  policies:
    timeouts:
      short: 1s
    retries:
      threeTimes:
        policy: constant
        duration: 50ms
        maxRetries: 3
      postOn503:
        policy: exponential
        initialInterval: 20ms
        maxInterval: 100ms
        maxRetries: 2
        matching:
          httpStatusCodes: "503"
      elsewhere:
        policy: constant
        duration: 10ms
        maxRetries: 1
      fast:
        policy: constant
        duration: 1ms
        maxRetries: 3
    circuitBreakers:
      cb:
        maxRequests: 2
        timeout: 2s
        trip: consecutiveFailures >= 3
  targets:
    apps:
      orders:
        retry: threeTimes
      payments:
        retry: postOn503
      slow:
        timeout: short
      flaky:
        circuitBreaker: cb
      stock:
        retry: elsewhere
      outage:
        retry: fast
`

type mesh struct {
	bins     harness.Binaries
	sentry   *harness.Sentry
	resolver string
	app      *testApp // behind orders, payments, slow, flaky, plain, stock-1
	stockBad *testApp // stock-2: always 503
	frontend *harness.Sidecar
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func startMesh(t *testing.T) *mesh {
	t.Helper()
	m := &mesh{bins: harness.Build(t)}
	m.sentry = harness.StartSentry(t, m.bins, "")
	m.resolver = filepath.Join(t.TempDir(), "resolver.yaml")
	m.app = startTestApp(t, "good", false)
	m.stockBad = startTestApp(t, "bad", true)

	callees := []string{"orders", "payments", "slow", "flaky", "plain", "outage"} // plain: no policy
	ports := map[string]harness.SidecarPorts{}
	var static []harness.StaticApp
	for _, app := range append(callees, "frontend", "stock-1", "stock-2") {
		ports[app] = harness.NewSidecarPorts(t)
	}
	for _, app := range append(callees, "frontend") {
		static = append(static, harness.StaticApp{AppID: app, Addresses: []string{ports[app].InternalAddr()}})
	}
	static = append(static, harness.StaticApp{AppID: "stock", Addresses: []string{ports["stock-1"].InternalAddr(), ports["stock-2"].InternalAddr()}})
	harness.WriteStatic(t, m.resolver, static...)

	var all []*harness.Sidecar
	for _, app := range callees {
		all = append(all, harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{
			AppID: app, Ports: ports[app], AppPort: m.app.port, ResolverFile: m.resolver, NoWait: true}))
	}
	all = append(all,
		harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: "stock", Ports: ports["stock-1"], AppPort: m.app.port, ResolverFile: m.resolver, NoWait: true}),
		harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: "stock", Ports: ports["stock-2"], AppPort: m.stockBad.port, ResolverFile: m.resolver, NoWait: true}))
	m.frontend = m.caller(t, "frontend", ports["frontend"], writeFile(t, "proof.yaml", proofPolicy))
	for _, s := range all {
		harness.WaitHTTP(t, s.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
	}
	return m
}

// caller starts a caller sidecar (no app) with a resiliency file.
func (m *mesh) caller(t *testing.T, appID string, ports harness.SidecarPorts, resiliencyFile string) *harness.Sidecar {
	t.Helper()
	if ports == (harness.SidecarPorts{}) {
		ports = harness.NewSidecarPorts(t)
	}
	s := harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: appID, Ports: ports, ResolverFile: m.resolver,
		Extra: []string{"--resiliency", resiliencyFile, "--log-level", "debug"}})
	return s
}

type answer struct {
	status  int
	body    string
	code    string // errorCode of a sidecar error
	header  http.Header
	elapsed time.Duration
}

var client = &http.Client{Timeout: 20 * time.Second}

func call(t *testing.T, s *harness.Sidecar, method, app, path, body string, hdr ...string) answer {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.HTTPURL()+"/v1.0/invoke/"+app+"/method"+path, rb)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, body: string(b), header: resp.Header, elapsed: time.Since(start)}
	if resp.Header.Get("Meshd-Error-Code") != "" {
		var e struct {
			ErrorCode string `json:"errorCode"`
		}
		_ = json.Unmarshal(b, &e)
		a.code = e.ErrorCode
	}
	return a
}

func TestResiliency(t *testing.T) {
	m := startMesh(t)

	t.Run("retried per policy until success", func(t *testing.T) {
		a := call(t, m.frontend, "GET", "orders", "/fail/2/k1", "")
		if a.status != 200 || a.body != "ok 3" {
			t.Fatalf("answer %d %q, want 200 \"ok 3\"", a.status, a.body)
		}
		if n := m.app.Attempts("k1"); n != 3 {
			t.Fatalf("app saw %d attempts, want 3", n)
		}
		if a.elapsed < 100*time.Millisecond {
			t.Errorf("two retries 50ms apart took only %v", a.elapsed)
		}
	})
	t.Run("maxRetries bounds the attempts", func(t *testing.T) {
		a := call(t, m.frontend, "GET", "orders", "/fail/10/k2", "")
		if a.status != 500 || a.body != "failure 4" {
			t.Fatalf("answer %d %q, want the app's 500 \"failure 4\"", a.status, a.body)
		}
		if n := m.app.Attempts("k2"); n != 4 {
			t.Fatalf("app saw %d attempts, want 1 + maxRetries 3", n)
		}
	})
	t.Run("retries are counted in meshd_retries_total", func(t *testing.T) {
		// k1: 2 retries, k2: 3 (and nothing else called orders yet).
		if got := scrape(t, m.frontend, "meshd_retries_total", "orders"); got != 5 {
			t.Fatalf("meshd_retries_total{dst_app_id=orders} = %v, want 5", got)
		}
	})
	t.Run("4xx is not retried", func(t *testing.T) {
		for _, code := range []string{"404", "429", "400"} {
			key := "k4xx" + code
			a := call(t, m.frontend, "GET", "orders", "/status/"+code+"/"+key, "")
			if a.status != mustAtoi(code) {
				t.Fatalf("status %d, want %s", a.status, code)
			}
			if n := m.app.Attempts(key); n != 1 {
				t.Fatalf("%s: app saw %d attempts, want 1", code, n)
			}
		}
	})
	t.Run("POST without a matching policy is not retried", func(t *testing.T) {
		a := call(t, m.frontend, "POST", "orders", "/fail/2/k3", `{"order":1}`)
		if a.status != 500 {
			t.Fatalf("status %d, want 500", a.status)
		}
		if n := m.app.Attempts("k3"); n != 1 {
			t.Fatalf("app saw %d attempts, want 1", n)
		}
	})
	t.Run("POST with a matching status is retried with its body", func(t *testing.T) {
		body := strings.Repeat("x", 20000) // above the 8 KiB read-ahead
		a := call(t, m.frontend, "POST", "payments", "/fail/2/k5?status=503", body)
		if a.status != 200 {
			t.Fatalf("status %d %q, want 200", a.status, a.body)
		}
		bodies := m.app.Bodies("k5")
		if len(bodies) != 3 {
			t.Fatalf("app saw %d attempts, want 3", len(bodies))
		}
		for i, b := range bodies {
			if b != body {
				t.Fatalf("attempt %d carried %d bytes, want the %d sent", i+1, len(b), len(body))
			}
		}
		// 500 is not in httpStatusCodes "503": not retried.
		if a := call(t, m.frontend, "POST", "payments", "/status/500/k6", "x"); a.status != 500 || m.app.Attempts("k6") != 1 {
			t.Fatalf("unmatched 500: status %d, %d attempts", a.status, m.app.Attempts("k6"))
		}
	})
	t.Run("no retry policy, no status retries", func(t *testing.T) {
		if a := call(t, m.frontend, "GET", "plain", "/fail/1/k7", ""); a.status != 500 || m.app.Attempts("k7") != 1 {
			t.Fatalf("status %d, %d attempts; want 500, 1", a.status, m.app.Attempts("k7"))
		}
	})
	t.Run("retry goes to another endpoint", func(t *testing.T) {
		for i := 0; i < 6; i++ {
			key := "k8-" + string(rune('a'+i))
			a := call(t, m.frontend, "GET", "stock", "/instance/"+key, "")
			if a.status != 200 || a.header.Get("X-Instance") != "good" {
				t.Fatalf("call %d: %d from %q, want 200 from the good instance", i, a.status, a.header.Get("X-Instance"))
			}
			if g, b := m.app.Attempts(key), m.stockBad.Attempts(key); g != 1 || b > 1 {
				t.Fatalf("call %d: good saw %d, bad saw %d attempts", i, g, b)
			}
		}
	})
	t.Run("timeout policy: 504 and the callee is cancelled", func(t *testing.T) {
		a := call(t, m.frontend, "GET", "slow", "/hang/k9", "")
		if a.status != 504 || a.code != "ERR_TIMEOUT" {
			t.Fatalf("answer %d %q, want 504 ERR_TIMEOUT", a.status, a.body)
		}
		if a.elapsed < 900*time.Millisecond || a.elapsed > 3*time.Second {
			t.Errorf("504 after %v, want about 1s", a.elapsed)
		}
		waitCancelled(t, m.app, "k9")
		// The callee sidecar and the app were told the time left.
		if ts := m.app.Timeouts("k9"); len(ts) != 1 || !within(t, ts[0], 500*time.Millisecond, time.Second) {
			t.Errorf("app saw Meshd-Timeout %q, want about 1s", ts)
		}
	})
	t.Run("Meshd-Timeout header", func(t *testing.T) {
		// plain has no policy at all: the header alone sets the deadline.
		a := call(t, m.frontend, "GET", "plain", "/hang/k10", "", "Meshd-Timeout", "400ms")
		if a.status != 504 || a.code != "ERR_TIMEOUT" {
			t.Fatalf("answer %d %q, want 504 ERR_TIMEOUT", a.status, a.body)
		}
		if a.elapsed < 350*time.Millisecond || a.elapsed > 2*time.Second {
			t.Errorf("504 after %v, want about 400ms", a.elapsed)
		}
		waitCancelled(t, m.app, "k10")
		if ts := m.app.Timeouts("k10"); len(ts) != 1 || !within(t, ts[0], 100*time.Millisecond, 400*time.Millisecond) {
			t.Errorf("app saw Meshd-Timeout %q, want at most 400ms", ts)
		}
		// The smaller of header and policy wins.
		a = call(t, m.frontend, "GET", "slow", "/hang/k11", "", "Meshd-Timeout", "5s")
		if a.status != 504 || a.elapsed > 3*time.Second {
			t.Fatalf("policy 1s vs header 5s: %d after %v", a.status, a.elapsed)
		}
		waitCancelled(t, m.app, "k11")
	})
	t.Run("circuit breaker", func(t *testing.T) {
		const key = "k12"
		m.app.SetFailing(key, true)
		for i := 1; i <= 3; i++ {
			if a := call(t, m.frontend, "GET", "flaky", "/toggle/"+key, ""); a.status != 500 {
				t.Fatalf("failure %d: status %d, want the app's 500", i, a.status)
			}
		}
		// Tripped (consecutiveFailures >= 3): fail fast, the app is not called.
		for i := 0; i < 3; i++ {
			a := call(t, m.frontend, "GET", "flaky", "/toggle/"+key, "")
			if a.status != 503 || a.code != "ERR_CIRCUIT_OPEN" {
				t.Fatalf("open breaker: %d %q, want 503 ERR_CIRCUIT_OPEN", a.status, a.body)
			}
			if a.elapsed > time.Second {
				t.Errorf("open breaker answered after %v, want fast", a.elapsed)
			}
		}
		if n := m.app.Attempts(key); n != 3 {
			t.Fatalf("app saw %d attempts while open, want 3", n)
		}
		if got := scrape(t, m.frontend, "meshd_circuit_breaker_state", "flaky"); got != 2 {
			t.Fatalf("meshd_circuit_breaker_state{dst_app_id=flaky} = %v while open, want 2", got)
		}
		// After timeout (2s): half-open, a failing probe opens it again.
		time.Sleep(2200 * time.Millisecond)
		if a := call(t, m.frontend, "GET", "flaky", "/toggle/"+key, ""); a.status != 500 || m.app.Attempts(key) != 4 {
			t.Fatalf("half-open probe: %d, %d attempts", a.status, m.app.Attempts(key))
		}
		if a := call(t, m.frontend, "GET", "flaky", "/toggle/"+key, ""); a.code != "ERR_CIRCUIT_OPEN" {
			t.Fatalf("after a failed probe: %d %q, want open again", a.status, a.body)
		}
		// Half-open again with the app healthy: of three concurrent calls,
		// maxRequests (2) go through as probes, the third fails fast; two
		// successes close it.
		m.app.SetFailing(key, false)
		time.Sleep(2200 * time.Millisecond)
		answers := make(chan answer, 3)
		for i := 0; i < 3; i++ {
			go func() { answers <- call(t, m.frontend, "GET", "flaky", "/toggle/"+key+"?sleep=400", "") }()
		}
		var ok, open int
		for i := 0; i < 3; i++ {
			switch a := <-answers; {
			case a.status == 200:
				ok++
			case a.code == "ERR_CIRCUIT_OPEN":
				open++
			default:
				t.Fatalf("half-open call: %d %q", a.status, a.body)
			}
		}
		if ok != 2 || open != 1 {
			t.Fatalf("half-open with maxRequests 2: %d probes passed, %d rejected; want 2, 1", ok, open)
		}
		if got := scrape(t, m.frontend, "meshd_circuit_breaker_state", "flaky"); got != 0 {
			t.Fatalf("meshd_circuit_breaker_state{dst_app_id=flaky} = %v once closed, want 0", got)
		}
		// Closed: a failure no longer trips it at once.
		m.app.SetFailing(key, true)
		for i := 0; i < 2; i++ {
			if a := call(t, m.frontend, "GET", "flaky", "/toggle/"+key, ""); a.status != 500 {
				t.Fatalf("closed breaker, failure %d: %d %q", i+1, a.status, a.body)
			}
		}
		if n := m.app.Attempts(key); n != 8 {
			t.Fatalf("app saw %d attempts, want 8", n)
		}
	})

	t.Run("retry budget bounds retries in an outage", func(t *testing.T) {
		// outage: maxRetries 3 at 1ms; the app always fails. Unbounded,
		// 400 calls would make 1600 attempts; the budget allows 20% of
		// the requests plus 10/s over 10s.
		const calls = 400
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < calls/8; i++ {
					if a := call(t, m.frontend, "GET", "outage", "/status/503/kbudget", ""); a.status != 503 {
						t.Errorf("status %d, want the app's 503", a.status)
						return
					}
				}
			}()
		}
		wg.Wait()
		n := m.app.Attempts("kbudget")
		if max := calls + calls/5 + 10*12; n > max {
			t.Fatalf("%d calls made %d attempts, want at most %d (budget)", calls, n, max)
		}
		if n <= calls {
			t.Fatalf("%d calls made %d attempts: no retry at all", calls, n)
		}
		t.Logf("%d calls, %d attempts", calls, n)
	})

	t.Run("reloaded on change", func(t *testing.T) {
		file := writeFile(t, "reload.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    timeouts: {t: 5s}\n")
		s := m.caller(t, "reload", harness.SidecarPorts{}, file)
		defer s.Stop(5 * time.Second)
		if a := call(t, s, "GET", "plain", "/fail/1/kr1", ""); a.status != 500 || m.app.Attempts("kr1") != 1 {
			t.Fatalf("before: %d, %d attempts", a.status, m.app.Attempts("kr1"))
		}
		next := "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    retries:\n      DefaultRetryPolicy: {duration: 10ms, maxRetries: 2}\n"
		if err := os.WriteFile(file+".tmp", []byte(next), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".tmp", file); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; ; i++ {
			key := "kr2-" + strconv.Itoa(i)
			a := call(t, s, "GET", "plain", "/fail/1/"+key, "")
			if a.status == 200 && m.app.Attempts(key) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the new DefaultRetryPolicy never applied: %d, %d attempts", a.status, m.app.Attempts(key))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("Dapr documentation examples", func(t *testing.T) {
		for _, tc := range []struct {
			name, doc string
			check     func(t *testing.T, s *harness.Sidecar, key string)
		}{
			{"overview example (scoped to app1, app2)", daprOverviewExample, func(t *testing.T, s *harness.Sidecar, key string) {
				// Not in scopes: no policy for this sidecar, no status retries.
				if a := call(t, s, "GET", "orders", "/fail/1/"+key, ""); a.status != 500 || m.app.Attempts(key) != 1 {
					t.Fatalf("%d, %d attempts; want 500, 1", a.status, m.app.Attempts(key))
				}
			}},
			{"overview example, in scope", strings.NewReplacer("  - app1\n", "  - app1\n  - docs\n", "    apps:\n", "    apps:\n      orders:\n        retry: largeResponse\n        timeout: general\n").Replace(daprOverviewExample), func(t *testing.T, s *harness.Sidecar, key string) {
				// largeResponse: constant 5s, maxRetries 3; general: 5s per attempt.
				a := call(t, s, "GET", "orders", "/fail/1/"+key, "")
				if a.status != 200 || m.app.Attempts(key) != 2 || a.elapsed < 4500*time.Millisecond {
					t.Fatalf("%d after %v, %d attempts; want 200 after one 5s backoff, 2 attempts", a.status, a.elapsed, m.app.Attempts(key))
				}
			}},
			{"default policies example", daprDefaultsExample, func(t *testing.T, s *harness.Sidecar, key string) {
				// orders is not named: DefaultAppRetryPolicy (100ms, 5 retries).
				a := call(t, s, "GET", "orders", "/fail/5/"+key, "")
				if a.status != 200 || m.app.Attempts(key) != 6 {
					t.Fatalf("%d, %d attempts; want 200, 6", a.status, m.app.Attempts(key))
				}
			}},
			{"retry matching example", daprMatchingExample, func(t *testing.T, s *harness.Sidecar, key string) {
				// No target names retry5xxOnly and it is no default: loaded, no effect.
				if a := call(t, s, "GET", "orders", "/fail/1/"+key, ""); a.status != 500 || m.app.Attempts(key) != 1 {
					t.Fatalf("%d, %d attempts; want 500, 1", a.status, m.app.Attempts(key))
				}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := m.caller(t, "docs", harness.SidecarPorts{}, writeFile(t, "docs.yaml", tc.doc))
				defer s.Stop(5 * time.Second)
				tc.check(t, s, "docs-"+strings.ReplaceAll(tc.name, " ", "-"))
			})
		}
	})

	t.Run("a bad file stops meshd with file:line", func(t *testing.T) {
		bad := writeFile(t, "bad.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    retries:\n      r: {maxRetries: many}\n")
		s := harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: "badconf", ResolverFile: m.resolver, NoWait: true,
			Extra: []string{"--resiliency", bad}})
		_ = s.Wait(10 * time.Second)
		if !s.Exited() || s.ExitCode() == 0 {
			t.Fatal("meshd accepted a bad resiliency file")
		}
		if !strings.Contains(s.Log(), "bad.yaml:6") || !strings.Contains(s.Log(), "want an integer") {
			t.Fatalf("log does not name the file and line:\n%s", s.Log())
		}
	})
}

func mustAtoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func waitCancelled(t *testing.T, a *testApp, key string) {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case k := <-a.cancelled:
			if k == key {
				return
			}
		case <-deadline:
			t.Fatalf("the app's request %s was not cancelled", key)
		}
	}
}

func within(t *testing.T, v string, lo, hi time.Duration) bool {
	t.Helper()
	d, err := time.ParseDuration(v)
	return err == nil && d >= lo && d <= hi
}
