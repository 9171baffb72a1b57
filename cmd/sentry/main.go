// Command sentry is meshd's certificate authority. See package
// github.com/meshd/meshd/sentry for what it does; this file only wires flags.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/internal/cli"
	"github.com/meshd/meshd/sentry"
	"github.com/meshd/meshd/sentry/ca"
	kubetoken "github.com/meshd/meshd/sentry/token/kubernetes"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func main() {
	root := newRootCmd()
	cli.Prepare(root)
	os.Exit(cli.ExitCode(cli.Execute(root, os.Args[1:], os.Stderr)))
}

func newRootCmd() *cobra.Command {
	var (
		dataDir, trustDomain, listen, healthListen, validator string
		logLevel, logFormat                                   string
		files                                                 sentry.RotateFiles
		workloadTTL, caTTL, propagation, retireMargin         time.Duration
		autoRotate, shutdownTimeout, handshakeTimeout         time.Duration
		maxPending                                            int
		kube                                                  kubetoken.Options
		caStore                                               string
		store                                                 sentry.KubeStoreConfig
		serverNames                                           []string
	)
	cmd := &cobra.Command{
		Use:           "sentry",
		Short:         "meshd's certificate authority: issues SPIFFE workload certificates to sidecars",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := sentry.NewLogger(os.Stderr, logLevel, logFormat)
			if err != nil {
				return err
			}
			release, err := sentry.LockDataDir(dataDir)
			if err != nil {
				return err
			}
			defer release()
			td, err := spiffeid.TrustDomainFromString(trustDomain)
			if err != nil {
				return fmt.Errorf("--trust-domain %q: %w", trustDomain, err)
			}
			names, err := sentry.ParseServerNames(serverNames, td)
			if err != nil {
				return err
			}
			vctx, vcancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			v, err := sentry.NewValidatorFromConfig(vctx, sentry.ValidatorConfig{Name: validator, DataDir: dataDir, Kubernetes: kube}, log)
			vcancel()
			if err != nil {
				return err
			}
			var caStoreImpl sentry.CAStore
			switch caStore {
			case sentry.CAStoreDir:
			case sentry.CAStoreKubernetes:
				store.Kubeconfig = kube.Kubeconfig
				sctx, scancel := context.WithTimeout(cmd.Context(), 30*time.Second)
				st, err := sentry.NewKubeStore(sctx, store, log)
				scancel()
				if err != nil {
					return err
				}
				caStoreImpl = st
			default:
				return fmt.Errorf("--ca-store %q: want %s or %s", caStore, sentry.CAStoreDir, sentry.CAStoreKubernetes)
			}
			srv, err := sentry.New(sentry.Config{
				Store: caStoreImpl,
				CA: ca.Options{
					DataDir: dataDir, TrustDomain: td, WorkloadTTL: workloadTTL,
					RootCertFile: files.RootCert, IssuerCertFile: files.IssuerCert,
					IssuerKeyFile: files.IssuerKey, RootKeyFile: files.RootKey,
					CATTL: caTTL, PropagationDelay: propagation, RetireMargin: retireMargin,
					AutoRotateBefore: autoRotate, ServerNames: names,
				},
				Validator:            v,
				Logger:               log,
				ShutdownTimeout:      shutdownTimeout,
				HandshakeTimeout:     handshakeTimeout,
				MaxPendingHandshakes: maxPending,
			})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if err := srv.Run(ctx, listen, healthListen); err != nil {
				return err
			}
			log.Info("sentry: stopped")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "directory holding the CA keys, state and bundle.pem (required)")
	f.StringVar(&trustDomain, "trust-domain", certs.DefaultTrustDomain, "SPIFFE trust domain")
	f.StringVar(&listen, "listen", "127.0.0.1:50003", "gRPC (TLS) listen address")
	f.StringVar(&healthListen, "health-listen", "127.0.0.1:8080", "HTTP address of /healthz (empty: off)")
	f.DurationVar(&workloadTTL, "workload-ttl", ca.DefaultWorkloadTTL, "lifetime of workload certificates")
	f.StringVar(&validator, "token-validator", sentry.ValidatorJoin, "token validator: join, kubernetes or insecure (dev only)")
	f.StringVar(&kube.Kubeconfig, "kubeconfig", "", "kubernetes validator and CA store: kubeconfig file (empty: in-cluster config)")
	f.StringVar(&kube.Audience, "kube-token-audience", kubetoken.DefaultAudience,
		"kubernetes validator: audience the projected service-account token must carry")
	f.DurationVar(&kube.CacheTTL, "kube-review-cache-ttl", 0,
		"kubernetes validator: cache a successful TokenReview this long, keyed by the token's hash (0: off; at most 5m)")
	f.IntVar(&kube.CacheSize, "kube-review-cache-size", kubetoken.DefaultCacheSize, "kubernetes validator: most cached reviews")
	f.Float32Var(&kube.QPS, "kube-api-qps", kubetoken.DefaultQPS, "kubernetes validator: client-side rate limit of API calls (-1: none)")
	f.IntVar(&kube.Burst, "kube-api-burst", kubetoken.DefaultBurst, "kubernetes validator: burst of API calls above --kube-api-qps")
	f.StringVar(&files.RootCert, "root-cert", "", "PEM root certificate to import on first start")
	f.StringVar(&files.IssuerCert, "issuer-cert", "", "PEM issuer certificate (then intermediates) to import on first start")
	f.StringVar(&files.IssuerKey, "issuer-key", "", "PEM issuer private key to import on first start")
	f.StringVar(&files.RootKey, "root-key", "", "PEM root private key to import (optional)")
	f.DurationVar(&caTTL, "ca-ttl", ca.DefaultCATTL, "lifetime of generated roots and issuers")
	f.DurationVar(&propagation, "rotation-propagation-delay", ca.DefaultPropagationDelay,
		"how long a new root is published before anything is signed with it")
	f.DurationVar(&retireMargin, "rotation-retire-margin", ca.DefaultRetireMargin,
		"extra time, after the workload TTL, an old root stays in the bundle")
	f.DurationVar(&autoRotate, "auto-rotate-before", 30*24*time.Hour,
		"rotate the root automatically this long before it expires (0: never)")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 10*time.Second, "bound of the graceful stop")
	f.DurationVar(&handshakeTimeout, "handshake-timeout", sentry.DefaultHandshakeTimeout,
		"a connection that has not completed its TLS handshake by then is closed")
	f.IntVar(&maxPending, "max-pending-handshakes", sentry.DefaultMaxPendingHandshakes,
		"most connections held before their TLS handshake completes; beyond it the oldest is closed (-1: no cap)")
	f.StringVar(&caStore, "ca-store", sentry.CAStoreDir,
		"where the CA lives: dir (the data dir alone) or kubernetes (a Secret shared by replicas; the data dir is a working copy)")
	f.StringVar(&store.Secret, "ca-secret", "meshd-system/meshd-sentry-ca", "--ca-store kubernetes: namespace/name of the CA Secret (also the leader Lease's)")
	f.StringVar(&store.Identity, "replica-id", "", "--ca-store kubernetes: this replica's name in the Lease (default: $POD_NAME or the host name, with the PID)")
	f.StringVar(&store.BundleConfigMap, "bundle-configmap", "meshd-trust-bundle",
		"--ca-store kubernetes: ConfigMap the leader publishes the trust bundle to in every namespace with meshd pods (-: none)")
	f.StringArrayVar(&serverNames, "server-name", nil,
		"NAMESPACE/APP-ID=NAME[,NAME...]: DNS names or IPs that identity's certificates carry besides its SPIFFE ID (the control plane's admission webhook: meshd-system/controlplane=meshd-controlplane.meshd-system.svc); repeatable")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	_ = cmd.MarkFlagRequired("data-dir")

	cmd.AddCommand(newTokenCmd(), newRotateCmd())
	return cmd
}

