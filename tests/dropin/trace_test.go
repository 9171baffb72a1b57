package dropin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshd/meshd/telemetry/tracing"
)

// testTraceparent: with no tracing configured, every answer to the caller
// carries a traceparent; a caller's trace context is kept (its trace ID
// reaches the app and comes back).
func testTraceparent(t *testing.T, m *mesh) {
	const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	url := m.js.HTTPURL() + "/v1.0/invoke/" + appServer + "/method/trace"
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"new trace", nil},
		{"caller's trace", map[string]string{"traceparent": parent, "tracestate": "vendor=x"}},
	} {
		t.Run("http/"+tc.name, func(t *testing.T) {
			code, h, body := do(t, nil, http.MethodGet, url, tc.header, "")
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			tid, _, _, ok := tracing.ParseTraceparent(h.Get("Traceparent"))
			if !ok {
				t.Fatalf("answer traceparent %q: want a valid one", h.Get("Traceparent"))
			}
			var e echoed
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatal(err)
			}
			appTID, _, _, ok := tracing.ParseTraceparent(strings.Join(e.Headers["Traceparent"], ","))
			if !ok || appTID != tid {
				t.Errorf("the app got traceparent %q; the answer names trace %s", e.Headers["Traceparent"], tid)
			}
			if tc.header != nil {
				if tid.String() != "0af7651916cd43dd8448eb211c80319c" {
					t.Errorf("trace %s, want the caller's", tid)
				}
				if got := strings.Join(e.Headers["Tracestate"], ","); got != "vendor=x" {
					t.Errorf("the app got tracestate %q", got)
				}
			}
		})
	}
	// Answers the sidecar gives without forwarding name a trace too.
	for _, tc := range []struct {
		name, url string
		header    map[string]string
		status    int
	}{
		{"refused token", m.guarded.HTTPURL() + "/v1.0/invoke/" + appServer + "/method/x", nil, 401},
		{"refused token, caller's trace", m.guarded.HTTPURL() + "/v1.0/invoke/" + appServer + "/method/x", map[string]string{"traceparent": parent}, 401},
		{"API not supported", m.js.HTTPURL() + "/v1.0/state/s/k", nil, 501},
		{"malformed target", m.js.HTTPURL() + "/v1.0/invoke/a$b/method/x", map[string]string{"traceparent": parent}, 400},
	} {
		t.Run("sidecar answer/"+tc.name, func(t *testing.T) {
			code, h, body := do(t, nil, http.MethodGet, tc.url, tc.header, "")
			if code != tc.status {
				t.Fatalf("%d %s, want %d", code, body, tc.status)
			}
			got := h.Get("Traceparent")
			if _, _, _, ok := tracing.ParseTraceparent(got); !ok {
				t.Fatalf("traceparent %q: want a valid one", got)
			}
			if tc.header != nil && got != parent {
				t.Errorf("traceparent %q, want the caller's %q", got, parent)
			}
		})
	}
	t.Run("grpc InvokeService", func(t *testing.T) {
		c := runtimev1pb.NewDaprClient(grpcConn(t, m.js.GRPCAddr()))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var hdr metadata.MD
		_, err := c.InvokeService(ctx, &runtimev1pb.InvokeServiceRequest{Id: appServer, Message: &commonv1pb.InvokeRequest{
			Method: "trace", Data: &anypb.Any{}, HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_GET}}}, grpc.Header(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, ok := tracing.ParseTraceparent(strings.Join(hdr.Get("traceparent"), ",")); !ok {
			t.Errorf("InvokeService header traceparent %q: want a valid one", hdr.Get("traceparent"))
		}
	})
}
