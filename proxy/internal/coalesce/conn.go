package coalesce

import (
	"crypto/tls"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxPending bounds the bytes waiting for the flusher; a Write that would
// go beyond it waits (backpressure), unless nothing is pending.
const maxPending = 64 << 10

// closeFlushTimeout bounds how long Close waits for pending bytes to leave
// when the peer is not reading.
const closeFlushTimeout = 2 * time.Second

// Conn is a net.Conn whose writes are coalesced (see the package doc).
// Reads, addresses and deadlines are the wrapped connection's.
type Conn struct {
	net.Conn

	// passthrough: writes go straight to Conn (see NewPassthrough).
	passthrough atomic.Bool

	mu       sync.Mutex
	cond     sync.Cond // signalled after every write and when the flusher stops
	buf      []byte    // pending bytes, in order
	spare    []byte    // the buffer being written, reused
	err      error     // sticky: the first write error, or net.ErrClosed
	flushing bool      // a flusher goroutine owns the writing
}

// New wraps c, coalescing from the first write.
func New(c net.Conn) *Conn {
	cc := &Conn{Conn: c}
	cc.cond.L = &cc.mu
	return cc
}

// NewPassthrough wraps c with coalescing off until Enable: for a listener
// whose connections only some protocols (HTTP/2, chosen in the TLS
// handshake) benefit from it.
func NewPassthrough(c net.Conn) *Conn {
	cc := New(c)
	cc.passthrough.Store(true)
	return cc
}

// Enable turns coalescing on. Call it before the first write that should be
// coalesced and while no other write is in progress (during a TLS handshake,
// from tls.Config.GetConfigForClient).
func (c *Conn) Enable() { c.passthrough.Store(false) }

// Write appends p to the pending bytes and returns; the flusher writes them.
// It returns the error of an earlier write, if any.
func (c *Conn) Write(p []byte) (int, error) {
	if c.passthrough.Load() {
		return c.Conn.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	for c.err == nil && len(c.buf) > 0 && len(c.buf)+len(p) > maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.buf = append(c.buf, p...)
	if !c.flushing {
		c.flushing = true
		go c.flush()
	}
	c.mu.Unlock()
	return len(p), nil
}

// flush writes the pending bytes until none are left.
func (c *Conn) flush() {
	// Let the goroutines that are already runnable (other streams readied
	// by the same network poll, the rest of this frame sequence) add their
	// writes first.
	runtime.Gosched()
	c.mu.Lock()
	for len(c.buf) > 0 && c.err == nil {
		b := c.buf
		c.buf = c.spare[:0]
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		c.spare = b[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
	}
	c.buf = c.buf[:0]
	c.flushing = false
	if cap(c.spare) > 2*maxPending { // one large burst: do not keep its buffer
		c.spare = nil
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

// drain waits until the flusher has written everything pending (or failed),
// for at most closeFlushTimeout.
func (c *Conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flushing && c.err == nil {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
	}
	for c.flushing {
		c.cond.Wait()
	}
}

// Close writes what is pending, then closes the connection. Later writes
// fail with net.ErrClosed.
func (c *Conn) Close() error {
	c.drain()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite writes what is pending, then half-closes a TCP connection.
func (c *Conn) CloseWrite() error {
	c.drain()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Flush waits until everything written so far has been handed to the
// connection, and returns the first write error.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.flushing && c.err == nil {
		c.cond.Wait()
	}
	return c.err
}

// Listener wraps every accepted connection with New, or with
// NewPassthrough when Passthrough is set.
type Listener struct {
	net.Listener
	Passthrough bool
}

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if l.Passthrough {
		return NewPassthrough(c), nil
	}
	return New(c), nil
}

// EnableForH2 returns a tls.Config.GetConfigForClient hook: it turns
// coalescing on for a connection accepted by a passthrough Listener when the
// client offers HTTP/2 and the server config prefers it, and leaves the
// config as it is.
func EnableForH2(serverProtos []string) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if c, ok := hello.Conn.(*Conn); ok && negotiatesH2(serverProtos, hello.SupportedProtos) {
			c.Enable()
		}
		return nil, nil
	}
}

// negotiatesH2 mirrors crypto/tls's ALPN choice: the first server protocol
// the client also supports.
func negotiatesH2(server, client []string) bool {
	for _, s := range server {
		if slices.Contains(client, s) {
			return s == "h2"
		}
	}
	return false
}
