// Command controlplane is meshd's xDS control plane: it watches one
// discovery backend and the policy directory and pushes endpoints and
// policies to sidecars (--resolver xds) over ADS. See package
// github.com/meshd/meshd/xds and docs/xds.md; this file only wires flags.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/certs"
	_ "github.com/meshd/meshd/discovery/consul"     // --resolver consul
	_ "github.com/meshd/meshd/discovery/kubernetes" // --resolver kubernetes
	_ "github.com/meshd/meshd/discovery/mdns"       // --resolver mdns
	_ "github.com/meshd/meshd/discovery/static"     // --resolver static
	xdsclient "github.com/meshd/meshd/discovery/xds"
	"github.com/meshd/meshd/internal/cli"
	"github.com/meshd/meshd/internal/version"
	kubecp "github.com/meshd/meshd/kube/controlplane"
	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/lifecycle"
	"github.com/meshd/meshd/telemetry/logging"
	"github.com/meshd/meshd/xds"
	"github.com/meshd/meshd/xds/grpcxds"
)

func main() {
	root := newRootCmd()
	cli.Prepare(root)
	os.Exit(cli.ExitCode(cli.Execute(root, os.Args[1:], os.Stderr)))
}

func newRootCmd() *cobra.Command {
	var (
		pc                  xds.ProcessConfig
		kc                  kubecp.Options
		trustDomain         string
		exports             []string
		proxyless           bool
		leaderElect         bool
		logLevel, logFormat string
	)
	cmd := &cobra.Command{
		Use:           "controlplane",
		Short:         "meshd's xDS control plane: watches discovery and policy once, pushes them to every sidecar",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			pc.Logger = log
			if pc.TrustDomain, err = spiffeid.TrustDomainFromString(trustDomain); err != nil {
				return fmt.Errorf("--trust-domain %q: %w", trustDomain, err)
			}
			if pc.Exports, err = parseExports(exports); err != nil {
				return err
			}
			if proxyless {
				pc.Hook = xds.ProxylessHook(pc.TrustDomain, grpcxds.Options{})
			}
			if pc.Sentry.TrustAnchorsFile == "" {
				if v := os.Getenv("TRUST_ANCHORS"); strings.Contains(v, "-----BEGIN") {
					pc.Sentry.TrustAnchorsPEM = []byte(v)
				} else if v != "" {
					pc.Sentry.TrustAnchorsFile = v
				}
			}
			if kc.Enabled() {
				kc.Namespace, kc.TrustDomain, kc.PolicyDir, kc.Logger = pc.Namespace, pc.TrustDomain, pc.PolicyDir, log
				kc.Injector.TrustDomain, kc.Injector.LogLevel, kc.Injector.LogFormat = trustDomain, logLevel, logFormat
				kc.Injector.Version = version.String()
				kc.Election.Disabled = !leaderElect
				if err := sidecarControlPlane(&kc.Injector, pc.Namespace, pc.AppID); err != nil {
					return err
				}
				pc.Extra = func(src *certs.Source) ([]lifecycle.Component, error) { return kubecp.Components(kc, src) }
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return xds.RunProcess(ctx, pc)
		},
	}
	f := cmd.Flags()
	f.StringVar(&pc.Resolver, "resolver", "static", "discovery backend watched: static, consul, kubernetes or mdns")
	f.StringVar(&pc.ResolverConfig, "resolver-config", "", "configuration file of the resolver (as for meshd)")
	f.StringVar(&pc.PolicyDir, "policy-dir", "", "policy directory served as PolicySets: {dir}/{namespace}/*.rego|*.yaml, {dir}/_mesh/ (reloaded on change)")
	f.StringArrayVar(&exports, "export", nil, "NS=NS1,NS2: the apps of NS are also served to clients of NS1 and NS2 (* for all namespaces); repeatable")
	f.BoolVar(&proxyless, "proxyless", true, "also serve each app to proxyless grpc-go clients (xds:///app.namespace): an API Listener, its RouteConfiguration and a Cluster with the mesh mTLS settings (docs/xds.md)")
	f.StringVar(&pc.Listen, "listen", "127.0.0.1:15010", "host:port of the ADS (xDS) port, mTLS")
	f.StringVar(&trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	f.StringVar(&pc.Namespace, "namespace", "meshd-system", "namespace of the control plane's own SPIFFE ID")
	f.StringVar(&pc.AppID, "app-id", "controlplane", "app ID of the control plane's own SPIFFE ID")
	f.StringVar(&pc.Sentry.SentryAddress, "sentry-address", "", "host:port of sentry")
	f.StringVar(&pc.Sentry.TrustAnchorsFile, "trust-anchors-file", "", "PEM file of the sentry trust anchors (env TRUST_ANCHORS: PEM or a file path)")
	f.StringVar(&pc.Sentry.TokenFile, "token-file", "", "file holding the sentry join token for the control plane's identity")
	f.DurationVar(&pc.Debounce, "debounce", xds.DefaultDebounce, "quiet time after a change before it is pushed")
	// Kubernetes (docs/kubernetes.md).
	f.StringVar(&kc.Kubeconfig, "kubeconfig", "", "Kubernetes parts: kubeconfig file (empty: in-cluster configuration)")
	f.StringVar(&kc.InjectorListen, "injector-listen", "", "host:port of the sidecar injector's admission webhook (TLS with the control plane's certificate; empty: no injector)")
	f.StringVar(&kc.Webhook, "injector-webhook", "", "MutatingWebhookConfiguration whose caBundle is kept equal to sentry's trust bundle (empty: not kept)")
	f.StringVar(&kc.Injector.Image, "sidecar-image", injector.DefaultImage, "injector: the meshd image of injected sidecars")
	f.StringVar(&kc.Injector.Resolver, "sidecar-resolver", injector.DefaultResolver, "injector: --resolver of injected sidecars (kubernetes or xds)")
	f.StringVar(&kc.Injector.ResolverConfig, "sidecar-resolver-config", "", "injector: --resolver-config of injected sidecars")
	f.StringVar(&kc.Injector.ControlPlaneAddress, "sidecar-control-plane-address", "", "injector: with --sidecar-resolver xds, the --control-plane-address of injected sidecars (default meshd-controlplane.{--namespace}.svc:15010, the chart's Service)")
	f.StringVar(&kc.Injector.SentryAddress, "sidecar-sentry-address", injector.DefaultSentryAddress, "injector: --sentry-address of injected sidecars")
	f.StringVar(&kc.Injector.PolicyConfigMap, "sidecar-policy-configmap", "", "injector: mount this ConfigMap of the pod's namespace as its policy (without a control plane's policies; empty: none)")
	f.StringVar(&kc.Injector.PolicyDefault, "sidecar-policy-default", "", "injector: --policy-default of injected sidecars (empty: meshd's)")
	f.StringArrayVar(&kc.Injector.ExtraArgs, "sidecar-arg", nil, "injector: an extra argument for every injected sidecar; repeatable")
	f.BoolVar(&kc.AppServices, "app-services", false, "keep the headless Service {app-id}-meshd of every app with meshd pods")
	f.BoolVar(&leaderElect, "leader-elect", true, "run the writers (app Services, Events on policy ConfigMaps) only on the replica holding the Lease meshd-controlplane in --namespace; false: on this replica, unconditionally (one replica only)")
	f.DurationVar(&kc.Election.LeaseDuration, "leader-elect-lease-duration", kubecp.DefaultLeaseDuration, "how long a replica's Lease holds without renewal: the longest a crashed leader's writers stay stopped")
	f.DurationVar(&kc.Election.RenewDeadline, "leader-elect-renew-deadline", kubecp.DefaultRenewDeadline, "how long the leader keeps trying to renew before it stops leading")
	f.DurationVar(&kc.Election.RetryPeriod, "leader-elect-retry-period", kubecp.DefaultRetryPeriod, "how often replicas try to acquire or renew the Lease")
	f.StringVar(&kc.PolicySource, "policy-source", "dir", "dir (--policy-dir is yours) or kubernetes (ConfigMaps labelled meshd.io/policy are written into --policy-dir)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	return cmd
}

// parseExports reads the --export flags.
func parseExports(vals []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, v := range vals {
		ns, to, ok := strings.Cut(v, "=")
		if !ok || ns == "" || to == "" {
			return nil, fmt.Errorf("--export %q: want NS=NS1,NS2", v)
		}
		for n := range strings.SplitSeq(to, ",") {
			if n = strings.TrimSpace(n); n == "" {
				return nil, fmt.Errorf("--export %q: empty namespace", v)
			}
			out[ns] = append(out[ns], n)
		}
	}
	return out, nil
}

// sidecarControlPlane points injected sidecars on --sidecar-resolver xds
// at this control plane: its Service in its namespace (unless a
// --sidecar-resolver-config file is given), and the namespace that makes
// its SPIFFE ID.
func sidecarControlPlane(c *injector.Config, namespace, appID string) error {
	if c.Resolver != "xds" || c.ResolverConfig != "" {
		return nil
	}
	if appID != xdsclient.DefaultControlPlaneApp {
		return fmt.Errorf("--sidecar-resolver xds: sidecars expect the control plane's app ID %q, not --app-id %q (or give --sidecar-resolver-config with its controlPlaneID)", xdsclient.DefaultControlPlaneApp, appID)
	}
	if c.ControlPlaneAddress == "" {
		c.ControlPlaneAddress = "meshd-controlplane." + namespace + ".svc:15010"
	}
	c.ControlPlaneNamespace = namespace
	return nil
}
