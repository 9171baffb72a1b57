package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing/fstest"
	"time"

	"github.com/meshd/meshd/certs/workloadapi"
	"github.com/meshd/meshd/config/daprconfig"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/decisionlog"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/proxy/appcallback"
	"github.com/meshd/meshd/proxy/appchannel"
	"github.com/meshd/meshd/proxy/apphealth"
	"github.com/meshd/meshd/proxy/daprapi"
	"github.com/meshd/meshd/proxy/resiliency"
	"github.com/meshd/meshd/telemetry/metrics"
	"github.com/meshd/meshd/telemetry/tracing"
)

// readConfig reads --resiliency and --config: a bad file, or a --resolver
// this build left out, stops the start before any socket is opened.
func (s *sidecar) readConfig(context.Context) error {
	cfg := &s.cfg
	if err := omittedBackend(cfg.Resolver); err != nil {
		return err
	}
	if cfg.ResiliencyFile != "" {
		var err error
		if s.resil, err = resiliency.Load(cfg.ResiliencyFile, cfg.AppID, s.log); err != nil {
			return fmt.Errorf("sidecar: --resiliency: %w", err)
		}
	}
	// spec.tracing and spec.metrics of --config (spec.accessControl is
	// the policy engine's).
	if cfg.ConfigFile != "" {
		data, err := os.ReadFile(cfg.ConfigFile)
		if err != nil {
			return fmt.Errorf("sidecar: --config: %w", err)
		}
		if s.obs, err = daprconfig.Parse(cfg.ConfigFile, data); err != nil {
			return fmt.Errorf("sidecar: --config: %w", err)
		}
		for _, f := range s.obs.Ignored {
			s.log.Warn("sidecar: --config: field accepted for Dapr compatibility but not used", "field", f)
		}
	}
	return nil
}

// listen binds every socket first, so a port clash fails before anything
// else starts. Until the proxy serves them, the ports answer at once: the
// app-facing ones 503 ERR_NOT_READY (healthz included), the internal one
// closes connections (no identity to present yet).
func (s *sidecar) listen(context.Context) error {
	cfg := &s.cfg
	var err error
	if s.ls, err = listen(*cfg); err != nil {
		return err
	}
	s.teardown.Push(func() {
		for _, l := range []net.Listener{s.ls.HTTP, s.ls.GRPC, s.ls.Internal} {
			_ = l.Close()
		}
	})
	if !cfg.DisableMetrics && (s.obs.Metrics == nil || s.obs.Metrics.Enabled) {
		host := cfg.MetricsListenAddress
		if host == "" {
			host = "127.0.0.1"
		}
		if s.metricsL, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.MetricsPort))); err != nil {
			return fmt.Errorf("sidecar: --metrics-port: %w", err)
		}
		s.teardown.Push(func() { _ = s.metricsL.Close() })
	}
	if cfg.PublicPort > 0 {
		if s.publicL, err = net.Listen("tcp", net.JoinHostPort(cfg.PublicListenAddress, strconv.Itoa(cfg.PublicPort))); err != nil {
			return fmt.Errorf("sidecar: --public-port: %w", err)
		}
		s.teardown.Push(startPublic(s.publicL, &s.public))
	}
	if err := s.adminListen(); err != nil {
		return err
	}
	if cfg.EnableProfiling {
		if s.profileL, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.ProfilePort))); err != nil {
			return fmt.Errorf("sidecar: --profile-port: %w", err)
		}
		s.teardown.Push(func() { _ = s.profileL.Close() })
		s.log.Warn("sidecar: --enable-profiling: Go profiles served on loopback", "addr", s.profileL.Addr().String())
		s.run(func(ctx context.Context) error { serveProfiles(ctx, s.profileL); return nil })
	}
	reason := "sidecar is not ready: starting"
	if !cfg.Insecure {
		reason = "sidecar is not ready: waiting for its identity from sentry at " + cfg.SentryAddress
	}
	// Stop hands the listeners, still open, to the proxy.
	s.notReady = proxy.ServeNotReady(s.ls, reason, s.log)
	s.teardown.Push(s.notReady.Stop)
	return nil
}

