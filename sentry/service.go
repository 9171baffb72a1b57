package sentry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/sentry/token"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type service struct {
	sentrypb.UnimplementedCAServer
	ca        *ca.Authority
	validator token.Validator
	log       *slog.Logger
	stopping  <-chan struct{}
}

func (s *service) reject(ctx context.Context, req *sentrypb.SignCertificateRequest, code codes.Code, err error) error {
	attrs := []any{"code", code.String(), "app_id", req.GetAppId(), "namespace", req.GetNamespace(),
		"trust_domain", req.GetTrustDomain(), "err", err}
	if p, ok := peer.FromContext(ctx); ok {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	s.log.Warn("sentry: certificate request refused", attrs...)
	return status.Error(code, err.Error())
}

// peerChain returns the certificate chain the caller presented in the TLS
// handshake (leaf first), or nil.
func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}

// clientAuthOnly refuses a verified SVID whose certificate does not allow
// clientAuth (go-spiffe's verification ignores extended key usage).
var clientAuthOnly = certs.RequireClientAuth(tlsconfig.AuthorizeAny())

// authorizeSVID verifies a presented chain against the current trust bundle
// (every root in it, so a certificate from before a root rotation still
// renews until its root is retired) with go-spiffe, and allows exactly the
// identity it carries.
func (s *service) authorizeSVID(chain []*x509.Certificate, want certs.Identity) (codes.Code, error) {
	got, chains, err := x509svid.Verify(chain, s.ca.Bundle().X509Bundle())
	if err != nil {
		return codes.Unauthenticated, fmt.Errorf("sentry: presented client certificate is not a valid SVID of this trust domain: %w", err)
	}
	if err := clientAuthOnly(got, chains); err != nil {
		return codes.Unauthenticated, fmt.Errorf("sentry: presented client certificate: %w", err)
	}
	if got != want.ID() {
		return codes.PermissionDenied, fmt.Errorf("sentry: presented SVID %s may renew only itself, not %s", got, want)
	}
	return codes.OK, nil
}

// SignCertificate implements sentrypb.CAServer.
func (s *service) SignCertificate(ctx context.Context, req *sentrypb.SignCertificateRequest) (*sentrypb.SignCertificateResponse, error) {
	id, err := certs.NewIdentity(req.GetTrustDomain(), req.GetNamespace(), req.GetAppId())
	if err != nil {
		return nil, s.reject(ctx, req, codes.InvalidArgument, err)
	}
	if td := s.ca.TrustDomain(); id.TrustDomain != td {
		return nil, s.reject(ctx, req, codes.PermissionDenied,
			errors.New("sentry: trust domain "+id.TrustDomain.String()+" is not served here (this CA serves "+td.String()+")"))
	}
	pub, err := ca.ValidateCSR(req.GetCsrPem())
	if err != nil {
		return nil, s.reject(ctx, req, codes.InvalidArgument, err)
	}
	// A caller that presents a certificate is judged by it alone (renewal):
	// a certificate that does not verify is refused, never treated as none.
	// A caller without one needs a token (bootstrap). The token is checked
	// last because a single-use token is spent by a successful check.
	via := "token"
	if chain := peerChain(ctx); len(chain) > 0 {
		via = "svid"
		if code, err := s.authorizeSVID(chain, id); err != nil {
			return nil, s.reject(ctx, req, code, err)
		}
	} else if err := s.validator.Validate(ctx, req.GetToken(), id); err != nil {
		code := codes.Unauthenticated
		switch {
		case errors.Is(err, token.ErrDenied):
			code = codes.PermissionDenied
		case errors.Is(err, token.ErrUnavailable):
			code = codes.Unavailable
		}
		return nil, s.reject(ctx, req, code, err)
	}
	signed, err := s.ca.Sign(id, pub)
	if err != nil {
		s.log.Error("sentry: signing failed", "id", id.String(), "err", err)
		return nil, status.Error(codes.Internal, "sentry: signing failed")
	}
	b := s.ca.Bundle()
	s.log.Debug("sentry: certificate issued", "id", id.String(), "not_after", signed.NotAfter, "auth", via)
	return &sentrypb.SignCertificateResponse{
		CertChainPem:       signed.ChainPEM,
		TrustBundlePem:     b.PEM,
		ExpiresAt:          timestamppb.New(signed.NotAfter),
		TrustBundleVersion: b.Version,
	}, nil
}

// WatchTrustBundle implements sentrypb.CAServer.
func (s *service) WatchTrustBundle(req *sentrypb.WatchTrustBundleRequest, stream sentrypb.CA_WatchTrustBundleServer) error {
	td := s.ca.TrustDomain()
	if req.GetTrustDomain() != "" && req.GetTrustDomain() != td.String() {
		return status.Errorf(codes.NotFound, "sentry: trust domain %q is not served here (this CA serves %s)", req.GetTrustDomain(), td)
	}
	ctx := stream.Context()
	for {
		b := s.ca.Bundle()
		if err := stream.Send(&sentrypb.TrustBundle{TrustDomain: td.String(), TrustBundlePem: b.PEM, Version: b.Version}); err != nil {
			return err
		}
		select {
		case <-b.Changed():
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "sentry: shutting down")
		}
	}
}
