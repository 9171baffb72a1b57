package sentry_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/sentry/token/join"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func csrPEM(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	tb.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := certs.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestSignCertificateRejects(t *testing.T) {
	s := startSentry(t, "")
	api := s.rawClient(t)
	now := time.Now()
	id := s.identity(t, "default", "orders")
	good := s.token(t, id, time.Hour, now)
	key := p256(t)
	goodCSR := csrPEM(t, key, nil)

	badSig := func() []byte {
		block, _ := pem.Decode(goodCSR)
		der := append([]byte(nil), block.Bytes...)
		der[len(der)-3] ^= 0xff // inside the signature BIT STRING
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	_, otherJoin, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := join.Create(otherJoin, id, time.Hour, now)
	caExt, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	u, _ := url.Parse("spiffe://cluster.local/ns/default/admin")

	type tc struct {
		name             string
		app, ns, td, tok string
		csr              []byte
		code             codes.Code
		msg              string
	}
	base := func(c tc) tc {
		if c.app == "" {
			c.app = "orders"
		}
		if c.ns == "" {
			c.ns = "default"
		}
		if c.td == "" {
			c.td = "cluster.local"
		}
		if c.tok == "" {
			c.tok = good
		}
		if c.csr == nil {
			c.csr = goodCSR
		}
		return c
	}
	cases := []tc{
		{name: "malformed PEM", csr: []byte("not pem at all"), code: codes.InvalidArgument, msg: "no PEM block"},
		{name: "empty CSR", csr: []byte{}, code: codes.InvalidArgument, msg: "no PEM block"},
		{name: "wrong PEM type", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), code: codes.InvalidArgument, msg: "want \"CERTIFICATE REQUEST\""},
		{name: "garbage DER", csr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), code: codes.InvalidArgument, msg: "CSR"},
		{name: "bad CSR signature", csr: badSig, code: codes.InvalidArgument, msg: "signature"},
		{name: "CSR asks DNS SAN", csr: csrPEM(t, key, &x509.CertificateRequest{DNSNames: []string{"evil.example"}}), code: codes.InvalidArgument, msg: "subject alternative names"},
		{name: "CSR asks IP SAN", csr: csrPEM(t, key, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}), code: codes.InvalidArgument, msg: "subject alternative names"},
		{name: "CSR asks email SAN", csr: csrPEM(t, key, &x509.CertificateRequest{EmailAddresses: []string{"a@b.c"}}), code: codes.InvalidArgument, msg: "subject alternative names"},
		{name: "CSR asks URI SAN", csr: csrPEM(t, key, &x509.CertificateRequest{URIs: []*url.URL{u}}), code: codes.InvalidArgument, msg: "subject alternative names"},
		{name: "CSR asks CA", csr: csrPEM(t, key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caExt}}}), code: codes.InvalidArgument, msg: "basic constraints"},
		{name: "CSR asks other extension", csr: csrPEM(t, key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{5, 0}}}}), code: codes.InvalidArgument, msg: "extensions"},
		{name: "CSR asks subject", csr: csrPEM(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "root"}}), code: codes.InvalidArgument, msg: "subject"},
		{name: "P-384 key", csr: csrPEM(t, p384, nil), code: codes.InvalidArgument, msg: "want ECDSA P-256"},
		{name: "RSA key", csr: csrPEM(t, rsaKey, nil), code: codes.InvalidArgument, msg: "want ECDSA P-256"},
		{name: "Ed25519 key", csr: csrPEM(t, edKey, nil), code: codes.InvalidArgument, msg: "want ECDSA P-256"},
		{name: "app ID with dot", app: "orders.default", code: codes.InvalidArgument, msg: "dot"},
		{name: "app ID too long", app: strings.Repeat("a", 65), code: codes.InvalidArgument, msg: "longer than 64"},
		{name: "namespace empty", ns: "-", code: codes.InvalidArgument, msg: "namespace is empty"},
		{name: "trust domain invalid", td: "Not A Domain", code: codes.InvalidArgument, msg: "trust domain"},
		{name: "wrong trust domain", td: "other.example", code: codes.PermissionDenied, msg: "not served here"},
		{name: "missing token", tok: "-", code: codes.Unauthenticated, msg: "missing"},
		{name: "expired token", tok: s.token(t, id, time.Hour, now.Add(-2*time.Hour)), code: codes.Unauthenticated, msg: "expired"},
		{name: "forged token", tok: forged, code: codes.Unauthenticated, msg: "does not verify"},
		{name: "garbled token", tok: "mjt1.!!!.???", code: codes.Unauthenticated, msg: "invalid"},
		{name: "not a join token", tok: "eyJhbGciOiJIUzI1NiJ9.e30.x", code: codes.Unauthenticated, msg: "not a join token"},
		{name: "token for other app", tok: s.token(t, s.identity(t, "default", "payments"), time.Hour, now), code: codes.PermissionDenied, msg: "payments"},
		{name: "token for other namespace", tok: s.token(t, s.identity(t, "prod", "orders"), time.Hour, now), code: codes.PermissionDenied, msg: "prod"},
	}
	before := s.srv.Authority().Issued()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c = base(c)
			if c.ns == "-" {
				c.ns = ""
			}
			if c.tok == "-" {
				c.tok = ""
			}
			resp, err := api.SignCertificate(context.Background(), &sentrypb.SignCertificateRequest{
				AppId: c.app, Namespace: c.ns, TrustDomain: c.td, CsrPem: c.csr, Token: c.tok,
			})
			if err == nil {
				t.Fatalf("signed a certificate: %q", resp.GetCertChainPem())
			}
			st := status.Convert(err)
			if st.Code() != c.code {
				t.Fatalf("code = %s (%s), want %s", st.Code(), st.Message(), c.code)
			}
			if !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("message %q does not contain %q", st.Message(), c.msg)
			}
		})
	}
	if got := s.srv.Authority().Issued(); got != before {
		t.Fatalf("sentry issued %d certificates for refused requests", got-before)
	}
	// The same request with good inputs succeeds: the table's failures are
	// caused by what each case changed.
	resp, err := api.SignCertificate(context.Background(), &sentrypb.SignCertificateRequest{
		AppId: "orders", Namespace: "default", TrustDomain: "cluster.local", CsrPem: goodCSR, Token: good,
	})
	if err != nil {
		t.Fatalf("good request: %v", err)
	}
	if s.srv.Authority().Issued() != before+1 {
		t.Fatal("good request was not counted")
	}
	chain, err := certs.ParseCertsPEM(resp.CertChainPem)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		t.Fatal("certificate is not for the CSR's key")
	}
}

