package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshd/meshd/config/daprconfig"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/route"
	"github.com/meshd/meshd/telemetry/metrics"
	"github.com/meshd/meshd/telemetry/tracing"
)

// BenchmarkInvokeTelemetry is BenchmarkInvoke with telemetry off, metrics
// on, tracing on at Dapr's default rate (0.0001, no caller trace: almost
// every call unsampled) and tracing of every call (a sampled caller
// traceparent; spans go to a no-op exporter). Both sidecars observe.
func BenchmarkInvokeTelemetry(b *testing.B) {
	for _, c := range []struct {
		name            string
		metrics, traced bool
		rate            float64
		parent          string
		propagate       bool // tracing off: trace context only (the sidecar's default)
		token           bool // DAPR_API_TOKEN on the caller, sent by the client
	}{
		{"off", false, false, 0, "", false, false},
		{"propagate", false, false, 0, "", true, false},
		{"metrics", true, false, 0, "", false, false},
		{"metrics+propagate", true, false, 0, "", true, false},
		{"metrics+propagate+token", true, false, 0, "", true, true},
		{"tracing-default-rate", false, true, daprconfig.DefaultSamplingRate, "", false, false},
		{"metrics+tracing-default-rate", true, true, daprconfig.DefaultSamplingRate, "", false, false},
		{"metrics+tracing-sampled", true, true, daprconfig.DefaultSamplingRate, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			ca := newCA(b, "cluster.local")
			res := newResolver()
			ch := benchApp(b)
			calleeCfg := Config{Identity: mustIdentity(b, "orders"), Resolver: res, App: ch}
			callerCfg := Config{Identity: mustIdentity(b, "frontend"), Resolver: res}
			for _, cfg := range []*Config{&calleeCfg, &callerCfg} {
				if c.metrics {
					m, err := metrics.New(metrics.Options{Self: discovery.Target{AppID: cfg.Identity.AppID, Namespace: cfg.Identity.Namespace}})
					if err != nil {
						b.Fatal(err)
					}
					m.MarkKnown(discovery.Target{AppID: "orders", Namespace: "default"})
					cfg.Metrics = m
				}
				if c.traced {
					tr, err := tracing.New(tracing.Options{Identity: cfg.Identity, SamplingRate: c.rate, Exporter: tracetest.NewNoopExporter()})
					if err != nil {
						b.Fatal(err)
					}
					defer tr.Shutdown(context.Background())
					cfg.Tracer = tr
				}
				if c.propagate {
					cfg.Tracer = tracing.NewPropagator(cfg.Identity)
				}
			}
			if c.token {
				callerCfg.APIToken = "bench-token-0123456789abcdef0123456789"
			}
			callee := startSidecar(b, ca, calleeCfg)
			caller := startSidecar(b, ca, callerCfg)
			res.set("orders", callee.internal)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			target := caller.httpURL + "/v1.0/invoke/orders/method/api/orders/42?x=1"
			b.SetParallelism(8)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", target, nil)
				for pb.Next() {
					if c.parent != "" {
						req.Header.Set("Traceparent", c.parent)
					}
					if c.token {
						req.Header.Set("Dapr-Api-Token", "bench-token-0123456789abcdef0123456789")
					}
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// nopWriter is a ResponseWriter that keeps only its header map.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkTelemetryHooks is the CPU and allocations telemetry adds to one
// call, both hops (caller sidecar outbound + callee sidecar inbound),
// without the network: what BenchmarkInvokeTelemetry measures end to end,
// minus the noise.
func BenchmarkTelemetryHooks(b *testing.B) {
	for _, c := range []struct {
		name            string
		metrics, traced bool
		parent          string
		propagate       bool
	}{
		{"off", false, false, "", false},
		{"propagate", false, false, "", true},
		{"propagate-parent", false, false, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"metrics", true, false, "", false},
		{"metrics+propagate", true, false, "", true},
		{"tracing-default-rate", false, true, "", false},
		{"metrics+tracing-default-rate", true, true, "", false},
		{"metrics+tracing-sampled", true, true, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
	} {
		b.Run(c.name, func(b *testing.B) {
			res := newResolver()
			mk := func(app string) *Proxy {
				cfg := Config{Identity: mustIdentity(b, app), Resolver: res, Insecure: true}
				if c.metrics {
					m, _ := metrics.New(metrics.Options{Self: discovery.Target{AppID: app, Namespace: "default"}})
					m.MarkKnown(discovery.Target{AppID: "orders", Namespace: "default"})
					cfg.Metrics = m
				}
				if c.traced {
					tr, _ := tracing.New(tracing.Options{Identity: cfg.Identity, SamplingRate: daprconfig.DefaultSamplingRate, Exporter: tracetest.NewNoopExporter()})
					b.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
					cfg.Tracer = tr
				}
				if c.propagate {
					cfg.Tracer = tracing.NewPropagator(cfg.Identity)
				}
				p, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				return p
			}
			caller, callee := mk("frontend"), mk("orders")
			rt := &route.Route{Target: discovery.Target{AppID: "orders", Namespace: "default"}, Path: "/api/orders/42"}
			r := httptest.NewRequest("GET", "/v1.0/invoke/orders/method/api/orders/42", nil)
			w := &nopWriter{h: http.Header{}}
			id := mustIdentity(b, "frontend")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if c.parent != "" {
					r.Header["Traceparent"] = []string{c.parent}
				}
				var ww http.ResponseWriter = w
				var o *obsWriter
				if caller.observe {
					o = caller.startOutbound(w, r, rt)
					ww = o
				}
				var in *obsWriter
				if callee.observe {
					in = callee.startInbound(ww, r)
					in.setCaller(id)
					ww = in
				}
				ww.WriteHeader(200)
				if in != nil {
					callee.endInbound(in, false)
				}
				if o != nil {
					caller.endOutbound(o, rt.Target, false)
				}
			}
		})
	}
}
