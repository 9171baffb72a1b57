package sidecar

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	_ "github.com/meshd/meshd/discovery/consul" // --resolver consul
	_ "github.com/meshd/meshd/discovery/kubernetes"
	_ "github.com/meshd/meshd/discovery/mdns"   // --resolver mdns
	_ "github.com/meshd/meshd/discovery/static" // --resolver static
	"github.com/meshd/meshd/internal/daprconfig"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/decisionlog"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/appchannel"
	"github.com/meshd/meshd/proxy/apphealth"
	"github.com/meshd/meshd/proxy/daprapi"
	"github.com/meshd/meshd/proxy/metrics"
	"github.com/meshd/meshd/proxy/resiliency"
	"github.com/meshd/meshd/proxy/tracing"
	"github.com/meshd/meshd/proxy/workloadapi"
	"github.com/meshd/meshd/sentry/sentryclient"
)

// Config is everything a sidecar needs; cmd/meshd fills it from flags.
type Config struct {
	AppID       string
	Namespace   string
	TrustDomain string

	AppPort           int // 0: no app
	AppProtocol       string
	AppChannelAddress string

	HTTPPort      int
	GRPCPort      int
	InternalPort  int
	ListenAddress string // of the internal port; "" = all interfaces
	// MetricsPort serves Prometheus /metrics on MetricsListenAddress
	// (default 127.0.0.1) unless DisableMetrics or spec.metrics.enabled
	// is false.
	MetricsPort          int
	MetricsListenAddress string
	DisableMetrics       bool
	// ProfilePort, when EnableProfiling, serves Go's net/http/pprof on
	// 127.0.0.1 (Dapr's --enable-profiling/--profile-port).
	EnableProfiling bool
	ProfilePort     int
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

	// ResiliencyFile is a Dapr Resiliency YAML file ("": none), reloaded on
	// change.
	ResiliencyFile string

	// MaxHeaderFields and BodyReadTimeout are the request limits of every
	// port (see proxy.Config; 0: the defaults, negative: no bound).
	MaxHeaderFields int
	BodyReadTimeout time.Duration

	Logger *slog.Logger
}

