package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/proxy/appcallback"
	"github.com/meshd/meshd/proxy/appchannel"
	"github.com/meshd/meshd/proxy/internal/coalesce"
	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
	"github.com/meshd/meshd/proxy/route"
	"github.com/meshd/meshd/telemetry/metrics"
	"github.com/meshd/meshd/telemetry/tracing"
)

// Resolver finds an endpoint of a target app for each attempt of a call,
// and takes back the attempt's outcome through the pick's Done
// (discovery.Cache's Picker implements it).
type Resolver = discovery.Picker

// AppHealth reports whether the local app is healthy (apphealth.Checker
// implements it). Healthy is called on every inbound call.
type AppHealth interface {
	Healthy() bool
}

// Config configures a Proxy.
type Config struct {
	// Identity is this sidecar's own identity (trust domain, namespace, app).
	Identity certs.Identity
	// SVIDSource and BundleSource provide the workload certificate and the
	// trust bundle (certs.Source implements both). Required unless Insecure.
	SVIDSource   x509svid.Source
	BundleSource x509bundle.Source
	// Insecure turns mTLS between sidecars off (cleartext h2c, no caller
	// identity). For development only.
	Insecure bool
	// Resolver resolves target apps. Required.
	Resolver Resolver
	// App is the channel to the local app; nil when the sidecar has none
	// (inbound calls then get 503).
	App *appchannel.Channel
	// AppCallback, if set (an app with --app-protocol grpc or grpcs),
	// serves inbound calls that are not gRPC through the app's
	// AppCallback/OnInvoke, as daprd does; gRPC calls still pass through.
	AppCallback *appcallback.Client
	// AppHealth, if set, short-circuits inbound calls while the app is
	// unhealthy.
	AppHealth AppHealth
	// Authorizer, if set, is asked on every inbound call; nil allows all.
	Authorizer authz.Authorizer
	// Timeout bounds an outbound call up to its response headers and body
	// (0: none; a shorter gRPC deadline wins). Expiry before the response
	// headers answers 504.
	Timeout time.Duration
	// DialTimeout bounds connecting to a peer sidecar: the TCP connect, and
	// then the TLS handshake, each (default 5s; with PeerKeepalive on,
	// PeerKeepalive + PeerKeepaliveTimeout when shorter: 1.5s by default).
	DialTimeout time.Duration
	// PeerKeepalive is how long a pooled connection to a peer sidecar may
	// stay silent while the sidecar waits on it before the peer is checked
	// (default DefaultPeerKeepalive; negative: no checks): HTTP/2
	// connections send a PING after that much silence, the HTTP/1.1 pool
	// dials the peer afresh when an exchange has waited that long and
	// nothing was heard from the peer (see docs/resiliency.md, "A peer that
	// stops answering").
	PeerKeepalive time.Duration
	// PeerKeepaliveTimeout is how long the check may take before the
	// peer's connections are closed, the calls on them fail (idempotent
	// ones are retried on another endpoint) and the endpoint is ejected
	// (default DefaultPeerKeepaliveTimeout).
	PeerKeepaliveTimeout time.Duration
	// Ready overrides the readiness check of /v1.0/healthz (default: the
	// SVID source has a certificate).
	Ready func() bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tracer, if set, traces every call (a client span outbound, a server
	// span inbound); nil: tracing off at the cost of a nil check.
	Tracer *tracing.Tracer
	// Metrics, if set, counts every call; nil: no metrics.
	Metrics *metrics.Metrics
	// MaxHeaderFields bounds the header fields of a request on the
	// app-facing ports (default h1.DefaultMaxHeaderFields, negative: no
	// bound); more are answered 431. The internal port allows
	// internalHeaderSlack more, for the fields a caller sidecar adds.
	MaxHeaderFields int
	// BodyReadTimeout bounds how long a request body may keep the sidecar
	// waiting without h1.BodyProgress bytes arriving (default
	// h1.DefaultBodyReadTimeout, negative: no bound); the call is then
	// answered 408 if it still can be. gRPC calls are exempt.
	BodyReadTimeout time.Duration
	// NetHTTPServer serves HTTP/1.x on the HTTP and internal ports with
	// net/http's server instead of proxy/internal/h1's (--h1-server nethttp).
	NetHTTPServer bool
	// APIToken, if set (DAPR_API_TOKEN), is required in the dapr-api-token
	// header (gRPC metadata) of every call on the app-facing ports, health
	// endpoints excepted; it is compared in constant time and removed.
	APIToken string
	// AppAPIToken, if set (APP_API_TOKEN), is sent to the app as
	// dapr-api-token on every inbound call, so the app can tell its sidecar
	// from other callers. Any dapr-api-token a caller sent is removed
	// either way.
	AppAPIToken string
	// NetHTTPClient sends the HTTP/1.1 hop to peer sidecars with net/http's
	// Transport instead of proxy/internal/h1's (--h1-client nethttp; the app
	// channel has its own switch, appchannel.Config.NetHTTPClient).
	NetHTTPClient bool
	// NetHTTPH2Server serves HTTP/2 on every port with net/http's server
	// instead of proxy/internal/h2's (--h2-server nethttp).
	NetHTTPH2Server bool
	// NetHTTPH2Client sends the HTTP/2 hop to peer sidecars with net/http's
	// Transport instead of proxy/internal/h2's (--h2-client nethttp; the app
	// channel has its own switch, appchannel.Config.NetHTTPH2Client).
	NetHTTPH2Client bool
}

// Proxy is the data plane of one sidecar.
type Proxy struct {
	// DaprAPI, if set before Serve, serves DaprInvokePath on the gRPC port
	// (the Dapr InvokeService API, translated by proxy/daprapi).
	DaprAPI http.Handler
	// Metadata, if set before Serve, answers GET /v1.0/metadata and PUT
	// /v1.0/metadata/{key} on the HTTP port (proxy/daprapi.MetadataHandler).
	Metadata http.Handler

	cfg        Config
	self       discovery.Target
	selfAppID  []string
	peerScheme string
	peers      *peers
	log        *slog.Logger
	res        resiliencyRef // see SetResiliency (resilient.go)
	// Telemetry (see telemetry.go); observe is tracer != nil || metrics != nil.
	tracer  *tracing.Tracer
	metrics *metrics.Metrics
	observe bool
	// API tokens: apiToken nil when none is required; appToken nil when
	// none is sent to the app.
	apiToken *apiToken
	appToken []string
}

// Defaults of Config.PeerKeepalive and Config.PeerKeepaliveTimeout: a
// peer that stops answering is found within about 1.5 s.
const (
	DefaultPeerKeepalive        = 500 * time.Millisecond
	DefaultPeerKeepaliveTimeout = time.Second
)

// DaprInvokePath is the gRPC path of Dapr's InvokeService API.
const DaprInvokePath = "/dapr.proto.runtime.v1.Dapr/InvokeService"

// DaprMetadataPath and DaprSetMetadataPath are the gRPC paths of Dapr's
// metadata API.
const (
	DaprMetadataPath    = "/dapr.proto.runtime.v1.Dapr/GetMetadata"
	DaprSetMetadataPath = "/dapr.proto.runtime.v1.Dapr/SetMetadata"
)

// daprServicePrefix starts every method of Dapr's gRPC API.
const daprServicePrefix = "/dapr.proto.runtime.v1.Dapr/"

// New builds a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("proxy: a Resolver is required")
	}
	if cfg.Identity.AppID == "" || cfg.Identity.Namespace == "" {
		return nil, errors.New("proxy: Identity needs an app ID and a namespace")
	}
	if !cfg.Insecure && (cfg.SVIDSource == nil || cfg.BundleSource == nil) {
		return nil, errors.New("proxy: SVIDSource and BundleSource are required unless Insecure")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.PeerKeepalive == 0 {
		cfg.PeerKeepalive = DefaultPeerKeepalive
	}
	if cfg.PeerKeepaliveTimeout <= 0 {
		cfg.PeerKeepaliveTimeout = DefaultPeerKeepaliveTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Proxy{
		cfg:        cfg,
		self:       discovery.Target{AppID: cfg.Identity.AppID, Namespace: cfg.Identity.Namespace},
		selfAppID:  []string{cfg.Identity.AppID},
		peerScheme: "https",
		log:        cfg.Logger,
		tracer:     cfg.Tracer,
		metrics:    cfg.Metrics,
		observe:    cfg.Tracer != nil || cfg.Metrics != nil,
	}
	if cfg.Insecure {
		p.peerScheme = "http"
	}
	p.apiToken = newAPIToken(cfg.APIToken)
	if cfg.AppAPIToken != "" {
		p.appToken = []string{cfg.AppAPIToken}
	}
	p.peers = newPeers(p)
	return p, nil
}

// HTTPHandler is the app-facing HTTP API: the three invoke forms,
// /v1.0/healthz and /v1.0/metadata, behind the API token when one is set.
func (p *Proxy) HTTPHandler() http.Handler { return http.HandlerFunc(p.serveOutbound) }

// InvokeHandler is HTTPHandler without the API token check: the outbound
// invoke path for handlers that checked the caller already (the Dapr gRPC
// InvokeService translation builds a /v1.0/invoke/{id}/method/{method}
// request and serves it here).
func (p *Proxy) InvokeHandler() http.Handler { return http.HandlerFunc(p.serveAPI) }

// GRPCHandler is the app-facing gRPC port: DaprInvokePath and
// DaprMetadataPath go to DaprAPI, any call with dapr-app-id metadata is
// proxied as HTTP/2 frames, Dapr's other APIs answer Unimplemented
// ERR_NOT_SUPPORTED, anything else Unimplemented.
func (p *Proxy) GRPCHandler() http.Handler { return http.HandlerFunc(p.serveGRPC) }

// InternalHandler is the inbound handler of the internal (mTLS) port. It
// needs the connection context installed by the server Serve builds.
func (p *Proxy) InternalHandler() http.Handler { return http.HandlerFunc(p.serveInbound) }

func (p *Proxy) serveGRPC(w http.ResponseWriter, r *http.Request) {
	isGRPC := isGRPCRequest(r)
	if p.apiToken != nil && !p.checkAPIToken(w, r, isGRPC) {
		return
	}
	if !isGRPC {
		// Plain HTTP on the gRPC port: treat it like the HTTP port.
		p.serveAPI(w, r)
		return
	}
	if path := r.URL.Path; len(path) > len(daprServicePrefix) && path[:len(daprServicePrefix)] == daprServicePrefix {
		if (path == DaprInvokePath || path == DaprMetadataPath || path == DaprSetMetadataPath) && p.DaprAPI != nil {
			p.DaprAPI.ServeHTTP(w, r)
			return
		}
		if _, ok := r.Header[route.HeaderAppID]; !ok {
			p.errorTrace(w, r)
			writeNotSupported(w, true, "Dapr's "+path[1:]+" API")
			return
		}
	}
	p.invoke(w, r, true)
}

// InternalTLSConfig is the server TLS config of the internal port: mTLS,
// any workload of our trust domain whose certificate allows clientAuth may
// connect (policy decides the rest).
func (p *Proxy) InternalTLSConfig() *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(p.cfg.SVIDSource, p.cfg.BundleSource,
		certs.RequireClientAuth(tlsconfig.AuthorizeMemberOf(p.cfg.Identity.TrustDomain)))
	cfg.NextProtos = []string{"h2", "http/1.1"}
	cfg.MinVersion = tls.VersionTLS13
	return cfg
}

