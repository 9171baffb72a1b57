package workloadapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var (
	td     = spiffeid.RequireTrustDomainFromString("example.org")
	testID = spiffeid.RequireFromString("spiffe://example.org/ns/default/app")
)

type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t testing.TB) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Organization: []string{"test root"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key}
}

var serial int64

func (c *ca) issue(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{id.URL()},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// fakeSource is a rotating identity like certs.Source.
type fakeSource struct {
	mu      sync.Mutex
	ca      *ca
	svid    *x509svid.SVID
	roots   []*x509.Certificate
	err     error
	updated chan struct{}
}

func newFakeSource(t testing.TB) *fakeSource {
	c := newCA(t)
	return &fakeSource{ca: c, svid: c.issue(t, testID), roots: []*x509.Certificate{c.cert}, updated: make(chan struct{})}
}

func (f *fakeSource) GetX509SVID() (*x509svid.SVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return f.svid, nil
}

func (f *fakeSource) GetX509BundleForTrustDomain(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d != td {
		return nil, errors.New("unknown trust domain")
	}
	return x509bundle.FromX509Authorities(td, f.roots), nil
}

func (f *fakeSource) Updated() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.updated
}

func (f *fakeSource) notifyLocked() {
	close(f.updated)
	f.updated = make(chan struct{})
}

// rotate issues a new SVID from the same CA and returns it.
func (f *fakeSource) rotate(t testing.TB) *x509svid.SVID {
	s := f.ca.issue(t, testID)
	f.mu.Lock()
	f.svid = s
	f.notifyLocked()
	f.mu.Unlock()
	return s
}

// rotateRoot adds a new root, then issues from it, as a root rotation does.
func (f *fakeSource) rotateRoot(t testing.TB) *ca {
	c := newCA(t)
	f.mu.Lock()
	f.ca = c
	f.roots = append(f.roots, c.cert)
	f.notifyLocked()
	f.mu.Unlock()
	return c
}

func (f *fakeSource) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.notifyLocked()
	f.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// socketPath returns a short socket path (unix socket paths are limited).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "api.sock")
}

