package proxy

import (
	"net/http"

	"github.com/meshd/meshd/proxy/internal/h2"
)

// newH2Transport is proxy/internal/h2's client in the place of nt, net/http's
// HTTP/2 transport to one target: the same dial (TCP, the mTLS handshake
// with the callee's SPIFFE ID checked, or h2c with --insecure), the same
// keepalive (--peer-keepalive, --peer-keepalive-timeout) and frame size.
func (ps *peers) newH2Transport(nt *http.Transport) *h2.Transport {
	t := &h2.Transport{
		DialContext:      nt.DialTLSContext,
		MaxReadFrameSize: h2FrameSize,
		IdleTimeout:      nt.IdleConnTimeout,
	}
	if ps.p.cfg.Insecure {
		t.DialContext = nt.DialContext
	}
	if ka := ps.p.cfg.PeerKeepalive; ka > 0 {
		t.Keepalive = ka
		t.KeepaliveTimeout = ps.p.cfg.PeerKeepaliveTimeout
	}
	return t
}
