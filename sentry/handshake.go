package sentry

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// Defaults of the pre-handshake connection limits.
const (
	// DefaultHandshakeTimeout bounds how long a connection may take to
	// complete its TLS handshake and HTTP/2 preface (grpc.ConnectionTimeout;
	// grpc-go's own default is 120s).
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxPendingHandshakes caps connections that have not completed
	// their TLS handshake yet.
	DefaultMaxPendingHandshakes = 1024
	// dropLogEvery rate-limits the log line about dropped connections.
	dropLogEvery = 10 * time.Second
)

// pendingLimiter tracks connections that have not completed their TLS
// handshake. When a new connection would exceed max, the OLDEST pending one
// is closed at once to make room: a flood of silent connections then cannot
// lock genuine clients out for a whole handshake timeout, as refusing the
// newest would. Connections that completed the handshake are not counted.
type pendingLimiter struct {
	max int
	log *slog.Logger

	mu      sync.Mutex
	pending list.List // of *pendingConn, oldest first

	dropped     atomic.Uint64 // since start
	logMu       sync.Mutex
	lastLog     time.Time
	droppedLast uint64
}

// pendingListener wraps a listener: every accepted connection is pending
// until the transport credentials report its handshake done (or it closes).
type pendingListener struct {
	net.Listener
	lim *pendingLimiter
}

func (l *pendingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.lim.admit(c), nil
}

// pendingConn is a connection that counts as pending until done.
type pendingConn struct {
	net.Conn
	lim  *pendingLimiter
	elem *list.Element // nil once no longer pending; guarded by lim.mu
}

func (c *pendingConn) Close() error {
	c.lim.release(c)
	return c.Conn.Close()
}

func (l *pendingLimiter) admit(c net.Conn) net.Conn {
	pc := &pendingConn{Conn: c, lim: l}
	var victim *pendingConn
	l.mu.Lock()
	if l.max > 0 && l.pending.Len() >= l.max {
		front := l.pending.Front()
		victim = front.Value.(*pendingConn)
		l.pending.Remove(front)
		victim.elem = nil
	}
	pc.elem = l.pending.PushBack(pc)
	l.mu.Unlock()
	if victim != nil {
		_ = victim.Conn.Close() // the handshake in progress fails and grpc cleans up
		l.noteDrop(victim.RemoteAddr())
	}
	return pc
}

// release stops counting c as pending (idempotent).
func (l *pendingLimiter) release(c *pendingConn) {
	l.mu.Lock()
	if c.elem != nil {
		l.pending.Remove(c.elem)
		c.elem = nil
	}
	l.mu.Unlock()
}

// Pending returns the number of connections that have not completed the
// handshake.
func (l *pendingLimiter) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending.Len()
}

func (l *pendingLimiter) noteDrop(addr net.Addr) {
	n := l.dropped.Add(1)
	l.logMu.Lock()
	defer l.logMu.Unlock()
	now := time.Now()
	if now.Sub(l.lastLog) < dropLogEvery {
		return
	}
	l.log.Warn("sentry: too many connections in TLS handshake; closed the oldest to admit new ones",
		"max_pending_handshakes", l.max, "dropped", n-l.droppedLast, "dropped_total", n,
		"since", l.lastLog, "last_peer", addr.String())
	l.lastLog, l.droppedLast = now, n
}

// handshakeCreds wraps transport credentials to report a finished server
// handshake (successful or not) to the limiter.
type handshakeCreds struct {
	credentials.TransportCredentials
	lim *pendingLimiter
}

func (h handshakeCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := h.TransportCredentials.ServerHandshake(raw)
	if pc, ok := raw.(*pendingConn); ok && err == nil {
		h.lim.release(pc)
	}
	return conn, info, err
}

func (h handshakeCreds) Clone() credentials.TransportCredentials {
	return handshakeCreds{TransportCredentials: h.TransportCredentials.Clone(), lim: h.lim}
}

// ClientHandshake is never used on a server; it is here for the interface.
func (h handshakeCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("sentry: server credentials used for a client handshake")
}
