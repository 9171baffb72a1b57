package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/meshd/meshd/certs"
)

// Backdate is how far before "now" every certificate sentry makes (roots,
// issuers, workload and serving certificates) starts to be valid, so that a
// host whose clock is up to 5 minutes behind sentry's accepts a certificate
// the moment it is issued (the Kubernetes CSR signer backdates as far). It
// moves only NotBefore: NotAfter, and so the lifetime after issuance, is
// unchanged, and renewal at a fraction of the lifetime still leaves more
// than that fraction of the TTL (certs.Source's renewDelay).
const Backdate = 5 * time.Minute

// ErrBadCSR marks every reason a certificate request is refused.
var ErrBadCSR = errors.New("ca: bad certificate request")

// ValidateCSR parses a PEM certificate request, verifies its self-signature
// and returns its public key. The request must ask for nothing: no subject,
// no SANs, no extensions, no attributes. Only its ECDSA P-256 public key is
// ever used; sentry builds every other field from the validated identity.
func ValidateCSR(csrPEM []byte) (*ecdsa.PublicKey, error) {
	csr, err := certs.ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	switch {
	case len(csr.DNSNames) > 0, len(csr.IPAddresses) > 0, len(csr.EmailAddresses) > 0, len(csr.URIs) > 0:
		return nil, fmt.Errorf("%w: it requests subject alternative names", ErrBadCSR)
	case len(csr.Extensions) > 0:
		for _, e := range csr.Extensions {
			if e.Id.Equal(oidBasicConstraints) {
				return nil, fmt.Errorf("%w: it requests basic constraints (CA)", ErrBadCSR)
			}
		}
		return nil, fmt.Errorf("%w: it requests extensions (%s)", ErrBadCSR, csr.Extensions[0].Id)
	case len(csr.Attributes) > 0: //nolint:staticcheck // rejecting any attribute is the point
		return nil, fmt.Errorf("%w: it carries attributes", ErrBadCSR)
	case len(csr.Subject.Names) > 0 || csr.Subject.CommonName != "":
		return nil, fmt.Errorf("%w: it requests a subject (%s)", ErrBadCSR, csr.Subject)
	}
	pub, ok := isP256(csr.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is %s, want ECDSA P-256", ErrBadCSR, keyName(csr.PublicKey))
	}
	return pub, nil
}

var oidBasicConstraints = []int{2, 5, 29, 19}

func keyName(pub any) string {
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}

// signer is one immutable issuer: swapped atomically on rotation.
type signer struct {
	gen      string
	issuer   *x509.Certificate
	key      crypto.Signer
	chainPEM []byte // issuer and intermediates, PEM
	chain    []*x509.Certificate
}

func newSigner(gen string, m *Material) *signer {
	chain := append([]*x509.Certificate{m.Issuer}, m.Intermediates...)
	return &signer{gen: gen, issuer: m.Issuer, key: m.IssuerKey, chain: chain, chainPEM: certs.EncodeCertsPEM(chain...)}
}

// Signed is a freshly issued workload certificate.
type Signed struct {
	// DER of the workload certificate.
	DER []byte
	// ChainPEM holds the workload certificate then the issuer chain.
	ChainPEM []byte
	// Chain is the issuer chain (without the leaf and the root).
	Chain    []*x509.Certificate
	NotAfter time.Time
}

func (s *signer) sign(id certs.Identity, pub *ecdsa.PublicKey, now time.Time, ttl time.Duration, names ...string) (*Signed, error) {
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(s.issuer.NotAfter) {
		notAfter = s.issuer.NotAfter
	}
	notBefore := now.Add(-Backdate)
	if notBefore.Before(s.issuer.NotBefore) {
		notBefore = s.issuer.NotBefore
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: issuer %q expired at %s", s.issuer.Subject, s.issuer.NotAfter)
	}
	u := id.ID().URL()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore.UTC().Truncate(time.Second),
		NotAfter:              notAfter.UTC().Truncate(time.Second),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{u},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.issuer, pub, s.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", id, err)
	}
	leafPEM := certs.EncodeCertsPEM(&x509.Certificate{Raw: der})
	out := make([]byte, 0, len(leafPEM)+len(s.chainPEM))
	out = append(append(out, leafPEM...), s.chainPEM...)
	return &Signed{DER: der, ChainPEM: out, Chain: s.chain, NotAfter: tmpl.NotAfter}, nil
}
