package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// RequireClientAuth wraps next so that the peer's leaf certificate must
// carry the clientAuth extended key usage: what a server asks of the
// workloads that call it.
func RequireClientAuth(next tlsconfig.Authorizer) tlsconfig.Authorizer {
	return requireEKU(x509.ExtKeyUsageClientAuth, "clientAuth", next)
}

// RequireServerAuth wraps next so that the peer's leaf certificate must
// carry the serverAuth extended key usage: what a client asks of the
// workload it calls.
func RequireServerAuth(next tlsconfig.Authorizer) tlsconfig.Authorizer {
	return requireEKU(x509.ExtKeyUsageServerAuth, "serverAuth", next)
}

// requireEKU checks the leaf of the verified chain. go-spiffe's
// x509svid.Verify accepts any extended key usage, so a certificate that a
// CA shared with other systems issued for another purpose (a serverAuth-only
// web certificate with a SPIFFE URI SAN, say) would otherwise pass. The
// usage must be listed explicitly: neither a missing extension nor
// anyExtendedKeyUsage is taken for it.
func requireEKU(usage x509.ExtKeyUsage, name string, next tlsconfig.Authorizer) tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if len(chains) == 0 || len(chains[0]) == 0 {
			return errors.New("certs: no verified certificate chain")
		}
		if !slices.Contains(chains[0][0].ExtKeyUsage, usage) {
			return fmt.Errorf("certs: certificate of %s lacks the %s extended key usage", id, name)
		}
		return next(id, chains)
	}
}
