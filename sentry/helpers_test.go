package sentry_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/sentry/token/join"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// testSentry is a real sentry serving gRPC on 127.0.0.1:0.
type testSentry struct {
	srv     *sentry.Server
	addr    string
	dir     string
	td      spiffeid.TrustDomain
	joinKey ed25519.PrivateKey
	stop    func()
}

type opt func(*sentry.Config)

func startSentry(tb testing.TB, dir string, opts ...opt) *testSentry {
	tb.Helper()
	if dir == "" {
		dir = filepath.Join(tb.TempDir(), "sentry")
	}
	log := slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := sentry.Config{
		CA: ca.Options{
			DataDir:          dir,
			TrustDomain:      spiffeid.RequireTrustDomainFromString("cluster.local"),
			WorkloadTTL:      time.Hour,
			PropagationDelay: 300 * time.Millisecond,
			RetireMargin:     200 * time.Millisecond,
			PollInterval:     50 * time.Millisecond,
		},
		Logger: log,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Validator == nil {
		v, err := sentry.NewValidator(sentry.ValidatorJoin, dir, log)
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Validator = v
	}
	srv, err := sentry.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := join.LoadOrCreateKey(dir)
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	s := &testSentry{srv: srv, addr: lis.Addr().String(), dir: dir, td: cfg.CA.TrustDomain, joinKey: key}
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("sentry Serve: %v", err)
		}
	}
	tb.Cleanup(s.stop)
	return s
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (s *testSentry) identity(tb testing.TB, ns, app string) certs.Identity {
	tb.Helper()
	id, err := certs.NewIdentity(s.td.String(), ns, app)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func (s *testSentry) token(tb testing.TB, id certs.Identity, ttl time.Duration, now time.Time) string {
	tb.Helper()
	tok, err := join.Create(s.joinKey, id, ttl, now)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func (s *testSentry) bundleFile(tb testing.TB) []*x509.Certificate {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, ca.BundleFile))
	if err != nil {
		tb.Fatal(err)
	}
	roots, err := certs.ParseCertsPEM(b)
	if err != nil {
		tb.Fatal(err)
	}
	return roots
}

// rawClient is a plain gRPC client that trusts the sentry's current bundle.
func (s *testSentry) rawClient(tb testing.TB) sentrypb.CAClient {
	tb.Helper()
	b := certs.EncodeCertsPEM(s.bundleFile(tb)...)
	bundle, err := certs.ParseBundlePEM(s.td, b)
	if err != nil {
		tb.Fatal(err)
	}
	tlsCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(ca.SentryID(s.td)))
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return sentrypb.NewCAClient(conn)
}

// client is a sentryclient for id holding anchors.
func (s *testSentry) client(tb testing.TB, anchors []*x509.Certificate, id certs.Identity, tok string) *sentryclient.Client {
	tb.Helper()
	c, err := sentryclient.New(context.Background(), s.addr, anchors, id, tok,
		sentryclient.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil && !errors.Is(err, context.Canceled) {
			tb.Errorf("close client: %v", err)
		}
	})
	return c
}

func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
