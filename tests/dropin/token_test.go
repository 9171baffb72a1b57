package dropin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	dapr "github.com/dapr/go-sdk/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testTokens: every case of DAPR_API_TOKEN on the HTTP and gRPC ports of a
// guarded sidecar, and APP_API_TOKEN as the app sees it.
func testTokens(t *testing.T, m *mesh) {
	invoke := m.guarded.HTTPURL() + "/v1.0/invoke/" + appServer + "/method/tok"
	for _, tc := range []struct {
		name   string
		method string
		url    string
		header map[string]string
		want   int  // status
		app    bool // the app is reached
	}{
		{"no token", http.MethodGet, invoke, nil, 401, false},
		{"wrong token", http.MethodGet, invoke, map[string]string{"dapr-api-token": "caller-secret-0123456789-abcdefghiX"}, 401, false},
		{"token prefix", http.MethodGet, invoke, map[string]string{"dapr-api-token": apiToken[:10]}, 401, false},
		{"token and more", http.MethodGet, invoke, map[string]string{"dapr-api-token": apiToken + "x"}, 401, false},
		{"empty token", http.MethodGet, invoke, map[string]string{"dapr-api-token": ""}, 401, false},
		{"token in another header", http.MethodGet, invoke, map[string]string{"Authorization": "Bearer " + apiToken}, 401, false},
		{"right token", http.MethodGet, invoke, map[string]string{"dapr-api-token": apiToken}, 200, true},
		{"right token, POST", http.MethodPost, invoke, map[string]string{"dapr-api-token": apiToken, "Content-Type": "application/json"}, 200, true},
		{"header form, no token", http.MethodGet, m.guarded.HTTPURL() + "/tok", map[string]string{"dapr-app-id": appServer}, 401, false},
		{"header form, right token", http.MethodGet, m.guarded.HTTPURL() + "/tok", map[string]string{"dapr-app-id": appServer, "dapr-api-token": apiToken}, 200, true},
		{"healthz path with dapr-app-id, no token", http.MethodGet, m.guarded.HTTPURL() + "/v1.0/healthz", map[string]string{"dapr-app-id": appServer}, 401, false},
		{"metadata, no token", http.MethodGet, m.guarded.HTTPURL() + "/v1.0/metadata", nil, 401, false},
		{"metadata, right token", http.MethodGet, m.guarded.HTTPURL() + "/v1.0/metadata", map[string]string{"dapr-api-token": apiToken}, 200, false},
		{"healthz, no token", http.MethodGet, m.guarded.HTTPURL() + "/v1.0/healthz", nil, 204, false},
		{"healthz/outbound, no token", http.MethodGet, m.guarded.HTTPURL() + "/v1.0/healthz/outbound", nil, 204, false},
		{"healthz, POST, no token", http.MethodPost, m.guarded.HTTPURL() + "/v1.0/healthz", nil, 401, false},
		{"not supported API, no token", http.MethodGet, m.guarded.HTTPURL() + "/v1.0/state/s/k", nil, 401, false},
	} {
		t.Run("http/"+tc.name, func(t *testing.T) {
			before := m.app.hits.Load()
			code, h, body := do(t, nil, tc.method, tc.url, tc.header, "")
			if code != tc.want {
				t.Fatalf("%d %s, want %d", code, body, tc.want)
			}
			if reached := m.app.hits.Load() != before; reached != tc.app {
				t.Errorf("app reached: %v, want %v", reached, tc.app)
			}
			if tc.want == 401 {
				var e errBody
				if err := json.Unmarshal(body, &e); err != nil || e.ErrorCode != "ERR_API_TOKEN" || h.Get("Meshd-Error-Code") != "ERR_API_TOKEN" {
					t.Errorf("body %s: want JSON errorCode ERR_API_TOKEN", body)
				}
				if strings.Contains(string(body), apiToken[:10]) {
					t.Errorf("the answer echoes the token: %s", body)
				}
			}
			if tc.app {
				var e echoed
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatal(err)
				}
				// The caller's token never leaves its sidecar; the app
				// gets its own sidecar's APP_API_TOKEN.
				if got := e.Headers["Dapr-Api-Token"]; len(got) != 1 || got[0] != appAPIToken {
					t.Errorf("the app got dapr-api-token %q, want only APP_API_TOKEN", got)
				}
			}
		})
	}

	// A caller app that forges dapr-api-token through a sidecar without a
	// token of its own: the app sees only its sidecar's APP_API_TOKEN.
	t.Run("forged token toward the app", func(t *testing.T) {
		code, _, body := do(t, nil, http.MethodGet, m.js.HTTPURL()+"/v1.0/invoke/"+appServer+"/method/forge",
			map[string]string{"dapr-api-token": "forged", "DAPR_API_TOKEN": "forged2"}, "")
		var e echoed
		if err := json.Unmarshal(body, &e); err != nil || code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		for k, v := range e.Headers {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "dapr-api-token") && (len(v) != 1 || v[0] != appAPIToken) {
				t.Errorf("the app got %s: %q", k, v)
			}
		}
	})

	for _, tc := range []struct {
		name string
		kv   []string
		want codes.Code
		app  bool
	}{
		{"no token", nil, codes.Unauthenticated, false},
		{"wrong token", []string{"dapr-api-token", "nope"}, codes.Unauthenticated, false},
		{"two tokens", []string{"dapr-api-token", apiToken, "dapr-api-token", apiToken}, codes.Unauthenticated, false},
		{"right token", []string{"dapr-api-token", apiToken}, codes.OK, true},
	} {
		t.Run("grpc/"+tc.name, func(t *testing.T) {
			before := m.app.hits.Load()
			_, err := invokeGRPC(t, m.guarded.GRPCAddr(), appServer, "tok", tc.kv...)
			if status.Code(err) != tc.want {
				t.Fatalf("InvokeService: %v, want %v", err, tc.want)
			}
			if tc.want == codes.Unauthenticated && !strings.Contains(status.Convert(err).Message(), "ERR_API_TOKEN") {
				t.Errorf("message %q does not name ERR_API_TOKEN", status.Convert(err).Message())
			}
			if reached := m.app.hits.Load() != before; reached != tc.app {
				t.Errorf("app reached: %v, want %v", reached, tc.app)
			}
		})
	}
	t.Run("grpc/GetMetadata, no token", func(t *testing.T) {
		c := runtimev1pb.NewDaprClient(grpcConn(t, m.guarded.GRPCAddr()))
		if _, err := c.GetMetadata(context.Background(), &runtimev1pb.GetMetadataRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("GetMetadata without token: %v, want Unauthenticated", err)
		}
		ctx := metadata.AppendToOutgoingContext(context.Background(), "dapr-api-token", apiToken)
		if md, err := c.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{}); err != nil || md.GetId() != appGuarded {
			t.Errorf("GetMetadata with token: %v, %v", md, err)
		}
	})
}

