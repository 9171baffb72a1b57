package svidfiles_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/certs/svidfiles"
)

// testCA is a one-level CA that signs a CSR for one identity with a fixed
// lifetime; it is the certs.Fetcher of a real certs.Source.
type testCA struct {
	t      testing.TB
	id     certs.Identity
	key    *ecdsa.PrivateKey
	root   *x509.Certificate
	ttl    time.Duration
	serial atomic.Int64
}

func newCA(t testing.TB, id certs.Identity, ttl time.Duration) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, id: id, key: key, root: root, ttl: ttl}
	ca.serial.Store(1)
	return ca
}

func (ca *testCA) Fetch(_ context.Context, csrPEM []byte) (*certs.Issued, error) {
	csr, err := certs.ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(ca.id.String())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Second), NotAfter: time.Now().Add(ca.ttl),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, csr.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &certs.Issued{Chain: []*x509.Certificate{leaf}, Roots: []*x509.Certificate{ca.root}}, nil
}

func newSource(t *testing.T, ttl time.Duration) (*certs.Source, *testCA) {
	t.Helper()
	id, err := certs.NewIdentity("cluster.local", "default", "client")
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t, id, ttl)
	src, err := certs.NewSource(context.Background(), ca, certs.SourceOptions{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, ca
}

// readLeaf returns the leaf certificate in the cert file.
func readLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := certs.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return cs[0]
}

// TestRunWritesAndRotates: the files appear at once with the right modes,
// form a key pair that verifies against the bundle, grpc-go's file_watcher
// reads them, and they follow every rotation.
func TestRunWritesAndRotates(t *testing.T) {
	src, ca := newSource(t, 3*time.Second) // renewed at about half-life: 1.5s
	dir := filepath.Join(t.TempDir(), "svid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svidfiles.Run(ctx, dir, src, nil) }()

	p := svidfiles.PathsIn(dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(p.Cert); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no certificate file after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for path, want := range map[string]os.FileMode{p.Key: 0o600, p.Cert: 0o644, p.Bundle: 0o644, p.BundleMap: 0o644, dir: 0o700 | os.ModeDir} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	if _, err := tls.LoadX509KeyPair(p.Cert, p.Key); err != nil {
		t.Fatalf("cert and key do not form a pair: %v", err)
	}
	bundlePEM, err := os.ReadFile(p.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := certs.ParseBundlePEM(spiffeid.RequireTrustDomainFromString("cluster.local"), bundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	first := readLeaf(t, p.Cert)
	if id, _, err := x509svid.Verify([]*x509.Certificate{first}, bundle); err != nil || id.String() != "spiffe://cluster.local/ns/default/client" {
		t.Fatalf("written SVID: %v %v", id, err)
	}
	var bm struct {
		TrustDomains map[string]json.RawMessage `json:"trust_domains"`
	}
	raw, err := os.ReadFile(p.BundleMap)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &bm); err != nil {
		t.Fatal(err)
	}
	sb, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString("cluster.local"), bm.TrustDomains["cluster.local"])
	if err != nil {
		t.Fatalf("bundle map: %v", err)
	}
	if a := sb.X509Authorities(); len(a) != 1 || !a[0].Equal(ca.root) {
		t.Errorf("bundle map roots %v", a)
	}

	// grpc-go's own file_watcher provider reads the files.
	prov, err := pemfile.NewProvider(pemfile.Options{CertFile: p.Cert, KeyFile: p.Key, RootFile: p.Bundle, RefreshDuration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	kctx, kcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer kcancel()
	km, err := prov.KeyMaterial(kctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(km.Certs) != 1 || km.Roots == nil {
		t.Fatalf("file_watcher key material: %d certs, roots %v", len(km.Certs), km.Roots != nil)
	}

	// A rotation rewrites the files, and the provider picks it up.
	for src.Rotations() == 0 || readLeaf(t, p.Cert).SerialNumber.Cmp(first.SerialNumber) == 0 {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatalf("files not rewritten after a rotation (rotations %d)", src.Rotations())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := tls.LoadX509KeyPair(p.Cert, p.Key); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	for {
		km, err := prov.KeyMaterial(kctx)
		if err != nil {
			t.Fatal(err)
		}
		if km.Certs[0].Leaf != nil && km.Certs[0].Leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			break
		}
		if kctx.Err() != nil {
			t.Fatal("file_watcher did not pick up the rotated SVID")
		}
		time.Sleep(50 * time.Millisecond)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

// TestRunSourceClosed: a Source that stops serving ends Run with an error.
func TestRunSourceClosed(t *testing.T) {
	src, _ := newSource(t, time.Hour)
	done := make(chan error, 1)
	go func() { done <- svidfiles.Run(context.Background(), t.TempDir(), src, nil) }()
	time.Sleep(100 * time.Millisecond)
	src.Close()
	select {
	case err := <-done:
		if err == nil || !strings.HasPrefix(err.Error(), "svidfiles: ") || !strings.Contains(err.Error(), "closed") {
			t.Fatalf("Run: %v, want a svidfiles error saying the source is closed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the source closed")
	}
}

func TestWriteBadInput(t *testing.T) {
	src, _ := newSource(t, time.Hour)
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := src.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSource(t, time.Hour) // another CA
	otherSVID, _ := other.GetX509SVID()
	foreignTD := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("example.org"), bundle.X509Authorities())

	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		dir    string
		svid   *x509svid.SVID
		bundle *x509bundle.Bundle
		want   string
	}{
		{"no SVID", t.TempDir(), nil, bundle, "no X509-SVID"},
		{"empty SVID", t.TempDir(), &x509svid.SVID{}, bundle, "no X509-SVID"},
		{"no bundle", t.TempDir(), svid, nil, "empty trust bundle"},
		{"empty bundle", t.TempDir(), svid, x509bundle.New(svid.ID.TrustDomain()), "empty trust bundle"},
		{"foreign trust domain", t.TempDir(), svid, foreignTD, "trust domain"},
		{"SVID of another CA", t.TempDir(), otherSVID, bundle, "does not verify"},
		{"dir is a file", notADir, svid, bundle, "svidfiles: "},
	} {
		err := svidfiles.Write(c.dir, c.svid, c.bundle)
		if err == nil || !strings.HasPrefix(err.Error(), "svidfiles: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a svidfiles error with %q", c.name, err, c.want)
			continue
		}
		if c.dir != notADir {
			if ents, _ := os.ReadDir(c.dir); len(ents) != 0 {
				t.Errorf("%s: files left behind: %v", c.name, ents)
			}
		}
	}
	if err := svidfiles.Write(t.TempDir(), svid, bundle); err != nil {
		t.Fatalf("good input: %v", err)
	}
}
