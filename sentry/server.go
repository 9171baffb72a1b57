package sentry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/lifecycle"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/sentry/token"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// DefaultShutdownTimeout bounds the graceful stop.
const DefaultShutdownTimeout = 10 * time.Second

// maxRequestSize bounds a request: a CSR and a token are a few hundred bytes.
const maxRequestSize = 64 << 10

// Config configures a Server.
type Config struct {
	CA              ca.Options
	Validator       token.Validator
	Logger          *slog.Logger
	ShutdownTimeout time.Duration
	// HandshakeTimeout bounds a connection's TLS handshake and HTTP/2
	// preface (0: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes caps connections that have not completed the TLS
	// handshake; beyond it the oldest is closed (0: DefaultMaxPendingHandshakes,
	// negative: no cap).
	MaxPendingHandshakes int
	// Store, when set, shares the CA with other sentry replicas (see
	// package sentry/kubestore); nil: the data directory alone.
	Store CAStore
}

// CAStore shares the CA between replicas: Prepare runs before the CA is
// opened from the data directory, Init after, Run while sentry serves;
// Leading gates the rotation steps (ca.Options.Leading).
type CAStore interface {
	Prepare(ctx context.Context, dataDir string) error
	Init(ctx context.Context, auth *ca.Authority) error
	Run(ctx context.Context, auth *ca.Authority) error
	Leading() bool
}

// storeTimeout bounds the CA store's start-up calls.
const storeTimeout = 30 * time.Second

// Server is a running sentry: the CA, its gRPC service and health state.
type Server struct {
	cfg      Config
	ca       *ca.Authority
	log      *slog.Logger
	grpc     *grpc.Server
	pending  *pendingLimiter
	ready    atomic.Bool
	stopOnce sync.Once
	stopping chan struct{}
}

// New opens (or creates) the CA in the data directory and prepares the gRPC
// server. Nothing listens until Serve.
func New(cfg Config) (*Server, error) {
	if cfg.Validator == nil {
		return nil, errors.New("sentry: a token validator is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.HandshakeTimeout < 0 {
		return nil, errors.New("sentry: the handshake timeout must not be negative")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxPendingHandshakes == 0 {
		cfg.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	cfg.CA.Logger = cfg.Logger
	if cfg.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		if err := cfg.Store.Prepare(ctx, cfg.CA.DataDir); err != nil {
			return nil, fmt.Errorf("sentry: %w", err)
		}
		cfg.CA.Leading = cfg.Store.Leading
	}
	auth, err := ca.Open(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("sentry: %w", err)
	}
	if cfg.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		defer cancel()
		if err := cfg.Store.Init(ctx, auth); err != nil {
			return nil, fmt.Errorf("sentry: %w", err)
		}
	}
	s := &Server{cfg: cfg, ca: auth, log: cfg.Logger, stopping: make(chan struct{}),
		pending: &pendingLimiter{max: max(cfg.MaxPendingHandshakes, 0), log: cfg.Logger}}
	tlsCfg := tlsconfig.TLSServerConfig(auth)
	// A client certificate is asked for but not required: bootstrap
	// (a token) comes without one, renewal presents the current SVID. crypto/tls
	// checks the client's proof of possession of the key; the chain is
	// verified with go-spiffe per request (service.authorizeSVID), so that an
	// invalid certificate is answered Unauthenticated.
	tlsCfg.ClientAuth = tls.RequestClientCert
	s.grpc = grpc.NewServer(
		grpc.Creds(handshakeCreds{TransportCredentials: credentials.NewTLS(tlsCfg), lim: s.pending}),
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		grpc.MaxRecvMsgSize(maxRequestSize),
	)
	sentrypb.RegisterCAServer(s.grpc, &service{ca: auth, validator: cfg.Validator, log: cfg.Logger, stopping: s.stopping})
	return s, nil
}

// Authority returns the CA.
func (s *Server) Authority() *ca.Authority { return s.ca }

// Ready reports whether the gRPC service is serving.
func (s *Server) Ready() bool { return s.ready.Load() }

// Serve runs the CA's rotation loop and serves gRPC on lis until ctx is
// done, then stops gracefully (open streams are ended, unary calls finish,
// bounded by the shutdown timeout). They run, with the CA store's leader
// election and sync when the CA is shared, as components of one
// lifecycle.Run: the first error stops the others.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	cs := []lifecycle.Component{
		lifecycle.Func(s.ca.Run),
		lifecycle.Func(func(ctx context.Context) error { return s.serveGRPC(ctx, lis) }),
	}
	if s.cfg.Store != nil { // replicas sharing a CA: leader election and sync
		cs = append(cs, lifecycle.Func(func(ctx context.Context) error { return s.cfg.Store.Run(ctx, s.ca) }))
	}
	return lifecycle.Run(ctx, cs...)
}

// serveGRPC serves the gRPC service on lis until ctx is done.
func (s *Server) serveGRPC(ctx context.Context, lis net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(&pendingListener{Listener: lis, lim: s.pending}) }()
	s.ready.Store(true)
	s.log.Info("sentry: serving", "addr", lis.Addr().String(), "trust_domain", s.ca.TrustDomain().String(),
		"workload_ttl", s.ca.WorkloadTTL().String(), "handshake_timeout", s.cfg.HandshakeTimeout.String(),
		"max_pending_handshakes", s.cfg.MaxPendingHandshakes)
	var err error
	select {
	case err = <-errc:
		if err != nil {
			err = fmt.Errorf("sentry: serve: %w", err)
		}
	case <-ctx.Done():
		s.shutdown()
		err = <-errc
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
	}
	s.ready.Store(false)
	return err
}

func (s *Server) shutdown() {
	s.ready.Store(false)
	s.stopOnce.Do(func() { close(s.stopping) })
	s.log.Info("sentry: shutting down")
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("sentry: graceful stop timed out; closing remaining connections")
		s.grpc.Stop()
		<-done
	}
}

// HealthHandler answers /healthz: 200 while serving, 503 otherwise.
func (s *Server) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if s.Ready() {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("ok\n"))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not serving\n"))
	})
	return mux
}

// Run listens on listen (gRPC) and healthListen (HTTP; "" disables it) and
// serves both until ctx is done or one fails.
func (s *Server) Run(ctx context.Context, listen, healthListen string) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("sentry: listen: %w", err)
	}
	var health lifecycle.Component
	if healthListen != "" {
		hl, err := net.Listen("tcp", healthListen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("sentry: health listen: %w", err)
		}
		s.log.Info("sentry: health endpoint", "addr", hl.Addr().String(), "path", "/healthz")
		health = lifecycle.Func(func(ctx context.Context) error { return s.serveHealth(ctx, hl) })
	}
	return lifecycle.Run(ctx, lifecycle.Func(func(ctx context.Context) error { return s.Serve(ctx, lis) }), health)
}

// serveHealth serves HealthHandler on l until ctx is done.
func (s *Server) serveHealth(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s.HealthHandler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("sentry: health server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return nil
}
