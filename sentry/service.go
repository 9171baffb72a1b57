package sentry

import (
	"context"
	"errors"
	"log/slog"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/sentry/token"
	"google.golang.org/grpc/codes"
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
	if err := s.validator.Validate(ctx, req.GetToken(), id); err != nil {
		code := codes.Unauthenticated
		if errors.Is(err, token.ErrDenied) {
			code = codes.PermissionDenied
		}
		return nil, s.reject(ctx, req, code, err)
	}
	pub, err := ca.ValidateCSR(req.GetCsrPem())
	if err != nil {
		return nil, s.reject(ctx, req, codes.InvalidArgument, err)
	}
	signed, err := s.ca.Sign(id, pub)
	if err != nil {
		s.log.Error("sentry: signing failed", "id", id.String(), "err", err)
		return nil, status.Error(codes.Internal, "sentry: signing failed")
	}
	b := s.ca.Bundle()
	s.log.Debug("sentry: certificate issued", "id", id.String(), "not_after", signed.NotAfter)
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