// testGoSDK: the Dapr Go SDK with DAPR_API_TOKEN set works against a
// guarded sidecar (over TCP and the unix socket), and is refused without.
func testGoSDK(t *testing.T, m *mesh) {
	call := func(t *testing.T, c dapr.Client) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := c.InvokeMethodWithContent(ctx, appServer, "sdk/go?q=1", http.MethodPut,
			&dapr.DataContent{ContentType: "application/json", Data: []byte(`{"a":1}`)})
		if err != nil {
			return err
		}
		var e echoed
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatal(err)
		}
		if e.Method != http.MethodPut || e.Path != "/sdk/go" || e.RawQuery != "q=1" || e.Body != `{"a":1}` || e.CallerAppID == "" {
			t.Errorf("the app saw %+v", e)
		}
		return nil
	}
	// The SDK reads DAPR_API_TOKEN from the environment when it connects.
	t.Setenv("DAPR_API_TOKEN", apiToken)
	for _, tc := range []struct {
		name string
		dial func() (dapr.Client, error)
	}{
		{"tcp", func() (dapr.Client, error) { return dapr.NewClientWithAddress(m.guarded.GRPCAddr()) }},
		{"unix socket", func() (dapr.Client, error) { return dapr.NewClientWithSocket(m.grpcSocket()) }},
	} {
		t.Run(tc.name+"/with token", func(t *testing.T) {
			c, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := call(t, c); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("tcp/without token", func(t *testing.T) {
		os.Unsetenv("DAPR_API_TOKEN")
		// The same SDK client code, without the token.
		c2, err := dapr.NewClientWithAddress(m.guarded.GRPCAddr())
		if err == nil {
			defer c2.Close()
			err = call(t, c2)
		}
		if status.Code(err) != codes.Unauthenticated && (err == nil || !strings.Contains(err.Error(), "ERR_API_TOKEN")) {
			t.Fatalf("without DAPR_API_TOKEN: %v, want Unauthenticated", err)
		}
	})
}
