package xds

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/lifecycle"
	"github.com/meshd/meshd/sentry/sentryclient"
)

// ProcessConfig is the control plane process (cmd/controlplane): its own
// identity from sentry, its listen address, and the Server's Config.
type ProcessConfig struct {
	Config
	// Listen is host:port of the ADS port.
	Listen string
	// Namespace and AppID make the control plane's SPIFFE ID,
	// spiffe://{td}/ns/{Namespace}/{AppID} (defaults meshd-system and
	// controlplane); sidecars check it (the resolver's controlPlaneID).
	Namespace, AppID string
	// Sentry is how the identity is obtained (Identity is filled from the
	// fields above).
	Sentry sentryclient.IdentityConfig
	// OnListen, if set, is called with the bound address (tests).
	OnListen func(addr string)
	// Extra, if set, adds components that run beside the server, given
	// the control plane's identity (the Kubernetes parts,
	// kube/controlplane). It is called before the server reads the policy
	// directory.
	Extra func(src *certs.Source) ([]lifecycle.Component, error)
}

// RunProcess gets the control plane's SVID from sentry (and keeps it
// rotated), builds the Server and serves until ctx is done.
func RunProcess(ctx context.Context, pc ProcessConfig) error {
	log := pc.Logger
	if log == nil {
		log = slog.Default()
		pc.Logger = log
	}
	if pc.Namespace == "" {
		pc.Namespace = "meshd-system"
	}
	if pc.AppID == "" {
		pc.AppID = "controlplane"
	}
	if pc.TrustDomain.IsZero() {
		pc.TrustDomain = spiffeid.RequireTrustDomainFromString(certs.DefaultTrustDomain)
	}
	id, err := certs.NewIdentity(pc.TrustDomain.String(), pc.Namespace, pc.AppID)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	pc.Sentry.Identity = id
	pc.Sentry.Logger = log
	ident, err := sentryclient.StartIdentity(ctx, pc.Sentry)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	var teardown lifecycle.Stack
	defer teardown.Close()
	teardown.Push(ident.CloseClient)
	teardown.Push(func() { ident.Source.Close() })
	pc.SVIDSource, pc.BundleSource = ident.Source, ident.Source
	var extra []lifecycle.Component
	if pc.Extra != nil {
		if extra, err = pc.Extra(ident.Source); err != nil {
			return err
		}
	}
	srv, err := New(ctx, pc.Config)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", pc.Listen)
	if err != nil {
		srv.Close()
		return fmt.Errorf("xds: --listen: %w", err)
	}
	if pc.OnListen != nil {
		pc.OnListen(l.Addr().String())
	}
	log.Info("xds: control plane identity", "id", id.String())
	err = lifecycle.Run(ctx, append([]lifecycle.Component{
		lifecycle.Func(ident.WatchBundle),
		lifecycle.Func(func(ctx context.Context) error { return srv.Run(ctx, l) })}, extra...)...)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	return nil
}