// identity waits for the first workload certificate from sentry (the ports
// answer "not ready" meanwhile) and keeps the trust bundle in step.
func (s *sidecar) identity(ctx context.Context) error {
	if s.cfg.Insecure {
		s.log.Warn("sidecar: --insecure: mTLS between sidecars is OFF; calls carry no caller identity. Development only.")
		return nil
	}
	src, watchBundle, closeClient, err := startIdentity(ctx, s.cfg, s.id, s.log, s.notReady.SetReason)
	if err != nil {
		if ctx.Err() != nil { // shut down while waiting for sentry: no failure
			return fmt.Errorf("%w: %w", errStopped, err)
		}
		return err
	}
	s.src = src
	s.teardown.Push(closeClient)
	s.teardown.Push(func() { src.Close() })
	s.run(watchBundle)
	s.notReady.SetReason("sidecar is not ready: starting")
	return nil
}

// discovery builds the resolver backend into the Cache. It leaves discovery
// (mdns goodbye) when shutdown begins, not after the drain.
func (s *sidecar) discovery(ctx context.Context) error {
	cfg := &s.cfg
	s.cache = discovery.NewCache(discovery.Options{Logger: s.log,
		ProbeInterval: cfg.EjectionProbeInterval, CheckInterval: max(cfg.EjectionCheckInterval, 0)})
	s.teardown.Push(func() { s.cache.Close() })
	s.advertise = cfg.AdvertiseAddress
	if s.advertise == "" {
		host := cfg.ListenAddress
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		s.advertise = net.JoinHostPort(host, strconv.Itoa(s.ls.Internal.Addr().(*net.TCPAddr).Port))
	}
	// 503 while the app is unhealthy (proxy: /v1.0/healthz/app): consul's
	// check. None when the HTTP API is on a unix socket.
	var healthURL string
	if _, ok := s.ls.HTTP.Addr().(*net.TCPAddr); ok {
		healthURL = "http://" + s.ls.HTTP.Addr().String() + "/v1.0/healthz/app"
	}
	bopts := discovery.BuildOptions{
		ConfigFile: cfg.ResolverConfig, Logger: s.log,
		ControlPlaneAddress: cfg.ControlPlaneAddress, ControlPlaneNamespace: cfg.ControlPlaneNamespace,
		Local: discovery.LocalInstance{Target: discovery.Target{AppID: s.id.AppID, Namespace: s.id.Namespace}, Address: s.advertise,
			HealthURL: healthURL},
	}
	if s.src != nil { // xds: the control plane is reached with the sidecar's SVID
		bopts.SVIDSource, bopts.BundleSource = s.src, s.src
	}
	res, err := s.cache.Build(ctx, cfg.Resolver, bopts)
	if err != nil {
		return fmt.Errorf("sidecar: resolver %q: %w", cfg.Resolver, err)
	}
	s.res = res
	s.teardown.Push(func() { _ = res.Close() })
	s.run(func(ctx context.Context) error {
		<-ctx.Done()
		_ = res.Close()
		return nil
	})
	s.pcfg = proxy.Config{Identity: s.id, Insecure: cfg.Insecure, Resolver: s.cache.Picker(), Logger: s.log,
		MaxHeaderFields: cfg.MaxHeaderFields, BodyReadTimeout: cfg.BodyReadTimeout,
		NetHTTPServer: cfg.NetHTTPServer, NetHTTPClient: cfg.NetHTTPClient,
		NetHTTPH2Server: cfg.NetHTTPH2Server, NetHTTPH2Client: cfg.NetHTTPH2Client,
		APIToken: cfg.APIToken, AppAPIToken: cfg.AppAPIToken,
		PeerKeepalive: cfg.PeerKeepalive, PeerKeepaliveTimeout: cfg.PeerKeepaliveTimeout}
	if s.src != nil {
		s.pcfg.SVIDSource, s.pcfg.BundleSource = s.src, s.src
	}
	return nil
}

