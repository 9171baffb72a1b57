package sentry_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshd/meshd/sentry/sentrypb"
)

// BenchmarkSign measures SignCertificate through the real gRPC server on
// loopback (TLS, join token validation, CSR validation, ECDSA signing).
func BenchmarkSign(b *testing.B) {
	s := startSentry(b, "")
	api := s.rawClient(b)
	id := s.identity(b, "default", "bench")
	req := &sentrypb.SignCertificateRequest{
		AppId: id.AppID, Namespace: id.Namespace, TrustDomain: id.TrustDomain.String(),
		CsrPem: csrPEM(b, p256(b), nil), Token: s.token(b, id, time.Hour, time.Now()),
	}
	if _, err := api.SignCertificate(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := api.SignCertificate(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
