package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/sidecar/admin"
	"github.com/meshd/meshd/telemetry/metrics"
)

// adminListen binds --admin-port on --admin-listen-address (loopback only)
// when the admin endpoint has a port of its own (AdminPort > 0). With
// AdminPort 0 it is served on the metrics port (adminMount), with -1 not at
// all.
func (s *sidecar) adminListen() error {
	cfg := &s.cfg
	host := cfg.AdminListenAddress
	if host == "" {
		host = "127.0.0.1"
	}
	if !admin.LoopbackHost(host) {
		return fmt.Errorf("sidecar: --admin-listen-address %q: the admin endpoint binds loopback only (127.0.0.1, ::1 or localhost)", host)
	}
	if cfg.AdminPort <= 0 {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.AdminPort)))
	if err != nil {
		return fmt.Errorf("sidecar: --admin-port: %w", err)
	}
	s.adminL = l
	s.teardown.Push(func() { _ = l.Close() })
	return nil
}

// adminServe serves the admin endpoint: on its own port, or as mounts of
// the metrics server (returned) when that binds loopback.
func (s *sidecar) adminServe() []metrics.Mount {
	cfg := &s.cfg
	h := admin.Handler(s.adminStatus, s.pol.DecisionLog().Recent())
	switch {
	case s.adminL != nil:
		s.run(func(ctx context.Context) error { return serveAdmin(ctx, s.adminL, h) })
	case cfg.AdminPort < 0:
	case s.metricsL == nil:
		s.log.Info("sidecar: no admin endpoint: metrics are off and --admin-port is 0 (the metrics port); give --admin-port to serve it")
	case !admin.LoopbackHost(s.metricsL.Addr().String()):
		s.log.Warn("sidecar: no admin endpoint on the metrics port: it binds " + s.metricsL.Addr().String() +
			", and the admin endpoint is for loopback only; give --admin-port to serve it on a loopback port")
	default:
		return []metrics.Mount{{Pattern: admin.Prefix, Handler: h}}
	}
	return nil
}

// adminAddr is where the admin endpoint is served ("" if nowhere).
func (s *sidecar) adminAddr() string {
	switch {
	case s.adminL != nil:
		return s.adminL.Addr().String()
	case s.cfg.AdminPort < 0 || s.metricsL == nil || !admin.LoopbackHost(s.metricsL.Addr().String()):
		return ""
	}
	return s.metricsL.Addr().String()
}

func serveAdmin(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	case err := <-errc:
		return fmt.Errorf("sidecar: admin endpoint %s: %w", l.Addr(), err)
	}
}

// policyMode is the policy mode of the admin endpoint and of
// meshd_policy_mode.
func (s *sidecar) policyMode() metrics.PolicyMode {
	pm := metrics.PolicyMode{Mode: admin.PolicyOff, Default: s.cfg.PolicyDefault.String()}
	if s.pcfg.Authorizer != nil {
		pm.Mode = s.pol.Mode().Mode
	}
	return pm
}

// adminStatus is the sidecar now, for GET /admin/v1/status.
func (s *sidecar) adminStatus() admin.Status {
	cfg := &s.cfg
	st := admin.Status{AppID: s.id.AppID, Namespace: s.id.Namespace, TrustDomain: s.id.TrustDomain.Name(),
		MTLS: !cfg.Insecure, Version: Version, Started: s.started.UTC(), Ready: s.p != nil && s.p.Ready(),
		Addresses: admin.Addresses{HTTP: s.ls.HTTP.Addr().String(), GRPC: s.ls.GRPC.Addr().String(),
			Internal: s.ls.Internal.Addr().String(), Advertise: s.advertise, Admin: s.adminAddr()},
		App:         admin.App{Health: admin.HealthNoApp},
		TrustBundle: []admin.Root{},
		Resolver:    admin.Resolver{Name: cfg.Resolver, Config: cfg.ResolverConfig},
	}
	if !cfg.Insecure {
		st.SPIFFEID = s.id.String()
	}
	if s.metricsL != nil {
		st.Addresses.Metrics = s.metricsL.Addr().String()
	}
	if s.publicL != nil {
		st.Addresses.Public = s.publicL.Addr().String()
	}
	if cfg.AppPort > 0 {
		st.App = admin.App{Port: cfg.AppPort, Protocol: cfg.AppProtocol, Health: admin.HealthUnchecked}
		if hc := s.pcfg.AppHealth; hc != nil {
			st.App.Health = admin.HealthUnhealthy
			if hc.Healthy() {
				st.App.Health = admin.HealthHealthy
			}
		}
	}
	if s.src != nil {
		if svid, err := s.src.GetX509SVID(); err == nil && len(svid.Certificates) > 0 {
			c := svid.Certificates[0]
			st.Certificate = &admin.Certificate{NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
				Serial: c.SerialNumber.Text(16), Rotations: s.src.Rotations()}
		}
		if b, err := s.src.GetX509BundleForTrustDomain(s.id.TrustDomain); err == nil {
			for _, r := range b.X509Authorities() {
				sum := sha256.Sum256(r.Raw)
				st.TrustBundle = append(st.TrustBundle, admin.Root{Subject: r.Subject.String(), NotAfter: r.NotAfter.UTC(),
					SHA256: hex.EncodeToString(sum[:])})
			}
		}
	}
	pm := s.policyMode()
	m := s.pol.Mode()
	allowed, denied, audited := s.pol.DecisionLog().Counts()
	_, feed := s.res.(discovery.PolicyFeed)
	st.Policy = admin.Policy{Mode: pm.Mode, Default: pm.Default, Dir: cfg.PolicyDir, Config: cfg.ConfigFile,
		FromXDS: feed && cfg.PolicyDir == "", Namespaces: m.Namespaces, Mesh: m.Mesh, Files: m.Files, AuditFiles: m.AuditFiles,
		Reloads: s.pol.Reloads(), ReloadFailures: s.pol.ReloadFailures(),
		Allowed: allowed, Denied: denied, Audited: audited}
	if err := s.pol.LastReloadError(); err != nil {
		st.Policy.LastReloadError = err.Error()
	}
	if r := s.pol.DecisionLog().Recent(); r != nil && s.pcfg.Authorizer != nil {
		st.Policy.RecentKept = r.Cap()
	}
	if st.Policy.Namespaces == nil {
		st.Policy.Namespaces = []string{}
	}
	if s.mets != nil {
		t := s.mets.Totals()
		st.Calls = &admin.Calls{Out: t.Out, ErrorsOut: t.ErrorsOut, In: t.In, ErrorsIn: t.ErrorsIn}
	}
	return st
}
