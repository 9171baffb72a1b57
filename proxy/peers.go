package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/internal/coalesce"
	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
)

// dialError marks a failure before any byte of the request left: TCP
// connect or TLS handshake (including a callee whose SPIFFE ID is not the
// app we meant to reach).
type dialError struct{ err error }

func (e *dialError) Error() string { return "proxy: connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// peerTransports are the transports to one target app: HTTP/2 for gRPC
// and HTTP/2 callers (one multiplexed connection per endpoint), HTTP/1.1 for
// HTTP/1.1 callers (a keep-alive pool per endpoint). An HTTP/1.1 exchange
// costs each sidecar fewer goroutine hand-offs and syscalls than an HTTP/2
// stream: the callee's server runs the handler on the connection's own
// goroutine, and headers and a small body leave in one TLS record.
//
// h1 is proxy/internal/h1's client unless Config.NetHTTPClient, h2
// proxy/internal/h2's unless Config.NetHTTPH2Client (net/http's then).
type peerTransports struct {
	h2, h1 http.RoundTripper
}

// maxIdlePerPeer bounds idle HTTP/1.1 connections kept per peer endpoint.
// It must exceed the concurrency of the calls, or connections churn.
const maxIdlePerPeer = 256

// peers holds the transports per target app. Each transport's TLS config
// authorizes exactly spiffe://{td}/ns/{ns}/{app}, so a misrouted connection
// fails in the handshake, before anything is sent. Reads are lock-free
// (copy-on-write map).
type peers struct {
	p    *Proxy
	m    atomic.Pointer[map[discovery.Target]*peerTransports]
	mu   sync.Mutex
	dial net.Dialer
}

func newPeers(p *Proxy) *peers {
	ps := &peers{p: p, dial: net.Dialer{Timeout: peerDialTimeout(p.cfg), KeepAlive: 30 * time.Second}}
	m := map[discovery.Target]*peerTransports{}
	ps.m.Store(&m)
	return ps
}

func (ps *peers) get(t discovery.Target) (*peerTransports, error) {
	if pt, ok := (*ps.m.Load())[t]; ok {
		return pt, nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	old := *ps.m.Load()
	if pt, ok := old[t]; ok {
		return pt, nil
	}
	h2, err := ps.newTransport(t, false)
	if err != nil {
		return nil, err
	}
	h1t, err := ps.newTransport(t, true)
	if err != nil {
		return nil, err
	}
	pt := &peerTransports{h2: h2, h1: h1t}
	if !ps.p.cfg.NetHTTPH2Client {
		pt.h2 = ps.newH2Transport(h2)
	}
	if !ps.p.cfg.NetHTTPClient {
		pt.h1 = &h1.Transport{
			DialContext:    h1t.DialTLSContext,
			MaxIdlePerHost: maxIdlePerPeer,
			IdleTimeout:    h1t.IdleConnTimeout,
			InlineBody:     h1.DefaultInlineBody,
		}
		if ka := ps.p.cfg.PeerKeepalive; ka > 0 {
			pt.h1.(*h1.Transport).Keepalive = ka
			pt.h1.(*h1.Transport).KeepaliveTimeout = ps.p.cfg.PeerKeepaliveTimeout
		}
		if ps.p.cfg.Insecure {
			pt.h1.(*h1.Transport).DialContext = h1t.DialContext
		}
	}
	m := make(map[discovery.Target]*peerTransports, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[t] = pt
	ps.m.Store(&m)
	return pt, nil
}

func (ps *peers) newTransport(t discovery.Target, h1 bool) (*http.Transport, error) {
	tr := &http.Transport{
		DisableCompression: true,
		IdleConnTimeout:    5 * time.Minute,
		Protocols:          new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			MaxReadFrameSize: h2FrameSize,
			// A PING after PeerKeepalive of silence; no answer within
			// PeerKeepaliveTimeout closes the connection, failing its
			// streams ("http2: client connection lost", see peerLost).
			SendPingTimeout: max(ps.p.cfg.PeerKeepalive, 0),
			PingTimeout:     ps.p.cfg.PeerKeepaliveTimeout,
		},
	}
	alpn := "h2"
	if h1 {
		alpn = "http/1.1"
		tr.HTTP2 = nil
		tr.MaxIdleConns = 0 // no overall bound; per endpoint:
		tr.MaxIdleConnsPerHost = maxIdlePerPeer
		// Well inside the callee's 5 min idle timeout, so the caller
		// retires a connection before the callee closes it under a call.
		tr.IdleConnTimeout = 90 * time.Second
		tr.WriteBufferSize = 16 << 10 // headers and a small body in one record
		tr.Protocols.SetHTTP1(true)
	}
	if ps.p.cfg.Insecure {
		if !h1 {
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := ps.dial.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			if !h1 {
				return coalesce.New(c), nil
			}
			return c, nil
		}
		return tr, nil
	}
	id, err := spiffeid.FromSegments(ps.p.cfg.Identity.TrustDomain, "ns", t.Namespace, t.AppID)
	if err != nil {
		return nil, fmt.Errorf("proxy: SPIFFE ID of %s: %w", t, err)
	}
	cfg := tlsconfig.MTLSClientConfig(ps.p.cfg.SVIDSource, ps.p.cfg.BundleSource, certs.RequireServerAuth(tlsconfig.AuthorizeID(id)))
	cfg.NextProtos = []string{alpn}
	cfg.MinVersion = tls.VersionTLS13
	if !h1 {
		tr.Protocols.SetHTTP2(true)
	}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := ps.dial.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{err}
		}
		if !h1 {
			// Many streams, several frames each: one write per round
			// (see package coalesce).
			c = coalesce.New(c)
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, peerDialTimeout(ps.p.cfg))
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, &dialError{fmt.Errorf("mTLS handshake with %s (want %s): %w", addr, id, err)}
		}
		return tc, nil
	}
	return tr, nil
}

// peerDialTimeout bounds the TCP connect, and then the TLS handshake, to a
// peer: Config.DialTimeout, or PeerKeepalive + PeerKeepaliveTimeout when
// shorter. A peer that keeps a dial waiting longer than a pooled connection
// may stay silent is as good as hung: the dial fails (a dialError: the call
// was not sent and goes to another endpoint at once) instead of holding the
// call for DialTimeout.
func peerDialTimeout(cfg Config) time.Duration {
	if cfg.PeerKeepalive > 0 {
		return min(cfg.DialTimeout, cfg.PeerKeepalive+cfg.PeerKeepaliveTimeout)
	}
	return cfg.DialTimeout
}

// peerLost reports whether err says the peer stopped answering: the
// HTTP/1.1 pool's keepalive check failed, or an HTTP/2 PING went
// unanswered (net/http exports no error value for it, only this text).
func peerLost(err error) bool {
	return errors.Is(err, h1.ErrPeerUnresponsive) || errors.Is(err, h2.ErrPeerUnresponsive) ||
		strings.Contains(err.Error(), "http2: client connection lost")
}

func (ps *peers) closeIdle() {
	type idleCloser interface{ CloseIdleConnections() }
	for _, pt := range *ps.m.Load() {
		pt.h2.(idleCloser).CloseIdleConnections()
		pt.h1.(idleCloser).CloseIdleConnections()
	}
}
