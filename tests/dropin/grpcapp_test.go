package dropin_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	daprd "github.com/dapr/go-sdk/service/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startGRPCApp runs a gRPC app made with the Dapr Go SDK's service package
// (it serves AppCallback/OnInvoke and checks APP_API_TOKEN as Dapr apps
// do) and returns its port.
func startGRPCApp(t *testing.T, m *mesh) int {
	t.Helper()
	m.grpcHits = new(atomic.Int64)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The SDK reads APP_API_TOKEN when the service is made; the sidecars
	// started later must not inherit it.
	t.Setenv("APP_API_TOKEN", appAPIToken)
	s := daprd.NewServiceWithListener(l)
	os.Unsetenv("APP_API_TOKEN")
	err = s.AddServiceInvocationHandler("orders", func(_ context.Context, in *common.InvocationEvent) (*common.Content, error) {
		m.grpcHits.Add(1)
		b, _ := json.Marshal(map[string]string{"verb": in.Verb, "query": in.QueryString, "contentType": in.ContentType, "data": string(in.Data)})
		return &common.Content{ContentType: "application/json", Data: b}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.AddServiceInvocationHandler("missing", func(context.Context, *common.InvocationEvent) (*common.Content, error) {
		return nil, status.Error(codes.NotFound, "order 7 not found")
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Start() }()
	t.Cleanup(func() { _ = s.GracefulStop() })
	return l.Addr().(*net.TCPAddr).Port
}

// testGRPCApp: InvokeService and the HTTP invoke API to an app with
// --app-protocol grpc reach its AppCallback/OnInvoke (the Dapr Go SDK's
// service), with the verb, query, content type, body and APP_API_TOKEN;
// the app's gRPC status comes back; an unknown app is named.
func testGRPCApp(t *testing.T, m *mesh) {
	c, err := dapr.NewClientWithAddress(m.js.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("Go SDK InvokeMethodWithContent", func(t *testing.T) {
		before := m.grpcHits.Load()
		out, err := c.InvokeMethodWithContent(ctx, appGRPC, "orders?id=7", "post",
			&dapr.DataContent{ContentType: "application/json", Data: []byte(`{"n":1}`)})
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		if got["verb"] != "POST" || got["query"] != "id=7" || got["contentType"] != "application/json" || got["data"] != `{"n":1}` {
			t.Errorf("OnInvoke saw %v", got)
		}
		if m.grpcHits.Load() != before+1 {
			t.Error("the app's handler did not run once")
		}
	})
	t.Run("the app's status", func(t *testing.T) {
		_, err := c.InvokeMethod(ctx, appGRPC, "missing", "get")
		if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "order 7 not found") {
			t.Errorf("%v, want the app's NotFound", err)
		}
	})
	t.Run("HTTP invoke API", func(t *testing.T) {
		code, _, body := do(t, nil, http.MethodPut, m.js.HTTPURL()+"/v1.0/invoke/"+appGRPC+"/method/orders?id=8",
			map[string]string{"Content-Type": "text/plain"}, "hi")
		var got map[string]string
		if err := json.Unmarshal(body, &got); err != nil || code != 200 || got["verb"] != "PUT" || got["query"] != "id=8" || got["data"] != "hi" {
			t.Errorf("%d %s", code, body)
		}
		code, h, body := do(t, nil, http.MethodGet, m.js.HTTPURL()+"/v1.0/invoke/"+appGRPC+"/method/missing", nil, "")
		if code != http.StatusNotFound || h.Get("Meshd-Grpc-Status") != "5" || !strings.Contains(string(body), "order 7 not found") {
			t.Errorf("the app's NotFound over HTTP: %d %v %s", code, h, body)
		}
	})
	t.Run("unknown app", func(t *testing.T) {
		_, err := c.InvokeMethod(ctx, appUnknown, "orders", "get")
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), appUnknown) {
			t.Errorf("%v, want Unavailable naming %q", err, appUnknown)
		}
	})
}
