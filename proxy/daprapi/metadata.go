package daprapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
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

// SetMetadataPath is the HTTP/2 path of Dapr's gRPC SetMetadata.
const SetMetadataPath = runtimev1pb.Dapr_SetMetadata_FullMethodName

// Limits of the app's own attributes.
const (
	MaxAttributes      = 64
	MaxAttributeKey    = 256
	MaxAttributeLength = 4 << 10
)

// Attributes are the attributes an app sets on its sidecar's metadata
// (PUT /v1.0/metadata/{key}, gRPC SetMetadata), reported in "extended" as
// daprd does. The keys meshd reports itself (daprRuntimeVersion, meshd.*)
// cannot be set. Safe for concurrent use; the zero value is empty.
type Attributes struct {
	mu sync.Mutex
	m  map[string]string
}

// Set sets one attribute; an empty value removes it.
func (a *Attributes) Set(key, value string) error {
	switch {
	case key == "" || len(key) > MaxAttributeKey:
		return fmt.Errorf("daprapi: metadata key: want 1 to %d bytes", MaxAttributeKey)
	case key == ExtRuntimeVersion || strings.HasPrefix(key, "meshd."):
		return fmt.Errorf("daprapi: metadata key %q is the sidecar's own", key)
	case len(value) > MaxAttributeLength:
		return fmt.Errorf("daprapi: metadata value of %q: more than %d bytes", key, MaxAttributeLength)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if value == "" {
		delete(a.m, key)
		return nil
	}
	if _, ok := a.m[key]; !ok && len(a.m) >= MaxAttributes {
		return fmt.Errorf("daprapi: metadata: at most %d attributes", MaxAttributes)
	}
	if a.m == nil {
		a.m = map[string]string{}
	}
	a.m[key] = value
	return nil
}

// addTo copies the attributes into ext, which must not be nil.
func (a *Attributes) addTo(ext map[string]string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, v := range a.m {
		ext[k] = v
	}
}

// WithAttributes makes GetMetadata report a's attributes and SetMetadata
// set them (without it, SetMetadata answers Unimplemented).
func WithAttributes(a *Attributes) Option {
	return func(c *config) { c.attrs = a }
}

// report is fn's report with the app's attributes.
func report(fn MetadataFunc, a *Attributes) *runtimev1pb.GetMetadataResponse {
	m := fn()
	if a != nil {
		if m.ExtendedMetadata == nil {
			m.ExtendedMetadata = map[string]string{}
		}
		a.addTo(m.ExtendedMetadata)
	}
	return m
}

// GetMetadata implements dapr.proto.runtime.v1.Dapr/GetMetadata.
func (s *service) GetMetadata(context.Context, *runtimev1pb.GetMetadataRequest) (*runtimev1pb.GetMetadataResponse, error) {
	if s.cfg.metadata == nil {
		return nil, status.Error(codes.Unimplemented, "daprapi: meshd serves no metadata here")
	}
	return report(s.cfg.metadata, s.cfg.attrs), nil
}

// SetMetadata implements dapr.proto.runtime.v1.Dapr/SetMetadata.
func (s *service) SetMetadata(_ context.Context, in *runtimev1pb.SetMetadataRequest) (*emptypb.Empty, error) {
	if s.cfg.attrs == nil {
		return nil, status.Error(codes.Unimplemented, "daprapi: meshd keeps no metadata attributes here")
	}
	if err := s.cfg.attrs.Set(in.GetKey(), in.GetValue()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &emptypb.Empty{}, nil
}

// MetadataHandler serves Dapr's HTTP metadata API with fn's report in
// daprd's JSON shape: GET /v1.0/metadata (lists of building blocks meshd
// does not have — components, subscriptions, HTTP endpoints, actors — are
// empty arrays) and PUT /v1.0/metadata/{key} (the body is the value; 204),
// which sets one of a's attributes.
func MetadataHandler(fn MetadataFunc, a *Attributes) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			putAttribute(w, r, a)
			return
		}
		b, err := json.Marshal(MetadataJSON(report(fn, a)))
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

// putAttribute serves PUT /v1.0/metadata/{key}.
func putAttribute(w http.ResponseWriter, r *http.Request, a *Attributes) {
	key, ok := strings.CutPrefix(r.URL.Path, "/v1.0/metadata/")
	if !ok || a == nil {
		writeJSONError(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", "daprapi: want PUT /v1.0/metadata/{key}")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxAttributeLength+1))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", "daprapi: read body: "+err.Error())
		return
	}
	if err := a.Set(key, string(body)); err != nil {
		writeJSONError(w, http.StatusBadRequest, "ERR_MALFORMED_REQUEST", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSONError(w http.ResponseWriter, code int, errorCode, msg string) {
	b, _ := json.Marshal(struct {
		ErrorCode string `json:"errorCode"`
		Message   string `json:"message"`
	}{errorCode, msg})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(ErrorCodeHeader, errorCode)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