// Run starts the sidecar and serves until ctx is done, then shuts down
// gracefully within ShutdownGrace.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
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
	id, err := certs.NewIdentity(cfg.TrustDomain, cfg.Namespace, cfg.AppID)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Resiliency: a bad file stops the start, before any socket is opened.
	var resil *resiliency.Config
	if cfg.ResiliencyFile != "" {
		if resil, err = resiliency.Load(cfg.ResiliencyFile, cfg.AppID, log); err != nil {
			return fmt.Errorf("sidecar: --resiliency: %w", err)
		}
	}

	// spec.tracing and spec.metrics of --config (spec.accessControl is
	// the policy engine's).
	var obs daprconfig.Observability
	if cfg.ConfigFile != "" {
		data, err := os.ReadFile(cfg.ConfigFile)
		if err != nil {
			return fmt.Errorf("sidecar: --config: %w", err)
		}
		if obs, err = daprconfig.Parse(cfg.ConfigFile, data); err != nil {
			return fmt.Errorf("sidecar: --config: %w", err)
		}
		for _, f := range obs.Ignored {
			log.Warn("sidecar: --config: field accepted for Dapr compatibility but not used", "field", f)
		}
	}

	// Sockets first, so a port clash fails before anything else starts.
	ls, err := listen(cfg)
	if err != nil {
		return err
	}
	var metricsL net.Listener
	if !cfg.DisableMetrics && (obs.Metrics == nil || obs.Metrics.Enabled) {
		host := cfg.MetricsListenAddress
		if host == "" {
			host = "127.0.0.1"
		}
		if metricsL, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.MetricsPort))); err != nil {
			for _, l := range []net.Listener{ls.HTTP, ls.GRPC, ls.Internal} {
				_ = l.Close()
			}
			return fmt.Errorf("sidecar: --metrics-port: %w", err)
		}
	}
	var profileL net.Listener
	if cfg.EnableProfiling {
		if profileL, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.ProfilePort))); err != nil {
			for _, l := range []net.Listener{ls.HTTP, ls.GRPC, ls.Internal, metricsL} {
				if l != nil {
					_ = l.Close()
				}
			}
			return fmt.Errorf("sidecar: --profile-port: %w", err)
		}
		log.Warn("sidecar: --enable-profiling: Go profiles served on loopback", "addr", profileL.Addr().String())
		go serveProfiles(ctx, profileL)
	}
	// Until the proxy serves them, the ports answer at once: the app-facing
	// ones 503 ERR_NOT_READY (healthz included), the internal one closes
	// connections (no identity to present yet). Stop hands the listeners,
	// still open, to the proxy.
	reason := "sidecar is not ready: starting"
	if !cfg.Insecure {
		reason = "sidecar is not ready: waiting for its identity from sentry at " + cfg.SentryAddress
	}
	notReady := proxy.ServeNotReady(ls, reason, log)
	defer notReady.Stop()
	closeAll := func() {
		notReady.Stop()
		for _, l := range []net.Listener{ls.HTTP, ls.GRPC, ls.Internal, metricsL, profileL} {
			if l != nil {
				_ = l.Close()
			}
		}
	}

	// Identity.
	var src *certs.Source
	if cfg.Insecure {
		log.Warn("sidecar: --insecure: mTLS between sidecars is OFF; calls carry no caller identity. Development only.")
	} else {
		src, err = startIdentity(ctx, cfg, id, log)
		if err != nil {
			closeAll()
			if ctx.Err() != nil { // shut down while waiting for sentry: no failure
				log.Info("sidecar: stopped before the first certificate arrived", "err", err)
				return nil
			}
			return err
		}
		defer src.Close()
		notReady.SetReason("sidecar is not ready: starting")
	}

	// Discovery.
	cache := discovery.NewCache(discovery.Options{Logger: log})
	defer cache.Close()
	advertise := cfg.AdvertiseAddress
	if advertise == "" {
		host := cfg.ListenAddress
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		advertise = net.JoinHostPort(host, strconv.Itoa(ls.Internal.Addr().(*net.TCPAddr).Port))
	}
	res, err := discovery.Build(ctx, cfg.Resolver, discovery.BuildOptions{
		ConfigFile: cfg.ResolverConfig, Logger: log,
		Local: discovery.LocalInstance{Target: discovery.Target{AppID: id.AppID, Namespace: id.Namespace}, Address: advertise,
			// 503 while the app is unhealthy (proxy: /v1.0/healthz/app): consul's check.
			HealthURL: "http://" + ls.HTTP.Addr().String() + "/v1.0/healthz/app"},
	}, cache)
	if err != nil {
		closeAll()
		return fmt.Errorf("sidecar: resolver %q: %w", cfg.Resolver, err)
	}
	defer res.Close()
	go func() { // leave discovery (mdns goodbye) when shutdown begins, not after the drain
		<-ctx.Done()
		_ = res.Close()
	}()

	// App channel and health.
	pcfg := proxy.Config{Identity: id, Insecure: cfg.Insecure, Resolver: cache, Logger: log,
		MaxHeaderFields: cfg.MaxHeaderFields, BodyReadTimeout: cfg.BodyReadTimeout}
	if src != nil {
		pcfg.SVIDSource, pcfg.BundleSource = src, src
	}
	if cfg.AppPort > 0 {
		proto, err := appchannel.ParseProtocol(cfg.AppProtocol)
		if err != nil {
			closeAll()
			return err
		}
		ch, err := appchannel.New(appchannel.Config{Protocol: proto, Address: cfg.AppChannelAddress, Port: cfg.AppPort})
		if err != nil {
			closeAll()
			return err
		}
		pcfg.App = ch
		if cfg.EnableAppHealthCheck {
			hc, err := apphealth.New(apphealth.Config{
				Channel: ch, Path: cfg.AppHealthCheckPath, Interval: cfg.AppHealthProbeInterval,
				Timeout: cfg.AppHealthProbeTimeout, Threshold: cfg.AppHealthThreshold, Logger: log,
			})
			if err != nil {
				closeAll()
				return err
			}
			pcfg.AppHealth = hc
			if hs, ok := res.(discovery.LocalHealthSetter); ok { // mdns: the announcement follows the app
				hs.SetLocalHealth(hc.Healthy())
				hc.OnChange(hs.SetLocalHealth)
			}
			go hc.Run(ctx)
		}
	} else if cfg.EnableAppHealthCheck {
		closeAll()
		return errors.New("sidecar: --enable-app-health-check needs --app-port")
	}

	// Policy: loaded before serving; a bad policy stops the start.
	allowEvery := uint64(100)
	switch {
	case cfg.PolicyAllowLogEvery < 0:
		allowEvery = 0
	case cfg.PolicyAllowLogEvery > 0:
		allowEvery = uint64(cfg.PolicyAllowLogEvery)
	}
	pol, err := policy.New(ctx, policy.Options{Source: policy.Source{Dir: cfg.PolicyDir, ConfigFile: cfg.ConfigFile},
		Default: cfg.PolicyDefault, Logger: log, DecisionLog: decisionlog.New(log, allowEvery)})
	if err != nil {
		closeAll()
		return fmt.Errorf("sidecar: %w", err)
	}
	if cfg.PolicyDir != "" || cfg.ConfigFile != "" {
		go func() {
			if err := pol.Watch(ctx); err != nil {
				log.Error("sidecar: policy watch", "err", err)
			}
		}()
	}
	if cfg.PolicyDir != "" || cfg.ConfigFile != "" || cfg.PolicyDefault == policy.DefaultDeny {
		pcfg.Authorizer = pol // otherwise everything is allowed: skip the hook
	}

	// Telemetry: metrics and tracing.
	var mets *metrics.Metrics
	if metricsL != nil {
		mopts := metrics.Options{Self: discovery.Target{AppID: id.AppID, Namespace: id.Namespace}}
		if obs.Metrics != nil {
			mopts.LatencyBuckets = obs.Metrics.LatencyBuckets
		}
		if mets, err = metrics.New(mopts); err != nil {
			closeAll()
			return fmt.Errorf("sidecar: %w", err)
		}
		stopWatch, err := mets.WatchDiscovery(cache)
		if err == nil {
			defer stopWatch()
			err = mets.WatchPolicy(pol.DecisionLog(), pol)
		}
		if err == nil && src != nil {
			err = mets.WatchCerts(src)
		}
		if err != nil {
			closeAll()
			return fmt.Errorf("sidecar: %w", err)
		}
		go func() {
			if err := mets.Serve(ctx, metricsL, log); err != nil {
				log.Error("sidecar: metrics server", "err", err)
			}
		}()
	}
	tracer, err := tracing.Setup(ctx, tracing.SetupConfig{Identity: id, Spec: obs.Tracing, Logger: log})
	if err != nil {
		closeAll()
		return fmt.Errorf("sidecar: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracer.Shutdown(sctx); err != nil {
			log.Warn("sidecar: flushing spans", "err", err)
		}
	}()
	pcfg.Metrics, pcfg.Tracer = mets, tracer

	p, err := proxy.New(pcfg)
	if err != nil {
		closeAll()
		return err
	}
	p.DaprAPI = daprapi.New(p.HTTPHandler(), daprapi.WithLogger(log))
	if cfg.ResiliencyFile != "" {
		if resil != nil {
			resil.OnBreakerChange = breakerObserver(log, mets)
		}
		p.SetResiliency(resil)
		if err := resiliency.Watch(ctx, cfg.ResiliencyFile, cfg.AppID, log, func(c *resiliency.Config) {
			if c != nil {
				c.OnBreakerChange = breakerObserver(log, mets)
			}
			p.SetResiliency(c)
		}); err != nil {
			log.Warn("sidecar: --resiliency: not reloaded on change", "err", err)
		}
	}

	if cfg.WorkloadAPISocket != "" {
		if src == nil {
			closeAll()
			return errors.New("sidecar: --workload-api-socket needs mTLS (an identity from sentry)")
		}
		wl, err := workloadapi.Listen(cfg.WorkloadAPISocket, src, workloadapi.WithLogger(log))
		if err != nil {
			closeAll()
			return err
		}
		go func() {
			if err := wl.Serve(ctx); err != nil {
				log.Error("sidecar: workload API", "err", err)
			}
		}()
	}

	log.Info("meshd sidecar started", "app", id.AppID, "namespace", id.Namespace, "spiffe_id", id.String(),
		"http", ls.HTTP.Addr().String(), "grpc", ls.GRPC.Addr().String(), "internal", ls.Internal.Addr().String(),
		"advertise", advertise, "resolver", cfg.Resolver, "app_port", cfg.AppPort, "app_protocol", cfg.AppProtocol,
		"metrics", listenerAddr(metricsL), "tracing", tracer != nil)
	notReady.Stop()
	err = p.Serve(ctx, ls, cfg.ShutdownGrace)
	log.Info("meshd sidecar stopped")
	return err
}

