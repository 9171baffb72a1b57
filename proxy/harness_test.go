package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
)

// testCA is an in-test certificate authority issuing SPIFFE workload certs.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64 = 100

func newCA(t testing.TB, td string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{td}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: spiffeid.RequireTrustDomainFromString(td), cert: cert, key: key}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

func (ca *testCA) svid(t testing.TB, ns, app string) *x509svid.SVID {
	t.Helper()
	id := spiffeid.RequireFromSegments(ca.td, "ns", ns, app)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// fakeResolver is a static, round-robin Resolver that records reports:
// a Down report or a broken connection (status 0) as a failure, any answer
// as a success.
type fakeResolver struct {
	mu        sync.Mutex
	eps       map[discovery.Target][]string
	next      map[discovery.Target]int
	done      map[string]func(discovery.DoneInfo) // per address, made once
	failures  []string
	successes []string
}

func newResolver() *fakeResolver {
	return &fakeResolver{eps: map[discovery.Target][]string{}, next: map[discovery.Target]int{}, done: map[string]func(discovery.DoneInfo){}}
}

func (f *fakeResolver) set(app string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eps[discovery.Target{AppID: app, Namespace: "default"}] = addrs
	for _, a := range addrs {
		if f.done[a] == nil {
			f.done[a] = func(d discovery.DoneInfo) { f.report(a, d) }
		}
	}
}

func (f *fakeResolver) Pick(_ context.Context, t discovery.Target) (discovery.PickResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	eps, ok := f.eps[t]
	if !ok {
		return discovery.PickResult{}, discovery.ErrUnknownTarget
	}
	if len(eps) == 0 {
		return discovery.PickResult{}, discovery.ErrNoHealthyEndpoint
	}
	i := f.next[t] % len(eps)
	f.next[t]++
	return discovery.PickResult{Endpoint: discovery.Endpoint{Address: eps[i]}, Done: f.done[eps[i]]}, nil
}

func (f *fakeResolver) report(addr string, d discovery.DoneInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.Down || d.Status == 0 {
		f.failures = append(f.failures, addr)
	} else {
		f.successes = append(f.successes, addr)
	}
}

func (f *fakeResolver) reports() (fail, ok []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.failures...), append([]string(nil), f.successes...)
}

func (f *fakeResolver) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures, f.successes = nil, nil
}

// sidecar is a Proxy serving on loopback.
type sidecar struct {
	p        *Proxy
	httpURL  string // http://127.0.0.1:port
	grpcAddr string
	internal string
	stop     context.CancelFunc
	done     chan error
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startSidecar serves cfg. cfg.Identity.AppID names it; if SVIDSource is
// nil, ca issues one.
func startSidecar(t testing.TB, ca *testCA, cfg Config) *sidecar {
	t.Helper()
	if cfg.Identity.TrustDomain.IsZero() {
		cfg.Identity.TrustDomain = ca.td
	}
	if os.Getenv("MESHD_H2_CLIENT") == "nethttp" { // the A/B of --h2-client
		cfg.NetHTTPH2Client = true
	}
	if cfg.Identity.Namespace == "" {
		cfg.Identity.Namespace = "default"
	}
	if cfg.SVIDSource == nil && !cfg.Insecure {
		cfg.SVIDSource = ca.svid(t, cfg.Identity.Namespace, cfg.Identity.AppID)
	}
	if cfg.BundleSource == nil && !cfg.Insecure {
		cfg.BundleSource = ca.bundle()
	}
	if os.Getenv("MESHD_H2_SERVER") == "nethttp" {
		cfg.NetHTTPH2Server = true // the package's tests against net/http's HTTP/2 server
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls := Listeners{HTTP: listen(t), GRPC: listen(t), Internal: listen(t)}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sidecar{
		p: p, httpURL: "http://" + ls.HTTP.Addr().String(), grpcAddr: ls.GRPC.Addr().String(),
		internal: ls.Internal.Addr().String(), stop: cancel, done: make(chan error, 1),
	}
	go func() { s.done <- p.Serve(ctx, ls, 2*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-s.done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func mustIdentity(t testing.TB, app string) certs.Identity {
	t.Helper()
	id, err := certs.NewIdentity("cluster.local", "default", app)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// atomicHealth is a settable AppHealth.
type atomicHealth struct {
	mu sync.Mutex
	ok bool
}

func (h *atomicHealth) Healthy() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.ok }
func (h *atomicHealth) set(ok bool)   { h.mu.Lock(); h.ok = ok; h.mu.Unlock() }

// svidWithID issues a leaf for an arbitrary SPIFFE ID (for negative tests).
func (ca *testCA) svidWithID(t testing.TB, id spiffeid.ID) (*tls.Certificate, error) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
