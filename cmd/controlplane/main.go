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

	_ "github.com/meshd/meshd/discovery/consul"     // --resolver consul
	_ "github.com/meshd/meshd/discovery/kubernetes" // --resolver kubernetes
	_ "github.com/meshd/meshd/discovery/mdns"       // --resolver mdns
	_ "github.com/meshd/meshd/discovery/static"     // --resolver static
	"github.com/meshd/meshd/telemetry/logging"
	"github.com/meshd/meshd/xds"
	"github.com/meshd/meshd/xds/grpcxds"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var (
		pc                  xds.ProcessConfig
		trustDomain         string
		exports             []string
		proxyless           bool
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
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := xds.RunProcess(ctx, pc); err != nil {
				log.Error("controlplane: exiting", "err", err)
				return err
			}
			return nil
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
