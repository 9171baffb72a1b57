package h2

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Defaults of Server's fields.
const (
	DefaultServerMaxConcurrentStreams = 250
	DefaultServerMaxHeaderListSize    = 64 << 10
	DefaultServerReadHeaderTimeout    = 10 * time.Second
	DefaultServerIdleTimeout          = 5 * time.Minute
	DefaultServerSendTimeout          = time.Minute
	// DefaultServerStreamWindow and DefaultServerConnWindow are the receive windows
	// (net/http's server's defaults).
	DefaultServerStreamWindow = 1 << 20
	DefaultServerConnWindow   = 1 << 20
)

// srvPreface starts every HTTP/2 connection (RFC 9113 §3.4).
const srvPreface = http2.ClientPreface

// srvFrameSize is the largest frame read and written (RFC 9113's default).
const srvFrameSize = 16 << 10

// srvMaxIdleWorkers bounds the parked handler goroutines of a Server.
const srvMaxIdleWorkers = 64

// Server serves HTTP/2 on the connections given to ServeConn. See the
// package documentation.
type Server struct {
	Handler http.Handler
	// ConnContext, if set, derives a connection's context, the parent of
	// its requests' contexts.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// MaxConcurrentStreams bounds the streams a client may have open
	// (default DefaultServerMaxConcurrentStreams).
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds a request's header list as RFC 9113
	// counts it (default DefaultServerMaxHeaderListSize).
	MaxHeaderListSize uint32
	// ReadHeaderTimeout bounds the preface and the reading of every frame
	// once its first byte arrived (default DefaultServerReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection without open streams after this long
	// (default DefaultServerIdleTimeout).
	IdleTimeout time.Duration
	// SendTimeout bounds how long a response write may wait for the
	// client's flow-control window, and a socket write (default
	// DefaultServerSendTimeout, negative: no bound). The stream is then reset.
	SendTimeout time.Duration
	// StreamWindow and ConnWindow are the receive windows advertised
	// (defaults DefaultServerStreamWindow, DefaultServerConnWindow; at least 65535).
	StreamWindow, ConnWindow int32
	// Log receives handler panics and connection errors (nil: discarded).
	Log *slog.Logger

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	idle     []*srvWorker
	shutting atomic.Bool
	closeCh  chan struct{} // closed by Close and when Shutdown's wait ends
}

func (s *Server) maxStreams() uint32 {
	if s.MaxConcurrentStreams > 0 {
		return s.MaxConcurrentStreams
	}
	return DefaultServerMaxConcurrentStreams
}

func (s *Server) maxHeaderList() uint32 {
	if s.MaxHeaderListSize > 0 {
		return s.MaxHeaderListSize
	}
	return DefaultServerMaxHeaderListSize
}

func (s *Server) readHeaderTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return DefaultServerReadHeaderTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultServerIdleTimeout
}

// sendTimeout is SendTimeout with its default; 0: no bound.
func (s *Server) sendTimeout() time.Duration {
	switch {
	case s.SendTimeout > 0:
		return s.SendTimeout
	case s.SendTimeout < 0:
		return 0
	}
	return DefaultServerSendTimeout
}

// srvMinWindow is the smallest receive window: RFC 9113's initial one,
// which a client may use before it saw our SETTINGS.
const srvMinWindow = 65535

func (s *Server) streamWindow() int32 {
	if s.StreamWindow > 0 {
		return max(s.StreamWindow, srvMinWindow)
	}
	return DefaultServerStreamWindow
}

func (s *Server) connWindow() int32 {
	if s.ConnWindow > 0 {
		return max(s.ConnWindow, srvMinWindow)
	}
	return DefaultServerConnWindow
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// ServeConn serves c until the client closes it, a connection error,
// IdleTimeout, Shutdown or Close, and returns when its handlers have
// returned. br, if not nil, is c's reader (holding bytes already read, such
// as a sniffed preface); the preface is read from it. ServeConn closes c.
func (s *Server) ServeConn(c net.Conn, br *bufio.Reader) {
	if br == nil {
		br = bufio.NewReaderSize(c, 4<<10)
	}
	sc := newServerConn(s, c, br)
	if !s.track(sc, true) {
		_ = c.Close()
		return
	}
	defer s.track(sc, false)
	sc.serve()
}

func (s *Server) track(c *serverConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutting.Load() {
			return false
		}
		if s.conns == nil {
			s.conns = map[*serverConn]struct{}{}
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if len(s.conns) == 0 {
		// No connection left: no parked worker either (none waits for
		// work that cannot come, and tests see no goroutine left).
		s.releaseIdleLocked()
	}
	return true
}

// Shutdown stops serving gracefully: every connection gets a GOAWAY, its
// streams in flight finish, then it closes. It returns when no connection
// is left, or ctx's error when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		// Not inline: a client that does not read would hold Shutdown on
		// its connection's write lock for up to SendTimeout; Close ends
		// that write.
		go c.goAway(http2.ErrCodeNo)
	}
	wait := time.Millisecond
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Close closes every connection at once; their handlers see their
// contexts cancelled.
func (s *Server) Close() {
	s.shutting.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
}

// srvWorker is a parked handler goroutine.
type srvWorker struct {
	ch chan *serverStream // nil: exit
}

// run has a worker run st's handler, reusing a parked one if any.
func (s *Server) run(st *serverStream) {
	s.mu.Lock()
	if n := len(s.idle); n > 0 {
		w := s.idle[n-1]
		s.idle[n-1] = nil
		s.idle = s.idle[:n-1]
		s.mu.Unlock()
		w.ch <- st
		return
	}
	s.mu.Unlock()
	go s.work(st)
}

func (s *Server) work(st *serverStream) {
	var w *srvWorker
	for st != nil {
		st.conn.runHandler(st)
		if w == nil {
			w = &srvWorker{ch: make(chan *serverStream)}
		}
		s.mu.Lock()
		if len(s.idle) >= srvMaxIdleWorkers || len(s.conns) == 0 {
			s.mu.Unlock()
			return
		}
		s.idle = append(s.idle, w)
		s.mu.Unlock()
		st = <-w.ch
	}
}

func (s *Server) releaseIdleLocked() {
	for i, w := range s.idle {
		close(w.ch)
		s.idle[i] = nil
	}
	s.idle = s.idle[:0]
}

// srvConnErr is a connection error to answer with GOAWAY.
type srvConnErr struct {
	code   http2.ErrCode
	reason string
}

func (e srvConnErr) Error() string {
	return "h2: connection error " + e.code.String() + ": " + e.reason
}

var (
	srvErrClientGone  = errors.New("h2: client disconnected")
	srvErrStreamReset = errors.New("h2: stream reset by the client")
	srvErrHandlerDone = errors.New("h2: write to a response after its handler returned")
	srvErrSendTimeout = errors.New("h2: response write timed out waiting for the client")
)

var _ io.ReadCloser = (*serverBody)(nil)

// srvDecoderTableSize is the dynamic table size our decoder allows (the
// default SETTINGS_HEADER_TABLE_SIZE).
const srvDecoderTableSize = 4096

func srvNewDecoder() *hpack.Decoder { return hpack.NewDecoder(srvDecoderTableSize, nil) }

// srvTLSState is c's TLS state, nil for cleartext.
func srvTLSState(c net.Conn) *tls.ConnectionState {
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		return &st
	}
	return nil
}