func newTokenCmd() *cobra.Command {
	tok := &cobra.Command{Use: "token", Short: "join tokens", Args: cobra.NoArgs}
	var (
		dataDir, trustDomain, appID, ns string
		ttl                             time.Duration
		once                            bool
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "print a join token for one app ID and namespace on stdout (its ID on stderr)",
		Long: "create prints a join token on stdout and its ID (for `sentry token revoke --jti`) on stderr.\n" +
			"A token is the bootstrap credential: a sidecar needs it for its first certificate (and again\n" +
			"only if its certificate expired or sentry refused to renew it); renewals present the current\n" +
			"certificate instead. --once makes the token single-use.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, c, err := sentry.CreateJoinToken(dataDir, trustDomain, ns, appID, ttl, once, time.Now())
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), t); err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.ErrOrStderr(), "jti=%s expires=%s once=%t\n",
				c.ID, c.ExpiresAt().UTC().Format(time.RFC3339), c.Once)
			return err
		},
	}
	f := create.Flags()
	f.StringVar(&dataDir, "data-dir", "", "sentry's data directory (holds the signing key)")
	f.StringVar(&appID, "app-id", "", "app ID the token is for")
	f.StringVar(&ns, "namespace", "default", "namespace the token is for")
	f.StringVar(&trustDomain, "trust-domain", "", "trust domain (default: the data dir's, or cluster.local)")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime (it bounds when the token can bootstrap, not how long the identity lives)")
	f.BoolVar(&once, "once", false, "single-use: sentry refuses the token after its first successful use")
	_ = create.MarkFlagRequired("data-dir")
	_ = create.MarkFlagRequired("app-id")

	var revDir, revToken, revTokenFile, revJTI string
	revoke := &cobra.Command{
		Use:   "revoke",
		Short: "revoke a join token (by the token, a file holding it, or its ID)",
		Long: "revoke adds the token's ID to {data-dir}/join-revoked.json; a running sentry refuses the token\n" +
			"from its next request on, and after a restart. It stops bootstrap with the token only: a\n" +
			"sidecar that already holds a certificate keeps renewing it.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t := revToken
			if revTokenFile != "" {
				if t != "" {
					return fmt.Errorf("--token and --token-file are exclusive")
				}
				b, err := os.ReadFile(revTokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				t = string(b)
			}
			c, err := sentry.RevokeJoinToken(revDir, t, revJTI, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.ErrOrStderr(), "revoked jti=%s\n", c.ID)
			return err
		},
	}
	rf := revoke.Flags()
	rf.StringVar(&revDir, "data-dir", "", "sentry's data directory")
	rf.StringVar(&revToken, "token", "", "the token to revoke")
	rf.StringVar(&revTokenFile, "token-file", "", "a file holding the token to revoke")
	rf.StringVar(&revJTI, "jti", "", "the ID of the token to revoke (printed by token create)")
	_ = revoke.MarkFlagRequired("data-dir")

	tok.AddCommand(create, revoke)
	return tok
}

