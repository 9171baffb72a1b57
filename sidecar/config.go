package sidecar

import (
	"log/slog"
	"time"

	"github.com/meshd/meshd/policy"
)

// Config is everything a sidecar needs; cmd/meshd fills it from flags.
type Config struct {
	AppID       string
	Namespace   string
	TrustDomain string

	AppPort           int // 0: no app
	AppProtocol       string
	AppChannelAddress string
	// AppMaxConcurrency is daprd's --app-max-concurrency, reported by the
	// metadata API; meshd accepts only -1 (no limit).
	AppMaxConcurrency int

	// APIToken (DAPR_API_TOKEN) is required from the app on every call
	// but health; AppAPIToken (APP_API_TOKEN) is sent to the app on every
	// inbound call (see proxy.Config). Never logged.
	APIToken    string
	AppAPIToken string
	// UnixDomainSocket, if set, is a directory: the app-facing HTTP and
	// gRPC APIs are served on the unix sockets
	// {dir}/dapr-{app-id}-http.socket and {dir}/dapr-{app-id}-grpc.socket
	// (mode 0600) instead of their TCP ports, as daprd does.
	UnixDomainSocket string
	// MaxMessageSize bounds an InvokeService message and its answer on the
	// gRPC API (daprd's --dapr-http-max-request-size; 0: 4 MiB).
	MaxMessageSize int

	HTTPPort      int
	GRPCPort      int
	InternalPort  int
	ListenAddress string // of the internal port; "" = all interfaces
	// MetricsPort serves Prometheus /metrics on MetricsListenAddress
	// (default 127.0.0.1) unless DisableMetrics or spec.metrics.enabled
	// is false.
	MetricsPort          int
	MetricsListenAddress string
	// PublicPort, when not 0, serves /v1.0/healthz on PublicListenAddress
	// ("": all interfaces) for the kubelet's probes (daprd's
	// --dapr-public-port).
	PublicPort          int
	PublicListenAddress string
	DisableMetrics      bool
	// ProfilePort, when EnableProfiling, serves Go's net/http/pprof on
	// 127.0.0.1 (Dapr's --enable-profiling/--profile-port).
	EnableProfiling bool
	ProfilePort     int
	// AdminPort serves the read-only admin endpoint (package
	// sidecar/admin) on AdminListenAddress (default 127.0.0.1; loopback
	// only); 0 serves it on the metrics port instead, when that binds
	// loopback; -1 turns it off.
	AdminPort          int
	AdminListenAddress string
	// AdvertiseAddress is host:port other sidecars use to reach the internal
	// port (registered with discovery backends that register). Default:
	// ListenAddress (or 127.0.0.1) with the bound port.
	AdvertiseAddress string

	SentryAddress    string
	TrustAnchorsFile string
	TrustAnchorsPEM  []byte // used when TrustAnchorsFile is empty (env TRUST_ANCHORS)
	TokenFile        string // "" sends an empty token (sentry's insecure validator)
	Insecure         bool   // mTLS between sidecars off

	Resolver       string
	ResolverConfig string
	// ControlPlaneAddress and ControlPlaneNamespace name the control plane
	// of --resolver xds without a ResolverConfig file
	// (--control-plane-address, --control-plane-namespace).
	ControlPlaneAddress, ControlPlaneNamespace string

	EnableAppHealthCheck   bool
	AppHealthCheckPath     string
	AppHealthProbeInterval time.Duration
	AppHealthProbeTimeout  time.Duration
	AppHealthThreshold     int

	WorkloadAPISocket string
	ShutdownGrace     time.Duration

	// PolicyDir and ConfigFile are the policy sources (see package
	// policy); PolicyDefault decides namespaces without policy.
	PolicyDir     string
	ConfigFile    string
	PolicyDefault policy.Default
	// PolicyAllowLogEvery logs one allowed call in N in the decision log
	// (denials are always logged); 0 means the default (100), a negative
	// value logs no allows.
	PolicyAllowLogEvery int
	// PolicyRecentDecisions is how many recent decisions, every one, the
	// admin endpoint serves from memory; 0 means the default
	// (decisionlog.DefaultRecent), a negative value keeps none.
	PolicyRecentDecisions int

	// ResiliencyFile is a Dapr Resiliency YAML file ("": none), reloaded on
	// change.
	ResiliencyFile string

	// PeerKeepalive and PeerKeepaliveTimeout watch the pooled connections
	// to peer sidecars (proxy.Config; 0: the defaults; a negative
	// PeerKeepalive: no checks).
	PeerKeepalive, PeerKeepaliveTimeout time.Duration
	// EjectionProbeInterval spaces the probe calls of a target whose every
	// endpoint is ejected (discovery.Options.ProbeInterval);
	// EjectionCheckInterval the checks of an ejected endpoint
	// (discovery.Options.CheckInterval, proxy.PeerChecker). 0: the
	// defaults; a negative EjectionCheckInterval: no checks.
	EjectionProbeInterval, EjectionCheckInterval time.Duration

	// MaxHeaderFields and BodyReadTimeout are the request limits of every
	// port (see proxy.Config; 0: the defaults, negative: no bound).
	MaxHeaderFields int
	BodyReadTimeout time.Duration
	// NetHTTPServer and NetHTTPClient put net/http in the place of
	// proxy/internal/h1 for HTTP/1.x: the server of the HTTP and internal ports,
	// and the client to peer sidecars and the app (see proxy.Config).
	NetHTTPServer bool
	NetHTTPClient bool
	// NetHTTPH2Server puts net/http's HTTP/2 server in the place of
	// proxy/internal/h2's on every port (see proxy.Config).
	NetHTTPH2Server bool
	// NetHTTPH2Client puts net/http's HTTP/2 client in the place of
	// proxy/internal/h2's, to peer sidecars and to an h2c or gRPC app.
	NetHTTPH2Client bool

	Logger *slog.Logger
}
