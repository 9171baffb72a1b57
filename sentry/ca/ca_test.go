package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Now()} }
func open(t *testing.T, o Options) *Authority {
	t.Helper()
	a, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func bundleFile(t *testing.T, dir string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	r, err := certs.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOpenCreatesWithPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	a := open(t, Options{DataDir: dir, TrustDomain: td})
	checks := map[string]os.FileMode{
		dir: 0o700, filepath.Join(dir, genDir, "0001"): 0o700,
		filepath.Join(dir, genDir, "0001", issuerKeyFile): 0o600,
		filepath.Join(dir, genDir, "0001", rootKeyFile):   0o600,
		filepath.Join(dir, stateFile):                     0o600,
	}
	for p, want := range checks {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	roots := bundleFile(t, dir)
	if len(roots) != 1 || !roots[0].Equal(a.ActiveRoot()) {
		t.Fatal("bundle.pem does not hold the root")
	}
	a2 := open(t, Options{DataDir: dir, TrustDomain: td})
	if !a2.ActiveRoot().Equal(a.ActiveRoot()) || a2.Bundle().Version != a.Bundle().Version {
		t.Fatal("reopen changed the root or bundle version")
	}
	if got, err := TrustDomainOf(dir); err != nil || got != td {
		t.Fatalf("TrustDomainOf = %v, %v", got, err)
	}
}

func TestOptionsRejected(t *testing.T) {
	dir := t.TempDir()
	for name, o := range map[string]Options{
		"no dir":              {TrustDomain: td},
		"no td":               {DataDir: dir},
		"ttl too short":       {DataDir: dir, TrustDomain: td, WorkloadTTL: time.Second},
		"ttl beyond CA":       {DataDir: dir, TrustDomain: td, WorkloadTTL: 2 * time.Hour, CATTL: time.Hour},
		"partial import":      {DataDir: dir, TrustDomain: td, RootCertFile: "x"},
		"auto window too big": {DataDir: dir, TrustDomain: td, CATTL: 48 * time.Hour, AutoRotateBefore: 24 * time.Hour},
	} {
		if _, err := Open(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestImportUserMaterial(t *testing.T) {
	src := t.TempDir()
	m, err := Generate(td, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m.RootKey = nil
	if err := m.Write(src); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "d")
	o := Options{DataDir: dir, TrustDomain: td, RootCertFile: filepath.Join(src, rootCertFile),
		IssuerCertFile: filepath.Join(src, issuerCertFile), IssuerKeyFile: filepath.Join(src, issuerKeyFile)}
	a := open(t, o)
	if !a.ActiveRoot().Equal(m.Root) {
		t.Fatal("imported root is not active")
	}
	open(t, o) // same files again: fine

	other, _ := Generate(td, 24*time.Hour, time.Now())
	odir := t.TempDir()
	_ = other.Write(odir)
	o.RootCertFile, o.IssuerCertFile, o.IssuerKeyFile = filepath.Join(odir, rootCertFile), filepath.Join(odir, issuerCertFile), filepath.Join(odir, issuerKeyFile)
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "rotate-root") {
		t.Fatalf("a different root on an initialized data dir: %v", err)
	}
	// Mismatched issuer key.
	o.DataDir = filepath.Join(t.TempDir(), "d2")
	o.IssuerKeyFile = filepath.Join(src, issuerKeyFile)
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched issuer key: %v", err)
	}
	// Issuer not signed by the root.
	o.RootCertFile = filepath.Join(src, rootCertFile)
	o.IssuerKeyFile = filepath.Join(odir, issuerKeyFile)
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Fatalf("issuer of another root: %v", err)
	}
}

// TestRotationSteps drives the state machine with a fake clock.
func TestRotationSteps(t *testing.T) {
	clk := newClock()
	dir := filepath.Join(t.TempDir(), "d")
	o := Options{DataDir: dir, TrustDomain: td, WorkloadTTL: time.Minute, PropagationDelay: 10 * time.Second,
		RetireMargin: 5 * time.Second, Now: clk.Now}
	a := open(t, o)
	old := a.ActiveRoot()
	v1 := a.Bundle()
	m, _ := Generate(td, 24*time.Hour, clk.Now())
	if err := Stage(dir, m, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := Stage(dir, m, clk.Now()); err == nil {
		t.Fatal("second staging accepted while one is pending")
	}
	if err := a.Tick(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v1.Changed():
	default:
		t.Fatal("watchers not notified of the new bundle")
	}
	if len(a.Bundle().Roots) != 2 || len(bundleFile(t, dir)) != 2 {
		t.Fatal("new root not published")
	}
	if !a.ActiveRoot().Equal(old) {
		t.Fatal("switched before the propagation delay")
	}
	if _, err := os.Stat(filepath.Join(dir, stagedDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("staged dir not consumed")
	}
	clk.Add(9 * time.Second)
	_ = a.Tick()
	if !a.ActiveRoot().Equal(old) {
		t.Fatal("switched early")
	}
	clk.Add(2 * time.Second)
	_ = a.Tick()
	if !a.ActiveRoot().Equal(m.Root) {
		t.Fatal("did not switch after the delay")
	}
	svid, _ := a.GetX509SVID()
	if !svid.Certificates[1].Equal(m.Issuer) {
		t.Fatal("serving cert not re-issued by the new issuer")
	}
	key, _ := certs.GenerateKey()
	id, _ := certs.NewIdentity("cluster.local", "default", "x")
	s, err := a.Sign(id, &key.PublicKey)
	if err != nil || !s.Chain[0].Equal(m.Issuer) {
		t.Fatalf("not signing with the new issuer: %v", err)
	}
	clk.Add(time.Minute + 4*time.Second)
	_ = a.Tick()
	if len(a.Bundle().Roots) != 2 {
		t.Fatal("old root retired before workload TTL + margin")
	}
	// Reopen mid-way: state persists.
	a2 := open(t, o)
	if !a2.ActiveRoot().Equal(m.Root) || len(a2.Bundle().Roots) != 2 {
		t.Fatal("restart lost rotation state")
	}
	clk.Add(2 * time.Second)
	_ = a2.Tick()
	if r := bundleFile(t, dir); len(r) != 1 || !r[0].Equal(m.Root) {
		t.Fatal("old root not retired")
	}
	if _, err := os.Stat(filepath.Join(dir, genDir, "0001")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("retired generation's keys not deleted")
	}
	if a2.Bundle().Version != v1.Version+2 {
		t.Fatalf("bundle version %d, want %d", a2.Bundle().Version, v1.Version+2)
	}
}

func TestAutoRotate(t *testing.T) {
	clk := newClock()
	dir := filepath.Join(t.TempDir(), "d")
	a := open(t, Options{DataDir: dir, TrustDomain: td, CATTL: 10 * time.Hour, AutoRotateBefore: 2 * time.Hour,
		PropagationDelay: time.Second, Now: clk.Now})
	old := a.ActiveRoot()
	_ = a.Tick()
	if len(a.Bundle().Roots) != 1 {
		t.Fatal("rotated too early")
	}
	clk.Add(8*time.Hour + time.Minute)
	_ = a.Tick()
	if len(a.Bundle().Roots) != 2 {
		t.Fatal("no automatic rotation inside the window")
	}
	clk.Add(2 * time.Second)
	_ = a.Tick()
	if a.ActiveRoot().Equal(old) {
		t.Fatal("automatic rotation did not switch")
	}
}

func TestStageRejects(t *testing.T) {
	m, _ := Generate(td, time.Hour, time.Now())
	if err := Stage(t.TempDir(), m, time.Now()); err == nil {
		t.Fatal("staged into a dir sentry never initialized")
	}
	dir := filepath.Join(t.TempDir(), "d")
	open(t, Options{DataDir: dir, TrustDomain: td})
	bad := *m
	other, _ := Generate(td, time.Hour, time.Now())
	bad.IssuerKey = other.IssuerKey
	if err := Stage(dir, &bad, time.Now()); err == nil {
		t.Fatal("staged inconsistent material")
	}
	if err := Stage(dir, m, time.Now().Add(2*time.Hour)); err == nil {
		t.Fatal("staged expired material")
	}
}

func TestSignCapsAtIssuerExpiry(t *testing.T) {
	now := time.Now()
	m, _ := Generate(td, 2*time.Hour, now)
	s := newSigner("x", m)
	key, _ := certs.GenerateKey()
	id, _ := certs.NewIdentity("cluster.local", "default", "x")
	got, err := s.sign(id, &key.PublicKey, now.Add(90*time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got.NotAfter.After(m.Issuer.NotAfter) {
		t.Fatalf("NotAfter %s beyond issuer %s", got.NotAfter, m.Issuer.NotAfter)
	}
	if _, err := s.sign(id, &key.PublicKey, now.Add(3*time.Hour), time.Hour); err == nil {
		t.Fatal("signed with an expired issuer")
	}
}

// FuzzValidateCSR: CSR validation never panics, and anything it accepts is
// a P-256 request for nothing, signed by its key.
func FuzzValidateCSR(f *testing.F) {
	key, _ := certs.GenerateKey()
	good, _ := certs.NewCSR(key)
	f.Add(good)
	f.Add([]byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n"))
	withDNS, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"a"}}, key)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: withDNS}))
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := ValidateCSR(data)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v does not wrap ErrBadCSR", err)
			}
			return
		}
		csr, err := certs.ParseCSRPEM(data)
		if err != nil {
			t.Fatalf("accepted a CSR certs cannot parse: %v", err)
		}
		if len(csr.Extensions) != 0 || len(csr.URIs)+len(csr.DNSNames) != 0 {
			t.Fatal("accepted a CSR asking for something")
		}
		if _, ok := isP256(pub); !ok {
			t.Fatal("accepted a non-P-256 key")
		}
	})
}

