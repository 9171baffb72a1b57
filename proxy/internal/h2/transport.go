package h2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of Transport's fields.
const (
	DefaultClientMaxReadFrameSize       = 16 << 10
	DefaultClientIdleTimeout            = 90 * time.Second
	DefaultClientMaxResponseHeaderBytes = 1 << 20
	DefaultClientInlineBody             = 8 << 10
	DefaultClientStreamWindow           = 4 << 20
	DefaultClientConnWindow             = 1 << 30
)

// Errors of the client, wrapped in the errors returned.
var (
	// ErrStreamRefused: the server refused the stream before processing
	// it (RST_STREAM REFUSED_STREAM, or a GOAWAY whose last stream ID is
	// below it). The request may be sent again.
	ErrStreamRefused = errors.New("h2: stream refused by the server before processing")
	// ErrPeerUnresponsive: a PING went unanswered for KeepaliveTimeout;
	// the connection was closed and its streams failed.
	ErrPeerUnresponsive = errors.New("h2: peer does not answer PING")
	// ErrRequestBody marks a failure reading the request body.
	ErrRequestBody = errors.New("h2: read request body")
	// ErrHeaderTooLarge: the response headers (or trailers) exceed
	// MaxResponseHeaderBytes.
	ErrHeaderTooLarge = errors.New("h2: response headers too large")
	// ErrProtocol marks a violation of HTTP/2 by the server.
	ErrProtocol = errors.New("h2: protocol error")
	// ErrConnClosed: the connection closed under the stream.
	ErrConnClosed = errors.New("h2: connection closed")
)

// Transport is an HTTP/2 client. Its zero value is not usable: set
// DialContext. A Transport is safe for concurrent use.
type Transport struct {
	// DialContext connects to addr (host:port of the request URL). For
	// TLS it returns a handshaken *tls.Conn that negotiated "h2"; for h2c
	// a plain connection. Its errors are returned as they are. Callers
	// waiting for the same address share one dial, which keeps the values
	// of the first caller's context but not its cancellation: DialContext
	// must bound its own time (a dial timeout).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Keepalive, if positive: a connection from which nothing was read
	// for Keepalive gets a PING.
	Keepalive time.Duration
	// KeepaliveTimeout bounds the wait for the PING's answer (default
	// Keepalive); past it the connection is closed and its streams fail
	// with ErrPeerUnresponsive.
	KeepaliveTimeout time.Duration
	// MaxReadFrameSize is SETTINGS_MAX_FRAME_SIZE sent to the server
	// (default 16 KiB).
	MaxReadFrameSize uint32
	// IdleTimeout closes a connection without streams for longer
	// (default 90s).
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds the header list of a response, and of
	// its trailers (SETTINGS_MAX_HEADER_LIST_SIZE; default 1 MiB).
	MaxResponseHeaderBytes int
	// InlineBody is the largest request body of known length that is read
	// first and sent with the headers (default 8 KiB).
	InlineBody int
	// StreamWindow is the receive window of a stream, the bound of what is
	// buffered per response (default 4 MiB). ConnWindow is the
	// connection's (default 1 GiB).
	StreamWindow, ConnWindow int32

	mu     sync.Mutex
	conns  map[string][]*clientConn
	dials  map[string]*clientDial
	closed bool
}

// clientDial is a dial in progress, shared by the callers that wait for it.
type clientDial struct {
	done chan struct{}
	cc   *clientConn
	err  error
}

func (t *Transport) frameSize() uint32 {
	if t.MaxReadFrameSize < 16<<10 || t.MaxReadFrameSize > 1<<24-1 {
		return DefaultClientMaxReadFrameSize
	}
	return t.MaxReadFrameSize
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout <= 0 {
		return DefaultClientIdleTimeout
	}
	return t.IdleTimeout
}

func (t *Transport) maxHeader() uint32 {
	if t.MaxResponseHeaderBytes <= 0 {
		return DefaultClientMaxResponseHeaderBytes
	}
	return uint32(t.MaxResponseHeaderBytes)
}

func (t *Transport) inline() int64 {
	if t.InlineBody <= 0 {
		return DefaultClientInlineBody
	}
	return int64(t.InlineBody)
}

func (t *Transport) streamWindow() int32 {
	if t.StreamWindow <= 0 {
		return DefaultClientStreamWindow
	}
	return t.StreamWindow
}

func (t *Transport) connWindow() int32 {
	if t.ConnWindow <= 0 {
		return DefaultClientConnWindow
	}
	return max(t.ConnWindow, t.streamWindow())
}

func (t *Transport) keepaliveTimeout() time.Duration {
	if t.KeepaliveTimeout <= 0 {
		return t.Keepalive
	}
	return t.KeepaliveTimeout
}

// getConn returns a connection to addr with a stream slot reserved for the
// caller (released when the caller opens its stream).
// skip is a connection not to use (one that refused the last try).
func (t *Transport) getConn(ctx context.Context, addr string, skip *clientConn) (*clientConn, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, errors.New("h2: transport closed")
		}
		for _, cc := range t.conns[addr] {
			if cc != skip && cc.reserve() {
				t.mu.Unlock()
				return cc, nil
			}
		}
		d := t.dials[addr]
		if d == nil {
			d = &clientDial{done: make(chan struct{})}
			if t.dials == nil {
				t.dials = map[string]*clientDial{}
			}
			t.dials[addr] = d
			t.mu.Unlock()
			// Dial detached from the caller's cancellation: others may
			// wait for this connection.
			go t.dial(context.WithoutCancel(ctx), addr, d)
		} else {
			t.mu.Unlock()
		}
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d.err != nil {
			return nil, d.err
		}
		if d.cc.reserve() {
			return d.cc, nil
		}
		if d.cc.allowsNone() {
			// Another connection would not take it either.
			return nil, fmt.Errorf("%w: %s allows no stream (SETTINGS_MAX_CONCURRENT_STREAMS 0)", ErrStreamRefused, addr)
		}
		skip = nil
	}
}

func (t *Transport) dial(ctx context.Context, addr string, d *clientDial) {
	var cc *clientConn
	var err error
	if t.DialContext == nil {
		err = errors.New("h2: Transport.DialContext is nil")
	} else {
		var nc net.Conn
		nc, err = t.DialContext(ctx, "tcp", addr)
		if err == nil {
			cc, err = t.newClientConn(nc, addr)
		}
	}
	t.mu.Lock()
	delete(t.dials, addr)
	if err == nil {
		if t.conns == nil {
			t.conns = map[string][]*clientConn{}
		}
		t.conns[addr] = append(t.conns[addr], cc)
	}
	t.mu.Unlock()
	d.cc, d.err = cc, err
	close(d.done)
}

// forget removes cc from the pool.
func (t *Transport) forget(cc *clientConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.conns[cc.addr]
	for i, c := range l {
		if c == cc {
			l = append(l[:i:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(t.conns, cc.addr)
	} else {
		t.conns[cc.addr] = l
	}
}

// CloseIdleConnections closes the connections that carry no stream.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var all []*clientConn
	for _, l := range t.conns {
		all = append(all, l...)
	}
	t.mu.Unlock()
	for _, cc := range all {
		cc.closeIfIdle()
	}
}

// RoundTrip sends req and returns the response once its headers arrived.
// See the package comment.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req)
}
