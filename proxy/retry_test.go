package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetryOnAnotherEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	sick := &atomicHealth{ok: false}
	unhealthy := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "orders"), Resolver: e.res, App: e.orders.p.cfg.App, AppHealth: sick})

	tests := []struct {
		name      string
		eps       []string
		method    string
		body      string
		status    int
		failures  []string
		successes []string
	}{
		{"connection refused, GET", []string{deadAddr, e.orders.internal}, "GET", "", 200, []string{deadAddr}, []string{e.orders.internal}},
		{"connection refused, POST with body never sent", []string{deadAddr, e.orders.internal}, "POST", "payload", 200, []string{deadAddr}, []string{e.orders.internal}},
		{"short-circuit, GET", []string{unhealthy.internal, e.orders.internal}, "GET", "", 200, []string{unhealthy.internal}, []string{e.orders.internal}},
		{"short-circuit, POST without body", []string{unhealthy.internal, e.orders.internal}, "POST", "", 200, []string{unhealthy.internal}, []string{e.orders.internal}},
		{"all endpoints down", []string{deadAddr, deadAddr}, "GET", "", 502, []string{deadAddr}, nil},
		{"all unhealthy", []string{unhealthy.internal}, "GET", "", 503, []string{unhealthy.internal}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.res.set("orders", tc.eps...)
			e.res.reset()
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			req, _ := http.NewRequest(tc.method, e.caller.httpURL+"/v1.0/invoke/orders/method/x", body)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status == 200 {
				got := decodeEcho(t, resp)
				if tc.body != "" && got.BodySHA != sha(t, tc.body) {
					t.Errorf("body not intact after retry: %d bytes", got.BodyLen)
				}
			} else {
				resp.Body.Close()
			}
			fail, ok := e.res.reports()
			if strings.Join(fail, ",") != strings.Join(tc.failures, ",") || strings.Join(ok, ",") != strings.Join(tc.successes, ",") {
				t.Errorf("reports: failures %v successes %v; want %v %v", fail, ok, tc.failures, tc.successes)
			}
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, nil)
	// A slow call is in flight when the caller sidecar is told to stop.
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/sse")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "data: one\n\ndata: two\n\n" {
			err = io.ErrUnexpectedEOF
		}
		done <- result{resp.StatusCode, err}
	}()
	time.Sleep(200 * time.Millisecond)
	e.caller.stop()
	time.Sleep(100 * time.Millisecond)
	// New connections are refused while the call finishes.
	if resp, err := http.Get(e.caller.httpURL + "/v1.0/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("new call accepted during shutdown: %d", resp.StatusCode)
	}
	close(e.release)
	select {
	case r := <-done:
		if r.err != nil || r.status != 200 {
			t.Fatalf("in-flight call: %d %v", r.status, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight call did not finish")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case err := <-e.caller.done:
		e.caller.done <- err // for Cleanup
	case <-ctx.Done():
		t.Fatal("Serve did not return")
	}
}
