package kubernetes_test

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/sentry/token"
	kubetoken "github.com/meshd/meshd/sentry/token/kubernetes"
	"github.com/meshd/meshd/tests/harness"
)

// BenchmarkSignKubernetes measures sentry's signing rate (CSRs/s, through
// the real gRPC server on loopback: TLS, token validation, CSR checks,
// ECDSA signing) with the kubernetes validator against the real
// kube-apiserver: every request reviewed (a TokenReview and a pod GET),
// with client-go's rate limit at sentry's default (100 QPS) and without
// one, and with the review cache on. The join validator, which needs no
// API server, is the reference. Run:
//
//	go test -run '^$' -bench SignKubernetes -benchtime 5s ./tests/kubernetes/
func BenchmarkSignKubernetes(b *testing.B) {
	k := harness.StartKube(b)
	cs := k.Client()
	identNamespace(b, cs, "shop")
	identServiceAccount(b, cs, "shop", "orders")
	pod := identPod(b, cs, "shop", "orders-0", "orders", map[string]string{"meshd.io/app-id": "orders"})
	tok := identTokenRequest(b, cs, "shop", "orders", pod, time.Hour, "meshd")
	kubeconfig := identSentryKubeconfig(b, k, cs, "sentry")

	kube := func(o kubetoken.Options) func(b *testing.B, dataDir string) token.Validator {
		return func(b *testing.B, _ string) token.Validator {
			o.Kubeconfig = kubeconfig
			v, err := kubetoken.NewFromOptions(context.Background(), o)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
	}
	for _, c := range []struct {
		name      string
		validator func(b *testing.B, dataDir string) token.Validator
		token     func(b *testing.B, dataDir string) string
	}{
		{"validator=join", func(b *testing.B, dataDir string) token.Validator {
			v, err := sentry.NewValidator(sentry.ValidatorJoin, dataDir, nil)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}, func(b *testing.B, dataDir string) string {
			t, _, err := sentry.CreateJoinToken(dataDir, "", "shop", "orders", time.Hour, false, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			return t
		}},
		{"validator=kubernetes/cache=off/qps=100", kube(kubetoken.Options{}), nil},
		{"validator=kubernetes/cache=off/qps=unlimited", kube(kubetoken.Options{QPS: -1}), nil},
		{"validator=kubernetes/cache=30s", kube(kubetoken.Options{CacheTTL: 30 * time.Second}), nil},
	} {
		b.Run(c.name, func(b *testing.B) {
			dataDir := filepath.Join(b.TempDir(), "sentry")
			v := c.validator(b, dataDir)
			t := tok
			if c.token != nil {
				t = c.token(b, dataDir)
			}
			identBenchSign(b, dataDir, v, t)
		})
	}
}

func identBenchSign(b *testing.B, dataDir string, v token.Validator, tok string) {
	td := spiffeid.RequireTrustDomainFromString(certs.DefaultTrustDomain)
	srv, err := sentry.New(sentry.Config{CA: ca.Options{DataDir: dataDir, TrustDomain: td}, Validator: v,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, lis); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	tlsCfg := tlsconfig.TLSClientConfig(srv.Authority(), tlsconfig.AuthorizeID(ca.SentryID(td)))
	key, err := certs.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		b.Fatal(err)
	}
	req := &sentrypb.SignCertificateRequest{AppId: "orders", Namespace: "shop", TrustDomain: td.String(), CsrPem: csr, Token: tok}
	b.SetParallelism(8) // 16 clients on 2 cores, each on its own connection
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		api := sentrypb.NewCAClient(conn)
		for pb.Next() {
			if _, err := api.SignCertificate(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "CSRs/s")
}
