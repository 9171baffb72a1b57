package xds

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// peerID is the SPIFFE ID of the verified client certificate of the
// stream's connection.
func peerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, errNoIdentity
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	// go-spiffe's tlsconfig verifies the chain against the bundle and the
	// authorizer itself (VerifyPeerCertificate), so a handshake that
	// completed carries a verified mesh SVID first.
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, errNoIdentity
	}
	return x509svid.IDFromCert(ti.State.PeerCertificates[0])
}