// h2FrameSize is the largest HTTP/2 frame the sidecar reads (RFC 9113's
// default); peers size their write buffers by it.
const h2FrameSize = 16 << 10

// Listeners are the sockets Serve serves. A nil listener is not served.
type Listeners struct {
	HTTP     net.Listener // app-facing HTTP (--http-port)
	GRPC     net.Listener // app-facing gRPC (--grpc-port)
	Internal net.Listener // sidecar-to-sidecar mTLS (--internal-port)
}

// Serve serves the listeners until ctx is done, then shuts down
// gracefully: listeners close at once, in-flight calls get grace to
// finish, then remaining connections are closed. It returns the first
// server error, or nil after a clean shutdown.
func (p *Proxy) Serve(ctx context.Context, ls Listeners, grace time.Duration) error {
	var servers []server
	mk := func(h http.Handler, l net.Listener, internal, grpcPort bool) {
		if l == nil {
			return
		}
		maxFields := p.maxFields()
		if internal && maxFields >= 0 {
			maxFields += internalHeaderSlack
		}
		s := &http.Server{
			Handler:           limited(h, maxFields, p.bodyTimeout()),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       5 * time.Minute,
			ErrorLog:          slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
			Protocols:         new(http.Protocols),
			// HTTP/2's default frame size. net/http's own default (1 MiB)
			// makes every HTTP/2 client size its per-stream scratch buffer
			// for a streamed body (gRPC) at 512 KiB: sixteen concurrent
			// calls held 8 MiB.
			HTTP2: &http.HTTP2Config{MaxReadFrameSize: h2FrameSize},
		}
		var tlsCfg *tls.Config
		if internal {
			// HTTP/2 for gRPC and HTTP/2 callers, HTTP/1.1 for HTTP/1.1
			// callers (see peerTransports).
			s.Protocols.SetHTTP1(true)
			s.Protocols.SetHTTP2(true)
			if p.cfg.Insecure {
				s.Protocols.SetUnencryptedHTTP2(true)
				s.Protocols.SetHTTP2(false)
			} else {
				tlsCfg = p.InternalTLSConfig()
				s.TLSConfig = tlsCfg
				s.ConnContext = connContext
				// HTTP/2 connections coalesce their frame writes;
				// HTTP/1.1 ones write each answer once anyway.
				tlsCfg.GetConfigForClient = coalesce.EnableForH2(tlsCfg.NextProtos)
				l = coalesce.Listener{Listener: l, Passthrough: true}
			}
		} else {
			s.Protocols.SetHTTP1(true)
			s.Protocols.SetUnencryptedHTTP2(true)
		}
		if leanH2 := !p.cfg.NetHTTPH2Server; !grpcPort && !p.cfg.NetHTTPServer || leanH2 {
			// HTTP/1.x on proxy/internal/h1's server, HTTP/2 on
			// proxy/internal/h2's; what net/http serves instead is handed
			// to s.
			var hs *h1.Server
			if !p.cfg.NetHTTPServer {
				hs = &h1.Server{
					Handler:           h,
					ReadHeaderTimeout: s.ReadHeaderTimeout,
					IdleTimeout:       s.IdleTimeout,
					MaxHeaderFields:   maxFields,
					BodyReadTimeout:   p.cfg.BodyReadTimeout,
					Refusal:           refusal,
					Log:               p.log,
					// The handlers keep no request header past their
					// return: forward's exchange and the policy input
					// end with the call; the app callback copies it.
					ReuseHeader: true,
				}
				if internal && !p.cfg.Insecure {
					hs.ConnContext = connContext
				}
			}
			var h2s *h2.Server
			if leanH2 {
				h2s = p.newH2Server(s.Handler, s, internal && !p.cfg.Insecure)
				if grpcPort && h2Coalesce {
					l = coalesce.Listener{Listener: l}
				}
			}
			servers = append(servers, newH1Mux(l, tlsCfg, hs, s, h2s, p.log))
			return
		}
		if grpcPort {
			l = coalesce.Listener{Listener: l} // gRPC: HEADERS, DATA and trailers in one write
		}
		if !internal || p.cfg.Insecure {
			l = bufferedListener{l} // cleartext HTTP/2 reads unbuffered
		}
		servers = append(servers, &netHTTPServer{s, l, internal && !p.cfg.Insecure})
	}
	mk(p.HTTPHandler(), ls.HTTP, false, false)
	mk(p.GRPCHandler(), ls.GRPC, false, true)
	mk(p.InternalHandler(), ls.Internal, true, false)
	if len(servers) == 0 {
		return errors.New("proxy: no listener to serve")
	}

	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			err := s.serve()
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("proxy: serve %s: %w", s.addr(), err)
				return
			}
			errc <- nil
		}()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if err := s.shutdown(sctx); err != nil {
				p.log.Warn("proxy: grace period over, closing connections", "addr", s.addr(), "err", err)
				s.close()
			}
		})
	}
	wg.Wait()
	p.peers.closeIdle()
	if p.cfg.App != nil {
		p.cfg.App.Close()
	}
	return serveErr
}

// server is one listener's server.
type server interface {
	serve() error // until closed: http.ErrServerClosed
	shutdown(ctx context.Context) error
	close()
	addr() string
}

// netHTTPServer is a listener served by net/http alone (the gRPC port, and
// every port with Config.NetHTTPServer).
type netHTTPServer struct {
	s   *http.Server
	l   net.Listener
	tls bool
}

func (s *netHTTPServer) serve() error {
	if s.tls {
		return s.s.ServeTLS(s.l, "", "")
	}
	return s.s.Serve(s.l)
}

func (s *netHTTPServer) shutdown(ctx context.Context) error { return s.s.Shutdown(ctx) }
func (s *netHTTPServer) close()                             { _ = s.s.Close() }
func (s *netHTTPServer) addr() string                       { return s.l.Addr().String() }

func (m *h1Mux) addr() string { return m.l.Addr().String() }
