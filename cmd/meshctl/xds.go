package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/certs/svidfiles"
	"github.com/meshd/meshd/lifecycle"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/meshd/meshd/telemetry/logging"
	"github.com/meshd/meshd/xds/grpcbootstrap"
	"github.com/meshd/meshd/xds/grpcxds"
)

func newXDSCommand() *cobra.Command {
	c := &cobra.Command{Use: "xds", Short: "xDS helpers for proxyless gRPC clients"}
	c.AddCommand(newXDSBootstrapCommand())
	return c
}

// bootstrapFlags are the flags that shape a grpc-go xDS bootstrap.
type bootstrapFlags struct {
	server, serverID, nodeID, instance, td string
	refresh                                time.Duration
}

func (b *bootstrapFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&b.server, "xds-server", "", "the control plane's host:port")
	c.Flags().StringVar(&b.serverID, "xds-server-id", "", "the control plane's SPIFFE ID, checked by apps that import xds/grpccreds (default spiffe://{trust-domain}/ns/meshd-system/controlplane)")
	c.Flags().StringVar(&b.nodeID, "node-id", "", "node ID the client shows the control plane (default {app-id}.{namespace}~{host name})")
	c.Flags().StringVar(&b.instance, "cert-provider-instance", grpcxds.DefaultCertProviderInstance, "name of the file_watcher certificate provider instance (the control plane's Clusters name it)")
	c.Flags().DurationVar(&b.refresh, "refresh-interval", grpcbootstrap.DefaultRefreshInterval, "how often grpc-go re-reads the SVID files")
}

