package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/appchannel"
)

// dyingApp records each request's method, then breaks its connection
// without a byte of answer (an app killed mid-call); on /fake it answers a
// 502 carrying the callee sidecar's HeaderAppFailed itself.
type dyingApp struct {
	mu   sync.Mutex
	seen []string
}

func (d *dyingApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	d.mu.Lock()
	d.seen = append(d.seen, r.Method+" "+r.URL.Path)
	d.mu.Unlock()
	if r.URL.Path == "/fake" {
		w.Header().Set(HeaderAppFailed, AppFailedNoResponse)
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	c, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		c.Close()
	}
}

func (d *dyingApp) calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.seen...)
}

func appChannel(t *testing.T, h http.Handler) *appchannel.Channel {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	ch, err := appchannel.New(appchannel.Config{Protocol: appchannel.HTTP, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestAppFailedRetriesIdempotent (#18: "a GET whose callee's app died
// mid-call gets the callee's 502"): the callee sidecar marks its 502 with
// Meshd-App-Failed when its app's connection broke before any answer; the
// caller retries an idempotent call on another endpoint (HTTP/1.1 and
// HTTP/2 callers alike) and never a POST or PATCH, which reach the app
// once and are answered 502. An app cannot fake the mark.
func TestAppFailedRetriesIdempotent(t *testing.T) {
	e := newEnv(t, nil)
	app := &dyingApp{}
	dying := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "orders"), Resolver: e.res, App: appChannel(t, app)})
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(h2.CloseIdleConnections)
	clients := map[string]*http.Client{"HTTP/1.1": http.DefaultClient, "HTTP/2": {Transport: h2}}

	for _, tc := range []struct {
		method, path, body string
		status             int
		appSaw             int // calls the dying app saw
		mark               bool
	}{
		{"GET", "/x", "", 200, 1, false},
		{"HEAD", "/x", "", 200, 1, false},
		{"DELETE", "/x", "", 200, 1, false},
		{"PUT", "/x", `{"v":1}`, 200, 1, false},
		{"POST", "/x", `{"v":1}`, 502, 1, true},
		{"POST", "/x", "", 502, 1, true},
		{"PATCH", "/x", `{"v":1}`, 502, 1, true},
		{"GET", "/fake", "", 502, 1, false}, // the app's own 502: passed on, not retried, mark stripped
	} {
		for proto, c := range clients {
			t.Run(proto+" "+tc.method+" "+tc.path, func(t *testing.T) {
				e.res.set("orders", dying.internal, e.orders.internal)
				e.res.mu.Lock()
				e.res.next[discovery.Target{AppID: "orders", Namespace: "default"}] = 0 // the dying one first
				e.res.mu.Unlock()
				before := len(app.calls())
				var body io.Reader
				if tc.body != "" {
					body = strings.NewReader(tc.body)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, tc.method, e.caller.httpURL+"/v1.0/invoke/orders/method"+tc.path, body)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d %s; want %d", resp.StatusCode, b, tc.status)
				}
				if tc.status == 200 && tc.method != "HEAD" && resp.Header.Get("X-App") != "orders" {
					t.Fatalf("answer not from the healthy instance: %v %s", resp.Header, b)
				}
				if tc.status == 502 && tc.path == "/x" && !strings.Contains(string(b), ErrCodeTransport) {
					t.Fatalf("502 body %s; want %s", b, ErrCodeTransport)
				}
				if got := resp.Header.Get(HeaderAppFailed) != ""; got != tc.mark {
					t.Fatalf("%s on the answer: %v, want %v", HeaderAppFailed, got, tc.mark)
				}
				if n := len(app.calls()) - before; n != tc.appSaw {
					t.Fatalf("the dying app saw %d calls (%v); want %d", n, app.calls()[before:], tc.appSaw)
				}
			})
		}
	}
}

// TestCheckPeer: the caller's PeerChecker passes a callee that would serve
// and fails one whose app is unhealthy, unreachable or missing, or whose
// sidecar is gone; a check never reaches the app (beyond a TCP connect)
// and is not a call: an app's call cannot carry HeaderCheck through.
func TestCheckPeer(t *testing.T) {
	e := newEnv(t, nil)
	app := &dyingApp{}
	healthyApp := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "orders"), Resolver: e.res, App: appChannel(t, app)})
	deadApp := listen(t)
	deadAddr := deadApp.Addr().String()
	deadApp.Close()
	_, deadPort, _ := strings.Cut(deadAddr, ":")
	port, _ := strconv.Atoi(deadPort)
	deadCh, err := appchannel.New(appchannel.Config{Protocol: appchannel.HTTP, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	appDown := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "orders"), Resolver: e.res, App: deadCh})
	noApp := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "orders"), Resolver: e.res})
	sidecarGone := listen(t)
	goneAddr := sidecarGone.Addr().String()
	sidecarGone.Close()
	wrongID := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "billing"), Resolver: e.res, App: appChannel(t, app)})

	checker := e.caller.p.PeerChecker()
	orders := discovery.Target{AppID: "orders", Namespace: "default"}
	for _, tc := range []struct {
		name, addr string
		ok         bool
		want       string
	}{
		{"serving", healthyApp.internal, true, ""},
		{"unhealthy app", e.orders.internal, false, ShortCircuitUnhealthy},
		{"app not listening", appDown.internal, false, ShortCircuitUnreachable},
		{"no app channel", noApp.internal, false, ShortCircuitUnreachable},
		{"sidecar gone", goneAddr, false, "connect"},
		{"another app's sidecar", wrongID.internal, false, "mTLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "unhealthy app" {
				e.health.set(false)
				defer e.health.set(true)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := checker.Check(ctx, orders, discovery.Endpoint{Address: tc.addr})
			if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check = %v; want ok %v (error containing %q)", err, tc.ok, tc.want)
			}
		})
	}
	if n := len(app.calls()); n != 0 {
		t.Fatalf("checks reached the app: %v", app.calls())
	}
	// An app's call carrying HeaderCheck is a call: the caller removes the
	// header and the callee's app answers.
	e.res.set("orders", e.orders.internal)
	req, _ := http.NewRequest("GET", e.caller.httpURL+"/v1.0/invoke/orders/method/x", nil)
	req.Header.Set(HeaderCheck, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeEcho(t, resp)
	if resp.StatusCode != 200 || got.Header.Get(HeaderCheck) != "" {
		t.Fatalf("an app's call with %s: %d, header at the app %q; want an ordinary call without it", HeaderCheck, resp.StatusCode, got.Header.Get(HeaderCheck))
	}
}