func listen(cfg Config) (proxy.Listeners, error) {
	var ls proxy.Listeners
	var err error
	// The app-facing API is for the local app only.
	if ls.HTTP, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.HTTPPort))); err != nil {
		return ls, fmt.Errorf("sidecar: --http-port: %w", err)
	}
	if ls.GRPC, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.GRPCPort))); err != nil {
		ls.HTTP.Close()
		return ls, fmt.Errorf("sidecar: --grpc-port: %w", err)
	}
	if ls.Internal, err = net.Listen("tcp", net.JoinHostPort(cfg.ListenAddress, strconv.Itoa(cfg.InternalPort))); err != nil {
		ls.HTTP.Close()
		ls.GRPC.Close()
		return ls, fmt.Errorf("sidecar: --internal-port: %w", err)
	}
	return ls, nil
}

func startIdentity(ctx context.Context, cfg Config, id certs.Identity, log *slog.Logger) (*certs.Source, error) {
	if cfg.SentryAddress == "" {
		return nil, errors.New("sidecar: --sentry-address is required (or run with --insecure)")
	}
	pemBytes := cfg.TrustAnchorsPEM
	if cfg.TrustAnchorsFile != "" {
		b, err := os.ReadFile(cfg.TrustAnchorsFile)
		if err != nil {
			return nil, fmt.Errorf("sidecar: --trust-anchors-file: %w", err)
		}
		pemBytes = b
	}
	if len(pemBytes) == 0 {
		return nil, errors.New("sidecar: no trust anchors: set --trust-anchors-file or TRUST_ANCHORS")
	}
	anchors, err := certs.ParseCertsPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("sidecar: trust anchors: %w", err)
	}
	// The token is for bootstrap only (the first certificate, and again if
	// the SVID expired or sentry refused to renew on its strength): renewals
	// present the current SVID. The file is read afresh for every bootstrap,
	// so replacing it heals a sidecar whose token expired or was revoked.
	tokenFn := func() (string, error) { return "", nil }
	if cfg.TokenFile != "" {
		if _, err := os.ReadFile(cfg.TokenFile); err != nil {
			return nil, fmt.Errorf("sidecar: --token-file: %w", err)
		}
		tokenFn = func() (string, error) {
			b, err := os.ReadFile(cfg.TokenFile)
			if err != nil {
				return "", fmt.Errorf("sidecar: --token-file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	} else {
		log.Warn("sidecar: no --token-file: asking sentry for a certificate without a token (works only with its insecure validator)")
	}
	client, err := sentryclient.New(ctx, cfg.SentryAddress, anchors, id, "",
		sentryclient.WithLogger(log), sentryclient.WithTokenFunc(tokenFn))
	if err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	src, err := certs.NewSource(ctx, client, certs.SourceOptions{Identity: id, Logger: log})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("sidecar: first certificate from sentry %s: %w", cfg.SentryAddress, err)
	}
	go func() {
		defer client.Close()
		_ = client.WatchBundle(ctx, func(roots []*x509.Certificate) {
			if err := src.SetRoots(roots); err != nil {
				log.Error("sidecar: trust bundle from sentry rejected", "err", err)
			}
		})
	}()
	return src, nil
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
