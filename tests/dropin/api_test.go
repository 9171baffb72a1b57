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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

func grpcConn(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// testMetadata: GET /v1.0/metadata and gRPC GetMetadata answer what the
// sidecar really is, in daprd's shape.
func testMetadata(t *testing.T, m *mesh) {
	for _, tc := range []struct {
		name    string
		url     string
		grpc    string
		appID   string
		appPort int
	}{
		{"with app", m.server.HTTPURL(), m.server.GRPCAddr(), appServer, m.app.port},
		{"without app", m.js.HTTPURL(), m.js.GRPCAddr(), appJS, 0},
	} {
		t.Run(tc.name+"/http", func(t *testing.T) {
			code, h, body := do(t, nil, http.MethodGet, tc.url+"/v1.0/metadata", nil, "")
			if code != http.StatusOK || h.Get("Content-Type") != "application/json" {
				t.Fatalf("GET /v1.0/metadata: %d %q %s", code, h.Get("Content-Type"), body)
			}
			var md struct {
				ID              string            `json:"id"`
				RuntimeVersion  string            `json:"runtimeVersion"`
				EnabledFeatures []string          `json:"enabledFeatures"`
				Extended        map[string]string `json:"extended"`
				Components      []any             `json:"components"`
				Subscriptions   []any             `json:"subscriptions"`
				HTTPEndpoints   []any             `json:"httpEndpoints"`
				Actors          []any             `json:"actors"`
				AppConnection   struct {
					Port           int    `json:"port"`
					Protocol       string `json:"protocol"`
					ChannelAddress string `json:"channelAddress"`
				} `json:"appConnectionProperties"`
				ActorRuntime struct {
					Status string `json:"runtimeStatus"`
				} `json:"actorRuntime"`
			}
			if err := json.Unmarshal(body, &md); err != nil {
				t.Fatalf("%v: %s", err, body)
			}
			if md.ID != tc.appID || !strings.HasPrefix(md.RuntimeVersion, "meshd-") {
				t.Errorf("id %q runtimeVersion %q", md.ID, md.RuntimeVersion)
			}
			if want := "spiffe://cluster.local/ns/default/" + tc.appID; md.Extended["meshd.spiffeId"] != want {
				t.Errorf("extended meshd.spiffeId = %q, want %q", md.Extended["meshd.spiffeId"], want)
			}
			exp, err := time.Parse(time.RFC3339, md.Extended["meshd.svidExpiry"])
			if err != nil || !exp.After(time.Now()) || exp.After(time.Now().Add(25*time.Hour)) {
				t.Errorf("extended meshd.svidExpiry = %q (%v): want the certificate's expiry, in the future", md.Extended["meshd.svidExpiry"], err)
			}
			if md.Extended["meshd.namespace"] != "default" || md.Extended["daprRuntimeVersion"] != md.RuntimeVersion {
				t.Errorf("extended = %v", md.Extended)
			}
			if md.Components == nil || len(md.Components) != 0 || md.Subscriptions == nil || md.HTTPEndpoints == nil || md.Actors == nil {
				t.Errorf("components %v subscriptions %v httpEndpoints %v actors %v: want empty lists", md.Components, md.Subscriptions, md.HTTPEndpoints, md.Actors)
			}
			if md.ActorRuntime.Status != "DISABLED" {
				t.Errorf("actorRuntime.runtimeStatus = %q", md.ActorRuntime.Status)
			}
			if !strings.Contains(strings.Join(md.EnabledFeatures, ","), "mTLS") {
				t.Errorf("enabledFeatures = %v, want mTLS among them", md.EnabledFeatures)
			}
			if tc.appPort == 0 {
				if md.AppConnection.Port != 0 || md.AppConnection.Protocol != "" {
					t.Errorf("appConnectionProperties of a sidecar without app = %+v", md.AppConnection)
				}
				return
			}
			if md.AppConnection.Port != tc.appPort || md.AppConnection.Protocol != "http" || md.AppConnection.ChannelAddress != "127.0.0.1" {
				t.Errorf("appConnectionProperties = %+v, want port %d http 127.0.0.1", md.AppConnection, tc.appPort)
			}
		})
		t.Run(tc.name+"/grpc", func(t *testing.T) {
			c := runtimev1pb.NewDaprClient(grpcConn(t, tc.grpc))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			md, err := c.GetMetadata(ctx, &runtimev1pb.GetMetadataRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if md.GetId() != tc.appID || md.GetExtendedMetadata()["meshd.spiffeId"] != "spiffe://cluster.local/ns/default/"+tc.appID {
				t.Errorf("GetMetadata = %v", md)
			}
			if got := int(md.GetAppConnectionProperties().GetPort()); got != tc.appPort {
				t.Errorf("app port %d, want %d", got, tc.appPort)
			}
			if md.GetActorRuntime().GetRuntimeStatus() != runtimev1pb.ActorRuntime_DISABLED || len(md.GetRegisteredComponents()) != 0 {
				t.Errorf("actor runtime %v components %v", md.GetActorRuntime(), md.GetRegisteredComponents())
			}
		})
	}
}

// testNotSupported: Dapr's other building blocks answer a clear
// ERR_NOT_SUPPORTED that names meshd, not a misleading invoke error.
func testNotSupported(t *testing.T, m *mesh) {
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1.0/state/statestore/key1"},
		{http.MethodPost, "/v1.0/publish/pubsub/orders"},
		{http.MethodPost, "/v1.0/bindings/b"},
		{http.MethodGet, "/v1.0/secrets/vault/s"},
		{http.MethodDelete, "/v1.0/metadata"},
		{http.MethodPost, "/v1.0/actors/a/1/method/m"},
		{http.MethodGet, "/v1.0-alpha1/configuration/c"},
		{http.MethodPost, "/v1.0-beta1/workflows/dapr/wf/start"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			before := m.app.hits.Load()
			code, h, body := do(t, nil, tc.method, m.js.HTTPURL()+tc.path, nil, "")
			var e errBody
			if err := json.Unmarshal(body, &e); err != nil || code != http.StatusNotImplemented || e.ErrorCode != "ERR_NOT_SUPPORTED" ||
				!strings.Contains(e.Message, "meshd") || h.Get("Meshd-Error-Code") != "ERR_NOT_SUPPORTED" {
				t.Errorf("%d %s (%v), want 501 ERR_NOT_SUPPORTED naming meshd", code, body, err)
			}
			if m.app.hits.Load() != before {
				t.Error("the call reached an app")
			}
		})
	}
	t.Run("grpc GetState", func(t *testing.T) {
		c := runtimev1pb.NewDaprClient(grpcConn(t, m.js.GRPCAddr()))
		_, err := c.GetState(context.Background(), &runtimev1pb.GetStateRequest{StoreName: "s", Key: "k"})
		if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "ERR_NOT_SUPPORTED") ||
			!strings.Contains(st.Message(), "meshd") || !strings.Contains(st.Message(), "GetState") {
			t.Errorf("GetState: %v, want Unimplemented ERR_NOT_SUPPORTED naming meshd and the method", err)
		}
	})
}

// invokeGRPC calls InvokeService on addr with the metadata kv.
func invokeGRPC(t *testing.T, target, app, method string, kv ...string) (*commonv1pb.InvokeResponse, error) {
	t.Helper()
	c := runtimev1pb.NewDaprClient(grpcConn(t, target))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(kv) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	}
	return c.InvokeService(ctx, &runtimev1pb.InvokeServiceRequest{Id: app, Message: &commonv1pb.InvokeRequest{
		Method: method, Data: &anypb.Any{Value: []byte("{}")}, ContentType: "application/json",
		HttpExtension: &commonv1pb.HTTPExtension{Verb: commonv1pb.HTTPExtension_POST},
	}})
}
