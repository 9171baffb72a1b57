package certs

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseBundlePEM(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a, b, c := newTestCA(t, "example.org"), newTestCA(t, "example.org"), newTestCA(t, "example.org")
	leafIss, err := a.sign(leafTemplate(spiffeid.RequireFromString("spiffe://example.org/ns/default/orders"), time.Hour), mustKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	leaf := leafIss.Chain[0]
	tests := []struct {
		name    string
		td      spiffeid.TrustDomain
		data    []byte
		want    []*x509.Certificate
		wantErr string
	}{
		{"one root", td, EncodeCertsPEM(a.root), []*x509.Certificate{a.root}, ""},
		{"several roots", td, EncodeCertsPEM(a.root, b.root, c.root), []*x509.Certificate{a.root, b.root, c.root}, ""},
		{"intermediate as authority", td, EncodeCertsPEM(a.inter), []*x509.Certificate{a.inter}, ""},
		{"non-CA cert", td, EncodeCertsPEM(a.root, leaf), nil, "certificate 1 () is not a CA"},
		{"only a leaf", td, EncodeCertsPEM(leaf), nil, "is not a CA"},
		{"empty", td, nil, nil, "trust bundle: certs: no certificate found"},
		{"garbage", td, []byte("junk"), nil, "trust bundle"},
		{"zero trust domain", spiffeid.TrustDomain{}, EncodeCertsPEM(a.root), nil, "trust domain is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBundlePEM(tt.td, tt.data)
			checkErr(t, err, tt.wantErr)
			if err != nil {
				return
			}
			if got.TrustDomain() != tt.td {
				t.Fatalf("bundle trust domain %q, want %q", got.TrustDomain(), tt.td)
			}
			if !SameRoots(got.X509Authorities(), tt.want) {
				t.Fatal("bundle does not hold the expected roots")
			}
			again, err := ParseBundlePEM(tt.td, BundlePEM(got))
			if err != nil || !again.Equal(got) {
				t.Fatalf("BundlePEM does not round-trip: %v", err)
			}
		})
	}
}

func TestSameRoots(t *testing.T) {
	a, b, c := newTestCA(t, "example.org").root, newTestCA(t, "example.org").root, newTestCA(t, "example.org").root
	type set = []*x509.Certificate
	tests := []struct {
		name string
		x, y set
		want bool
	}{
		{"both empty", nil, set{}, true},
		{"same order", set{a, b}, set{a, b}, true},
		{"reordered", set{a, b, c}, set{c, a, b}, true},
		{"different length", set{a}, set{a, b}, false},
		{"different cert", set{a, b}, set{a, c}, false},
		{"duplicate vs distinct", set{a, a}, set{a, b}, false},
		{"distinct vs duplicate", set{a, b}, set{b, b}, false},
		{"same duplicates", set{a, b, a}, set{a, a, b}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SameRoots(tt.x, tt.y); got != tt.want {
				t.Fatalf("SameRoots = %v, want %v", got, tt.want)
			}
			if got := SameRoots(tt.y, tt.x); got != tt.want {
				t.Fatalf("SameRoots (swapped) = %v, want %v", got, tt.want)
			}
		})
	}
}
