package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestWaitFirst: exchanges that wait for the answer before reading it
// (waitfirst.go) and exchanges that do not, over plain TCP and TLS: answers
// at once and late, small and inline-body POSTs on reused connections, a
// cancel while the exchange waits (RoundTrip returns at once with the
// context's error) and a deadline.
func TestWaitFirst(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/late":
			time.Sleep(30 * time.Millisecond)
		case "/hang":
			<-r.Context().Done()
			return
		}
		_, _ = w.Write(append([]byte(r.Method+" "), b...))
	})
	plain := httptest.NewServer(h)
	defer plain.Close()
	secure := httptest.NewTLSServer(h)
	defer secure.Close()
	saved := waitFirst
	defer func() { waitFirst = saved }()
	for _, on := range []bool{true, false} {
		waitFirst = on
		for _, srv := range []*httptest.Server{plain, secure} {
			tr := newTransport()
			if srv == secure {
				cfg := &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
				tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					d := &tls.Dialer{Config: cfg}
					return d.DialContext(ctx, network, addr)
				}
			}
			u, _ := url.Parse(srv.URL)
			for i, path := range []string{"/", "/late", "/", "/late", "/"} {
				method, body := "GET", ""
				req := &http.Request{Method: method, URL: &url.URL{Scheme: "http", Host: u.Host, Path: path}, Header: http.Header{}, Host: u.Host}
				if i%2 == 1 {
					method, body = "POST", strings.Repeat("x", 100)
					req.Method, req.Body, req.ContentLength = method, io.NopCloser(strings.NewReader(body)), int64(len(body))
				}
				if _, got := do(t, tr, req); got != method+" "+body {
					t.Fatalf("waitFirst %v, %s %s: %q", on, srv.URL, path, got)
				}
			}
			// Cancelled while waiting for the answer.
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			req := (&http.Request{Method: "GET", URL: &url.URL{Scheme: "http", Host: u.Host, Path: "/hang"}, Header: http.Header{}, Host: u.Host}).WithContext(ctx)
			start := time.Now()
			if _, err := tr.RoundTrip(req); !errors.Is(err, context.Canceled) {
				t.Fatalf("waitFirst %v, %s: cancelled call: %v, want context.Canceled", on, srv.URL, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("waitFirst %v: cancelled call returned after %s", on, d)
			}
			tr.CloseIdleConnections()
		}
	}
}
