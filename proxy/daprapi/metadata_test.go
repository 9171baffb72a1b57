package daprapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func testMetadata() *runtimev1pb.GetMetadataResponse {
	return &runtimev1pb.GetMetadataResponse{
		Id:              "orders",
		RuntimeVersion:  "meshd-test",
		EnabledFeatures: []string{"ServiceInvocation", "mTLS"},
		ExtendedMetadata: map[string]string{
			ExtRuntimeVersion: "meshd-test", ExtNamespace: "shop",
			ExtSPIFFEID: "spiffe://cluster.local/ns/shop/orders", ExtSVIDExpiry: "2026-12-06T08:00:00Z",
		},
		AppConnectionProperties: &runtimev1pb.AppConnectionProperties{
			Port: 8080, Protocol: "http", ChannelAddress: "127.0.0.1",
			Health: &runtimev1pb.AppConnectionHealthProperties{HealthCheckPath: "/healthz", HealthProbeInterval: "5s", HealthProbeTimeout: "500ms", HealthThreshold: 3},
		},
		ActorRuntime: &runtimev1pb.ActorRuntime{RuntimeStatus: runtimev1pb.ActorRuntime_DISABLED},
	}
}

// TestGetMetadataGRPC: GetMetadata answers the report as it is, through a
// real gRPC client; without WithMetadata it is Unimplemented.
func TestGetMetadataGRPC(t *testing.T) {
	want := testMetadata()
	c := rawClient(t, startServer(t, WithMetadata(testMetadata)))
	got, err := c.GetMetadata(context.Background(), &runtimev1pb.GetMetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("GetMetadata = %v, want %v", got, want)
	}

	bare := rawClient(t, startServer(t))
	_, err = bare.GetMetadata(context.Background(), &runtimev1pb.GetMetadataRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("without WithMetadata: err = %v, want Unimplemented", err)
	}
}

// TestMetadataJSON: daprd's JSON field names, lists of absent building
// blocks present and empty, the app connection and its health options.
func TestMetadataJSON(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    *runtimev1pb.GetMetadataResponse
		check func(t *testing.T, m map[string]any)
	}{
		{"full", testMetadata(), func(t *testing.T, m map[string]any) {
			if m["id"] != "orders" || m["runtimeVersion"] != "meshd-test" {
				t.Errorf("id, runtimeVersion = %v, %v", m["id"], m["runtimeVersion"])
			}
			ac := m["appConnectionProperties"].(map[string]any)
			if ac["port"] != 8080.0 || ac["protocol"] != "http" || ac["channelAddress"] != "127.0.0.1" {
				t.Errorf("appConnectionProperties = %v", ac)
			}
			h := ac["health"].(map[string]any)
			if h["healthCheckPath"] != "/healthz" || h["healthProbeInterval"] != "5s" || h["healthThreshold"] != 3.0 {
				t.Errorf("health = %v", h)
			}
			ext := m["extended"].(map[string]any)
			if ext[ExtSPIFFEID] != "spiffe://cluster.local/ns/shop/orders" || ext[ExtNamespace] != "shop" || ext[ExtSVIDExpiry] == nil {
				t.Errorf("extended = %v", ext)
			}
			if ar := m["actorRuntime"].(map[string]any); ar["runtimeStatus"] != "DISABLED" || ar["hostReady"] != false {
				t.Errorf("actorRuntime = %v", ar)
			}
			if f := m["enabledFeatures"].([]any); len(f) != 2 {
				t.Errorf("enabledFeatures = %v", f)
			}
		}},
		{"no app", &runtimev1pb.GetMetadataResponse{Id: "caller"}, func(t *testing.T, m map[string]any) {
			ac := m["appConnectionProperties"].(map[string]any)
			if len(ac) != 0 {
				t.Errorf("appConnectionProperties of a sidecar without app = %v, want {}", ac)
			}
			if f, ok := m["enabledFeatures"].([]any); !ok || len(f) != 0 {
				t.Errorf("enabledFeatures = %v, want []", m["enabledFeatures"])
			}
		}},
		{"components listed", &runtimev1pb.GetMetadataResponse{Id: "x", RegisteredComponents: []*runtimev1pb.RegisteredComponents{{Name: "s", Type: "state.redis", Version: "v1"}}}, func(t *testing.T, m map[string]any) {
			c := m["components"].([]any)
			if len(c) != 1 || c[0].(map[string]any)["type"] != "state.redis" {
				t.Errorf("components = %v", c)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			MetadataHandler(func() *runtimev1pb.GetMetadataResponse { return tc.in }, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1.0/metadata", nil))
			if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			var m map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"actors", "components", "subscriptions", "httpEndpoints", "enabledFeatures"} {
				if _, ok := m[k].([]any); !ok {
					t.Errorf("%s = %v, want a list", k, m[k])
				}
			}
			if _, ok := m["extended"].(map[string]any); !ok {
				t.Errorf("extended = %v, want an object", m["extended"])
			}
			tc.check(t, m)
		})
	}
	// HEAD: headers, no body.
	rec := httptest.NewRecorder()
	MetadataHandler(testMetadata, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/v1.0/metadata", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d with %d body bytes", rec.Code, rec.Body.Len())
	}
}