func newRotateCmd() *cobra.Command {
	var (
		dataDir, secret, kubeconfig string
		files                       sentry.RotateFiles
		caTTL                       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate-root",
		Short: "stage a new root and issuer; the running sentry publishes it, then switches to it",
		Long: "rotate-root stages a new root and issuer (generated, or from --root-cert/--issuer-cert/--issuer-key)\n" +
			"in the data directory. The running sentry adds the new root to the trust bundle at once, signs\n" +
			"with the new issuer after --rotation-propagation-delay, and drops the old root once every\n" +
			"certificate it signed has expired. With --ca-secret (replicas of --ca-store kubernetes) it stages\n" +
			"the rotation in the CA Secret instead, and the leading replica carries it out.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dataDir == "") == (secret == "") {
				return fmt.Errorf("give exactly one of --data-dir and --ca-secret")
			}
			if secret != "" {
				ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
				defer cancel()
				m, err := sentry.RotateRootInSecret(ctx, kubeconfig, secret, files, caTTL, time.Now())
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.ErrOrStderr(), "staged new root %q (valid until %s) in Secret %s; the leading sentry rotates to it\n",
					m.Root.Subject.String(), m.Root.NotAfter.UTC().Format(time.RFC3339), secret)
				return err
			}
			m, err := sentry.RotateRoot(dataDir, files, caTTL, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.ErrOrStderr(), "staged new root %q (valid until %s) in %s\n",
				m.Root.Subject.String(), m.Root.NotAfter.UTC().Format(time.RFC3339), dataDir)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "sentry's data directory")
	f.StringVar(&secret, "ca-secret", "", "namespace/name of the CA Secret of --ca-store kubernetes (instead of --data-dir)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "with --ca-secret: kubeconfig file (empty: in-cluster config)")
	f.StringVar(&files.RootCert, "root-cert", "", "PEM root certificate to rotate to (default: generate)")
	f.StringVar(&files.IssuerCert, "issuer-cert", "", "PEM issuer certificate (then intermediates)")
	f.StringVar(&files.IssuerKey, "issuer-key", "", "PEM issuer private key")
	f.StringVar(&files.RootKey, "root-key", "", "PEM root private key (optional)")
	f.DurationVar(&caTTL, "ca-ttl", ca.DefaultCATTL, "lifetime of a generated root and issuer")
	return cmd
}
