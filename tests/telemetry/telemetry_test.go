package telemetry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/meshd/meshd/telemetry/metrics/metricstest"
	"github.com/meshd/meshd/tests/harness"
)

const (
	traceID      = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID = "00f067aa0ba902b7" // the span of the test, acting as the caller app
)

// jaegerTrace is the part of Jaeger's /api/traces/{id} answer we check.
type jaegerTrace struct {
	Data []struct {
		Spans []struct {
			TraceID       string `json:"traceID"`
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				TraceID string `json:"traceID"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			Tags []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
			ProcessID string `json:"processID"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

type span struct {
	service, name, id, parent string
	tags                      map[string]string
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mesh starts Jaeger, sentry, the echo app "orders" behind its sidecar
// (OTLP/HTTP export, policy denying frontend /secret/*) and the sidecar of
// "frontend" (OTLP/gRPC export, no app).
func mesh(t *testing.T) (j *harness.Jaeger, caller, callee *harness.Sidecar) {
	j, caller, callee, _ = meshWithGRPC(t, false)
	return j, caller, callee
}

// meshWithGRPC is mesh plus, when withGRPC, the grpcecho app "grpcsvc"
// behind its own sidecar (OTLP/HTTP export).
func meshWithGRPC(t *testing.T, withGRPC bool) (j *harness.Jaeger, caller, callee, grpcCallee *harness.Sidecar) {
	t.Helper()
	b := harness.Build(t)
	j = harness.StartJaeger(t)
	s := harness.StartSentry(t, b, "")
	echo := harness.StartEcho(t, b, "orders-1", 0)

	callerPorts, calleePorts, grpcPorts := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	static := filepath.Join(t.TempDir(), "static.yaml")
	harness.WriteStatic(t, static,
		harness.StaticApp{AppID: "orders", Addresses: []string{calleePorts.InternalAddr()}},
		harness.StaticApp{AppID: "frontend", Addresses: []string{callerPorts.InternalAddr()}},
		harness.StaticApp{AppID: "grpcsvc", Addresses: []string{grpcPorts.InternalAddr()}})

	// No samplingRate: Dapr's default 0.0001 for root spans; the test's
	// sampled traceparent must still be honoured.
	callerCfg := writeFile(t, "caller.yaml", fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: frontend}
spec:
  tracing:
    otel:
      endpointAddress: %q
      protocol: grpc
      isSecure: false
`, j.OTLPGRPCAddr()))
	calleeCfg := writeFile(t, "callee.yaml", fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: orders}
spec:
  tracing:
    otel:
      endpointAddress: %q
      protocol: http
  metrics:
    enabled: true
  accessControl:
    defaultAction: allow
    trustDomain: cluster.local
    policies:
    - appId: frontend
      defaultAction: allow
      trustDomain: cluster.local
      namespace: default
      operations:
      - name: /secret/*
        httpVerb: ['*']
        action: deny
`, j.OTLPHTTPAddr()))

	callee = harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", AppPort: echo.Port, Ports: calleePorts,
		ResolverFile: static, Extra: []string{"--config", calleeCfg}})
	caller = harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend", Ports: callerPorts,
		ResolverFile: static, Extra: []string{"--config", callerCfg}})
	if withGRPC {
		app := harness.StartGRPCEcho(t, b, "grpcsvc-1", 0)
		grpcCfg := writeFile(t, "grpcsvc.yaml", fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: grpcsvc}
spec:
  tracing:
    samplingRate: "0.0001"
    otel:
      endpointAddress: "http://%s"
      protocol: http
`, j.OTLPHTTPAddr()))
		grpcCallee = harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "grpcsvc", AppPort: app.Port, AppProtocol: "grpc",
			Ports: grpcPorts, ResolverFile: static, Extra: []string{"--config", grpcCfg}})
	}
	return j, caller, callee, grpcCallee
}

func call(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestTraceAcrossTwoSidecars(t *testing.T) {
	j, caller, _ := mesh(t)
	tp := "00-" + traceID + "-" + callerSpanID + "-01"
	resp, body := call(t, caller.HTTPURL()+"/v1.0/invoke/orders/method/hello?x=1", map[string]string{"traceparent": tp, "tracestate": "vendor=v1"})
	if resp.StatusCode != 200 {
		t.Fatalf("call: %d %s", resp.StatusCode, body)
	}
	var echoed struct {
		Headers map[string][]string `json:"headers"`
	}
	if err := json.Unmarshal(body, &echoed); err != nil {
		t.Fatalf("echo body: %v: %s", err, body)
	}
	appTP := echoed.Headers["Traceparent"]
	if len(appTP) != 1 || !strings.HasPrefix(appTP[0], "00-"+traceID+"-") || !strings.HasSuffix(appTP[0], "-01") {
		t.Fatalf("the app received traceparent %v, want one in trace %s, sampled", appTP, traceID)
	}
	if ts := echoed.Headers["Tracestate"]; len(ts) != 1 || ts[0] != "vendor=v1" {
		t.Errorf("the app received tracestate %v, want vendor=v1", ts)
	}
	appParent := strings.Split(appTP[0], "-")[2]
	respTP := resp.Header.Get("Traceparent")
	if !strings.HasPrefix(respTP, "00-"+traceID+"-") {
		t.Fatalf("response traceparent %q, want one in trace %s", respTP, traceID)
	}
	respSpan := strings.Split(respTP, "-")[2]

	// The trace, as Jaeger stored it.
	spans := waitTrace(t, j, traceID, 2)
	var client, server *span
	for i := range spans {
		switch spans[i].service {
		case "frontend":
			client = &spans[i]
		case "orders":
			server = &spans[i]
		}
	}
	if client == nil || server == nil {
		t.Fatalf("spans %+v: want one from frontend and one from orders", spans)
	}
	// caller app -> caller sidecar -> callee sidecar -> callee app.
	if client.parent != callerSpanID {
		t.Errorf("client span's parent %q, want the caller app's %s", client.parent, callerSpanID)
	}
	if server.parent != client.id {
		t.Errorf("server span's parent %q, want the client span %s", server.parent, client.id)
	}
	if appParent != server.id {
		t.Errorf("the app's parent span %s, want the callee sidecar's server span %s", appParent, server.id)
	}
	if respSpan != client.id {
		t.Errorf("response traceparent names span %s, want the caller sidecar's span %s", respSpan, client.id)
	}
	for _, c := range []struct {
		s         *span
		key, want string
	}{
		{client, "span.kind", "client"},
		{server, "span.kind", "server"},
		{client, "meshd.source.app_id", "frontend"},
		{client, "meshd.destination.app_id", "orders"},
		{client, "meshd.destination.namespace", "default"},
		{client, "meshd.method", "/hello"},
		{client, "http.request.method", "GET"},
		{client, "http.response.status_code", "200"},
		{client, "meshd.peer.spiffe_id", "spiffe://cluster.local/ns/default/orders"},
		{server, "meshd.peer.spiffe_id", "spiffe://cluster.local/ns/default/frontend"},
		{server, "meshd.source.app_id", "frontend"},
		{server, "meshd.source.namespace", "default"},
		{server, "meshd.destination.app_id", "orders"},
		{server, "http.response.status_code", "200"},
	} {
		if got := c.s.tags[c.key]; got != c.want {
			t.Errorf("%s span tag %s = %q, want %q", c.s.service, c.key, got, c.want)
		}
	}
	if client.name != "CallRemote/orders" || server.name != "CallLocal/orders" {
		t.Errorf("span names %q, %q", client.name, server.name)
	}
}

func TestGRPCTrace(t *testing.T) {
	const grpcTraceID = "0af7651916cd43dd8448eb211c80319c"
	j, caller, _, _ := meshWithGRPC(t, true)
	cc, err := grpc.NewClient(caller.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "dapr-app-id", "grpcsvc",
		"traceparent", "00-"+grpcTraceID+"-"+callerSpanID+"-01")
	var hdr, trl metadata.MD
	if _, err := testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
		t.Fatal(err)
	}
	// grpcecho sends the metadata it received back as trailers.
	appTP := trl.Get("traceparent")
	if len(appTP) != 1 || !strings.HasPrefix(appTP[0], "00-"+grpcTraceID+"-") {
		t.Fatalf("the gRPC app received traceparent %v", appTP)
	}
	respTP := hdr.Get("traceparent")
	if len(respTP) != 1 || !strings.HasPrefix(respTP[0], "00-"+grpcTraceID+"-") {
		t.Fatalf("response header traceparent %v", respTP)
	}
	spans := waitTrace(t, j, grpcTraceID, 2)
	var client, server *span
	for i := range spans {
		switch spans[i].service {
		case "frontend":
			client = &spans[i]
		case "grpcsvc":
			server = &spans[i]
		}
	}
	if client == nil || server == nil {
		t.Fatalf("spans %+v", spans)
	}
	if client.parent != callerSpanID || server.parent != client.id || strings.Split(appTP[0], "-")[2] != server.id ||
		strings.Split(respTP[0], "-")[2] != client.id {
		t.Fatalf("links: client %s (parent %s), server %s (parent %s), app saw %s, response %s",
			client.id, client.parent, server.id, server.parent, appTP[0], respTP[0])
	}
	for _, sp := range []*span{client, server} {
		if sp.tags["rpc.grpc.status_code"] != "0" || sp.tags["meshd.method"] != "/grpc.testing.TestService/UnaryCall" {
			t.Errorf("%s span tags %v", sp.service, sp.tags)
		}
	}
	got, _ := sample(scrape(t, caller.Ports.Metrics), "meshd_requests_sent_total",
		map[string]string{"dst_app_id": "grpcsvc", "protocol": "grpc", "status": "0"})
	if got != 1 {
		t.Errorf("caller: gRPC calls with status 0 = %v, want 1", got)
	}
}

func waitTrace(t *testing.T, j *harness.Jaeger, id string, want int) []span {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // the batch processor exports every 5s
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(j.QueryURL() + "/api/traces/" + id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		if resp.StatusCode == 200 {
			var tr jaegerTrace
			if err := json.Unmarshal(b, &tr); err != nil {
				t.Fatalf("jaeger answer: %v: %s", err, b)
			}
			if len(tr.Data) == 1 && len(tr.Data[0].Spans) >= want {
				var out []span
				for _, s := range tr.Data[0].Spans {
					sp := span{service: tr.Data[0].Processes[s.ProcessID].ServiceName, name: s.OperationName, id: s.SpanID, tags: map[string]string{}}
					for _, r := range s.References {
						if r.RefType == "CHILD_OF" && r.TraceID == id {
							sp.parent = r.SpanID
						}
					}
					for _, tg := range s.Tags {
						sp.tags[tg.Key] = fmt.Sprint(tg.Value)
					}
					out = append(out, sp)
				}
				if len(out) != want {
					t.Fatalf("trace has %d spans, want %d: %s", len(out), want, b)
				}
				return out
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("trace %s not in Jaeger with %d spans after 30s; last answer: %s", id, want, last)
	return nil
}

func scrape(t *testing.T, port int) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape: %s", resp.Status)
	}
	fams, err := metricstest.Parse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

var sample = metricstest.Value

func TestMetricsFollowCalls(t *testing.T) {
	_, caller, callee := mesh(t)
	for i := 0; i < 3; i++ {
		if resp, body := call(t, caller.HTTPURL()+"/v1.0/invoke/orders/method/hello", nil); resp.StatusCode != 200 {
			t.Fatalf("call: %d %s", resp.StatusCode, body)
		}
	}
	if resp, body := call(t, caller.HTTPURL()+"/v1.0/invoke/orders/method/secret/x", nil); resp.StatusCode != 403 {
		t.Fatalf("denied call: %d %s", resp.StatusCode, body)
	}
	// A target name that resolves to nothing must not become a label value.
	if resp, body := call(t, caller.HTTPURL()+"/v1.0/invoke/no-such-app-1234/method/x", nil); resp.StatusCode != 503 {
		t.Fatalf("unknown target: %d %s", resp.StatusCode, body)
	}

	cm, sm := scrape(t, caller.Ports.Metrics), scrape(t, callee.Ports.Metrics)
	now := float64(time.Now().Unix())
	for _, c := range []struct {
		who    string
		fams   map[string]*dto.MetricFamily
		name   string
		labels map[string]string
		want   float64
	}{
		{"caller", cm, "meshd_requests_sent_total", map[string]string{"src_app_id": "frontend", "dst_app_id": "orders", "dst_namespace": "default", "protocol": "http", "status": "200"}, 3},
		{"caller", cm, "meshd_requests_sent_total", map[string]string{"dst_app_id": "orders", "status": "403"}, 1},
		{"caller", cm, "meshd_requests_sent_total", map[string]string{"dst_app_id": "unknown", "status": "503"}, 1},
		{"caller", cm, "meshd_request_sent_duration_seconds", map[string]string{"dst_app_id": "orders"}, 4},
		{"caller", cm, "meshd_discovery_endpoints", map[string]string{"app_id": "orders", "namespace": "default"}, 1},
		{"caller", cm, "meshd_discovery_endpoints_ready", map[string]string{"app_id": "orders"}, 1},
		{"callee", sm, "meshd_requests_received_total", map[string]string{"src_app_id": "frontend", "src_namespace": "default", "dst_app_id": "orders", "status": "200"}, 3},
		{"callee", sm, "meshd_requests_received_total", map[string]string{"src_app_id": "frontend", "status": "403"}, 1},
		{"callee", sm, "meshd_request_received_duration_seconds", map[string]string{"src_app_id": "frontend"}, 4},
		{"callee", sm, "meshd_policy_decisions_total", map[string]string{"decision": "deny"}, 1},
		{"callee", sm, "meshd_policy_decisions_total", map[string]string{"decision": "allow"}, 3},
		{"callee", sm, "meshd_cert_rotations_total", nil, 0},
	} {
		got, ok := sample(c.fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s: %s%v = %v (present %v), want %v", c.who, c.name, c.labels, got, ok, c.want)
		}
	}
	for who, fams := range map[string]map[string]*dto.MetricFamily{"caller": cm, "callee": sm} {
		exp, ok := sample(fams, "meshd_cert_expiry_timestamp_seconds", nil)
		if !ok || exp <= now || exp > now+25*3600 {
			t.Errorf("%s: cert expiry %v, want in the next day (now %v)", who, exp, now)
		}
	}
	for _, m := range cm["meshd_requests_sent_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if strings.Contains(l.GetValue(), "no-such-app") || strings.Contains(l.GetValue(), "/") {
				t.Errorf("unbounded label value %s=%q", l.GetName(), l.GetValue())
			}
		}
	}
}

// TestTraceFromEnvironment configures both sidecars only through the
// standard OTEL_EXPORTER_OTLP_* variables (no spec.tracing): the caller
// over OTLP/gRPC, the callee over OTLP/HTTP.
func TestTraceFromEnvironment(t *testing.T) {
	const envTraceID = "5c2f0a1b3d4e5f60718293a4b5c6d7e8"
	b := harness.Build(t)
	j := harness.StartJaeger(t)
	s := harness.StartSentry(t, b, "")
	echo := harness.StartEcho(t, b, "orders-env", 0)
	callerPorts, calleePorts := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	static := filepath.Join(t.TempDir(), "static.yaml")
	harness.WriteStatic(t, static, harness.StaticApp{AppID: "orders", Addresses: []string{calleePorts.InternalAddr()}})

	// The children inherit the environment at start.
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+j.OTLPHTTPAddr())
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", AppPort: echo.Port, Ports: calleePorts, ResolverFile: static})
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+j.OTLPGRPCAddr())
	caller := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend", Ports: callerPorts, ResolverFile: static})

	resp, body := call(t, caller.HTTPURL()+"/v1.0/invoke/orders/method/env", map[string]string{"traceparent": "00-" + envTraceID + "-" + callerSpanID + "-01"})
	if resp.StatusCode != 200 {
		t.Fatalf("call: %d %s", resp.StatusCode, body)
	}
	spans := waitTrace(t, j, envTraceID, 2)
	byService := map[string]span{}
	for _, sp := range spans {
		byService[sp.service] = sp
	}
	c, sv := byService["frontend"], byService["orders"]
	if c.id == "" || sv.id == "" || c.parent != callerSpanID || sv.parent != c.id {
		t.Fatalf("spans %+v", spans)
	}
}