func (b *bootstrapFlags) config(app, ns, dir string) (grpcbootstrap.Config, error) {
	if b.server == "" {
		return grpcbootstrap.Config{}, errors.New("--xds-server is required")
	}
	node := b.nodeID
	if node == "" {
		if app == "" {
			return grpcbootstrap.Config{}, errors.New("--app-id or --node-id is required")
		}
		host, err := os.Hostname()
		if err != nil {
			return grpcbootstrap.Config{}, fmt.Errorf("host name for the node ID: %w", err)
		}
		node = grpcbootstrap.NodeID(app, ns, host)
	}
	id := b.serverID
	if id == "" {
		var err error
		if id, err = grpcbootstrap.ControlPlaneID(b.td); err != nil {
			return grpcbootstrap.Config{}, err
		}
	}
	return grpcbootstrap.Config{ServerURI: b.server, NodeID: node, SVIDDir: dir,
		CertProviderInstance: b.instance, RefreshInterval: b.refresh, ControlPlaneID: id}, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

const bootstrapHint = "run the gRPC client with GRPC_XDS_BOOTSTRAP=<this file>; an app that imports github.com/meshd/meshd/xds/grpccreds checks the control plane's exact SPIFFE ID, any other needs " + grpcbootstrap.EnvSPIFFE + "=true (it then accepts any SVID of the mesh as the control plane)"

func newXDSBootstrapCommand() *cobra.Command {
	var (
		bf              bootstrapFlags
		app, ns, dir, o string
	)
	c := &cobra.Command{
		Use:   "bootstrap",
		Short: "print the xDS bootstrap JSON of a proxyless grpc-go client",
		Long: "Print (or write with -o) the bootstrap grpc-go's xds resolver reads from GRPC_XDS_BOOTSTRAP:\n" +
			"the control plane, reached over mTLS with the SVID files in --svid-dir (kept current by\n" +
			"`meshctl svid`), and the file_watcher certificate provider the Clusters' mTLS settings name.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--svid-dir is required")
			}
			cfg, err := bf.config(app, ns, dir)
			if err != nil {
				return err
			}
			if o != "" {
				if err := grpcbootstrap.WriteFile(o, cfg); err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "wrote", o+";", bootstrapHint)
				return nil
			}
			b, err := grpcbootstrap.JSON(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	bf.add(c)
	c.Flags().StringVar(&bf.td, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	c.Flags().StringVar(&app, "app-id", "", "the client app's ID (for the default node ID)")
	c.Flags().StringVar(&ns, "namespace", envOr("NAMESPACE", "default"), "the client app's namespace (env NAMESPACE)")
	c.Flags().StringVar(&dir, "svid-dir", "", "directory of the SVID files (meshctl svid --svid-dir)")
	c.Flags().StringVarP(&o, "output", "o", "", "write the bootstrap to this file (atomically) instead of stdout")
	return c
}

func newSVIDCommand() *cobra.Command {
	var (
		bf                               bootstrapFlags
		app, ns, sentry, anchors, tokenF string
		dir, bootstrapFile               string
		logLevel, logFormat              string
	)
	c := &cobra.Command{
		Use:   "svid",
		Short: "keep a workload's SVID from sentry in files, for a proxyless gRPC client",
		Long: "Get an X509-SVID for --app-id in --namespace from sentry (bootstrapped with --token-file, renewed\n" +
			"with the SVID itself at half-life), follow sentry's trust bundle, and keep svid.pem, svid-key.pem\n" +
			"(0600), bundle.pem and spiffe-bundle-map.json in --svid-dir current, rewritten atomically after\n" +
			"every rotation. With --bootstrap-file and --xds-server it also writes the grpc-go xDS bootstrap\n" +
			"naming those files. Runs until SIGINT or SIGTERM.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return err
			}
			switch {
			case app == "":
				return errors.New("--app-id is required")
			case dir == "":
				return errors.New("--svid-dir is required")
			case sentry == "":
				return errors.New("--sentry-address is required")
			case anchors == "":
				return errors.New("--trust-anchors-file is required")
			}
			var bcfg *grpcbootstrap.Config
			if bootstrapFile != "" {
				cfg, err := bf.config(app, ns, dir)
				if err != nil {
					return err
				}
				bcfg = &cfg
			}
			id, err := certs.NewIdentity(bf.td, ns, app)
			if err != nil {
				return err
			}
			roots, err := sentryclient.ReadAnchors(anchors)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ident, err := sentryclient.StartSource(ctx, sentryclient.SourceConfig{
				Address: sentry, Anchors: roots, TokenFile: tokenF, Identity: id, Logger: log,
			})
			if err != nil {
				return err
			}
			defer ident.CloseClient()
			defer ident.Source.Close()
			if bcfg != nil {
				if err := grpcbootstrap.WriteFile(bootstrapFile, *bcfg); err != nil {
					return err
				}
				log.Info("meshctl svid: xDS bootstrap written", "file", bootstrapFile, "hint", bootstrapHint)
			}
			return lifecycle.Run(ctx,
				lifecycle.Func(ident.WatchBundle),
				lifecycle.Func(func(ctx context.Context) error { return svidfiles.Run(ctx, dir, ident.Source, log) }),
			)
		},
	}
	bf.add(c)
	c.Flags().StringVar(&app, "app-id", "", "the workload's app ID (required)")
	c.Flags().StringVar(&ns, "namespace", envOr("NAMESPACE", "default"), "the workload's namespace (env NAMESPACE)")
	c.Flags().StringVar(&bf.td, "trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	c.Flags().StringVar(&sentry, "sentry-address", "", "sentry's host:port (required)")
	c.Flags().StringVar(&anchors, "trust-anchors-file", "", "PEM file of the mesh's trust anchors (required)")
	c.Flags().StringVar(&tokenF, "token-file", "", "file holding the bootstrap token (a sentry join token); read afresh for every bootstrap")
	c.Flags().StringVar(&dir, "svid-dir", "", "directory to keep the SVID files in (created 0700; required)")
	c.Flags().StringVar(&bootstrapFile, "bootstrap-file", "", "also write the grpc-go xDS bootstrap here (needs --xds-server)")
	c.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	c.Flags().StringVar(&logFormat, "log-format", "text", "text or json")
	return c
}
