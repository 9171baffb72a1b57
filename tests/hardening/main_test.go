// Package hardening_test checks the sidecar's request limits (issue #11
// item 5) and its answers before its first certificate (item 6) against
// real sentry and meshd processes on loopback, with raw clients.
package hardening_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshd/meshd/tests/harness"
)

// spyApp is the callee's app, in this process: it counts the requests it
// gets and remembers the most header fields one carried.
type spyApp struct {
	port      int
	hits      atomic.Int64
	maxFields atomic.Int64
}

func startSpy(t *testing.T) *spyApp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &spyApp{port: l.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		n := 0
		for _, vv := range r.Header {
			n += len(vv)
		}
		for {
			m := s.maxFields.Load()
			if int64(n) <= m || s.maxFields.CompareAndSwap(m, int64(n)) {
				break
			}
		}
		size, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"bytes": size, "fields": int64(n)})
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return s
}

// bodyTimeout is the sidecars' --request-body-timeout in these tests.
const bodyTimeout = 2 * time.Second

// pair is a caller sidecar ("caller", no app) and a callee ("spy") whose
// app is a spyApp.
type pair struct {
	bins           harness.Binaries
	sentry         *harness.Sentry
	caller, callee *harness.Sidecar
	spy            *spyApp
}

func startPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{bins: harness.Build(t)}
	p.sentry = harness.StartSentry(t, p.bins, "")
	p.spy = startSpy(t)
	resolver := filepath.Join(t.TempDir(), "resolver.yaml")
	cp, sp := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	harness.WriteStatic(t, resolver,
		harness.StaticApp{AppID: "caller", Addresses: []string{cp.InternalAddr()}},
		harness.StaticApp{AppID: "spy", Addresses: []string{sp.InternalAddr()}})
	extra := []string{"--request-body-timeout", bodyTimeout.String(), "--log-level", "debug"}
	p.caller = harness.StartSidecar(t, p.bins, p.sentry, harness.SidecarConfig{AppID: "caller", Ports: cp, ResolverFile: resolver, Extra: extra, NoWait: true})
	p.callee = harness.StartSidecar(t, p.bins, p.sentry, harness.SidecarConfig{AppID: "spy", Ports: sp, AppPort: p.spy.port, ResolverFile: resolver, Extra: extra, NoWait: true})
	for _, s := range []*harness.Sidecar{p.caller, p.callee} {
		harness.WaitHTTP(t, s.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
	}
	return p
}

// genuineTLS is an mTLS client config with a sentry-issued SVID of app,
// for a sidecar's internal port (which expects serverApp's identity).
func genuineTLS(t *testing.T, s *harness.Sentry, app, serverApp string, alpn ...string) *tls.Config {
	t.Helper()
	src := s.Source(t, app, "default")
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://cluster.local/ns/default/"+serverApp)))
	cfg.NextProtos = alpn
	return cfg
}

// manyFields is n header fields "X-Field-i: v", each ending in CRLF.
func manyFields(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-Field-%d: v\r\n", i)
	}
	return b.String()
}

// errorReply is the sidecar's JSON error body.
type errorReply struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

// checkError checks a sidecar error answer: status, JSON errorCode and
// the Meshd-Error-Code header.
func checkError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e errorReply
	if resp.StatusCode != status {
		t.Fatalf("%s: %s %q, want %d", what, resp.Status, body, status)
	}
	if err := json.Unmarshal(body, &e); err != nil || e.ErrorCode != code || e.Message == "" {
		t.Fatalf("%s: body %q, want the JSON error %s", what, body, code)
	}
	if got := resp.Header.Get("Meshd-Error-Code"); got != code {
		t.Fatalf("%s: Meshd-Error-Code %q, want %q", what, got, code)
	}
}

// rawExchange writes head (and then trickle, a byte every interval, until
// the answer comes) on c and reads one answer, within limit.
func rawExchange(t *testing.T, c net.Conn, head string, trickle string, interval, limit time.Duration) (*http.Response, []byte, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetDeadline(start.Add(limit))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatalf("write head: %v", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	if trickle != "" {
		go func() {
			for i := 0; i < len(trickle); i++ {
				select {
				case <-stop:
					return
				case <-time.After(interval):
				}
				if _, err := c.Write([]byte{trickle[i]}); err != nil {
					return
				}
			}
		}()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer after %s: %v", time.Since(start).Round(time.Millisecond), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b, time.Since(start)
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) net.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func hostPort(url string) string { return strings.TrimPrefix(url, "http://") }

func itoa(n int) string { return strconv.Itoa(n) }
