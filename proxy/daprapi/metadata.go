package daprapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MetadataPath is the HTTP/2 path of Dapr's gRPC metadata API.
const MetadataPath = runtimev1pb.Dapr_GetMetadata_FullMethodName

// ServicePrefix starts the path of every method of Dapr's gRPC API
// (dapr.proto.runtime.v1.Dapr).
const ServicePrefix = "/dapr.proto.runtime.v1.Dapr/"

// Keys of the extended metadata meshd reports beside Dapr's fields.
const (
	ExtRuntimeVersion = "daprRuntimeVersion" // as daprd: the runtime's version
	ExtNamespace      = "meshd.namespace"
	ExtSPIFFEID       = "meshd.spiffeId"
	ExtSVIDExpiry     = "meshd.svidExpiry" // RFC 3339, UTC
	ExtAppHealth      = "meshd.appHealth"  // healthy, unhealthy or unchecked
	ExtMTLS           = "meshd.mtls"       // on or off
)

// MetadataFunc reports what the sidecar is now: it is called once per
// metadata request (GetMetadata, GET /v1.0/metadata) and must return a new
// message each time.
type MetadataFunc func() *runtimev1pb.GetMetadataResponse

// WithMetadata makes the handler answer Dapr's GetMetadata with fn's report
// (without it, GetMetadata answers Unimplemented).
func WithMetadata(fn MetadataFunc) Option {
	return func(c *config) { c.metadata = fn }
}

// GetMetadata implements dapr.proto.runtime.v1.Dapr/GetMetadata.
func (s *service) GetMetadata(context.Context, *runtimev1pb.GetMetadataRequest) (*runtimev1pb.GetMetadataResponse, error) {
	if s.cfg.metadata == nil {
		return nil, status.Error(codes.Unimplemented, "daprapi: meshd serves no metadata here")
	}
	return s.cfg.metadata(), nil
}

// MetadataHandler serves Dapr's HTTP metadata API, GET /v1.0/metadata, with
// fn's report in daprd's JSON shape. Lists of building blocks meshd does not
// have (components, subscriptions, HTTP endpoints, actors) are empty arrays.
func MetadataHandler(fn MetadataFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := json.Marshal(MetadataJSON(fn()))
		if err != nil { // cannot happen: only strings, numbers and lists
			http.Error(w, `{"errorCode":"ERR_METADATA_GET","message":"daprapi: metadata: `+err.Error()+`"}`, http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(b)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	})
}

// MetadataResponse is daprd's JSON form of GetMetadataResponse
// (pkg/api/http/metadata.go), with the lists always present.
type MetadataResponse struct {
	ID                      string                  `json:"id"`
	RuntimeVersion          string                  `json:"runtimeVersion"`
	EnabledFeatures         []string                `json:"enabledFeatures"`
	Actors                  []ActiveActors          `json:"actors"`
	Components              []Component             `json:"components"`
	Extended                map[string]string       `json:"extended"`
	Subscriptions           []Subscription          `json:"subscriptions"`
	HTTPEndpoints           []HTTPEndpoint          `json:"httpEndpoints"`
	AppConnectionProperties AppConnectionProperties `json:"appConnectionProperties"`
	ActorRuntime            ActorRuntime            `json:"actorRuntime"`
}

// ActiveActors is one actor type's count (meshd hosts no actors).
type ActiveActors struct {
	Type  string `json:"type"`
	Count int32  `json:"count"`
}

// Component is a Dapr component (meshd loads none).
type Component struct {
	Name         string   `json:"name"`
	Type         string   `json:"type"`
	Version      string   `json:"version"`
	Capabilities []string `json:"capabilities,omitempty"`
}

// Subscription is a pub/sub subscription (meshd has no pub/sub).
type Subscription struct {
	PubsubName string `json:"pubsubname"`
	Topic      string `json:"topic"`
}

// HTTPEndpoint is a Dapr HTTPEndpoint resource (meshd has none).
type HTTPEndpoint struct {
	Name string `json:"name"`
}

// AppConnectionProperties is how the sidecar reaches its app.
type AppConnectionProperties struct {
	Port           int32             `json:"port,omitempty"`
	Protocol       string            `json:"protocol,omitempty"`
	ChannelAddress string            `json:"channelAddress,omitempty"`
	MaxConcurrency int32             `json:"maxConcurrency,omitempty"`
	Health         *AppHealthOptions `json:"health,omitempty"`
}

// AppHealthOptions are the app health checks' settings.
type AppHealthOptions struct {
	HealthCheckPath     string `json:"healthCheckPath,omitempty"`
	HealthProbeInterval string `json:"healthProbeInterval,omitempty"`
	HealthProbeTimeout  string `json:"healthProbeTimeout,omitempty"`
	HealthThreshold     int32  `json:"healthThreshold,omitempty"`
}

// ActorRuntime is the actor runtime's state (always DISABLED in meshd).
type ActorRuntime struct {
	Status    string `json:"runtimeStatus"`
	HostReady bool   `json:"hostReady"`
	Placement string `json:"placement,omitempty"`
}

// MetadataJSON converts the gRPC answer to daprd's JSON shape.
func MetadataJSON(m *runtimev1pb.GetMetadataResponse) MetadataResponse {
	out := MetadataResponse{
		ID:              m.GetId(),
		RuntimeVersion:  m.GetRuntimeVersion(),
		EnabledFeatures: append([]string{}, m.GetEnabledFeatures()...),
		Actors:          []ActiveActors{},
		Components:      []Component{},
		Extended:        map[string]string{},
		Subscriptions:   []Subscription{},
		HTTPEndpoints:   []HTTPEndpoint{},
		ActorRuntime: ActorRuntime{
			Status:    m.GetActorRuntime().GetRuntimeStatus().String(),
			HostReady: m.GetActorRuntime().GetHostReady(),
			Placement: m.GetActorRuntime().GetPlacement(),
		},
	}
	for k, v := range m.GetExtendedMetadata() {
		out.Extended[k] = v
	}
	for _, c := range m.GetRegisteredComponents() {
		out.Components = append(out.Components, Component{Name: c.GetName(), Type: c.GetType(), Version: c.GetVersion(), Capabilities: c.GetCapabilities()})
	}
	for _, s := range m.GetSubscriptions() {
		out.Subscriptions = append(out.Subscriptions, Subscription{PubsubName: s.GetPubsubName(), Topic: s.GetTopic()})
	}
	for _, e := range m.GetHttpEndpoints() {
		out.HTTPEndpoints = append(out.HTTPEndpoints, HTTPEndpoint{Name: e.GetName()})
	}
	if ac := m.GetAppConnectionProperties(); ac != nil {
		out.AppConnectionProperties = AppConnectionProperties{
			Port: ac.GetPort(), Protocol: ac.GetProtocol(), ChannelAddress: ac.GetChannelAddress(), MaxConcurrency: ac.GetMaxConcurrency(),
		}
		if h := ac.GetHealth(); h != nil {
			out.AppConnectionProperties.Health = &AppHealthOptions{
				HealthCheckPath: h.GetHealthCheckPath(), HealthProbeInterval: h.GetHealthProbeInterval(),
				HealthProbeTimeout: h.GetHealthProbeTimeout(), HealthThreshold: h.GetHealthThreshold(),
			}
		}
	}
	return out
}