// app is the channel to the local app and its health checker.
func (s *sidecar) app(context.Context) error {
	cfg := &s.cfg
	if cfg.AppPort <= 0 {
		if cfg.EnableAppHealthCheck {
			return errors.New("sidecar: --enable-app-health-check needs --app-port")
		}
		return nil
	}
	proto, err := appchannel.ParseProtocol(cfg.AppProtocol)
	if err != nil {
		return err
	}
	ch, err := appchannel.New(appchannel.Config{Protocol: proto, Address: cfg.AppChannelAddress, Port: cfg.AppPort,
		NetHTTPClient: cfg.NetHTTPClient, NetHTTPH2Client: cfg.NetHTTPH2Client})
	if err != nil {
		return err
	}
	s.pcfg.App = ch
	if proto.IsGRPC() {
		// Plain HTTP calls (the invoke APIs) go to AppCallback/OnInvoke.
		host := cfg.AppChannelAddress
		if host == "" {
			host = "127.0.0.1"
		}
		cb, err := appcallback.New(appcallback.Config{Target: net.JoinHostPort(host, strconv.Itoa(cfg.AppPort)),
			TLS: proto == appchannel.GRPCS, MaxMessageSize: cfg.MaxMessageSize, AppName: cfg.AppID})
		if err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
		s.teardown.Push(func() { _ = cb.Close() })
		s.pcfg.AppCallback = cb
	}
	if !cfg.EnableAppHealthCheck {
		return nil
	}
	hc, err := apphealth.New(apphealth.Config{
		Channel: ch, Path: cfg.AppHealthCheckPath, Interval: cfg.AppHealthProbeInterval,
		Timeout: cfg.AppHealthProbeTimeout, Threshold: cfg.AppHealthThreshold, Logger: s.log,
	})
	if err != nil {
		return err
	}
	s.pcfg.AppHealth = hc
	if hs, ok := s.res.(discovery.LocalHealthSetter); ok { // mdns: the announcement follows the app
		hs.SetLocalHealth(hc.Healthy())
		hc.OnChange(hs.SetLocalHealth)
	}
	s.run(func(ctx context.Context) error { hc.Run(ctx); return nil })
	return nil
}

// policy is loaded before serving; a bad policy stops the start.
func (s *sidecar) policy(ctx context.Context) error {
	cfg := &s.cfg
	allowEvery := uint64(100)
	switch {
	case cfg.PolicyAllowLogEvery < 0:
		allowEvery = 0
	case cfg.PolicyAllowLogEvery > 0:
		allowEvery = uint64(cfg.PolicyAllowLogEvery)
	}
	recent := cfg.PolicyRecentDecisions
	if recent == 0 {
		recent = decisionlog.DefaultRecent
	}
	src := policy.Source{Dir: cfg.PolicyDir, ConfigFile: cfg.ConfigFile}
	// A resolver that carries policy (xds) is the policy tree, unless
	// --policy-dir names one: files given on the command line win.
	feed, _ := s.res.(discovery.PolicyFeed)
	if feed != nil && cfg.PolicyDir != "" {
		s.log.Warn("sidecar: --policy-dir is set: the policies of the resolver are not used", "resolver", cfg.Resolver)
		feed = nil
	}
	var eng atomic.Pointer[policy.Engine]
	gate := make(chan struct{}) // closed once the engine is made (or failed)
	if feed != nil {
		// The engine is loaded from the tree received so far; every later
		// tree goes through ReloadFS, the same check-then-swap as a file
		// reload, and a tree it rejects is NACKed by the resolver.
		src.FS = feed.Policies(func(fsys fs.FS) error {
			<-gate
			if e := eng.Load(); e != nil {
				return e.ReloadFS(ctx, fsys)
			}
			return errors.New("sidecar: no policy engine")
		})
		if src.FS == nil {
			src.FS = fstest.MapFS{}
		}
	}
	pol, err := policy.New(ctx, policy.Options{Source: src,
		Default: cfg.PolicyDefault, Logger: s.log, DecisionLog: decisionlog.New(s.log, allowEvery, decisionlog.WithRecent(recent))})
	if err == nil {
		eng.Store(pol)
	}
	close(gate)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	s.pol = pol
	if cfg.PolicyDir != "" || cfg.ConfigFile != "" {
		s.run(pol.Watch)
	}
	if feed != nil || cfg.PolicyDir != "" || cfg.ConfigFile != "" || cfg.PolicyDefault == policy.DefaultDeny {
		s.pcfg.Authorizer = pol // otherwise everything is allowed: skip the hook
	}
	return nil
}

