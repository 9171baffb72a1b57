package tracing

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/config/daprconfig"
)

const (
	parentTP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
)

func TestParseTraceparent(t *testing.T) {
	cases := []struct {
		in      string
		ok      bool
		sampled bool
	}{
		{parentTP, true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true, true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false, false}, // v00 has a fixed length
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, false},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", false, false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false, false},
		{"", false, false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", false, false},
	}
	for _, c := range cases {
		tid, sid, fl, ok := ParseTraceparent(c.in)
		if ok != c.ok {
			t.Errorf("%q: ok %v, want %v", c.in, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if fl.IsSampled() != c.sampled || tid.String() != traceHex || sid.String() != "00f067aa0ba902b7" {
			t.Errorf("%q: %s %s %v", c.in, tid, sid, fl)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	tid, sid, fl, _ := ParseTraceparent(parentTP)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: fl})
	if got := FormatTraceparent(sc); got != parentTP {
		t.Fatalf("%q != %q", got, parentTP)
	}
}

func TestParseTraceparentAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { ParseTraceparent(parentTP) }); n != 0 {
		t.Fatalf("ParseTraceparent allocates %v times", n)
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add(parentTP)
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tid, sid, fl, ok := ParseTraceparent(s)
		if !ok {
			return
		}
		if !tid.IsValid() || !sid.IsValid() {
			t.Fatalf("%q: invalid IDs accepted", s)
		}
		out := FormatTraceparent(trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: fl}))
		if s[:2] == "00" && out != s {
			t.Fatalf("round trip %q -> %q", s, out)
		}
		if out[3:52] != s[3:52] {
			t.Fatalf("IDs changed: %q -> %q", s, out)
		}
	})
}

