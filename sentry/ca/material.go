package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// File names inside a generation directory.
const (
	rootCertFile   = "root.pem"
	rootKeyFile    = "root.key"
	issuerCertFile = "issuer.pem"
	issuerKeyFile  = "issuer.key"
)

// Material is one generation of CA material: a root and the issuer that
// signs workload certificates.
type Material struct {
	Root *x509.Certificate
	// RootKey is nil when the user brought only the root certificate.
	RootKey crypto.Signer
	Issuer  *x509.Certificate
	// Intermediates between the issuer and the root (usually none).
	Intermediates []*x509.Certificate
	IssuerKey     crypto.Signer
}

// Generate creates a self-signed ECDSA P-256 root and an issuer signed by it,
// both valid from now-1m to now+ttl, for trust domain td.
func Generate(td spiffeid.TrustDomain, ttl time.Duration, now time.Time) (*Material, error) {
	if ttl <= 0 {
		return nil, errors.New("ca: generate: CA TTL must be positive")
	}
	tdID := td.ID().URL()
	rootKey, err := certs.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("ca: generate root: %w", err)
	}
	notBefore := now.Add(-Backdate).UTC()
	notAfter := now.Add(ttl).UTC()
	rootSerial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: rootSerial,
		Subject: pkix.Name{
			Organization: []string{"meshd"},
			CommonName:   fmt.Sprintf("meshd root %s %x", td, rootSerial.Bytes()[:4]),
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{tdID},
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, fmt.Errorf("ca: parse root: %w", err)
	}
	issuerKey, err := certs.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("ca: generate issuer: %w", err)
	}
	issuerSerial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	issuerTmpl := &x509.Certificate{
		SerialNumber: issuerSerial,
		Subject: pkix.Name{
			Organization: []string{"meshd"},
			CommonName:   fmt.Sprintf("meshd issuer %s %x", td, issuerSerial.Bytes()[:4]),
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{tdID},
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, issuerTmpl, root, issuerKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("ca: create issuer: %w", err)
	}
	issuer, err := x509.ParseCertificate(issuerDER)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issuer: %w", err)
	}
	return &Material{Root: root, RootKey: rootKey, Issuer: issuer, IssuerKey: issuerKey}, nil
}

// NewSerial returns a random positive 128-bit serial number.
func NewSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("ca: serial: %w", err)
		}
		b[0] &= 0x7f // keep it positive in DER without a leading zero byte
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n, nil
		}
	}
}

// Validate checks that the material is a usable CA: a self-signed CA root,
// a CA issuer that chains to it, and an issuer key matching the issuer
// certificate. now is used to reject expired material.
func (m *Material) Validate(now time.Time) error {
	if m.Root == nil || m.Issuer == nil || m.IssuerKey == nil {
		return errors.New("ca: material: root, issuer and issuer key are required")
	}
	if !m.Root.IsCA || !m.Root.BasicConstraintsValid {
		return fmt.Errorf("ca: material: root %q is not a CA", m.Root.Subject)
	}
	if err := m.Root.CheckSignatureFrom(m.Root); err != nil {
		return fmt.Errorf("ca: material: root %q is not self-signed: %w", m.Root.Subject, err)
	}
	if !m.Issuer.IsCA || !m.Issuer.BasicConstraintsValid {
		return fmt.Errorf("ca: material: issuer %q is not a CA", m.Issuer.Subject)
	}
	if m.Issuer.KeyUsage != 0 && m.Issuer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: material: issuer %q may not sign certificates (key usage)", m.Issuer.Subject)
	}
	if !publicKeysEqual(m.Issuer.PublicKey, m.IssuerKey.Public()) {
		return errors.New("ca: material: issuer key does not match the issuer certificate")
	}
	if m.RootKey != nil && !publicKeysEqual(m.Root.PublicKey, m.RootKey.Public()) {
		return errors.New("ca: material: root key does not match the root certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(m.Root)
	inter := x509.NewCertPool()
	for _, c := range m.Intermediates {
		inter.AddCert(c)
	}
	if _, err := m.Issuer.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("ca: material: issuer does not chain to the root: %w", err)
	}
	return nil
}

// Write stores the material in dir (created with mode 0700; keys 0600).
func (m *Material) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := certs.WriteFileAtomic(filepath.Join(dir, rootCertFile), certs.EncodeCertsPEM(m.Root), 0o644); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	chain := append([]*x509.Certificate{m.Issuer}, m.Intermediates...)
	if err := certs.WriteFileAtomic(filepath.Join(dir, issuerCertFile), certs.EncodeCertsPEM(chain...), 0o644); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if err := certs.WriteKeyFile(filepath.Join(dir, issuerKeyFile), m.IssuerKey); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if m.RootKey != nil {
		if err := certs.WriteKeyFile(filepath.Join(dir, rootKeyFile), m.RootKey); err != nil {
			return fmt.Errorf("ca: %w", err)
		}
	}
	return nil
}

// LoadDir reads a generation directory written by Write.
func LoadDir(dir string) (*Material, error) {
	rootKey := filepath.Join(dir, rootKeyFile)
	if _, err := os.Stat(rootKey); err != nil {
		rootKey = ""
	}
	return LoadFiles(filepath.Join(dir, rootCertFile), filepath.Join(dir, issuerCertFile), filepath.Join(dir, issuerKeyFile), rootKey)
}

// LoadFiles reads CA material from PEM files a user brings: the root
// certificate, the issuer certificate (optionally followed by intermediates up
// to the root), the issuer key, and optionally the root key ("" for none).
func LoadFiles(rootCert, issuerCert, issuerKey, rootKey string) (*Material, error) {
	rb, err := os.ReadFile(rootCert)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	roots, err := certs.ParseCertsPEM(rb)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate %s: %w", rootCert, err)
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("ca: root certificate %s: want exactly one certificate, got %d", rootCert, len(roots))
	}
	ib, err := os.ReadFile(issuerCert)
	if err != nil {
		return nil, fmt.Errorf("ca: issuer certificate: %w", err)
	}
	chain, err := certs.ParseCertsPEM(ib)
	if err != nil {
		return nil, fmt.Errorf("ca: issuer certificate %s: %w", issuerCert, err)
	}
	// A chain file may end with the root itself; drop it.
	if last := chain[len(chain)-1]; len(chain) > 1 && last.Equal(roots[0]) {
		chain = chain[:len(chain)-1]
	}
	m := &Material{Root: roots[0], Issuer: chain[0], Intermediates: chain[1:]}
	if m.IssuerKey, err = loadKey(issuerKey); err != nil {
		return nil, err
	}
	if rootKey != "" {
		if m.RootKey, err = loadKey(rootKey); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func loadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: key: %w", err)
	}
	k, err := certs.ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("ca: key %s: %w", path, err)
	}
	return k, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, err1 := x509.MarshalPKIXPublicKey(a)
	eb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ea, eb)
}

// isP256 reports whether pub is an ECDSA P-256 public key.
func isP256(pub any) (*ecdsa.PublicKey, bool) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, false
	}
	return k, true
}