// telemetry is metrics and tracing.
func (s *sidecar) telemetry(ctx context.Context) error {
	mounts := s.adminServe()
	if s.metricsL != nil {
		mopts := metrics.Options{Self: discovery.Target{AppID: s.id.AppID, Namespace: s.id.Namespace}}
		if s.obs.Metrics != nil {
			mopts.LatencyBuckets = s.obs.Metrics.LatencyBuckets
		}
		mets, err := metrics.New(mopts)
		if err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
		stopWatch, err := mets.WatchDiscovery(s.cache)
		if err == nil {
			s.teardown.Push(stopWatch)
			err = mets.WatchPolicy(s.pol.DecisionLog(), s.pol)
		}
		if err == nil && s.src != nil {
			err = mets.WatchCerts(s.src)
		}
		if err == nil {
			err = mets.WatchPolicyMode(s.policyMode)
		}
		if err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
		s.mets = mets
		s.run(func(ctx context.Context) error { return mets.Serve(ctx, s.metricsL, s.log, mounts...) })
	}
	tracer, err := tracing.Setup(ctx, tracing.SetupConfig{Identity: s.id, Spec: s.obs.Tracing, Logger: s.log})
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	s.teardown.Push(func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracer.Shutdown(sctx); err != nil {
			s.log.Warn("sidecar: flushing spans", "err", err)
		}
	})
	if tracer == nil {
		// No exporter: still pass trace context on and answer every call
		// with a traceparent, as daprd does.
		tracer = tracing.NewPropagator(s.id)
	}
	s.pcfg.Metrics, s.pcfg.Tracer = s.mets, tracer
	return nil
}

// proxy builds the data plane and the Dapr gRPC API, and follows the
// resiliency file. It serves last: the proxy component takes the listeners
// over from the "not ready" answers.
func (s *sidecar) proxy(ctx context.Context) error {
	cfg := &s.cfg
	p, err := proxy.New(s.pcfg)
	if err != nil {
		return err
	}
	s.p = p
	if cfg.EjectionCheckInterval >= 0 {
		s.cache.SetChecker(p.PeerChecker()) // ejected endpoints are checked, not waited out
	}
	// The gRPC port checked the API token before handing the call over.
	attrs := new(daprapi.Attributes) // the app's own metadata attributes
	p.DaprAPI = daprapi.New(p.InvokeHandler(), daprapi.WithLogger(s.log), daprapi.WithMetadata(s.metadata),
		daprapi.WithAttributes(attrs), daprapi.WithMaxMessageSize(cfg.MaxMessageSize))
	p.Metadata = daprapi.MetadataHandler(s.metadata, attrs)
	if cfg.ResiliencyFile != "" {
		if s.resil != nil {
			s.resil.OnBreakerChange = breakerObserver(s.log, s.mets)
		}
		p.SetResiliency(s.resil)
		if err := resiliency.Watch(ctx, cfg.ResiliencyFile, cfg.AppID, s.log, func(c *resiliency.Config) {
			if c != nil {
				c.OnBreakerChange = breakerObserver(s.log, s.mets)
			}
			p.SetResiliency(c)
		}); err != nil {
			s.log.Warn("sidecar: --resiliency: not reloaded on change", "err", err)
		}
	}
	s.run(func(ctx context.Context) error {
		s.log.Info("meshd sidecar started", "app", s.id.AppID, "namespace", s.id.Namespace, "spiffe_id", s.id.String(),
			"http", s.ls.HTTP.Addr().String(), "grpc", s.ls.GRPC.Addr().String(), "internal", s.ls.Internal.Addr().String(),
			"advertise", s.advertise, "resolver", cfg.Resolver, "app_port", cfg.AppPort, "app_protocol", cfg.AppProtocol,
			"metrics", listenerAddr(s.metricsL), "tracing", s.pcfg.Tracer.Exporting(),
			"h1_server", h1Name(cfg.NetHTTPServer), "h1_client", h1Name(cfg.NetHTTPClient),
			"h2_server", h2Name(cfg.NetHTTPH2Server), "h2_client", h2ClientName(cfg.NetHTTPH2Client))
		s.notReady.Stop()
		s.public.p.Store(p)
		return p.Serve(ctx, s.ls, cfg.ShutdownGrace)
	})
	return nil
}

// workloadAPI serves the SPIFFE Workload API on a unix socket.
func (s *sidecar) workloadAPI(context.Context) error {
	if s.cfg.WorkloadAPISocket == "" {
		return nil
	}
	if s.src == nil {
		return errors.New("sidecar: --workload-api-socket needs mTLS (an identity from sentry)")
	}
	wl, err := workloadapi.Listen(s.cfg.WorkloadAPISocket, s.src, workloadapi.WithLogger(s.log))
	if err != nil {
		return err
	}
	s.run(wl.Serve)
	return nil
}

// h1Name names the HTTP/1.x implementation in the start log line.
func h2ClientName(netHTTP bool) string {
	if netHTTP {
		return "nethttp"
	}
	return "h2"
}

func h1Name(netHTTP bool) string {
	if netHTTP {
		return "nethttp"
	}
	return "h1"
}

func h2Name(netHTTP bool) string {
	if netHTTP {
		return "nethttp"
	}
	return "h2"
}
