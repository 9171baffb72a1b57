package certs

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

func TestRequireEKU(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/a")
	chain := func(eku ...x509.ExtKeyUsage) [][]*x509.Certificate {
		return [][]*x509.Certificate{{{ExtKeyUsage: eku}}}
	}
	any := tlsconfig.AuthorizeAny()
	for _, tc := range []struct {
		name   string
		auth   tlsconfig.Authorizer
		chains [][]*x509.Certificate
		want   string // "" = allowed
	}{
		{"client ok", RequireClientAuth(any), chain(x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth), ""},
		{"client missing", RequireClientAuth(any), chain(x509.ExtKeyUsageServerAuth), "lacks the clientAuth"},
		{"client none", RequireClientAuth(any), chain(), "lacks the clientAuth"},
		{"client any", RequireClientAuth(any), chain(x509.ExtKeyUsageAny), "lacks the clientAuth"},
		{"server ok", RequireServerAuth(any), chain(x509.ExtKeyUsageServerAuth), ""},
		{"server missing", RequireServerAuth(any), chain(x509.ExtKeyUsageClientAuth), "lacks the serverAuth"},
		{"no chain", RequireServerAuth(any), nil, "no verified"},
		{"next still asked", RequireClientAuth(tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://cluster.local/ns/default/b"))),
			chain(x509.ExtKeyUsageClientAuth), "unexpected ID"},
	} {
		err := tc.auth(id, tc.chains)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want allowed", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
