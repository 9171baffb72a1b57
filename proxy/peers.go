package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshd/meshd/discovery"
)

// dialError marks a failure before any byte of the request left: TCP
// connect or TLS handshake (including a callee whose SPIFFE ID is not the
// app we meant to reach).
type dialError struct{ err error }

func (e *dialError) Error() string { return "proxy: connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// peers holds one HTTP/2 transport per target app. Each transport's TLS
// config authorizes exactly spiffe://{td}/ns/{ns}/{app}, so a misrouted
// connection fails in the handshake, before anything is sent. Reads are
// lock-free (copy-on-write map).
type peers struct {
	p    *Proxy
	m    atomic.Pointer[map[discovery.Target]*http.Transport]
	mu   sync.Mutex
	dial net.Dialer
}

func newPeers(p *Proxy) *peers {
	ps := &peers{p: p, dial: net.Dialer{Timeout: p.cfg.DialTimeout, KeepAlive: 30 * time.Second}}
	m := map[discovery.Target]*http.Transport{}
	ps.m.Store(&m)
	return ps
}

func (ps *peers) get(t discovery.Target) (*http.Transport, error) {
	if tr, ok := (*ps.m.Load())[t]; ok {
		return tr, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	old := *ps.m.Load()
	if tr, ok := old[t]; ok {
		return tr, nil
	}
	tr, err := ps.newTransport(t)
	if err != nil {
		return nil, err
	}
	m := make(map[discovery.Target]*http.Transport, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[t] = tr
	ps.m.Store(&m)
	return tr, nil
}

func (ps *peers) newTransport(t discovery.Target) (*http.Transport, error) {
	tr := &http.Transport{
		DisableCompression: true,
		IdleConnTimeout:    5 * time.Minute,
		Protocols:          new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 30 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	if ps.p.cfg.Insecure {
		tr.Protocols.SetUnencryptedHTTP2(true)
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := ps.dial.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		}
		return tr, nil
	}
	id, err := spiffeid.FromSegments(ps.p.cfg.Identity.TrustDomain, "ns", t.Namespace, t.AppID)
	if err != nil {
		return nil, fmt.Errorf("proxy: SPIFFE ID of %s: %w", t, err)
	}
	cfg := tlsconfig.MTLSClientConfig(ps.p.cfg.SVIDSource, ps.p.cfg.BundleSource, tlsconfig.AuthorizeID(id))
	cfg.NextProtos = []string{"h2"}
	cfg.MinVersion = tls.VersionTLS13
	tr.Protocols.SetHTTP2(true)
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := ps.dial.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, ps.p.cfg.DialTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, &dialError{fmt.Errorf("mTLS handshake with %s (want %s): %w", addr, id, err)}
		}
		return tc, nil
	}
	return tr, nil
}

func (ps *peers) closeIdle() {
	for _, tr := range *ps.m.Load() {
		tr.CloseIdleConnections()
	}
}
