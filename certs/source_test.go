package certs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ---- a small in-test CA (root + intermediate) ----

var testSerial atomic.Int64

type testCA struct {
	td       spiffeid.TrustDomain
	root     *x509.Certificate
	rootKey  *ecdsa.PrivateKey
	inter    *x509.Certificate
	interKey *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	ca := &testCA{td: spiffeid.RequireTrustDomainFromString(td)}
	ca.rootKey = mustKey(t)
	ca.root = mustSign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: td + " root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, ca.rootKey.Public(), ca.rootKey)
	ca.interKey = mustKey(t)
	ca.inter = mustSign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: td + " issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, ca.root, ca.interKey.Public(), ca.rootKey)
	return ca
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	c, err := signCert(tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signCert signs tmpl with signer (self-signed when parent is nil).
func signCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	tmpl.SerialNumber = big.NewInt(testSerial.Add(1))
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(nil, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// leafTemplate is a workload certificate as sentry issues it.
func leafTemplate(id spiffeid.ID, ttl time.Duration) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		NotBefore:             now,
		NotAfter:              now.Add(ttl),
		URIs:                  []*url.URL{id.URL()},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

// sign issues a leaf for pub, signed by the intermediate.
func (ca *testCA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*Issued, error) {
	leaf, err := signCert(tmpl, ca.inter, pub, ca.interKey)
	if err != nil {
		return nil, err
	}
	return &Issued{Chain: []*x509.Certificate{leaf, ca.inter}, Roots: []*x509.Certificate{ca.root}}, nil
}

// issue answers a CSR the way sentry does.
func (ca *testCA) issue(csrPEM []byte, id spiffeid.ID, ttl time.Duration) (*Issued, error) {
	csr, err := ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	return ca.sign(leafTemplate(id, ttl), csr.PublicKey)
}

// answerer returns a fetch answer function that issues id for ttl.
func (ca *testCA) answerer(id spiffeid.ID, ttl time.Duration) answerFunc {
	return func(_ context.Context, csrPEM []byte) (*Issued, error) { return ca.issue(csrPEM, id, ttl) }
}

// ---- a recording Fetcher ----

type answerFunc func(ctx context.Context, csrPEM []byte) (*Issued, error)

type testFetcher struct {
	mu     sync.Mutex
	answer answerFunc
	calls  []time.Time
	issued []*x509.Certificate // leaves handed out, in order
}

func newTestFetcher(a answerFunc) *testFetcher { return &testFetcher{answer: a} }

func (f *testFetcher) Fetch(ctx context.Context, csrPEM []byte) (*Issued, error) {
	f.mu.Lock()
	a := f.answer
	f.calls = append(f.calls, time.Now())
	f.mu.Unlock()
	iss, err := a(ctx, csrPEM)
	if err == nil && iss != nil && len(iss.Chain) > 0 {
		f.mu.Lock()
		f.issued = append(f.issued, iss.Chain[0])
		f.mu.Unlock()
	}
	return iss, err
}

func (f *testFetcher) set(a answerFunc) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *testFetcher) callTimes() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

func (f *testFetcher) issuedLeaves() []*x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*x509.Certificate(nil), f.issued...)
}

