package sentryclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
)

// TestAnchorsFileTrust: with WithAnchorsFile, the client's connections to
// sentry trust its bundle plus the file's roots as the file is now (a new
// root appears at once); a missing, unparsable or non-CA file adds
// nothing; without the option only the bundle is trusted.
func TestAnchorsFileTrust(t *testing.T) {
	id, err := certs.NewIdentity("cluster.local", "default", "client")
	if err != nil {
		t.Fatal(err)
	}
	gen := func() *ca.Material {
		m, err := ca.Generate(id.TrustDomain, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := gen(), gen()
	file := filepath.Join(t.TempDir(), "bundle.pem")
	write := func(data []byte) {
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(certs.EncodeCertsPEM(a.Root))
	trusted := func(c *Client) []*x509.Certificate {
		bu, err := c.trust.GetX509BundleForTrustDomain(id.TrustDomain)
		if err != nil {
			t.Fatal(err)
		}
		return bu.X509Authorities()
	}
	has := func(roots []*x509.Certificate, r *x509.Certificate) bool { return slices.ContainsFunc(roots, r.Equal) }

	c, err := New(context.Background(), "127.0.0.1:1", []*x509.Certificate{a.Root}, id, "", WithAnchorsFile(file))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := trusted(c); len(got) != 1 || !has(got, a.Root) {
		t.Fatalf("file = the anchors: trusted %d roots, want exactly the one", len(got))
	}
	write(certs.EncodeCertsPEM(b.Root)) // sentry rotated: its bundle.pem has the new root
	if got := trusted(c); len(got) != 2 || !has(got, a.Root) || !has(got, b.Root) {
		t.Fatalf("after the file gained a root: trusted %d roots, want the bundle's and the file's", len(got))
	}
	if _, err := c.GetX509BundleForTrustDomain(id.TrustDomain); err != nil || len(c.bundle.Load().roots) != 1 {
		t.Fatal("the file's roots leaked into the client's bundle (what the workload trusts)")
	}
	for name, data := range map[string][]byte{
		"garbage":  []byte("not PEM"),
		"not a CA": certs.EncodeCertsPEM(leaf(t), b.Root),
		"empty":    nil,
	} {
		write(data)
		if got := trusted(c); len(got) != 1 || !has(got, a.Root) {
			t.Errorf("%s file: trusted %d roots, want the bundle's alone", name, len(got))
		}
	}
	os.Remove(file)
	if got := trusted(c); len(got) != 1 {
		t.Errorf("missing file: trusted %d roots, want the bundle's alone", len(got))
	}

	plain, err := New(context.Background(), "127.0.0.1:1", []*x509.Certificate{a.Root}, id, "")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	write(certs.EncodeCertsPEM(b.Root))
	if got := trusted(plain); len(got) != 1 {
		t.Errorf("without WithAnchorsFile: trusted %d roots, want the bundle's alone", len(got))
	}
}

// leaf is a self-signed certificate that is not a CA.
func leaf(t *testing.T) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
