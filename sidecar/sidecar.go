package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/config/daprconfig"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/lifecycle"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/resiliency"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/meshd/meshd/telemetry/metrics"
)

// Run starts the sidecar and serves until ctx is done, then shuts down
// gracefully within ShutdownGrace.
//
// It runs in two phases. Start builds every part in order — config files,
// sockets (answering "not ready" at once), identity, discovery, app
// channel, policy, telemetry, proxy — and fails on the first error. Then
// the parts that run (the proxy servers, discovery, the bundle watch, the
// policy watch, app health checks, metrics, the Workload API, profiles) run
// as components under one lifecycle.Run: the first that fails stops the
// others, and its error is Run's. Teardown is one lifecycle.Stack, run in
// reverse order on every path.
func Run(ctx context.Context, cfg Config) error {
	// Everything started is stopped when Run returns, after the teardown.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &sidecar{cfg: cfg, log: cfg.Logger, started: time.Now()}
	defer s.teardown.Close()
	if err := s.start(ctx); err != nil {
		if errors.Is(err, errStopped) {
			s.log.Info("sidecar: stopped before the first certificate arrived", "err", err)
			return nil
		}
		return err
	}
	err := lifecycle.Run(ctx, s.components...)
	s.log.Info("meshd sidecar stopped")
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	return nil
}

// errStopped marks a start cut short by the end of its context while it
// waited for sentry: no failure.
var errStopped = errors.New("sidecar: stopped while starting")

// sidecar is one sidecar being assembled: what start built so far.
type sidecar struct {
	cfg Config
	log *slog.Logger
	id  certs.Identity

	resil    *resiliency.Config
	obs      daprconfig.Observability
	ls       proxy.Listeners
	metricsL net.Listener
	publicL  net.Listener
	public   publicHealth
	profileL net.Listener
	adminL   net.Listener // --admin-port; nil: on the metrics port, or off
	started  time.Time
	notReady *proxy.NotReady
	src      *certs.Source // nil with --insecure
	cache    *discovery.Cache
	res      discovery.Resolver
	pcfg     proxy.Config
	pol      *policy.Engine
	mets     *metrics.Metrics
	p        *proxy.Proxy

	advertise  string
	components []lifecycle.Component
	teardown   lifecycle.Stack
}

// run adds a component to run once start is done.
func (s *sidecar) run(fn func(ctx context.Context) error) {
	s.components = append(s.components, lifecycle.Func(fn))
}

// start builds the parts, in order.
func (s *sidecar) start(ctx context.Context) error {
	cfg := &s.cfg
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = certs.DefaultTrustDomain
	}
	if cfg.Namespace == "" {
		cfg.Namespace = discovery.DefaultNamespace
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	var err error
	if s.id, err = certs.NewIdentity(cfg.TrustDomain, cfg.Namespace, cfg.AppID); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"config", s.readConfig}, {"listen", s.listen}, {"identity", s.identity}, {"discovery", s.discovery},
		{"app", s.app}, {"policy", s.policy}, {"telemetry", s.telemetry}, {"proxy", s.proxy}, {"workload_api", s.workloadAPI},
	}
	// The time each step took, at debug level: where a start's time goes
	// (docs/performance.md, "Where a start's time goes").
	timing := make([]slog.Attr, 0, len(steps)+1)
	t := time.Now()
	for _, step := range steps {
		if err := step.fn(ctx); err != nil {
			return err
		}
		now := time.Now()
		timing = append(timing, slog.Duration(step.name, now.Sub(t)))
		t = now
	}
	timing = append(timing, slog.Duration("total", t.Sub(s.started)))
	s.log.LogAttrs(ctx, slog.LevelDebug, "sidecar: start steps", timing...)
	return nil
}

func listen(cfg Config) (proxy.Listeners, error) {
	var ls proxy.Listeners
	var err error
	// The app-facing API is for the local app only: on loopback, or on
	// unix sockets only the sidecar's user may use.
	if cfg.UnixDomainSocket != "" {
		if ls.HTTP, err = listenUnix(unixSocketName(cfg.UnixDomainSocket, cfg.AppID, "http")); err != nil {
			return ls, err
		}
		if ls.GRPC, err = listenUnix(unixSocketName(cfg.UnixDomainSocket, cfg.AppID, "grpc")); err != nil {
			ls.HTTP.Close()
			return ls, err
		}
	} else {
		if ls.HTTP, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.HTTPPort))); err != nil {
			return ls, fmt.Errorf("sidecar: --http-port: %w", err)
		}
		if ls.GRPC, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.GRPCPort))); err != nil {
			ls.HTTP.Close()
			return ls, fmt.Errorf("sidecar: --grpc-port: %w", err)
		}
	}
	if ls.Internal, err = net.Listen("tcp", net.JoinHostPort(cfg.ListenAddress, strconv.Itoa(cfg.InternalPort))); err != nil {
		ls.HTTP.Close()
		ls.GRPC.Close()
		return ls, fmt.Errorf("sidecar: --internal-port: %w", err)
	}
	return ls, nil
}

// startIdentity gets the first workload certificate from sentry
// (sentryclient.StartIdentity), diagnosing sentry's refusals on the way
// (diagnosingClient: said once at ERROR when retrying cannot heal them, and
// in the not-ready answers through setReason). The returned watchBundle
// follows sentry's trust bundle until its context is done, then closes the
// client; closeClient closes it if watchBundle never ran (a start that
// failed later).
func startIdentity(ctx context.Context, cfg Config, id certs.Identity, log *slog.Logger, setReason func(string)) (src *certs.Source, watchBundle func(context.Context) error, closeClient func(), err error) {
	if cfg.SentryAddress == "" {
		return nil, nil, nil, errors.New("sidecar: --sentry-address is required (or run with --insecure)")
	}
	ident, err := sentryclient.StartIdentity(ctx, sentryclient.IdentityConfig{
		SentryAddress: cfg.SentryAddress, TrustAnchorsFile: cfg.TrustAnchorsFile, TrustAnchorsPEM: cfg.TrustAnchorsPEM,
		TokenFile: cfg.TokenFile, Identity: id, Logger: log,
		Fetcher: func(c *sentryclient.Client) certs.Fetcher {
			return &diagnosingClient{Client: c, cfg: cfg, log: log, setReason: setReason}
		},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sidecar: %w", err)
	}
	return ident.Source, ident.WatchBundle, ident.CloseClient, nil
}

func listenerAddr(l net.Listener) string {
	if l == nil {
		return "off"
	}
	return l.Addr().String()
}

// breakerObserver logs circuit breaker transitions and exports the state
// (meshd_ metrics; mets may be nil).
func breakerObserver(log *slog.Logger, mets *metrics.Metrics) func(app, ns string, from, to resiliency.State) {
	return func(app, ns string, from, to resiliency.State) {
		// resiliency.State and metrics.BreakerState share their values.
		mets.SetBreakerState(discovery.Target{AppID: app, Namespace: ns}, metrics.BreakerState(to))
		log.Info("resiliency: circuit breaker changed state", "app", app, "namespace", ns, "from", from.String(), "to", to.String())
	}
}

// breakerObserver converts resiliency.State to metrics.BreakerState by
// value: a compile error here if they ever differ.
var _ = [1]struct{}{}[int(resiliency.StateClosed)-int(metrics.BreakerClosed)]
var _ = [1]struct{}{}[int(resiliency.StateHalfOpen)-int(metrics.BreakerHalfOpen)]
var _ = [1]struct{}{}[int(resiliency.StateOpen)-int(metrics.BreakerOpen)]