// TestServerNames: an identity listed in Options.ServerNames gets its DNS
// names and IPs besides the SPIFFE ID; others get the URI SAN alone.
func TestServerNames(t *testing.T) {
	a := open(t, Options{DataDir: filepath.Join(t.TempDir(), "d"), TrustDomain: td,
		ServerNames: map[string][]string{"spiffe://cluster.local/ns/meshd-system/controlplane": {"meshd-controlplane.meshd-system.svc", "127.0.0.1"}}})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		app  string
		dns  int
		ips  int
		host string
	}{{"controlplane", 1, 1, "meshd-controlplane.meshd-system.svc"}, {"web", 0, 0, ""}} {
		id, _ := certs.NewIdentity("cluster.local", "meshd-system", c.app)
		s, err := a.Sign(id, &key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(s.DER)
		if len(cert.DNSNames) != c.dns || len(cert.IPAddresses) != c.ips || len(cert.URIs) != 1 {
			t.Errorf("%s: DNS %v IPs %v URIs %v", c.app, cert.DNSNames, cert.IPAddresses, cert.URIs)
		}
		if c.host != "" {
			if err := cert.VerifyHostname(c.host); err != nil {
				t.Error(err)
			}
			if err := cert.VerifyHostname("127.0.0.1"); err != nil {
				t.Error(err)
			}
		}
	}
}
