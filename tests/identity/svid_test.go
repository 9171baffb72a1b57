package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

// fetchWith bootstraps a certificate for app in namespace default with tok
// through sentryclient (no client certificate) and returns it as an SVID.
func fetchWith(t *testing.T, p *sentryProc, roots []*x509.Certificate, app, tok string) (*x509svid.SVID, error) {
	t.Helper()
	id, err := certs.NewIdentity(td.String(), "default", app)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sentryclient.New(context.Background(), p.addr, roots, id, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iss, err := c.Fetch(ctx, csr)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id.ID(), Certificates: iss.Chain, PrivateKey: key}, nil
}

// signPresenting asks sentry for a certificate for app over a connection
// that presents svid as the TLS client certificate, with token tok (may be
// ""). It returns the issued chain (leaf first).
func signPresenting(t *testing.T, p *sentryProc, roots []*x509.Certificate, svid *x509svid.SVID, app, tok string) ([]*x509.Certificate, error) {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(td, roots)
	tlsCfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(ca.SentryID(td)))
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, _ := certs.GenerateKey()
	csr, _ := certs.NewCSR(key)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := sentrypb.NewCAClient(conn).SignCertificate(ctx, &sentrypb.SignCertificateRequest{
		AppId: app, Namespace: "default", TrustDomain: td.String(), CsrPem: csr, Token: tok,
	})
	if err != nil {
		return nil, err
	}
	chain, err := certs.ParseCertsPEM(resp.GetCertChainPem())
	if err != nil {
		t.Fatal(err)
	}
	return chain, nil
}

// verifiesUnder reports whether chain is a valid SVID under root alone.
func verifiesUnder(chain []*x509.Certificate, root *x509.Certificate) bool {
	_, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, []*x509.Certificate{root}))
	return err == nil
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: sentry issued a certificate, want %s", what, code)
	}
	if st := status.Convert(err); st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s: %s %q, want %s containing %q", what, st.Code(), st.Message(), code, msg)
	}
}

// TestSVIDRenewalAuthorization (item 3e): a caller presenting a valid SVID
// renews its own identity without a token; it may not get another identity
// (even with a valid token for it); a certificate from a foreign CA, or an
// expired one, is refused as Unauthenticated even when a valid token comes
// with it.
func TestSVIDRenewalAuthorization(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sentry")
	p := startSentry(t, dir, "--workload-ttl", "6s")
	roots := p.bundle(t)
	orders, err := fetchWith(t, p, roots, "orders", p.token(t, "orders", "default"))
	if err != nil {
		t.Fatal(err)
	}

	chain, err := signPresenting(t, p, roots, orders, "orders", "")
	if err != nil {
		t.Fatalf("renewal presenting the current SVID, no token: %v", err)
	}
	if got, _ := x509svid.IDFromCert(chain[0]); got != orders.ID {
		t.Fatalf("renewal issued %s, want %s", got, orders.ID)
	}

	_, err = signPresenting(t, p, roots, orders, "payments", "")
	wantCode(t, "orders' SVID asking for payments", err, codes.PermissionDenied, "may renew only itself")
	_, err = signPresenting(t, p, roots, orders, "payments", p.token(t, "payments", "default"))
	wantCode(t, "orders' SVID asking for payments with a payments token", err, codes.PermissionDenied, "may renew only itself")

	// A CA of the same trust domain name that sentry does not trust.
	foreign, err := ca.Generate(td, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := certs.GenerateKey()
	serial, _ := ca.NewSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{orders.ID.URL()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, foreign.Issuer, &key.PublicKey, foreign.IssuerKey)
	if err != nil {
		t.Fatal(err)
	}
	fleaf, _ := x509.ParseCertificate(der)
	forged := &x509svid.SVID{ID: orders.ID, Certificates: []*x509.Certificate{fleaf, foreign.Issuer}, PrivateKey: key}
	_, err = signPresenting(t, p, roots, forged, "orders", "")
	wantCode(t, "SVID from a foreign CA", err, codes.Unauthenticated, "not a valid SVID")
	_, err = signPresenting(t, p, roots, forged, "orders", p.token(t, "orders", "default"))
	wantCode(t, "SVID from a foreign CA with a valid token", err, codes.Unauthenticated, "not a valid SVID")

	// Signed by sentry's own issuer, but for serverAuth only: not a client
	// credential (go-spiffe's verification alone would take it).
	mat, err := ca.LoadDir(filepath.Join(dir, "ca", "0001"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if der, err = x509.CreateCertificate(rand.Reader, tmpl, mat.Issuer, &key.PublicKey, mat.IssuerKey); err != nil {
		t.Fatal(err)
	}
	sleaf, _ := x509.ParseCertificate(der)
	serverOnly := &x509svid.SVID{ID: orders.ID, Certificates: []*x509.Certificate{sleaf, mat.Issuer}, PrivateKey: key}
	_, err = signPresenting(t, p, roots, serverOnly, "orders", "")
	wantCode(t, "serverAuth-only SVID of the mesh CA", err, codes.Unauthenticated, "clientAuth")

	time.Sleep(time.Until(orders.Certificates[0].NotAfter.Add(1500 * time.Millisecond)))
	_, err = signPresenting(t, p, roots, orders, "orders", p.token(t, "orders", "default"))
	wantCode(t, "expired SVID with a valid token", err, codes.Unauthenticated, "not a valid SVID")
}

// TestSVIDRenewalAcrossRootRotation (item 3, roots): after `sentry
// rotate-root` has switched signing to the new issuer, a certificate signed
// under the old root (still in the bundle) renews, and the new certificate
// chains to the new root. The bootstrap token was single-use and is spent,
// so the renewal can only have been authenticated by the SVID.
func TestSVIDRenewalAcrossRootRotation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sentry")
	p := startSentry(t, dir, "--workload-ttl", "1m", "--rotation-propagation-delay", "1s")
	oldRoots := p.bundle(t)
	tok, _ := p.tokenJTI(t, "orders", "--once")
	svid, err := fetchWith(t, p, oldRoots, "orders", tok)
	if err != nil {
		t.Fatal(err)
	}
	rotateRoot(t, dir)
	var both []*x509.Certificate
	waitFor(t, 10*time.Second, "new root in bundle.pem", func() bool {
		both = p.bundle(t)
		return len(both) == 2
	})
	newRoot := both[1]
	if !verifiesUnder(svid.Certificates, oldRoots[0]) || verifiesUnder(svid.Certificates, newRoot) {
		t.Fatal("the bootstrap SVID does not chain to the old root only")
	}
	// Renew with the old-root SVID until sentry has switched to the new
	// issuer; every renewal must succeed.
	waitFor(t, 15*time.Second, "a renewal issued under the new root", func() bool {
		chain, err := signPresenting(t, p, both, svid, "orders", "")
		if err != nil {
			t.Fatalf("renewal with an SVID of the old root during the rotation: %v", err)
		}
		return verifiesUnder(chain, newRoot)
	})
	if _, err := fetchWith(t, p, both, "orders", tok); err == nil {
		t.Fatal("the single-use token bootstrapped twice")
	}
}
