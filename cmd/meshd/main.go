// Command meshd is the meshd sidecar. It parses flags (daprd-compatible
// names: docs/sidecar.md) and runs package sidecar.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/internal/cli"
	"github.com/meshd/meshd/policy"
	"github.com/meshd/meshd/policy/decisionlog"
	"github.com/meshd/meshd/proxy"
	"github.com/meshd/meshd/sidecar"
	"github.com/meshd/meshd/telemetry/logging"
)

func main() {
	tuneSysmon()
	root := newCommand()
	cli.Prepare(root)
	os.Exit(cli.ExitCode(cli.Execute(root, singleDashArgs(os.Args[1:]), os.Stderr)))
}

func newCommand() *cobra.Command {
	var (
		cfg                 sidecar.Config
		appProtocol         string
		enableMetrics       bool
		policyDefault       string
		logLevel, logFormat string
		cpus                int
		allowLogEvery       int
		recentDecisions     int
		h1Server, h1Client  string
		h2Server            string
		h2Client            string
		dapr                *daprFlags
		peer                *peerFlags
	)
	cmd := &cobra.Command{
		Use:   "meshd",
		Short: "meshd service-mesh sidecar (Dapr-compatible service invocation over SPIFFE mTLS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.AppID == "" {
				return errors.New(`required flag(s) "app-id" not set`)
			}
			dapr.preLog(cmd.Flags(), &logFormat)
			log, err := logging.New(os.Stderr, logLevel, logFormat)
			if err != nil {
				return fmt.Errorf("meshd: %w", err)
			}
			cfg.Logger = log
			setCPUs(cmd.Flags().Changed("cpus"), cpus)
			if err := dapr.apply(cmd.Flags(), &cfg, &appProtocol, log); err != nil {
				return err
			}
			cfg.AppProtocol = appProtocol
			setMemProfiling(cfg.EnableProfiling)
			if !cmd.Flags().Changed("namespace") {
				if ns := os.Getenv("NAMESPACE"); ns != "" {
					cfg.Namespace = ns
				}
			}
			if cfg.TrustAnchorsFile == "" {
				if v := os.Getenv("TRUST_ANCHORS"); strings.Contains(v, "-----BEGIN") {
					cfg.TrustAnchorsPEM = []byte(v)
				} else if v != "" {
					cfg.TrustAnchorsFile = v
				}
			}
			if cfg.PolicyDefault, err = policy.ParseDefault(policyDefault); err != nil {
				return fmt.Errorf("meshd: --policy-default: %w", err)
			}
			if allowLogEvery < 0 {
				return fmt.Errorf("meshd: --policy-allow-log-every %d: want 0 (no allows) or more", allowLogEvery)
			}
			cfg.PolicyAllowLogEvery = allowLogEvery
			if allowLogEvery == 0 {
				cfg.PolicyAllowLogEvery = -1
			}
			if recentDecisions < 0 {
				return fmt.Errorf("meshd: --policy-recent-decisions %d: want 0 (none) or more", recentDecisions)
			}
			cfg.PolicyRecentDecisions = recentDecisions
			if recentDecisions == 0 {
				cfg.PolicyRecentDecisions = -1
			}
			if cfg.AdminPort < -1 || cfg.AdminPort > 65535 {
				return fmt.Errorf("meshd: --admin-port %d: want a port, 0 (on the metrics port) or -1 (off)", cfg.AdminPort)
			}
			cfg.DisableMetrics = !enableMetrics
			if cfg.NetHTTPServer, err = parseH1("--h1-server", h1Server); err != nil {
				return err
			}
			if cfg.NetHTTPClient, err = parseH1("--h1-client", h1Client); err != nil {
				return err
			}
			if cfg.NetHTTPH2Server, err = parseImpl("--h2-server", h2Server, h2Impl); err != nil {
				return err
			}
			if cfg.NetHTTPH2Client, err = parseH2Client(h2Client); err != nil {
				return err
			}
			if err := peer.apply(&cfg); err != nil {
				return err
			}
			if cfg.MaxHeaderFields == 0 || cfg.BodyReadTimeout == 0 {
				return fmt.Errorf("meshd: --max-request-header-fields and --request-body-timeout: want a bound, or -1 for none (0 is neither)")
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return sidecar.Run(ctx, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.AppID, "app-id", "", "ID of the app this sidecar serves (required; no dots)")
	f.StringVar(&cfg.Namespace, "namespace", "default", "namespace of the app (env NAMESPACE)")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	f.IntVar(&cfg.AppPort, "app-port", 0, "port the app listens on (0: no app; the sidecar can still call out)")
	f.StringVar(&appProtocol, "app-protocol", "http", "protocol of the app: http, https, grpc, grpcs or h2c")
	f.StringVar(&cfg.AppChannelAddress, "app-channel-address", "127.0.0.1", "host of the app")
	f.IntVar(&cfg.HTTPPort, "http-port", 3500, "app-facing HTTP API port (127.0.0.1)")
	f.IntVar(&cfg.GRPCPort, "grpc-port", 50001, "app-facing gRPC API port (127.0.0.1)")
	f.IntVar(&cfg.InternalPort, "internal-port", 50002, "sidecar-to-sidecar mTLS port")
	f.IntVar(&cfg.MetricsPort, "metrics-port", 9090, "Prometheus metrics port (/metrics)")
	f.IntVar(&cfg.PublicPort, "public-port", 0, "port serving /v1.0/healthz on --public-listen-address for the kubelet's probes (0: off; the injector sets 3501)")
	f.StringVar(&cfg.PublicListenAddress, "public-listen-address", "", "address --public-port binds (default: all interfaces)")
	f.StringVar(&cfg.MetricsListenAddress, "metrics-listen-address", "127.0.0.1", "address the metrics port binds (0.0.0.0 to let a remote Prometheus scrape)")
	f.BoolVar(&enableMetrics, "enable-metrics", true, "serve Prometheus metrics on --metrics-port")
	f.IntVar(&cfg.AdminPort, "admin-port", 0, "port of the read-only admin endpoint (/admin/v1/status, /admin/v1/decisions) on --admin-listen-address; 0: on the metrics port when that binds loopback; -1: off")
	f.StringVar(&cfg.AdminListenAddress, "admin-listen-address", "127.0.0.1", "address --admin-port binds: loopback only (127.0.0.1, ::1, localhost)")
	f.BoolVar(&cfg.EnableProfiling, "enable-profiling", false, "serve Go profiles (/debug/pprof/) on 127.0.0.1:--profile-port")
	f.IntVar(&cfg.ProfilePort, "profile-port", 7777, "port of the Go profiles (with --enable-profiling)")
	f.StringVar(&cfg.ListenAddress, "listen-address", "", "address the internal port binds (default: all interfaces)")
	f.StringVar(&cfg.AdvertiseAddress, "advertise-address", "", "host:port other sidecars reach the internal port at (default: derived from --listen-address)")
	f.StringVar(&cfg.SentryAddress, "sentry-address", "", "host:port of sentry")
	f.StringVar(&cfg.TrustAnchorsFile, "trust-anchors-file", "", "PEM file of the sentry trust anchors (env TRUST_ANCHORS: PEM or a file path)")
	f.StringVar(&cfg.TokenFile, "token-file", "", "file holding the sentry join token (none: sentry's insecure validator)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "turn mTLS between sidecars off (development only)")
	f.StringVar(&cfg.Resolver, "resolver", "mdns", "name resolution backend: mdns (multicast DNS on this host's network), consul, kubernetes (EndpointSlices), static, or xds (meshd's control plane)")
	f.StringVar(&cfg.ResolverConfig, "resolver-config", "", "configuration file of the resolver")
	f.StringVar(&cfg.PolicyDir, "policy-dir", "", "policy directory: {dir}/{namespace}/*.rego|*.yaml, {dir}/_mesh/ mesh-wide (reloaded on change)")
	f.Var(&onceString{p: &cfg.ConfigFile}, "config", "Dapr Configuration YAML: spec.accessControl (calls to this app), spec.tracing (OTLP export, sampling), spec.metrics (one file: daprd's repeated --config is refused)")
	f.StringVar(&policyDefault, "policy-default", "allow", "decision for namespaces without policy: allow or deny (deny is the secure choice)")
	f.IntVar(&allowLogEvery, "policy-allow-log-every", 100, "decision log: log one allowed call in N (denials are always logged); 0 logs no allows, 1 every allow")
	f.IntVar(&recentDecisions, "policy-recent-decisions", decisionlog.DefaultRecent, "recent policy decisions, every one, kept in memory for the admin endpoint (meshctl policy preview, the dashboard); 0: none")
	f.StringVar(&cfg.ResiliencyFile, "resiliency", "", "Dapr Resiliency YAML: timeouts, retries, circuit breakers for calls to other apps (reloaded on change)")
	f.BoolVar(&cfg.EnableAppHealthCheck, "enable-app-health-check", false, "probe the app and short-circuit calls while it is unhealthy")
	f.StringVar(&cfg.AppHealthCheckPath, "app-health-check-path", "/healthz", "HTTP path of the app health probe")
	f.Var(newDaprDuration(&cfg.AppHealthProbeInterval, 5e9, time.Second), "app-health-probe-interval", "interval between app health probes (a bare number: seconds, as daprd)")
	f.Var(newDaprDuration(&cfg.AppHealthProbeTimeout, 5e8, time.Millisecond), "app-health-probe-timeout", "timeout of one app health probe (a bare number: milliseconds, as daprd)")
	f.IntVar(&cfg.AppHealthThreshold, "app-health-threshold", 3, "consecutive failed probes before the app is unhealthy")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 5e9, "how long in-flight calls may finish on shutdown")
	f.IntVar(&cfg.MaxHeaderFields, "max-request-header-fields", proxy.DefaultMaxHeaderFields, "most header fields a request may carry on any port (more: 431); the internal port allows 16 more for those the caller sidecar adds; -1: no bound")
	f.DurationVar(&cfg.BodyReadTimeout, "request-body-timeout", proxy.DefaultBodyReadTimeout, "longest a request body may keep the sidecar waiting without 1 KiB arriving (then 408); gRPC calls are exempt; -1s: no bound")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	f.IntVar(&cpus, "cpus", 1, "CPUs that run the sidecar's Go code at once (GOMAXPROCS); 0: the Go runtime's default (all CPUs the cgroup allows). The GOMAXPROCS environment variable wins unless this flag is given")
	f.StringVar(&cfg.WorkloadAPISocket, "workload-api-socket", "", "unix socket path to serve the SPIFFE Workload API on")
	f.StringVar(&h1Server, "h1-server", envOr("MESHD_H1_SERVER", h1Impl), "HTTP/1.x server of the HTTP and internal ports: h1 (meshd's) or nethttp (Go's net/http; env MESHD_H1_SERVER)")
	f.StringVar(&h1Client, "h1-client", envOr("MESHD_H1_CLIENT", h1Impl), "HTTP/1.1 client to peer sidecars and the app: h1 (meshd's) or nethttp (Go's net/http; env MESHD_H1_CLIENT)")
	f.StringVar(&h2Server, "h2-server", envOr("MESHD_H2_SERVER", defaultH2Server), "HTTP/2 server of every port: h2 (meshd's) or nethttp (Go's net/http; env MESHD_H2_SERVER)")
	addH2ClientFlag(f, &h2Client)
	dapr = addDaprFlags(f, &cfg)
	peer = addPeerFlags(f)
	return cmd
}

// setMemProfiling turns the runtime's heap-profile sampling off unless the
// sidecar serves Go profiles (--enable-profiling): otherwise nobody can read
// the profile, and it costs a stack walk per 512 KiB allocated and a bucket
// per distinct allocating stack, kept for the life of the process (the
// runtime's BuckHashSys was 1.4 MB in a loaded sidecar). With profiling on,
// the Go default rate stays.
func setMemProfiling(on bool) {
	if !on {
		runtime.MemProfileRate = 0
	}
}

// setCPUs applies --cpus. One CPU is the default: a sidecar spends its time
// handing bytes between goroutines, and with more than one P every hand-off
// may wake another OS thread; on the 2-vCPU bench box GOMAXPROCS=1 cut the
// context switches per call from ~9.5 to ~6.4 per sidecar and the pair CPU
// per call by ~25% (tests/bench/pairbench).
func setCPUs(explicit bool, n int) {
	if !explicit && os.Getenv("GOMAXPROCS") != "" {
		return
	}
	if n <= 0 {
		return // the runtime's default: all CPUs the cgroup allows
	}
	runtime.GOMAXPROCS(n)
}

// h1Impl and netHTTPImpl are the values of --h1-server and --h1-client;
// h2Impl and netHTTPImpl those of --h2-server.
const (
	h1Impl      = "h1"
	h2Impl      = "h2"
	netHTTPImpl = "nethttp"
)

// defaultH2Server is --h2-server's default.
const defaultH2Server = h2Impl

// parseH1 reads --h1-server or --h1-client: whether net/http serves (or
// sends) HTTP/1.x instead of proxy/internal/h1.
func parseH1(flag, v string) (netHTTP bool, err error) { return parseImpl(flag, v, h1Impl) }

// parseImpl reads a --h1-* or --h2-* flag: whether net/http is chosen
// instead of meshd's own (named own).
func parseImpl(flag, v, own string) (netHTTP bool, err error) {
	switch v {
	case own:
		return false, nil
	case netHTTPImpl:
		return true, nil
	}
	return false, fmt.Errorf("meshd: %s %q: want %s or %s", flag, v, own, netHTTPImpl)
}

// envOr returns the environment variable key, or def when it is unset or
// empty.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
