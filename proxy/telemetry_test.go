package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/appchannel"
	"github.com/meshd/meshd/telemetry/metrics"
	"github.com/meshd/meshd/telemetry/tracing"
)

type telemetrySide struct {
	exp *tracetest.InMemoryExporter
	m   *metrics.Metrics
}

func withTelemetry(t *testing.T, cfg *Config, known ...string) telemetrySide {
	t.Helper()
	s := telemetrySide{exp: tracetest.NewInMemoryExporter()}
	self := discovery.Target{AppID: cfg.Identity.AppID, Namespace: "default"}
	var err error
	if s.m, err = metrics.New(metrics.Options{Self: self}); err != nil {
		t.Fatal(err)
	}
	for _, k := range known {
		s.m.MarkKnown(discovery.Target{AppID: k, Namespace: "default"})
	}
	id := cfg.Identity
	if id.Namespace == "" {
		id.Namespace = "default"
	}
	tr, err := tracing.New(tracing.Options{Identity: id, SamplingRate: 0, Exporter: s.exp, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	cfg.Metrics, cfg.Tracer = s.m, tr
	return s
}

func counter(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, mm := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range mm.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			return metricValue(mm)
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	if m.Histogram != nil {
		return float64(m.Histogram.GetSampleCount())
	}
	return m.GetGauge().GetValue()
}

func TestTelemetryHTTP(t *testing.T) {
	ca := newCA(t, "cluster.local")
	res := newResolver()
	seen := make(chan string, 4)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Traceparent")
		if strings.HasPrefix(r.URL.Path, "/fail") {
			w.WriteHeader(500)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	port, _ := strconv.Atoi(u.Port())
	ch, _ := appchannel.New(appchannel.Config{Port: port})
	calleeCfg := Config{Identity: mustIdentity(t, "orders"), Resolver: res, App: ch}
	callerCfg := Config{Identity: mustIdentity(t, "frontend"), Resolver: res}
	ts, tc := withTelemetry(t, &calleeCfg), withTelemetry(t, &callerCfg, "orders")
	callee := startSidecar(t, ca, calleeCfg)
	caller := startSidecar(t, ca, callerCfg)
	res.set("orders", callee.internal)

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	do := func(path, tp string) *http.Response {
		req, _ := http.NewRequest("GET", caller.httpURL+"/v1.0/invoke/orders/method"+path, nil)
		if tp != "" {
			req.Header.Set("traceparent", tp)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := do("/hello", parent)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	appTP := <-seen
	cs, ss := tc.exp.GetSpans(), ts.exp.GetSpans()
	if len(cs) != 1 || len(ss) != 1 {
		t.Fatalf("spans: caller %d, callee %d", len(cs), len(ss))
	}
	if cs[0].SpanKind != trace.SpanKindClient || ss[0].SpanKind != trace.SpanKindServer ||
		cs[0].Parent.SpanID().String() != "00f067aa0ba902b7" || ss[0].Parent.SpanID() != cs[0].SpanContext.SpanID() {
		t.Fatalf("span chain: client %+v server %+v", cs[0].Parent, ss[0].Parent)
	}
	if want := tracing.FormatTraceparent(ss[0].SpanContext); appTP != want {
		t.Fatalf("app saw traceparent %q, want the server span %q", appTP, want)
	}
	if got, want := resp.Header.Get("Traceparent"), tracing.FormatTraceparent(cs[0].SpanContext); got != want {
		t.Fatalf("response traceparent %q, want the client span %q", got, want)
	}

	// Unsampled (rate 0, no parent): no span, but a traceparent still flows.
	resp = do("/fail", "")
	if resp.StatusCode != 500 || !strings.HasSuffix(resp.Header.Get("Traceparent"), "-00") {
		t.Fatalf("unsampled: %d %q", resp.StatusCode, resp.Header.Get("Traceparent"))
	}
	if tp := <-seen; !strings.HasSuffix(tp, "-00") {
		t.Fatalf("app saw %q", tp)
	}
	if len(tc.exp.GetSpans()) != 1 {
		t.Fatal("an unsampled call exported a span")
	}
	// Unknown target: counted under "unknown".
	req, _ := http.NewRequest("GET", caller.httpURL+"/v1.0/invoke/ghost/method/x", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	for _, c := range []struct {
		m      *metrics.Metrics
		name   string
		labels map[string]string
		want   float64
	}{
		{tc.m, "meshd_requests_sent_total", map[string]string{"dst_app_id": "orders", "status": "200", "protocol": "http"}, 1},
		{tc.m, "meshd_requests_sent_total", map[string]string{"dst_app_id": "orders", "status": "500"}, 1},
		{tc.m, "meshd_requests_sent_total", map[string]string{"dst_app_id": "unknown", "status": "503"}, 1},
		{tc.m, "meshd_request_sent_duration_seconds", map[string]string{"dst_app_id": "orders"}, 2},
		{ts.m, "meshd_requests_received_total", map[string]string{"src_app_id": "frontend", "dst_app_id": "orders", "status": "200"}, 1},
		{ts.m, "meshd_requests_received_total", map[string]string{"src_app_id": "frontend", "status": "500"}, 1},
	} {
		if got := counter(t, c.m, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func TestTelemetryGRPCStatus(t *testing.T) {
	ca := newCA(t, "cluster.local")
	res := newResolver()
	l := listen(t)
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, grpcApp{})
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	ch, err := appchannel.New(appchannel.Config{Protocol: appchannel.GRPC, Port: l.Addr().(*net.TCPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	calleeCfg := Config{Identity: mustIdentity(t, "grpcapp"), Resolver: res, App: ch}
	callerCfg := Config{Identity: mustIdentity(t, "frontend"), Resolver: res}
	ts, tc := withTelemetry(t, &calleeCfg), withTelemetry(t, &callerCfg, "grpcapp")
	callee := startSidecar(t, ca, calleeCfg)
	caller := startSidecar(t, ca, callerCfg)
	res.set("grpcapp", callee.internal)
	cc, err := grpc.NewClient(caller.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := testpb.NewTestServiceClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-app-id", "grpcapp",
		"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	var hdr metadata.MD
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if tp := hdr.Get("traceparent"); len(tp) != 1 || !strings.Contains(tp[0], "4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Fatalf("gRPC response traceparent %v", tp)
	}
	_, err = c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "x"}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("err %v", err)
	}
	for _, cse := range []struct {
		m      *metrics.Metrics
		name   string
		labels map[string]string
	}{
		{tc.m, "meshd_requests_sent_total", map[string]string{"dst_app_id": "grpcapp", "protocol": "grpc", "status": "0"}},
		{tc.m, "meshd_requests_sent_total", map[string]string{"dst_app_id": "grpcapp", "protocol": "grpc", "status": "5"}},
		{ts.m, "meshd_requests_received_total", map[string]string{"src_app_id": "frontend", "protocol": "grpc", "status": "0"}},
		{ts.m, "meshd_requests_received_total", map[string]string{"src_app_id": "frontend", "protocol": "grpc", "status": "5"}},
	} {
		if got := counter(t, cse.m, cse.name, cse.labels); got != 1 {
			t.Errorf("%s%v = %v, want 1", cse.name, cse.labels, got)
		}
	}
	if n := len(tc.exp.GetSpans()) + len(ts.exp.GetSpans()); n != 4 {
		t.Errorf("%d spans, want 4 (2 calls x 2 hops)", n)
	}
}
