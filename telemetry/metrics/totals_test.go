package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTotals(t *testing.T) {
	m := newMetrics(t, Options{})
	m.MarkKnown(orders)
	for _, c := range []struct {
		grpc   bool
		status int
		n      int
	}{{false, 200, 5}, {false, 404, 2}, {false, 503, 1}, {true, 0, 3}, {true, 14, 1}, {false, 42, 1}} {
		for range c.n {
			m.Outbound(orders, c.grpc, c.status, time.Millisecond)
		}
	}
	m.Inbound(orders, false, 403, time.Millisecond)
	m.Inbound(orders, false, 204, time.Millisecond)
	got := m.Totals()
	// Errors: 404, 503, gRPC 14 and the out-of-range 42.
	if want := (Totals{Out: 13, ErrorsOut: 5, In: 2, ErrorsIn: 1}); got != want {
		t.Errorf("Totals() = %+v, want %+v", got, want)
	}
	var nilM *Metrics
	if nilM.Totals() != (Totals{}) {
		t.Error("nil Metrics has totals")
	}
}

func TestPolicyModeAndMounts(t *testing.T) {
	m := newMetrics(t, Options{})
	var mode atomic.Value
	mode.Store(PolicyMode{Mode: "enforce", Default: "deny"})
	if err := m.WatchPolicyMode(func() PolicyMode { return mode.Load().(PolicyMode) }); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- m.Serve(ctx, l, nil, Mount{Pattern: "/extra/", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "extra "+r.URL.Path)
		})})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) string {
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if b := get("/metrics"); !strings.Contains(b, `meshd_policy_mode{default="deny",mode="enforce"} 1`) {
		t.Errorf("no policy mode in /metrics")
	}
	mode.Store(PolicyMode{Mode: "audit", Default: "allow"}) // a reload: read at scrape time
	if b := get("/metrics"); !strings.Contains(b, `meshd_policy_mode{default="allow",mode="audit"} 1`) || strings.Contains(b, `mode="enforce"`) {
		t.Errorf("the policy mode did not follow")
	}
	if b := get("/extra/x"); b != "extra /extra/x" {
		t.Errorf("mount: %q", b)
	}
	if err := (*Metrics)(nil).WatchPolicyMode(nil); err != nil {
		t.Error(err)
	}
}