// TestQueryInMethod: a method holding a query (the JavaScript SDK's only
// way to send one) reaches the outbound handler split into path and query.
func TestQueryInMethod(t *testing.T) {
	c := rawClient(t, startServer(t))
	get := &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_GET}
	for _, tc := range []struct{ method, qs, wantURI string }{
		{"echo?x=1", "", prefix + "echo?x=1"},
		{"/echo?x=1&y=a%20b", "", prefix + "echo?x=1&y=a%20b"},
		{"a/b?", "", prefix + "a/b"},
		{"echo?x=1?y", "", prefix + "echo?x=1?y"},
		{"echo", "x=2", prefix + "echo?x=2"},
	} {
		ext := &commonv1pb.HTTPExtension{Verb: get.Verb, Querystring: tc.qs}
		resp, err := c.InvokeService(context.Background(), &runtimev1pb.InvokeServiceRequest{Id: "app",
			Message: &commonv1pb.InvokeRequest{Method: tc.method, HttpExtension: ext}})
		if err != nil {
			t.Fatalf("%q: %v", tc.method, err)
		}
		if e := decode(t, resp.GetData().GetValue()); e.RequestURI != tc.wantURI {
			t.Errorf("%q: request URI %q, want %q", tc.method, e.RequestURI, tc.wantURI)
		}
	}
}

// TestAttributes: PUT /v1.0/metadata/{key} and SetMetadata set attributes
// that GET and GetMetadata report in extended; bad keys and values are
// refused, the sidecar's own keys cannot be overwritten.
func TestAttributes(t *testing.T) {
	a := new(Attributes)
	h := MetadataHandler(testMetadata, a)
	put := func(key, value string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/v1.0/metadata/"+key, strings.NewReader(value)))
		return rec.Code
	}
	for _, tc := range []struct {
		key, value string
		want       int
	}{
		{"team", "payments", 204},
		{"team", "orders", 204},
		{"gone", "x", 204},
		{"gone", "", 204},
		{"", "x", 400},
		{ExtRuntimeVersion, "evil", 400},
		{"meshd.spiffeId", "spiffe://evil", 400},
		{strings.Repeat("k", MaxAttributeKey+1), "x", 400},
		{"big", strings.Repeat("v", MaxAttributeLength+1), 400},
	} {
		if got := put(tc.key, tc.value); got != tc.want {
			t.Errorf("PUT %q = %q: %d, want %d", tc.key, tc.value, got, tc.want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1.0/metadata", nil))
	var m MetadataResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m.Extended["team"] != "orders" || m.Extended["gone"] != "" || m.Extended[ExtSPIFFEID] != "spiffe://cluster.local/ns/shop/orders" {
		t.Errorf("extended = %v", m.Extended)
	}
	for i := 0; i < MaxAttributes; i++ {
		_ = a.Set("k"+strings.Repeat("x", i), "v")
	}
	if err := a.Set("one-too-many", "v"); err == nil {
		t.Errorf("more than %d attributes accepted", MaxAttributes)
	}

	c := rawClient(t, startServer(t, WithMetadata(testMetadata), WithAttributes(new(Attributes))))
	ctx := context.Background()
	if _, err := c.SetMetadata(ctx, &runtimev1pb.SetMetadataRequest{Key: "zone", Value: "eu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMetadata(ctx, &runtimev1pb.SetMetadataRequest{Key: "meshd.mtls", Value: "off"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("SetMetadata of meshd.mtls: %v, want InvalidArgument", err)
	}
	got, err := c.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
	if err != nil || got.GetExtendedMetadata()["zone"] != "eu" {
		t.Errorf("GetMetadata after SetMetadata: %v, %v", got.GetExtendedMetadata(), err)
	}
}