func newTestTracer(t *testing.T, rate float64) (*Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	id, err := certs.NewIdentity("cluster.local", "default", "frontend")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Options{Identity: id, SamplingRate: rate, Exporter: exp, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	return tr, exp
}

func attrs(s tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

func TestOutboundInboundChain(t *testing.T) {
	caller, exp := newTestTracer(t, 0) // root rate 0: only the parent's flag can sample
	calleeExp := tracetest.NewInMemoryExporter()
	calleeID, _ := certs.NewIdentity("cluster.local", "default", "orders")
	callee, err := New(Options{Identity: calleeID, SamplingRate: 0, Exporter: calleeExp, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer callee.Shutdown(context.Background())

	h := http.Header{HeaderTraceparent: {parentTP}, HeaderTracestate: {"vendor=x"}}
	out := caller.Outbound(h, "orders", "default", "GET", "/api/orders/42")
	if h[HeaderTraceparent][0] != out.Traceparent[0] || !strings.Contains(out.Traceparent[0], traceHex) {
		t.Fatalf("forwarded traceparent %v, hop %v", h[HeaderTraceparent], out.Traceparent)
	}
	if h[HeaderTracestate][0] != "vendor=x" {
		t.Fatalf("tracestate %v", h[HeaderTracestate])
	}
	// The callee sidecar sees the caller sidecar's headers.
	callerID, _ := certs.NewIdentity("cluster.local", "default", "frontend")
	in := callee.Inbound(h, "GET", "/api/orders/42")
	in.SetCaller(callerID)
	in.End(200, -1)
	out.End(200, -1)

	if len(exp.GetSpans()) != 1 || len(calleeExp.GetSpans()) != 1 {
		t.Fatalf("spans: caller %d callee %d", len(exp.GetSpans()), len(calleeExp.GetSpans()))
	}
	cs, ss := exp.GetSpans()[0], calleeExp.GetSpans()[0]
	if cs.SpanKind != trace.SpanKindClient || ss.SpanKind != trace.SpanKindServer {
		t.Fatalf("kinds %v %v", cs.SpanKind, ss.SpanKind)
	}
	if cs.Parent.SpanID().String() != "00f067aa0ba902b7" || ss.Parent.SpanID() != cs.SpanContext.SpanID() ||
		cs.SpanContext.TraceID().String() != traceHex || ss.SpanContext.TraceID().String() != traceHex {
		t.Fatalf("links: client parent %s, server parent %s, client %s", cs.Parent.SpanID(), ss.Parent.SpanID(), cs.SpanContext.SpanID())
	}
	if cs.Name != "CallRemote/orders" || ss.Name != "CallLocal/orders" {
		t.Fatalf("names %q %q", cs.Name, ss.Name)
	}
	ca, sa := attrs(cs), attrs(ss)
	for k, want := range map[attribute.Key]string{
		AttrSourceAppID: "frontend", AttrDestAppID: "orders", AttrDestNamespace: "default", AttrMethod: "/api/orders/42",
		AttrHTTPMethod: "GET", AttrPeerSPIFFEID: "spiffe://cluster.local/ns/default/orders",
	} {
		if ca[k].AsString() != want {
			t.Errorf("client %s = %q, want %q", k, ca[k].AsString(), want)
		}
	}
	if sa[AttrPeerSPIFFEID].AsString() != "spiffe://cluster.local/ns/default/frontend" || sa[AttrHTTPStatus].AsInt64() != 200 ||
		sa[AttrSourceAppID].AsString() != "frontend" {
		t.Errorf("server attrs %v", sa)
	}
	// The app gets the server span as its parent.
	if want := FormatTraceparent(ss.SpanContext); h[HeaderTraceparent][0] != want || in.Traceparent[0] != want {
		t.Fatalf("app sees %v, want %s", h[HeaderTraceparent], want)
	}
}

func TestSamplingHonoursParent(t *testing.T) {
	tr, exp := newTestTracer(t, 1) // would sample every root
	h := http.Header{HeaderTraceparent: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}
	hop := tr.Outbound(h, "orders", "default", "GET", "/")
	hop.End(200, -1)
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("parent said not sampled, %d spans exported", n)
	}
	if !strings.HasSuffix(hop.Traceparent[0], "-00") || !strings.Contains(hop.Traceparent[0], traceHex) {
		t.Fatalf("unsampled traceparent %q", hop.Traceparent[0])
	}
	// A bad traceparent starts a new, sampled root and drops tracestate.
	h = http.Header{HeaderTraceparent: {"garbage"}, HeaderTracestate: {"a=b"}}
	hop = tr.Outbound(h, "orders", "default", "GET", "/")
	hop.End(503, -1)
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Parent.IsValid() || spans[0].Status.Code.String() != "Error" {
		t.Fatalf("root span %+v", spans)
	}
	if _, ok := h[HeaderTracestate]; ok {
		t.Fatal("tracestate kept without a valid traceparent")
	}
}

func TestRootRate(t *testing.T) {
	tr, exp := newTestTracer(t, 0.0001)
	for i := 0; i < 2000; i++ {
		tr.Outbound(http.Header{}, "orders", "default", "GET", "/").End(200, -1)
	}
	if n := len(exp.GetSpans()); n > 5 {
		t.Fatalf("rate 0.0001 sampled %d of 2000 roots", n)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.HasPrefix(err.Error(), "tracing: ") {
		t.Fatalf("no exporter: %v", err)
	}
	if _, err := New(Options{Exporter: tracetest.NewInMemoryExporter(), SamplingRate: 2}); err == nil {
		t.Fatal("rate 2 accepted")
	}
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolve(t *testing.T) {
	otel := &daprconfig.Tracing{SamplingRate: 1, OTel: &daprconfig.OTel{EndpointAddress: "127.0.0.1:4317", Protocol: "grpc"}}
	cases := []struct {
		name    string
		spec    *daprconfig.Tracing
		env     map[string]string
		want    Settings
		wantErr string
	}{
		{"nothing", nil, nil, Settings{SamplingRate: daprconfig.DefaultSamplingRate}, ""},
		{"spec otel", otel, nil, Settings{Enabled: true, SamplingRate: 1, Protocol: "grpc", Endpoint: "127.0.0.1:4317", Insecure: true, Source: "config"}, ""},
		{"spec wins over env", otel, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, Settings{Enabled: true, SamplingRate: 1, Protocol: "grpc", Endpoint: "127.0.0.1:4317", Insecure: true, Source: "config"}, ""},
		{"spec rate 0", &daprconfig.Tracing{OTel: otel.OTel}, nil, Settings{Protocol: "grpc", Endpoint: "127.0.0.1:4317", Insecure: true}, ""},
		{"spec without exporter", &daprconfig.Tracing{SamplingRate: 1}, nil, Settings{SamplingRate: 1}, ""},
		{"env default rate", nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, Settings{Enabled: true, SamplingRate: 0.0001, Protocol: "http", Source: "env"}, ""},
		{"env grpc and ratio", nil, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, Settings{Enabled: true, SamplingRate: 0.5, Protocol: "grpc", Source: "env"}, ""},
		{"env json", nil, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, Settings{}, "http/json"},
		{"env bad ratio", nil, map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, Settings{}, "OTEL_TRACES_SAMPLER_ARG"},
		{"sdk disabled", otel, map[string]string{"OTEL_SDK_DISABLED": "true"}, Settings{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Resolve(SetupConfig{Spec: c.spec, Getenv: env(c.env)})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Enabled != c.want.Enabled || got.SamplingRate != c.want.SamplingRate || got.Protocol != c.want.Protocol ||
				got.Endpoint != c.want.Endpoint || got.Insecure != c.want.Insecure || got.Source != c.want.Source {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestSetupOffIsNil(t *testing.T) {
	tr, err := Setup(context.Background(), SetupConfig{Getenv: env(nil)})
	if err != nil || tr != nil {
		t.Fatalf("Setup without exporter = %v, %v", tr, err)
	}
	var nilT *Tracer
	if err := nilT.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestSetupBuildsExporters(t *testing.T) {
	for _, proto := range []string{"grpc", "http"} {
		spec := &daprconfig.Tracing{SamplingRate: 1, OTel: &daprconfig.OTel{EndpointAddress: "127.0.0.1:1", Protocol: proto}}
		tr, err := Setup(context.Background(), SetupConfig{Spec: spec, Getenv: env(nil)})
		if err != nil || tr == nil {
			t.Fatalf("%s: %v", proto, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*1e6)
		_ = tr.Shutdown(ctx)
		cancel()
	}
}

var _ sdktrace.SpanExporter = tracetest.NewInMemoryExporter()

func BenchmarkOutboundUnsampled(b *testing.B) {
	exp := tracetest.NewInMemoryExporter()
	tr, _ := New(Options{SamplingRate: 0.0001, Exporter: exp})
	defer tr.Shutdown(context.Background())
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		delete(h, HeaderTraceparent)
		tr.Outbound(h, "orders", "default", "GET", "/").End(200, -1)
	}
}

func BenchmarkOutboundSampled(b *testing.B) {
	tr, _ := New(Options{SamplingRate: 1, Exporter: tracetest.NewNoopExporter()})
	defer tr.Shutdown(context.Background())
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		h[HeaderTraceparent] = []string{parentTP}
		tr.Outbound(h, "orders", "default", "GET", "/").End(200, -1)
	}
}

func TestHTTPTracesURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:4318":            "http://127.0.0.1:4318/v1/traces",
		"http://127.0.0.1:4318/":           "http://127.0.0.1:4318/v1/traces",
		"https://c.example:4318/custom/v1": "https://c.example:4318/custom/v1",
		"http://h:1/v1/traces":             "http://h:1/v1/traces",
	} {
		if got := httpTracesURL(in); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}

// The fast path for unsampled roots must decide as the SDK's sampler.
func TestRatioMatchesSDK(t *testing.T) {
	for _, rate := range []float64{0, 0.0001, 0.3, 0.5, 1} {
		tr, _ := New(Options{SamplingRate: rate, Exporter: tracetest.NewNoopExporter()})
		sdk := sdktrace.TraceIDRatioBased(rate)
		for i := 0; i < 20000; i++ {
			tid := newTraceID()
			want := sdk.ShouldSample(sdktrace.SamplingParameters{ParentContext: context.Background(), TraceID: tid}).Decision == sdktrace.RecordAndSample
			if got := tr.ratioSampled(tid); got != want {
				t.Fatalf("rate %v, trace %s: fast path %v, SDK %v", rate, tid, got, want)
			}
		}
		_ = tr.Shutdown(context.Background())
	}
}

func TestSampledRootKeepsItsTraceID(t *testing.T) {
	tr, exp := newTestTracer(t, 1)
	h := http.Header{HeaderTracestate: {"orphan=1"}}
	hop := tr.Outbound(h, "orders", "default", "GET", "/")
	hop.End(200, -1)
	spans := exp.GetSpans()
	if len(spans) != 1 || FormatTraceparent(spans[0].SpanContext) != hop.Traceparent[0] || spans[0].Parent.IsValid() {
		t.Fatalf("root span %v, traceparent %v", spans, hop.Traceparent)
	}
	if _, ok := h[HeaderTracestate]; ok {
		t.Fatal("tracestate without traceparent kept")
	}
}

func TestUnsampledHopAllocs(t *testing.T) {
	tr, _ := newTestTracer(t, 0.0001)
	h := http.Header{HeaderTraceparent: {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}, HeaderTracestate: {"a=b"}}
	in := h[HeaderTraceparent]
	n := testing.AllocsPerRun(200, func() {
		h[HeaderTraceparent] = in
		tr.Outbound(h, "orders", "default", "GET", "/").End(200, -1)
	})
	if n > 2 {
		t.Fatalf("unsampled hop: %v allocs, want at most 2 (the new traceparent)", n)
	}
	if h[HeaderTracestate][0] != "a=b" {
		t.Fatal("tracestate of an unsampled call changed")
	}
}

// TestPropagator: without an exporter a valid trace context passes on
// unchanged, and a call without one (or with a broken one) gets a new,
// unsampled trace; no span is recorded.
func TestPropagator(t *testing.T) {
	tr := NewPropagator(certs.Identity{AppID: "a", Namespace: "default"})
	if tr.Exporting() {
		t.Fatal("a propagator says it exports")
	}
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, tc := range []struct {
		name   string
		in     http.Header
		same   bool // the caller's traceparent goes on unchanged
		wantTS bool // tracestate kept
	}{
		{"valid parent", http.Header{HeaderTraceparent: {parent}, HeaderTracestate: {"k=v"}}, true, true},
		{"none", http.Header{}, false, false},
		{"broken", http.Header{HeaderTraceparent: {"00-xyz"}, HeaderTracestate: {"k=v"}}, false, false},
		{"two", http.Header{HeaderTraceparent: {parent, parent}}, false, false},
		{"zero trace id", http.Header{HeaderTraceparent: {"00-00000000000000000000000000000000-b7ad6b7169203331-01"}}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hop := tr.Outbound(tc.in, "b", "default", "GET", "/x")
			got := tc.in[HeaderTraceparent]
			if len(got) != 1 || len(hop.Traceparent) != 1 || got[0] != hop.Traceparent[0] {
				t.Fatalf("forwarded %q, answered %q: want one, the same", got, hop.Traceparent)
			}
			tid, _, flags, ok := ParseTraceparent(got[0])
			if !ok {
				t.Fatalf("traceparent %q does not parse", got[0])
			}
			if tc.same && got[0] != parent {
				t.Errorf("traceparent %q, want the caller's %q", got[0], parent)
			}
			if !tc.same && (got[0] == parent || flags.IsSampled() || tid.String() == "0af7651916cd43dd8448eb211c80319c") {
				t.Errorf("traceparent %q: want a new, unsampled trace", got[0])
			}
			if _, ok := tc.in[HeaderTracestate]; ok != tc.wantTS {
				t.Errorf("tracestate kept: %v, want %v", ok, tc.wantTS)
			}
			hop.End(200, -1)
		})
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Allocations: none to pass a context on, one for a new trace.
	h := http.Header{HeaderTraceparent: {parent}}
	if n := testing.AllocsPerRun(100, func() { tr.Outbound(h, "b", "default", "GET", "/x").End(200, -1) }); n != 0 {
		t.Errorf("propagating: %v allocations, want 0", n)
	}
	h2 := http.Header{}
	if n := testing.AllocsPerRun(100, func() {
		delete(h2, HeaderTraceparent)
		tr.Outbound(h2, "b", "default", "GET", "/x").End(200, -1)
	}); n != 1 {
		t.Errorf("new trace: %v allocations, want 1", n)
	}
}

func BenchmarkParseTraceparent(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, ok := ParseTraceparent(parentTP); !ok {
			b.Fatal("not parsed")
		}
	}
}

// FuzzHexLookup: the table decoder accepts exactly the lower-case hex
// digits, with their values.
func FuzzHexLookup(f *testing.F) {
	f.Add(byte('0'), byte('f'))
	f.Add(byte('F'), byte('g'))
	f.Fuzz(func(t *testing.T, hi, lo byte) {
		isHex := func(c byte) (byte, bool) {
			switch {
			case c >= '0' && c <= '9':
				return c - '0', true
			case c >= 'a' && c <= 'f':
				return c - 'a' + 10, true
			}
			return 0, false
		}
		h, ok1 := isHex(hi)
		l, ok2 := isHex(lo)
		got, ok := hexByte(hi, lo)
		if ok != (ok1 && ok2) || (ok && got != h<<4|l) {
			t.Fatalf("hexByte(%q, %q) = %x %v", hi, lo, got, ok)
		}
	})
}