// waitCalls waits until Fetch has been called at least n times.
func (f *testFetcher) waitCalls(t *testing.T, n int, timeout time.Duration) []time.Time {
	t.Helper()
	var calls []time.Time
	waitFor(t, timeout, fmt.Sprintf("%d fetch calls", n), func() bool {
		calls = f.callTimes()
		return len(calls) >= n
	})
	return calls
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func failing(msg string) answerFunc {
	return func(context.Context, []byte) (*Issued, error) { return nil, errors.New(msg) }
}

// ---- helpers ----

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func testIdentity(t testing.TB, td, ns, app string) Identity {
	t.Helper()
	id, err := NewIdentity(td, ns, app)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newTestSource(t *testing.T, f Fetcher, opts SourceOptions) *Source {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLog
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := NewSource(ctx, f, opts)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func currentLeaf(t *testing.T, s *Source) *x509.Certificate {
	t.Helper()
	svid, err := s.GetX509SVID()
	if err != nil {
		t.Fatalf("GetX509SVID: %v", err)
	}
	return svid.Certificates[0]
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ---- tests ----

func TestNewSourceOptions(t *testing.T) {
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	good := newTestFetcher(ca.answerer(ident.ID(), time.Hour))
	tests := []struct {
		name    string
		f       Fetcher
		opts    SourceOptions
		wantErr string
	}{
		{"nil fetcher", nil, SourceOptions{Identity: ident}, "fetcher is nil"},
		{"zero identity", good, SourceOptions{}, "no trust domain"},
		{"bad app id", good, SourceOptions{Identity: Identity{TrustDomain: ident.TrustDomain, Namespace: "default", AppID: "a.b"}}, "dot"},
		{"empty namespace", good, SourceOptions{Identity: Identity{TrustDomain: ident.TrustDomain, AppID: "orders"}}, "namespace is empty"},
		{"RenewAt above 1", good, SourceOptions{Identity: ident, RenewAt: 1.5}, "RenewAt"},
		{"RenewAt negative", good, SourceOptions{Identity: ident, RenewAt: -0.5}, "RenewAt"},
		{"Jitter negative", good, SourceOptions{Identity: ident, Jitter: -0.1}, "Jitter"},
		{"RenewAt plus Jitter reaches 1", good, SourceOptions{Identity: ident, RenewAt: 0.9, Jitter: 0.1}, "Jitter"},
		{"RenewAt minus Jitter reaches 0", good, SourceOptions{Identity: ident, RenewAt: 0.1, Jitter: 0.2}, "Jitter"},
		{"MinBackoff above MaxBackoff", good, SourceOptions{Identity: ident, MinBackoff: time.Second, MaxBackoff: time.Millisecond}, "MinBackoff"},
		{"negative backoff", good, SourceOptions{Identity: ident, MinBackoff: -time.Second}, "negative"},
		{"negative fetch timeout", good, SourceOptions{Identity: ident, FetchTimeout: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = quietLog
			s, err := NewSource(context.Background(), tt.f, tt.opts)
			if err == nil {
				_ = s.Close()
				t.Fatalf("NewSource succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("error %q, want it to start with \"certs: \" and contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewSourceRetriesFirstFetch(t *testing.T) {
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	var n atomic.Int32
	good := ca.answerer(ident.ID(), time.Hour)
	f := newTestFetcher(func(ctx context.Context, csr []byte) (*Issued, error) {
		if n.Add(1) <= 2 {
			return nil, errors.New("sentry unavailable")
		}
		return good(ctx, csr)
	})
	s := newTestSource(t, f, SourceOptions{Identity: ident, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if got := len(f.callTimes()); got != 3 {
		t.Fatalf("fetch calls = %d, want 3 (two failures, then success)", got)
	}
	if got := currentLeaf(t, s); !got.Equal(f.issuedLeaves()[0]) {
		t.Fatal("source does not serve the issued certificate")
	}
	if s.Rotations() != 0 {
		t.Fatalf("Rotations = %d after the first fetch, want 0", s.Rotations())
	}
}

func TestNewSourceGivesUpWithContext(t *testing.T) {
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	tests := []struct {
		name    string
		answer  answerFunc
		wantErr string
	}{
		{"fetch error", failing("connection refused"), "connection refused"},
		{"wrong identity", ca.answerer(spiffeid.RequireFromString("spiffe://example.org/ns/default/billing"), time.Hour), "billing"},
		{"unverifiable", func(ctx context.Context, csr []byte) (*Issued, error) {
			iss, err := other.issue(csr, ident.ID(), time.Hour)
			if err != nil {
				return nil, err
			}
			iss.Roots = []*x509.Certificate{ca.root}
			return iss, nil
		}, "could not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newTestFetcher(tt.answer)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			s, err := NewSource(ctx, f, SourceOptions{Identity: ident, Logger: quietLog, MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
			if err == nil {
				_ = s.Close()
				t.Fatal("NewSource succeeded with a fetcher that never gives a valid answer")
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q: want it to wrap context.DeadlineExceeded and mention %q", err, tt.wantErr)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("NewSource took %v to give up after a 300ms context", el)
			}
			if n := len(f.callTimes()); n < 3 {
				t.Fatalf("fetch calls = %d in 300ms with 10-40ms backoff, want retries", n)
			}
		})
	}
}

func TestSourceRenewsAroundHalfLife(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	const ttl = 4 * time.Second
	f := newTestFetcher(ca.answerer(ident.ID(), ttl))
	s := newTestSource(t, f, SourceOptions{Identity: ident})
	first := currentLeaf(t, s)
	updated := s.Updated()

	calls := f.waitCalls(t, 3, 3*ttl)
	leaves := f.issuedLeaves()
	for k := 1; k < 3; k++ {
		prev := leaves[k-1]
		life := prev.NotAfter.Sub(prev.NotBefore)
		lo := prev.NotBefore.Add(time.Duration(0.45 * float64(life)))
		hi := prev.NotBefore.Add(time.Duration(0.55 * float64(life)))
		got := calls[k]
		if got.Before(lo.Add(-20*time.Millisecond)) || got.After(hi.Add(400*time.Millisecond)) {
			t.Errorf("renewal %d at %s after NotBefore, want within [%s, %s] (half-life ± 5%%)",
				k, got.Sub(prev.NotBefore), lo.Sub(prev.NotBefore), hi.Sub(prev.NotBefore))
		}
	}
	waitFor(t, time.Second, "2 rotations", func() bool { return s.Rotations() >= 2 })
	if !isClosed(updated) {
		t.Fatal("Updated channel not closed after rotations")
	}
	cur := currentLeaf(t, s)
	if cur.Equal(first) {
		t.Fatal("still serving the first certificate after two rotations")
	}
	if !s.NotAfter().After(first.NotAfter) || !s.NotAfter().Equal(cur.NotAfter) {
		t.Fatalf("NotAfter = %s, want the current leaf's %s, later than the first's %s", s.NotAfter(), cur.NotAfter, first.NotAfter)
	}
	svid, _ := s.GetX509SVID()
	if !svid.PrivateKey.Public().(*ecdsa.PublicKey).Equal(cur.PublicKey) {
		t.Fatal("served private key does not match the served certificate")
	}
	if svid.ID != ident.ID() {
		t.Fatalf("SVID ID = %s, want %s", svid.ID, ident.ID())
	}
	// Every renewal uses a new key.
	seen := map[string]bool{}
	for _, l := range f.issuedLeaves() {
		k := string(l.RawSubjectPublicKeyInfo)
		if seen[k] {
			t.Fatal("a key was reused across renewals")
		}
		seen[k] = true
	}
}

func TestSourceBackoffThenRecovery(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	const ttl = 2 * time.Second
	good := ca.answerer(ident.ID(), ttl)
	var n atomic.Int32
	const failures = 5
	f := newTestFetcher(func(ctx context.Context, csr []byte) (*Issued, error) {
		switch k := n.Add(1); {
		case k == 1 || k > 1+failures:
			return good(ctx, csr)
		default:
			return nil, errors.New("sentry unavailable")
		}
	})
	logs := &syncBuffer{}
	s := newTestSource(t, f, SourceOptions{
		Identity:   ident,
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
		MinBackoff: 40 * time.Millisecond,
		MaxBackoff: 160 * time.Millisecond,
	})
	first := currentLeaf(t, s)

	// While renewal fails, the first certificate stays in service.
	stop := make(chan struct{})
	var wrong atomic.Int32
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if svid, err := s.GetX509SVID(); err != nil || !(svid.Certificates[0].Equal(first) || s.Rotations() > 0) {
				wrong.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	calls := f.waitCalls(t, 2+failures, 3*ttl)
	waitFor(t, 2*time.Second, "recovery", func() bool { return s.Rotations() == 1 })
	close(stop)
	if wrong.Load() != 0 {
		t.Fatalf("%d reads did not return the current certificate while renewal failed", wrong.Load())
	}
	// Gap before retry i is backoff(i): upper half of min(40ms*2^(i-1), 160ms).
	for i := 1; i <= failures; i++ {
		step := min(40*time.Millisecond<<(i-1), 160*time.Millisecond)
		gap := calls[i+1].Sub(calls[i])
		if gap < step/2 || gap > step+300*time.Millisecond {
			t.Errorf("retry %d came %v after the failure, want within [%v, %v]", i, gap, step/2, step)
		}
	}
	if cur := currentLeaf(t, s); cur.Equal(first) {
		t.Fatal("still serving the first certificate after recovery")
	}
	out := logs.String()
	for _, want := range []string{
		"renewal failed", "attempt=5", "identity=spiffe://example.org/ns/default/orders", "not_after=", "sentry unavailable",
		"X509-SVID rotated", "attempt=6",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

func TestSourceRejectsBadAnswersAndKeepsCert(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	const ttl = 2 * time.Second
	tests := []struct {
		name string
		bad  answerFunc
	}{
		{"wrong identity", ca.answerer(spiffeid.RequireFromString("spiffe://example.org/ns/default/billing"), ttl)},
		{"wrong key", func(context.Context, []byte) (*Issued, error) {
			k, err := GenerateKey()
			if err != nil {
				return nil, err
			}
			return ca.sign(leafTemplate(ident.ID(), ttl), k.Public())
		}},
		{"unverifiable", func(_ context.Context, csr []byte) (*Issued, error) {
			iss, err := other.issue(csr, ident.ID(), ttl)
			if err != nil {
				return nil, err
			}
			iss.Roots = []*x509.Certificate{ca.root}
			return iss, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newTestFetcher(ca.answerer(ident.ID(), ttl))
			s := newTestSource(t, f, SourceOptions{Identity: ident, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
			first := currentLeaf(t, s)
			updated := s.Updated()
			f.set(tt.bad)
			f.waitCalls(t, 4, 3*ttl) // the first fetch, then three rejected answers
			if cur := currentLeaf(t, s); !cur.Equal(first) {
				t.Fatal("a rejected answer replaced the certificate")
			}
			if s.Rotations() != 0 || isClosed(updated) {
				t.Fatalf("rejected answer counted as a change: rotations=%d updated=%v", s.Rotations(), isClosed(updated))
			}
			// The Source keeps retrying and takes the next good answer.
			f.set(ca.answerer(ident.ID(), ttl))
			waitFor(t, 2*time.Second, "recovery", func() bool { return s.Rotations() == 1 })
			if !isClosed(updated) {
				t.Fatal("Updated not closed after recovery")
			}
		})
	}
}

func TestSourceValidate(t *testing.T) {
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "example.org")
	foreign := newTestCA(t, "other.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	s, err := newSource(newTestFetcher(nil), SourceOptions{Identity: ident, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	key := mustKey(t)
	pub := key.Public()
	id := ident.ID()
	signed := func(mod func(*x509.Certificate)) func() (*Issued, error) {
		return func() (*Issued, error) {
			tmpl := leafTemplate(id, time.Hour)
			if mod != nil {
				mod(tmpl)
			}
			return ca.sign(tmpl, pub)
		}
	}
	tests := []struct {
		name    string
		answer  func() (*Issued, error)
		wantErr string // "" = valid
	}{
		{"valid", signed(nil), ""},
		{"valid with roots old and new", func() (*Issued, error) {
			iss, err := ca.sign(leafTemplate(id, time.Hour), pub)
			if err == nil {
				iss.Roots = append(iss.Roots, other.root)
			}
			return iss, err
		}, ""},
		{"nil answer", func() (*Issued, error) { return nil, nil }, "returned nothing"},
		{"empty chain", func() (*Issued, error) { return &Issued{Roots: []*x509.Certificate{ca.root}}, nil }, "empty certificate chain"},
		{"nil in chain", func() (*Issued, error) {
			return &Issued{Chain: []*x509.Certificate{nil}, Roots: []*x509.Certificate{ca.root}}, nil
		}, "nil certificate"},
		{"no roots", func() (*Issued, error) {
			iss, err := signed(nil)()
			if err == nil {
				iss.Roots = nil
			}
			return iss, err
		}, "no roots"},
		{"non-CA root", func() (*Issued, error) {
			iss, err := signed(nil)()
			if err == nil {
				iss.Roots = []*x509.Certificate{iss.Chain[0]}
			}
			return iss, err
		}, "not a CA"},
		{"wrong key", func() (*Issued, error) { return ca.sign(leafTemplate(id, time.Hour), mustKey(t).Public()) }, "not for the requested key"},
		{"wrong app", signed(func(c *x509.Certificate) {
			c.URIs = []*url.URL{spiffeid.RequireFromString("spiffe://example.org/ns/default/billing").URL()}
		}), `want "spiffe://example.org/ns/default/orders"`},
		{"wrong namespace", signed(func(c *x509.Certificate) {
			c.URIs = []*url.URL{spiffeid.RequireFromString("spiffe://example.org/ns/prod/orders").URL()}
		}), "ns/prod/orders"},
		{"wrong trust domain", func() (*Issued, error) {
			return foreign.sign(leafTemplate(spiffeid.RequireFromString("spiffe://other.org/ns/default/orders"), time.Hour), pub)
		}, "other.org"},
		{"two URI SANs", signed(func(c *x509.Certificate) {
			c.URIs = append(c.URIs, spiffeid.RequireFromString("spiffe://example.org/ns/default/billing").URL())
		}), "more than one URI SAN"},
		{"no URI SAN", signed(func(c *x509.Certificate) { c.URIs = nil }), "no URI SAN"},
		{"signed by another CA", func() (*Issued, error) {
			iss, err := other.sign(leafTemplate(id, time.Hour), pub)
			if err == nil {
				iss.Roots = []*x509.Certificate{ca.root}
			}
			return iss, err
		}, "could not verify"},
		{"missing intermediate", func() (*Issued, error) {
			iss, err := signed(nil)()
			if err == nil {
				iss.Chain = iss.Chain[:1]
			}
			return iss, err
		}, "could not verify"},
		{"expired", signed(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		}), "expired"},
		{"not yet valid", signed(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
		}), "could not verify"},
		{"leaf is a CA", signed(func(c *x509.Certificate) {
			c.IsCA = true
			c.KeyUsage |= x509.KeyUsageCertSign
		}), "CA flag"},
		{"no digitalSignature", signed(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }), "digitalSignature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := tt.answer()
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.validate(iss, key)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				if st.notAfter != iss.Chain[0].NotAfter || st.svid.ID != id || st.bundle.TrustDomain() != ident.TrustDomain {
					t.Fatal("state does not describe the answer")
				}
				return
			}
			if err == nil {
				t.Fatalf("validate accepted a bad answer, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "certs: rejected X509-SVID") {
				t.Fatalf("error %q, want prefix \"certs: rejected X509-SVID\" and %q", err, tt.wantErr)
			}
		})
	}
}

func TestSourceNeverServesExpired(t *testing.T) {
	t.Run("injected clock", func(t *testing.T) {
		t.Parallel()
		ca := newTestCA(t, "example.org")
		ident := testIdentity(t, "example.org", "default", "orders")
		var offset atomic.Int64
		now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		f := newTestFetcher(ca.answerer(ident.ID(), time.Hour))
		s := newTestSource(t, f, SourceOptions{Identity: ident, Now: now, MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
		f.set(failing("sentry down"))
		notAfter := s.NotAfter()

		offset.Store(int64(time.Hour - 5*time.Second)) // just before expiry: still served
		if _, err := s.GetX509SVID(); err != nil {
			t.Fatalf("GetX509SVID 5s before expiry: %v", err)
		}
		offset.Store(int64(time.Hour + 5*time.Second)) // just after: never served
		svid, err := s.GetX509SVID()
		if err == nil || svid != nil {
			t.Fatal("GetX509SVID served an expired certificate")
		}
		if !errors.Is(err, ErrSVIDExpired) || !strings.Contains(err.Error(), "orders") {
			t.Fatalf("error %q, want ErrSVIDExpired naming the identity", err)
		}
		if !s.NotAfter().Equal(notAfter) {
			t.Fatal("NotAfter changed without a renewal")
		}
		if _, err := s.GetX509BundleForTrustDomain(ident.TrustDomain); err != nil {
			t.Fatalf("the trust bundle must stay available: %v", err)
		}
	})
	t.Run("real clock", func(t *testing.T) {
		t.Parallel()
		ca := newTestCA(t, "example.org")
		ident := testIdentity(t, "example.org", "default", "orders")
		f := newTestFetcher(ca.answerer(ident.ID(), 2*time.Second))
		s := newTestSource(t, f, SourceOptions{Identity: ident, MinBackoff: 50 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
		f.set(failing("sentry down"))
		var served int
		waitFor(t, 5*time.Second, "expiry", func() bool {
			before := time.Now()
			svid, err := s.GetX509SVID()
			if err != nil {
				if !errors.Is(err, ErrSVIDExpired) {
					t.Fatalf("GetX509SVID: %v, want ErrSVIDExpired", err)
				}
				return true
			}
			served++
			if before.After(svid.Certificates[0].NotAfter) {
				t.Fatalf("served a certificate that expired at %s at %s", svid.Certificates[0].NotAfter, before)
			}
			return false
		})
		if served == 0 {
			t.Fatal("the certificate was never served before expiry")
		}
		if time.Now().Before(s.NotAfter()) {
			t.Fatal("GetX509SVID failed before the certificate expired")
		}
	})
}

func TestSourceSetRoots(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ca2 := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	f := newTestFetcher(ca.answerer(ident.ID(), time.Hour))
	s := newTestSource(t, f, SourceOptions{Identity: ident})

	b, err := s.GetX509BundleForTrustDomain(ident.TrustDomain)
	if err != nil || !SameRoots(b.X509Authorities(), []*x509.Certificate{ca.root}) {
		t.Fatalf("initial bundle: %v, want the root from the fetch", err)
	}
	if _, err := s.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("other.org")); err == nil || !strings.Contains(err.Error(), "other.org") {
		t.Fatalf("bundle for a foreign trust domain: err = %v, want an error naming it", err)
	}

	// Root rotation step 1: old + new.
	ch := s.Updated()
	if err := s.SetRoots([]*x509.Certificate{ca.root, ca2.root}); err != nil {
		t.Fatal(err)
	}
	if !isClosed(ch) {
		t.Fatal("SetRoots with new roots did not notify")
	}
	b, _ = s.GetX509BundleForTrustDomain(ident.TrustDomain)
	if !SameRoots(b.X509Authorities(), []*x509.Certificate{ca.root, ca2.root}) {
		t.Fatal("bundle does not hold the roots set by SetRoots")
	}
	svidBefore, _ := s.GetX509SVID()

	// The same set again, even reordered: no change, no notification.
	ch = s.Updated()
	if err := s.SetRoots([]*x509.Certificate{ca2.root, ca.root}); err != nil {
		t.Fatal(err)
	}
	if isClosed(ch) {
		t.Fatal("SetRoots with unchanged roots notified")
	}

	// Bad bundles are rejected and change nothing.
	leaf := currentLeaf(t, s)
	for name, roots := range map[string][]*x509.Certificate{
		"empty": nil, "nil root": {ca.root, nil}, "non-CA": {ca.root, leaf},
	} {
		if err := s.SetRoots(roots); err == nil {
			t.Errorf("SetRoots(%s) accepted", name)
		}
	}
	if isClosed(ch) {
		t.Fatal("a rejected SetRoots notified")
	}
	b, _ = s.GetX509BundleForTrustDomain(ident.TrustDomain)
	if !SameRoots(b.X509Authorities(), []*x509.Certificate{ca.root, ca2.root}) {
		t.Fatal("a rejected SetRoots changed the bundle")
	}
	if svid, _ := s.GetX509SVID(); svid != svidBefore {
		t.Fatal("SetRoots changed the SVID")
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(f.callTimes()); n != 1 {
		t.Fatalf("fetch calls = %d: a bundle the SVID still chains to must not trigger a renewal", n)
	}

	// Root rotation step 2: the old root is gone, so the SVID must be
	// renewed at once (with an hour-long cert, not at half-life).
	f.set(func(ctx context.Context, csr []byte) (*Issued, error) {
		iss, err := ca2.issue(csr, ident.ID(), time.Hour)
		if err == nil {
			iss.Roots = []*x509.Certificate{ca2.root}
		}
		return iss, err
	})
	if err := s.SetRoots([]*x509.Certificate{ca2.root}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "renewal after the root rotation", func() bool { return s.Rotations() == 1 })
	svid, _ := s.GetX509SVID()
	b, _ = s.GetX509BundleForTrustDomain(ident.TrustDomain)
	if _, _, err := x509svid.Verify(svid.Certificates, b); err != nil {
		t.Fatalf("SVID after root rotation does not verify against the bundle: %v", err)
	}
	if !svid.Certificates[len(svid.Certificates)-1].Equal(ca2.inter) {
		t.Fatal("SVID after root rotation is not issued under the new root")
	}
}

func TestSourceCloseStopsRenewal(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	const ttl = 2 * time.Second
	good := ca.answerer(ident.ID(), ttl)
	renewing := make(chan struct{})
	var sawCancel atomic.Bool
	var n atomic.Int32
	// The first answer is good; the renewal hangs until its context ends.
	f := newTestFetcher(func(ctx context.Context, csr []byte) (*Issued, error) {
		if n.Add(1) == 1 {
			return good(ctx, csr)
		}
		close(renewing)
		<-ctx.Done()
		sawCancel.Store(true)
		return nil, ctx.Err()
	})
	s, err := NewSource(context.Background(), f, SourceOptions{Identity: ident, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-renewing:
	case <-time.After(3 * ttl):
		t.Fatal("renewal did not start")
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Close took %v with a fetch in flight", el)
	}
	if !sawCancel.Load() {
		t.Fatal("Close did not cancel the fetch in flight")
	}
	select {
	case <-s.done:
	default:
		t.Fatal("renewal goroutine still running after Close")
	}
	if _, err := s.GetX509SVID(); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("GetX509SVID after Close: %v, want ErrSourceClosed", err)
	}
	if _, err := s.GetX509BundleForTrustDomain(ident.TrustDomain); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("GetX509BundleForTrustDomain after Close: %v, want ErrSourceClosed", err)
	}
	if err := s.SetRoots([]*x509.Certificate{ca.root}); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("SetRoots after Close: %v, want ErrSourceClosed", err)
	}
	if !isClosed(s.Updated()) {
		t.Fatal("Updated channel is not closed after Close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := len(f.callTimes())
	time.Sleep(ttl)
	if got := len(f.callTimes()); got != calls {
		t.Fatalf("fetch called %d more times after Close", got-calls)
	}
}

// A renewal that completes after Close has begun must not revive the Source.
func TestSourceCloseRacesRenewal(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	const ttl = 2 * time.Second
	good := ca.answerer(ident.ID(), ttl)
	renewing, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	f := newTestFetcher(func(ctx context.Context, csr []byte) (*Issued, error) {
		if n.Add(1) == 2 {
			close(renewing)
			<-release // a fetch that ignores cancellation and answers late
		}
		return good(context.Background(), csr)
	})
	s, err := NewSource(context.Background(), f, SourceOptions{Identity: ident, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-renewing:
	case <-time.After(3 * ttl):
		t.Fatal("renewal did not start")
	}
	closed := make(chan struct{})
	go func() { _ = s.Close(); close(closed) }()
	waitFor(t, time.Second, "Close to take effect", func() bool {
		_, err := s.GetX509SVID()
		return errors.Is(err, ErrSourceClosed)
	})
	close(release)
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not return after the fetch did")
	}
	if _, err := s.GetX509SVID(); !errors.Is(err, ErrSourceClosed) {
		t.Fatalf("GetX509SVID after Close and a late renewal: %v, want ErrSourceClosed", err)
	}
	if s.Rotations() != 0 {
		t.Fatal("a renewal finishing after Close was installed")
	}
}

func TestSourceCloseLeaksNoGoroutine(t *testing.T) {
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	before := runtime.NumGoroutine()
	for range 20 {
		s, err := NewSource(context.Background(), newTestFetcher(ca.answerer(ident.ID(), time.Hour)), SourceOptions{Identity: ident, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
	}
	waitFor(t, 2*time.Second, "goroutines to return", func() bool { return runtime.NumGoroutine() <= before })
}

func TestSourceUpdatedConcurrentReaders(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	s := newTestSource(t, newTestFetcher(ca.answerer(ident.ID(), time.Hour)), SourceOptions{Identity: ident})
	roots := []*x509.Certificate{ca.root}
	for range 5 {
		roots = append(roots, newTestCA(t, "example.org").root)
	}
	const readers = 8
	var wg sync.WaitGroup
	seen := make([]atomic.Int32, readers)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ch := s.Updated()
				b, err := s.GetX509BundleForTrustDomain(ident.TrustDomain)
				if err != nil {
					return // closed
				}
				seen[r].Store(int32(len(b.X509Authorities())))
				<-ch
			}
		}()
	}
	for i := 2; i <= len(roots); i++ {
		if err := s.SetRoots(roots[:i]); err != nil {
			t.Fatal(err)
		}
	}
	// Every reader ends up seeing the last bundle.
	for r := range readers {
		waitFor(t, 2*time.Second, "reader to see the last bundle", func() bool { return int(seen[r].Load()) == len(roots) })
	}
	_ = s.Close()
	wg.Wait() // Close wakes every reader and they observe ErrSourceClosed.
}

func TestSourceRenewDelayAndBackoff(t *testing.T) {
	ident := testIdentity(t, "example.org", "default", "orders")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var now time.Time
	s, err := newSource(newTestFetcher(nil), SourceOptions{
		Identity: ident, Logger: quietLog, Now: func() time.Time { return now },
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(time.Hour)}

	now = t0
	lo, hi := time.Hour, time.Duration(0)
	for range 2000 {
		d := s.renewDelay(leaf)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 27*time.Minute || hi > 33*time.Minute {
		t.Fatalf("renew delays in [%v, %v], want within half-life ± 5%% = [27m, 33m]", lo, hi)
	}
	if hi-lo < 4*time.Minute {
		t.Fatalf("renew delays in [%v, %v]: no jitter", lo, hi)
	}
	// Later in the lifetime the delay shrinks accordingly.
	now = t0.Add(20 * time.Minute)
	if d := s.renewDelay(leaf); d < 7*time.Minute || d > 13*time.Minute {
		t.Fatalf("renew delay 20m into a 1h cert = %v, want 7m..13m", d)
	}
	// Past the renewal point (backdated cert): a fraction of what is left, never a spin.
	now = t0.Add(50 * time.Minute)
	if d := s.renewDelay(leaf); d < 4*time.Minute || d > 6*time.Minute {
		t.Fatalf("renew delay 50m into a 1h cert = %v, want ~half of the 10m left", d)
	}
	now = t0.Add(2 * time.Hour)
	if d := s.renewDelay(leaf); d > 0 {
		t.Fatalf("renew delay for an expired cert = %v, want now", d)
	}

	for attempt, step := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		5: 1600 * time.Millisecond, 6: 2 * time.Second, 100: 2 * time.Second, 1 << 20: 2 * time.Second,
	} {
		lo, hi := step, time.Duration(0)
		for range 500 {
			d := s.backoff(attempt)
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < step/2 || hi > step || hi-lo < step/8 {
			t.Errorf("backoff(%d) in [%v, %v], want jittered within [%v, %v]", attempt, lo, hi, step/2, step)
		}
	}
}

// TestSourceMTLSAcrossRotations runs a real mTLS server and client over
// loopback, both built with go-spiffe's tlsconfig on rotating Sources, through
// several rotations and a root rotation, and requires zero failed requests.
func TestSourceMTLSAcrossRotations(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ca2 := newTestCA(t, "example.org")
	serverID := testIdentity(t, "example.org", "default", "orders")
	clientID := testIdentity(t, "example.org", "default", "frontend")
	const ttl = 2 * time.Second

	// Both sources are issued by the current CA; a root rotation switches it.
	var current atomic.Pointer[testCA]
	current.Store(ca)
	bothRoots := []*x509.Certificate{ca.root, ca2.root}
	var rotated atomic.Bool
	answer := func(id spiffeid.ID) answerFunc {
		return func(_ context.Context, csr []byte) (*Issued, error) {
			iss, err := current.Load().issue(csr, id, ttl)
			if err == nil && rotated.Load() {
				iss.Roots = bothRoots
			}
			return iss, err
		}
	}
	srvSrc := newTestSource(t, newTestFetcher(answer(serverID.ID())), SourceOptions{Identity: serverID})
	cliSrc := newTestSource(t, newTestFetcher(answer(clientID.ID())), SourceOptions{Identity: clientID})

	var mu sync.Mutex
	clientSerials := map[string]bool{} // client certs seen by the server
	serverSerials := map[string]bool{} // server certs seen by the client
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
			if err != nil || id != clientID.ID() {
				http.Error(w, "bad peer", http.StatusForbidden)
				return
			}
			mu.Lock()
			clientSerials[r.TLS.PeerCertificates[0].SerialNumber.String()] = true
			mu.Unlock()
			_, _ = io.WriteString(w, "ok")
		}),
	}
	tlsLn := tls.NewListener(ln, tlsconfig.MTLSServerConfig(srvSrc, srvSrc, tlsconfig.AuthorizeID(clientID.ID())))
	go func() { _ = srv.Serve(tlsLn) }()
	t.Cleanup(func() { _ = srv.Close() })

	clientTLS := tlsconfig.MTLSClientConfig(cliSrc, cliSrc, tlsconfig.AuthorizeID(serverID.ID()))
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS, DisableKeepAlives: true}}
	pooled := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS.Clone()}}
	target := "https://" + ln.Addr().String() + "/"

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range []*http.Client{fresh, fresh, pooled} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(target)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK || string(body) != "ok" {
						err = fmt.Errorf("status %d body %q", resp.StatusCode, body)
					} else {
						mu.Lock()
						serverSerials[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
						mu.Unlock()
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				ok.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	waitFor(t, 4*ttl, "two rotations on both sides", func() bool { return srvSrc.Rotations() >= 2 && cliSrc.Rotations() >= 2 })
	// Root rotation: publish old+new roots (pushed and in every answer),
	// then issue from the new CA.
	rotated.Store(true)
	for _, s := range []*Source{srvSrc, cliSrc} {
		if err := s.SetRoots(bothRoots); err != nil {
			t.Fatal(err)
		}
	}
	current.Store(ca2)
	waitFor(t, 4*ttl, "two more rotations on both sides", func() bool { return srvSrc.Rotations() >= 4 && cliSrc.Rotations() >= 4 })
	close(stop)
	wg.Wait()

	if e := firstErr.Load(); e != nil {
		t.Errorf("first failure: %v", *e)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across rotations", failed.Load(), failed.Load()+ok.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(clientSerials) < 4 || len(serverSerials) < 4 {
		t.Fatalf("saw %d client and %d server certificates over %d requests, want >= 4 each (new handshakes must use rotated certs)",
			len(clientSerials), len(serverSerials), ok.Load())
	}
	t.Logf("%d requests, 0 failed; %d server and %d client certificates seen; rotations server=%d client=%d",
		ok.Load(), len(serverSerials), len(clientSerials), srvSrc.Rotations(), cliSrc.Rotations())
}

func TestSourceGettersDoNotAllocate(t *testing.T) {
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	s := newTestSource(t, newTestFetcher(ca.answerer(ident.ID(), time.Hour)), SourceOptions{Identity: ident})
	td := ident.TrustDomain
	if a := testing.AllocsPerRun(1000, func() {
		if _, err := s.GetX509SVID(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetX509BundleForTrustDomain(td); err != nil {
			t.Fatal(err)
		}
		_ = s.Updated()
		_ = s.NotAfter()
	}); a != 0 {
		t.Fatalf("getters allocate %v times per call, want 0", a)
	}
}

func BenchmarkSourceGetX509SVID(b *testing.B) {
	ca := newTestCA(b, "example.org")
	ident := testIdentity(b, "example.org", "default", "orders")
	s, err := NewSource(context.Background(), newTestFetcher(ca.answerer(ident.ID(), time.Hour)), SourceOptions{Identity: ident, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetX509SVID(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSourceGetX509Bundle(b *testing.B) {
	ca := newTestCA(b, "example.org")
	ident := testIdentity(b, "example.org", "default", "orders")
	s, err := NewSource(context.Background(), newTestFetcher(ca.answerer(ident.ID(), time.Hour)), SourceOptions{Identity: ident, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	td := ident.TrustDomain
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetX509BundleForTrustDomain(td); err != nil {
				b.Fatal(err)
			}
		}
	})
}
