package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/telemetry/metrics/metricstest"
)

var (
	self   = discovery.Target{AppID: "frontend", Namespace: "default"}
	orders = discovery.Target{AppID: "orders", Namespace: "default"}
)

func newMetrics(t testing.TB, opts Options) *Metrics {
	t.Helper()
	if opts.Self == (discovery.Target{}) {
		opts.Self = self
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// scrape fetches /metrics through the handler and parses it with the
// Prometheus text parser.
func scrape(t testing.TB, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	fams, err := metricstest.Parse(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

var value = metricstest.Value

func labelValues(fams map[string]*dto.MetricFamily, name, label string) map[string]bool {
	out := map[string]bool{}
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == label {
					out[l.GetValue()] = true
				}
			}
		}
	}
	return out
}

func TestCountsAndLabels(t *testing.T) {
	m := newMetrics(t, Options{})
	m.MarkKnown(orders)
	m.Outbound(orders, false, 200, 3*time.Millisecond)
	m.Outbound(orders, false, 200, 3*time.Millisecond)
	m.Outbound(orders, false, 503, time.Millisecond)
	m.Outbound(orders, true, 14, time.Millisecond)
	m.Outbound(discovery.Target{AppID: "attacker-typed-name", Namespace: "default"}, false, 503, time.Millisecond)
	m.Outbound(orders, false, 42, time.Millisecond) // out of range status
	m.Inbound(orders, false, 403, time.Millisecond)
	m.Inbound(discovery.Target{}, false, 200, time.Millisecond) // --insecure: no identity
	m.RetryInc(orders)
	m.RetryInc(discovery.Target{AppID: "nope", Namespace: "x"})
	m.SetBreakerState(orders, BreakerOpen)

	fams := scrape(t, m.Handler())
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshd_requests_sent_total", map[string]string{"src_app_id": "frontend", "dst_app_id": "orders", "dst_namespace": "default", "protocol": "http", "status": "200"}, 2},
		{"meshd_requests_sent_total", map[string]string{"dst_app_id": "orders", "status": "503"}, 1},
		{"meshd_requests_sent_total", map[string]string{"dst_app_id": "orders", "protocol": "grpc", "status": "14"}, 1},
		{"meshd_requests_sent_total", map[string]string{"dst_app_id": "unknown", "dst_namespace": "unknown", "status": "503"}, 1},
		{"meshd_requests_sent_total", map[string]string{"dst_app_id": "orders", "status": "unknown"}, 1},
		{"meshd_request_sent_duration_seconds", map[string]string{"dst_app_id": "orders", "protocol": "http"}, 4},
		{"meshd_requests_received_total", map[string]string{"src_app_id": "orders", "dst_app_id": "frontend", "status": "403"}, 1},
		{"meshd_requests_received_total", map[string]string{"src_app_id": "unknown", "status": "200"}, 1},
		{"meshd_request_received_duration_seconds", map[string]string{"src_app_id": "orders"}, 1},
		{"meshd_retries_total", map[string]string{"dst_app_id": "orders"}, 1},
		{"meshd_retries_total", map[string]string{"dst_app_id": "unknown"}, 1},
		{"meshd_circuit_breaker_state", map[string]string{"dst_app_id": "orders"}, 2},
	}
	for _, c := range checks {
		got, ok := value(fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if apps := labelValues(fams, "meshd_requests_sent_total", "dst_app_id"); apps["attacker-typed-name"] || len(apps) != 2 {
		t.Errorf("dst_app_id values %v", apps)
	}
	if fams["go_goroutines"] == nil {
		t.Error("no Go runtime metrics")
	}
}

func TestMaxAppsBound(t *testing.T) {
	m := newMetrics(t, Options{MaxApps: 3})
	for i := 0; i < 10; i++ {
		tg := discovery.Target{AppID: "app" + strconv.Itoa(i), Namespace: "default"}
		m.MarkKnown(tg)
		m.Outbound(tg, false, 200, time.Millisecond)
		m.Inbound(tg, false, 200, time.Millisecond)
	}
	fams := scrape(t, m.Handler())
	for _, name := range []string{"meshd_requests_sent_total", "meshd_requests_received_total"} {
		label := "dst_app_id"
		if strings.Contains(name, "received") {
			label = "src_app_id"
		}
		vals := labelValues(fams, name, label)
		if len(vals) != 4 || !vals["unknown"] {
			t.Errorf("%s %s values %v: want 3 apps + unknown", name, label, vals)
		}
		if got, _ := value(fams, name, map[string]string{label: "unknown"}); got != 7 {
			t.Errorf("%s unknown = %v, want 7", name, got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.HasPrefix(err.Error(), "metrics: ") {
		t.Fatalf("no self: %v", err)
	}
	if _, err := New(Options{Self: self, LatencyBuckets: []time.Duration{2, 1}}); err == nil {
		t.Fatal("decreasing buckets accepted")
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Outbound(orders, false, 200, 0)
	m.Inbound(orders, false, 200, 0)
	m.RetryInc(orders)
	m.SetBreakerState(orders, BreakerOpen)
	m.MarkKnown(orders)
	if err := m.WatchPolicy(nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	m := newMetrics(t, Options{})
	m.MarkKnown(orders)
	unknown := discovery.Target{AppID: "typo", Namespace: "default"}
	m.Outbound(orders, false, 200, time.Millisecond)
	m.Outbound(unknown, false, 404, time.Millisecond)
	m.Inbound(orders, true, 0, time.Millisecond)
	n := testing.AllocsPerRun(1000, func() {
		m.Outbound(orders, false, 200, time.Millisecond)
		m.Outbound(unknown, false, 404, time.Millisecond)
		m.Inbound(orders, true, 0, time.Millisecond)
	})
	if n != 0 {
		t.Fatalf("hot path allocates %v times per call", n)
	}
}

type fakeCounts struct{ a, d, au atomic.Uint64 }

func (f *fakeCounts) Counts() (uint64, uint64, uint64) { return f.a.Load(), f.d.Load(), f.au.Load() }
func (f *fakeCounts) Reloads() uint64                  { return 4 }
func (f *fakeCounts) ReloadFailures() uint64           { return 1 }
func (f *fakeCounts) RegoNamespaces() (uint64, uint64) { return 3, 1 }

type fakeCerts struct{ na time.Time }

func (f fakeCerts) NotAfter() time.Time { return f.na }
func (f fakeCerts) Rotations() uint64   { return 3 }

func TestScrapeTimeSources(t *testing.T) {
	m := newMetrics(t, Options{})
	fc := &fakeCounts{}
	if err := m.WatchPolicy(fc, fc); err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := m.WatchCerts(fakeCerts{exp}); err != nil {
		t.Fatal(err)
	}
	// A real discovery cache.
	cache := discovery.NewCache(discovery.Options{ConsecutiveFailures: 1})
	defer cache.Close()
	stop, err := m.WatchDiscovery(cache)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cache.UpdateTarget(orders, []discovery.Endpoint{{Address: "127.0.0.1:1"}, {Address: "127.0.0.1:2"}})
	cache.ReportFailure(orders, "127.0.0.1:1") // ejected
	cache.ReportError(errors.New("metrics test: watch lost"))
	cache.ReportError(errors.New("metrics test: API server down"))
	fc.a.Add(5)
	fc.d.Add(2)
	m.Outbound(orders, false, 200, time.Millisecond) // known through discovery

	fams := scrape(t, m.Handler())
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshd_policy_decisions_total", map[string]string{"decision": "allow"}, 5},
		{"meshd_policy_decisions_total", map[string]string{"decision": "deny"}, 2},
		{"meshd_policy_decisions_total", map[string]string{"decision": "audit"}, 0},
		{"meshd_policy_reloads_total", nil, 4},
		{"meshd_policy_reload_failures_total", nil, 1},
		{"meshd_policy_rego_namespaces", map[string]string{"engine": "compiled"}, 3},
		{"meshd_policy_rego_namespaces", map[string]string{"engine": "opa"}, 1},
		{"meshd_cert_expiry_timestamp_seconds", nil, float64(exp.Unix())},
		{"meshd_cert_rotations_total", nil, 3},
		{"meshd_discovery_endpoints", map[string]string{"app_id": "orders", "namespace": "default"}, 2},
		{"meshd_discovery_endpoints_ready", map[string]string{"app_id": "orders"}, 1},
		{"meshd_endpoint_ejections_total", map[string]string{"app_id": "orders"}, 1},
		{"meshd_discovery_errors_total", nil, 2},
		{"meshd_requests_sent_total", map[string]string{"dst_app_id": "orders"}, 1},
	} {
		got, ok := value(fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// A target discovery forgets stops being known.
	cache.RemoveTarget(orders)
	m2 := discovery.Target{AppID: "orders", Namespace: "default"}
	m.Outbound(m2, false, 201, time.Millisecond)
	fams = scrape(t, m.Handler())
	if got, _ := value(fams, "meshd_requests_sent_total", map[string]string{"dst_app_id": "unknown", "status": "201"}); got != 1 {
		t.Errorf("call to a removed target counted as %v under unknown", got)
	}
}

func TestServe(t *testing.T) {
	m := newMetrics(t, Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l, nil) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Get("http://" + l.Addr().String() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("/other: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func BenchmarkOutbound(b *testing.B) {
	m := newMetrics(b, Options{})
	m.MarkKnown(orders)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Outbound(orders, false, 200, time.Millisecond)
		}
	})
}