// TestIssuedCertificate checks the certificate sentry builds and that it
// verifies against the bundle file with go-spiffe.
func TestIssuedCertificate(t *testing.T) {
	s := startSentry(t, "")
	id := s.identity(t, "default", "orders")
	key := p256(t)
	start := time.Now()
	resp, err := s.rawClient(t).SignCertificate(context.Background(), &sentrypb.SignCertificateRequest{
		AppId: id.AppID, Namespace: id.Namespace, TrustDomain: id.TrustDomain.String(),
		CsrPem: csrPEM(t, key, nil), Token: s.token(t, id, time.Hour, start),
	})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := certs.ParseCertsPEM(resp.CertChainPem)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + issuer", len(chain))
	}
	leaf := chain[0]
	switch {
	case leaf.IsCA:
		t.Error("leaf is a CA")
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/orders":
		t.Errorf("URIs = %v", leaf.URIs)
	case len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0:
		t.Error("leaf has non-URI SANs")
	case leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("key usage = %v", leaf.KeyUsage)
	case len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth:
		t.Errorf("EKU = %v", leaf.ExtKeyUsage)
	case leaf.SerialNumber.BitLen() < 64:
		t.Errorf("serial %v is too short to be random 128-bit", leaf.SerialNumber)
	case leaf.NotBefore.After(start.Add(-ca.Backdate+time.Second)) || leaf.NotBefore.Before(start.Add(-ca.Backdate-2*time.Second)):
		t.Errorf("NotBefore %s is not now-%s", leaf.NotBefore, ca.Backdate)
	case leaf.NotAfter.Sub(start) > time.Hour+2*time.Second || leaf.NotAfter.Sub(start) < time.Hour-2*time.Second:
		t.Errorf("NotAfter %s is not now+1h", leaf.NotAfter)
	case !resp.ExpiresAt.AsTime().Equal(leaf.NotAfter):
		t.Errorf("expires_at %s != NotAfter %s", resp.ExpiresAt.AsTime(), leaf.NotAfter)
	}
	if pk, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Error("leaf key is not P-256")
	}
	bundle := x509bundle.FromX509Authorities(s.td, s.bundleFile(t))
	got, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if got != id.ID() {
		t.Fatalf("verified ID %s, want %s", got, id)
	}
	respBundle, err := certs.ParseCertsPEM(resp.TrustBundlePem)
	if err != nil || !certs.SameRoots(respBundle, s.bundleFile(t)) {
		t.Fatalf("response bundle differs from bundle.pem (%v)", err)
	}

	// Negative proofs: each must fail verification against this bundle.
	foreign, err := ca.Generate(s.td, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreignLeaf := signWith(t, foreign, id.ID().URL().String(), &key.PublicKey)
	other := startSentry(t, "", func(c *sentry.Config) { c.CA.TrustDomain = spiffeid.RequireTrustDomainFromString("other.example") })
	otherID := other.identity(t, "default", "orders")
	otherResp, err := other.rawClient(t).SignCertificate(context.Background(), &sentrypb.SignCertificateRequest{
		AppId: "orders", Namespace: "default", TrustDomain: "other.example",
		CsrPem: csrPEM(t, key, nil), Token: other.token(t, otherID, time.Hour, time.Now()),
	})
	if err != nil {
		t.Fatal(err)
	}
	otherChain, _ := certs.ParseCertsPEM(otherResp.CertChainPem)
	// The same roots mapped onto the other trust domain must still not
	// accept a leaf chaining to another CA.
	both := x509bundle.NewSet(bundle, x509bundle.FromX509Authorities(otherID.TrustDomain, s.bundleFile(t)))
	for _, c := range []struct {
		name  string
		chain []*x509.Certificate
		src   x509bundle.Source
		opts  []x509svid.VerifyOption
	}{
		{"foreign CA", []*x509.Certificate{foreignLeaf, foreign.Issuer}, bundle, nil},
		{"expired", chain, bundle, []x509svid.VerifyOption{x509svid.WithTime(leaf.NotAfter.Add(time.Second))}},
		{"not yet valid", chain, bundle, []x509svid.VerifyOption{x509svid.WithTime(leaf.NotBefore.Add(-time.Second))}},
		{"other trust domain", otherChain, bundle, nil},
		{"other trust domain, bundle for it", otherChain, both, nil},
		{"missing issuer", chain[:1], bundle, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if id, _, err := x509svid.Verify(c.chain, c.src, c.opts...); err == nil {
				t.Fatalf("verified as %s", id)
			}
		})
	}
}

func signWith(tb testing.TB, m *ca.Material, uri string, pub crypto.PublicKey) *x509.Certificate {
	tb.Helper()
	u, _ := url.Parse(uri)
	serial, _ := ca.NewSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.Issuer, pub, m.IssuerKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
