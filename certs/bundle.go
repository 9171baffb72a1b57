package certs

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ParseBundlePEM builds a trust bundle for td from PEM root certificates. A
// bundle may hold several roots (during a root rotation it holds old and new).
func ParseBundlePEM(td spiffeid.TrustDomain, data []byte) (*x509bundle.Bundle, error) {
	if td.IsZero() {
		return nil, errors.New("certs: trust bundle: trust domain is empty")
	}
	roots, err := ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("certs: trust bundle: %w", err)
	}
	for i, r := range roots {
		if !r.IsCA {
			return nil, fmt.Errorf("certs: trust bundle: certificate %d (%s) is not a CA", i, r.Subject)
		}
	}
	return x509bundle.FromX509Authorities(td, roots), nil
}

// BundlePEM encodes the roots of a bundle as PEM.
func BundlePEM(b *x509bundle.Bundle) []byte {
	return EncodeCertsPEM(b.X509Authorities()...)
}

// SameRoots reports whether two root sets hold the same certificates, in any
// order (a bundle is a set: a reordered bundle is not a change).
func SameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	// Fast path: same order, which is what an unchanged bundle looks like.
	same := true
	for i := range a {
		if !a[i].Equal(b[i]) {
			same = false
			break
		}
	}
	if same {
		return true
	}
	// Multiset comparison; bundles hold a handful of roots.
	used := make([]bool, len(b))
next:
	for _, ca := range a {
		for j, cb := range b {
			if !used[j] && ca.Equal(cb) {
				used[j] = true
				continue next
			}
		}
		return false
	}
	return true
}