func start(t *testing.T, src Source) *Server {
	t.Helper()
	srv, err := Listen(socketPath(t), src, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFetch(t *testing.T) {
	src := newFakeSource(t)
	srv := start(t, src)
	ctx := ctxT(t)
	addr := workloadapi.WithAddr(srv.Addr())

	svid, err := workloadapi.FetchX509SVID(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != testID || !svid.Certificates[0].Equal(src.svid.Certificates[0]) {
		t.Errorf("got SVID %s serial %v, want %s serial %v", svid.ID, svid.Certificates[0].SerialNumber, testID, src.svid.Certificates[0].SerialNumber)
	}
	// the private key matches the certificate.
	if !svid.PrivateKey.Public().(*ecdsa.PublicKey).Equal(src.svid.Certificates[0].PublicKey) {
		t.Error("private key does not match the certificate")
	}

	bundles, err := workloadapi.FetchX509Bundles(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.X509Authorities(); len(got) != 1 || !got[0].Equal(src.ca.cert) {
		t.Errorf("bundle = %v", got)
	}

	xc, err := workloadapi.FetchX509Context(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	// the SVID verifies against the served bundle.
	if _, _, err := x509svid.Verify(xc.DefaultSVID().Certificates, xc.Bundles); err != nil {
		t.Errorf("served SVID does not verify against the served bundle: %v", err)
	}
}

type watcher struct {
	updates chan *workloadapi.X509Context
	errs    chan error
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.updates <- c }
func (w *watcher) OnX509ContextWatchError(err error) {
	select {
	case w.errs <- err:
	default:
	}
}

func TestWatchSeesRotation(t *testing.T) {
	src := newFakeSource(t)
	srv := start(t, src)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	w := &watcher{updates: make(chan *workloadapi.X509Context, 10), errs: make(chan error, 10)}
	watchDone := make(chan error, 1)
	go func() { watchDone <- client.WatchX509Context(ctx, w) }()

	next := func() *workloadapi.X509Context {
		t.Helper()
		select {
		case c := <-w.updates:
			return c
		case err := <-w.errs:
			t.Fatalf("watch error: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no update within 10s")
		}
		return nil
	}
	first := next()
	if !first.DefaultSVID().Certificates[0].Equal(src.svid.Certificates[0]) {
		t.Fatal("first update is not the current SVID")
	}
	for i := 0; i < 3; i++ {
		want := src.rotate(t)
		got := next()
		if !got.DefaultSVID().Certificates[0].Equal(want.Certificates[0]) {
			t.Fatalf("rotation %d: got serial %v, want %v", i, got.DefaultSVID().Certificates[0].SerialNumber, want.Certificates[0].SerialNumber)
		}
	}
	// a root rotation: first the bundle grows, then an SVID from the new root.
	newRoot := src.rotateRoot(t)
	got := next()
	b, _ := got.Bundles.GetX509BundleForTrustDomain(td)
	if len(b.X509Authorities()) != 2 || !b.HasX509Authority(newRoot.cert) {
		t.Fatalf("bundle after root rotation has %d roots", len(b.X509Authorities()))
	}
	want := src.rotate(t)
	got = next()
	if !got.DefaultSVID().Certificates[0].Equal(want.Certificates[0]) {
		t.Fatal("SVID from the new root not seen")
	}
	if _, _, err := x509svid.Verify(got.DefaultSVID().Certificates, got.Bundles); err != nil {
		t.Fatalf("new SVID does not verify against the new bundle: %v", err)
	}
	cancel()
	if err := <-watchDone; !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
		t.Errorf("watch ended with %v", err)
	}
}

func TestX509SourceFollowsRotation(t *testing.T) {
	src := newFakeSource(t)
	srv := start(t, src)
	ctx := ctxT(t)
	xs, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(srv.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer xs.Close()
	got, err := xs.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(src.svid.Certificates[0]) {
		t.Fatal("X509Source does not hold the current SVID")
	}
	want := src.rotate(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = xs.GetX509SVID()
		if err == nil && got.Certificates[0].Equal(want.Certificates[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("X509Source did not pick up the rotated SVID (err %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBundleWatchSeesRootRotation(t *testing.T) {
	src := newFakeSource(t)
	srv := start(t, src)
	ctx := ctxT(t)
	bs, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(srv.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	newRoot := src.rotateRoot(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := bs.GetX509BundleForTrustDomain(td)
		if err == nil && b.HasX509Authority(newRoot.cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bundle source did not see the new root (err %v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func rawConn(t *testing.T, srv *Server) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+srv.Path(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func TestSecurityHeaderRequired(t *testing.T) {
	srv := start(t, newFakeSource(t))
	c := rawConn(t, srv)
	for _, tc := range []struct {
		name string
		md   metadata.MD
	}{
		{"missing", nil},
		{"false", metadata.Pairs(SecurityHeader, "false")},
		{"empty", metadata.Pairs(SecurityHeader, "")},
		{"twice", metadata.Pairs(SecurityHeader, "true", SecurityHeader, "true")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(ctxT(t), tc.md)
			calls := map[string]func() error{
				"FetchX509SVID": func() error {
					s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
				"FetchX509Bundles": func() error {
					s, err := c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
				"FetchJWTSVID": func() error {
					_, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
					return err
				},
			}
			for name, call := range calls {
				if err := call(); status.Code(err) != codes.InvalidArgument {
					t.Errorf("%s: err = %v, want InvalidArgument", name, err)
				}
			}
		})
	}
}

func TestJWTUnimplemented(t *testing.T) {
	srv := start(t, newFakeSource(t))
	ctx := ctxT(t)
	_, err := workloadapi.FetchJWTSVID(ctx, jwtParams(), workloadapi.WithAddr(srv.Addr()))
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchJWTSVID: err = %v, want Unimplemented", err)
	}
	c := rawConn(t, srv)
	ctx = metadata.AppendToOutgoingContext(ctx, SecurityHeader, "true")
	_, err = c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("ValidateJWTSVID: err = %v, want Unimplemented", err)
	}
}

func TestSourceErrors(t *testing.T) {
	src := newFakeSource(t)
	srv := start(t, src)
	c := rawConn(t, srv)
	ctx := metadata.AppendToOutgoingContext(ctxT(t), SecurityHeader, "true")
	s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	// the source loses its SVID: the open stream ends with Unavailable.
	src.fail(errors.New("expired"))
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("open stream: err = %v, want Unavailable", err)
	}
	// a new fetch fails the same way.
	_, err = workloadapi.FetchX509SVID(ctxT(t), workloadapi.WithAddr(srv.Addr()))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("fetch: err = %v, want Unavailable", err)
	}
}

func TestSocketFile(t *testing.T) {
	path := socketPath(t)
	srv, err := Listen(path, newFakeSource(t), WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket", len(entries))
	}
	// a second server on a live socket is refused.
	if _, err := Listen(path, newFakeSource(t)); err == nil {
		t.Error("Listen on a socket in use succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	if _, err := workloadapi.FetchX509SVID(ctxT(t), workloadapi.WithAddr(srv.Addr())); err != nil {
		t.Fatal(err)
	}
	cancel() // ending ctx closes the server and removes the socket
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after ctx was cancelled")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStaleSocketReplaced(t *testing.T) {
	path := socketPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close() // the file stays, nobody listens: stale
	srv := func() *Server {
		s, err := Listen(path, newFakeSource(t), WithLogger(quiet()))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	go func() { _ = srv.Serve(context.Background()) }()
	defer srv.Close()
	if _, err := workloadapi.FetchX509SVID(ctxT(t), workloadapi.WithAddr(srv.Addr())); err != nil {
		t.Fatal(err)
	}
}

func TestListenRefuses(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := "/tmp/" + strings.Repeat("0123456789/", 12) + "s.sock"
	for _, tc := range []struct {
		name, path string
		src        Source
	}{
		{"regular file", regular, newFakeSource(t)},
		{"directory", dir, newFakeSource(t)},
		{"too long", long, newFakeSource(t)},
		{"missing directory", filepath.Join(dir, "nope", "s.sock"), newFakeSource(t)},
		{"nil source", filepath.Join(dir, "s.sock"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Listen(tc.path, tc.src); err == nil {
				t.Error("Listen succeeded")
			}
		})
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep me" {
		t.Errorf("regular file touched: %q %v", b, err)
	}
}

func TestCloseEndsStreams(t *testing.T) {
	src := newFakeSource(t)
	path := socketPath(t)
	srv, err := Listen(path, src, WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background()) }()
	c := rawConn(t, srv)
	ctx := metadata.AppendToOutgoingContext(ctxT(t), SecurityHeader, "true")
	s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("after Close: Recv err = %v, want Unavailable", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
}
