package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
)

// h2Preface starts every HTTP/2 connection (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h1Mux serves one listener: HTTP/1.x connections with proxy/internal/h1's server
// (no goroutine or read per request beyond the call itself), HTTP/2 ones —
// ALPN "h2" after the TLS handshake, or the h2c preface on cleartext — with
// proxy/internal/h2's server (--h2-server h2) or net/http's HTTP/2 server,
// handed over through a listener of their own. With h1 nil (--h1-server
// nethttp), net/http serves HTTP/1.x the same way.
type h1Mux struct {
	l       net.Listener
	tls     *tls.Config // nil: cleartext
	h1      *h1.Server  // nil: HTTP/1.x to h2 (net/http's)
	h2      *http.Server
	h2l     *handoffListener
	h2s     *h2.Server    // nil: HTTP/2 to h2 (net/http's)
	timeout time.Duration // TLS handshake and protocol sniffing
	log     *slog.Logger

	wg sync.WaitGroup // connection goroutines still sorting their protocol

	mu      sync.Mutex
	sorting map[net.Conn]struct{} // connections still sorting their protocol
	stopped bool                  // shutdown began: close what is still sorting
}

func newH1Mux(l net.Listener, tlsCfg *tls.Config, h1s *h1.Server, hs *http.Server, h2s *h2.Server, log *slog.Logger) *h1Mux {
	timeout := hs.ReadHeaderTimeout
	if timeout <= 0 {
		timeout = h1.DefaultReadHeaderTimeout
	}
	return &h1Mux{
		l: l, tls: tlsCfg, h1: h1s, h2: hs, h2s: h2s, log: log,
		h2l:     newHandoffListener(l.Addr()),
		timeout: timeout,
		sorting: map[net.Conn]struct{}{},
	}
}

// serve accepts until the listener closes; net/http's HTTP/2 server runs
// alongside on the handed-over connections.
func (m *h1Mux) serve() error {
	h2err := make(chan error, 1)
	go func() { h2err <- m.h2.Serve(m.h2l) }()
	var backoff time.Duration
	for {
		c, err := m.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				m.h2l.Close()
				m.wg.Wait()
				<-h2err
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				m.log.Warn("proxy: accept failed; retrying", "addr", m.l.Addr().String(), "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			m.h2l.Close()
			m.wg.Wait()
			<-h2err
			return err
		}
		backoff = 0
		if !m.track(c) {
			_ = c.Close()
			continue
		}
		m.wg.Add(1)
		go m.handle(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// handle finds a connection's protocol and serves it.
func (m *h1Mux) handle(c net.Conn) {
	handedOff := false
	defer func() {
		if !handedOff {
			m.untrack(c)
			m.wg.Done()
		}
	}()
	deadline := time.Now().Add(m.timeout)
	if m.tls != nil {
		tc := tls.Server(c, m.tls)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			m.log.Debug("proxy: TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
		m.untrack(c)
		m.wg.Done()
		handedOff = true
		switch {
		case tc.ConnectionState().NegotiatedProtocol == "h2" && m.h2s != nil:
			m.h2s.ServeConn(tc, nil)
		case tc.ConnectionState().NegotiatedProtocol == "h2" || m.h1 == nil:
			m.h2l.push(tc)
		default:
			m.h1.ServeConn(tc, nil)
		}
		return
	}
	// Cleartext: HTTP/2 only with prior knowledge (the preface).
	_ = c.SetReadDeadline(deadline)
	br := newConnReader(c)
	isH2, err := sniffH2(br)
	if err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	m.untrack(c)
	m.wg.Done()
	handedOff = true
	switch {
	case isH2 && m.h2s != nil:
		m.h2s.ServeConn(c, br)
	case isH2 || m.h1 == nil:
		m.h2l.push(&bufferedConn{Conn: c, r: br})
	default:
		m.h1.ServeConn(c, br)
	}
}

// sniffH2 reports whether a cleartext connection starts with the HTTP/2
// preface. It waits for more bytes only while those so far match it, so a
// short HTTP/1 request is never held up.
func sniffH2(br *bufio.Reader) (bool, error) {
	for n := 1; ; {
		b, err := br.Peek(n)
		if err != nil {
			return false, err
		}
		b, _ = br.Peek(min(br.Buffered(), len(h2Preface)))
		if string(b) != h2Preface[:len(b)] {
			return false, nil
		}
		if len(b) == len(h2Preface) {
			return true, nil
		}
		n = len(b) + 1
	}
}

// track records a connection that is sorting its protocol; false once
// shutdown began.
func (m *h1Mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return false
	}
	m.sorting[c] = struct{}{}
	return true
}

func (m *h1Mux) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.sorting, c)
	m.mu.Unlock()
}

// stopSorting closes the connections that have not sent a request yet (a
// TLS handshake or the first bytes pending), as net/http's Shutdown closes
// new connections: otherwise each would hold the serve loop until its
// sorting timeout.
func (m *h1Mux) stopSorting() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	for c := range m.sorting {
		_ = c.Close()
	}
}

// shutdown stops both servers gracefully (the listener is closed by the
// caller's Serve loop ending).
func (m *h1Mux) shutdown(ctx context.Context) error {
	_ = m.l.Close()
	m.stopSorting()
	var wg sync.WaitGroup
	var e1, e2, e3 error
	if m.h1 != nil {
		wg.Go(func() { e1 = m.h1.Shutdown(ctx) })
	}
	if m.h2s != nil {
		wg.Go(func() { e3 = m.h2s.Shutdown(ctx) })
	}
	wg.Go(func() { e2 = m.h2.Shutdown(ctx) })
	wg.Wait()
	return errors.Join(e1, e2, e3)
}

func (m *h1Mux) close() {
	_ = m.l.Close()
	m.stopSorting()
	if m.h1 != nil {
		m.h1.Close()
	}
	if m.h2s != nil {
		m.h2s.Close()
	}
	_ = m.h2.Close()
}

// handoffListener is a net.Listener fed with connections accepted
// elsewhere.
type handoffListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		_ = c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
