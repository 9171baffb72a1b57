package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meshd/meshd/proxy/internal/ascii"
	"github.com/meshd/meshd/proxy/internal/reqctx"
)

// Defaults of Server's fields.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultServerIdleTimeout = 5 * time.Minute
	DefaultBodyReadTimeout   = 30 * time.Second
)

// BodyProgress is the progress a request body must make within
// BodyReadTimeout of waiting: that many bytes, or its end.
const BodyProgress = 1 << 10

// ErrBodyTimeout marks a request body read that failed because the body
// made less than BodyProgress bytes of progress within BodyReadTimeout.
var ErrBodyTimeout = errors.New("h1: request body timed out")

// watchAfter is how long a handler runs before its connection is watched
// for the client going away (which cancels the request's context). Short
// calls never pay for the watch: a goroutine and a read per request are
// what this server exists to save.
const watchAfter = 100 * time.Millisecond

// Server serves HTTP/1.0 and HTTP/1.1 on the connections given to
// ServeConn, calling Handler for every request on the connection's own
// goroutine. See the package documentation for what it does differently
// from net/http's server.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the time from a request's first byte to the
	// end of its header fields (default DefaultReadHeaderTimeout).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection that brings no request for this long
	// (default DefaultServerIdleTimeout).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request line and its fields (default
	// DefaultMaxRequestHeader); a larger head is answered with 431.
	MaxHeaderBytes int
	// MaxHeaderFields bounds the number of a request's header fields
	// (default DefaultMaxHeaderFields, negative: no bound); more are
	// answered with 431 before any of them is looked at.
	MaxHeaderFields int
	// BodyReadTimeout bounds the time the reads of a request body may wait
	// on the client without BodyProgress bytes arriving (default
	// DefaultBodyReadTimeout, negative: no bound). Only time spent waiting
	// for the client counts, not the handler's pauses between reads, so a
	// large upload at any sane rate is never cut. A body that stalls or
	// trickles fails with an error wrapping ErrBodyTimeout (the handler
	// may still answer, say with 408); the connection then closes.
	BodyReadTimeout time.Duration
	// Refusal, if set, renders the answer to a request the server refuses
	// (malformed, too large, ...): header fields added to Content-Type,
	// Content-Length and "Connection: close", and the body. reason never
	// quotes the request. nil: a text/plain body.
	Refusal func(status int, reason string) (http.Header, []byte)
	// ConnContext, if set, derives a connection's context, the parent of
	// its requests' contexts.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// Log receives handler panics and refused requests (nil: discarded).
	Log *slog.Logger
	// ReuseHeader is the handler's promise that it keeps neither a
	// request's Header map nor any of its value slices once it has
	// returned (nor does anything it started): a connection then parses
	// its next request's header into the same map and values array,
	// cleared, instead of new ones (three allocations fewer per request).
	// Values are strings and stay valid; only the map and the slices are
	// reused. Heads with more than 32 fields get fresh ones.
	ReuseHeader bool

	mu       sync.Mutex
	conns    map[*srvConn]struct{}
	shutting atomic.Bool
}

func (s *Server) readHeaderTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return DefaultReadHeaderTimeout
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultServerIdleTimeout
}

func (s *Server) maxHeader() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxRequestHeader
}

func (s *Server) maxFields() int {
	switch {
	case s.MaxHeaderFields > 0:
		return s.MaxHeaderFields
	case s.MaxHeaderFields < 0:
		return -1
	}
	return DefaultMaxHeaderFields
}

// bodyTimeout is BodyReadTimeout with its default; 0: no bound.
func (s *Server) bodyTimeout() time.Duration {
	switch {
	case s.BodyReadTimeout > 0:
		return s.BodyReadTimeout
	case s.BodyReadTimeout < 0:
		return 0
	}
	return DefaultBodyReadTimeout
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Connection states, for Shutdown.
const (
	connActive int32 = iota // reading or serving a request
	connIdle                // waiting for the next request
	connClosed              // closed by Shutdown or Close
)

// Watch states.
const (
	watchOff int32 = iota
	watchArmed
	watchRunning
	watchStopping
)

// 100-continue states.
const (
	contNone    int32 = iota
	contPending       // the client waits for "100 Continue" before its body
	contSent
	contDropped // the final answer went first
)

// srvConn is one connection of a Server.
type srvConn struct {
	srv      *Server
	nc       net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	ctx      context.Context
	remote   string
	tlsState *tls.ConnectionState
	state    atomic.Int32
	deadline time.Time // read deadline in force; zero: none
	pend     []byte    // a response body of unknown length, until it outgrows this
	linger   bool      // close gently: the client may still be sending a body

	bodyMu sync.Mutex // orders request body reads with the handler's end
	body   *reqBody
	// The body's progress, for BodyReadTimeout (here, not in reqBody: no
	// bigger allocation per request).
	bodyGot, bodyMark int64         // bytes read; bodyGot when progress was last made
	bodyWaited        time.Duration // time reads waited since bodyMark

	contMu sync.Mutex   // orders "100 Continue" with the final answer
	cont   atomic.Int32 // contNone...
	first  bool         // no request served yet

	wmu    sync.Mutex
	wstate int32
	wtimer *time.Timer
	wdone  chan struct{}
	rctx   *reqctx.Ctx // of the current request
	hdr    headerBuf   // Server.ReuseHeader: the last request's header map
}

// ServeConn serves c until the client closes it, an error, IdleTimeout or
// Shutdown. br, if not nil, is c's reader (holding bytes already read, such
// as those a protocol sniffer peeked at). ServeConn closes c.
func (s *Server) ServeConn(c net.Conn, br *bufio.Reader) {
	if br == nil {
		br = bufio.NewReaderSize(c, 4<<10)
	}
	sc := &srvConn{srv: s, nc: c, br: br, bw: bufio.NewWriterSize(c, 4<<10), ctx: context.Background()}
	if !s.track(sc, true) {
		_ = c.Close()
		return
	}
	defer func() {
		if sc.linger {
			sc.lingerClose()
		}
		s.track(sc, false)
		_ = c.Close()
	}()
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		sc.tlsState = &st
	}
	if ra := c.RemoteAddr(); ra != nil {
		sc.remote = ra.String()
	}
	if s.ConnContext != nil {
		sc.ctx = s.ConnContext(sc.ctx, c)
	}
	sc.pend = make([]byte, 0, 2<<10)
	sc.first = true
	for sc.awaitRequest() {
		if !sc.serveOne() {
			return
		}
	}
}

func (s *Server) track(c *srvConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutting.Load() {
			return false
		}
		if s.conns == nil {
			s.conns = map[*srvConn]struct{}{}
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	return true
}

// Shutdown stops serving: idle connections close at once, the others after
// the request they serve (answered with "Connection: close"). It returns
// when no connection is left, or ctx's error when ctx ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	wait := time.Millisecond
	for {
		s.mu.Lock()
		for c := range s.conns {
			if c.state.CompareAndSwap(connIdle, connClosed) {
				_ = c.nc.Close()
			}
		}
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
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Close closes every connection at once.
func (s *Server) Close() {
	s.shutting.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.state.Store(connClosed)
		_ = c.nc.Close()
	}
}

func (c *srvConn) setDeadline(t time.Time) {
	c.deadline = t
	_ = c.nc.SetReadDeadline(t)
}

// awaitRequest waits for the first byte of the next request (under the idle
// timeout), then bounds the rest of its head by ReadHeaderTimeout unless it
// is all buffered already. Deadlines are set only when they must change: the
// idle one is refreshed at most once a second, so a busy connection does not
// touch its timer per request.
func (c *srvConn) awaitRequest() bool {
	s := c.srv
	if c.br.Buffered() == 0 {
		now := time.Now()
		if c.first {
			c.setDeadline(now.Add(s.readHeaderTimeout())) // a new connection owes a request
		} else if idle := s.idleTimeout(); c.deadline.IsZero() || c.deadline.Sub(now) < idle-time.Second {
			c.setDeadline(now.Add(idle))
		}
		c.state.Store(connIdle)
		if s.shutting.Load() {
			return false
		}
		_, err := c.br.Peek(1)
		if !c.state.CompareAndSwap(connIdle, connActive) || err != nil {
			return false
		}
	}
	c.first = false
	if c.deadline.IsZero() || !headBuffered(c.br) {
		if d := time.Now().Add(s.readHeaderTimeout()); c.deadline.IsZero() || d.Before(c.deadline) {
			c.setDeadline(d)
		}
	}
	return true
}

// headBuffered reports whether a whole request head is in br's buffer.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// serveOne reads and serves one request; false closes the connection.
func (c *srvConn) serveOne() (keep bool) {
	// The request's context lives in its response: no allocation of its own.
	w := &response{c: c, clen: -1}
	w.ctx.Init(c.ctx)
	defer w.ctx.Cancel()
	var hb *headerBuf
	if c.srv.ReuseHeader {
		hb = &c.hdr // the handler of the last request has returned
	}
	req, body, err := readRequest(&w.ctx, c.br, c.srv.maxHeader(), c.srv.maxFields(), &w.hreq, hb)
	if d := c.deadline; !d.IsZero() && d.Sub(time.Now()) < c.srv.readHeaderTimeout() {
		c.setDeadline(time.Time{}) // the header timeout's; the idle one is re-armed when idle
	}
	if err != nil {
		c.refuse(err)
		return false
	}
	req.RemoteAddr = c.remote
	req.TLS = c.tlsState
	w.req = req // its header map is made when asked for (or adopted: AdoptHeader)
	if body != nil {
		body.c = c
		c.bodyGot, c.bodyMark, c.bodyWaited = 0, 0, 0
	}
	c.body = body
	if ex, ok := req.Header["Expect"]; ok {
		if len(ex) != 1 || !ascii.EqualFold(ex[0], "100-continue") {
			c.refuse(&requestError{http.StatusExpectationFailed, "unsupported Expect"})
			return false
		}
		delete(req.Header, "Expect") // this hop answers it
		if body != nil && req.ProtoMinor == 1 {
			c.cont.Store(contPending)
		}
	}

	c.rctx = &w.ctx
	c.armWatch()
	panicked := true
	defer func() {
		if panicked {
			p := recover()
			if body != nil {
				body.finish()
			}
			c.stopWatch()
			if p != http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.log().Error("h1: handler panicked", "method", req.Method, "uri", clip([]byte(req.RequestURI)), "panic", fmt.Sprint(p), "stack", string(buf))
			}
			keep = false
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	panicked = false
	// The body first: from here on no read of it touches the connection
	// (one in flight is interrupted), then the watch, then the answer,
	// which says "Connection: close" if the body was left unread.
	if body != nil && !body.finish() {
		w.closeAfter = true
		c.linger = true
	}
	c.stopWatch()
	w.ctx.Cancel()
	c.rctx = nil
	c.body = nil
	w.finish()
	c.cont.Store(contNone)
	return !w.closeAfter && !req.Close
}

// refuse answers a request that cannot be served, then the connection
// closes. Network errors and timeouts close it silently.
func (c *srvConn) refuse(err error) {
	var re *requestError
	if !errors.As(err, &re) {
		return
	}
	c.linger = true // the client may still be sending; let it read the answer
	c.srv.log().Debug("h1: request refused", "remote", c.remote, "status", re.code, "reason", re.reason)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	if c.srv.Refusal == nil {
		msg := strconv.Itoa(re.code) + " " + http.StatusText(re.code) + ": " + re.reason
		_, _ = fmt.Fprintf(c.nc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
			re.code, http.StatusText(re.code), len(msg), msg)
		return
	}
	h, body := c.srv.Refusal(re.code, re.reason)
	bw := c.bw
	writeStatusLine(bw, re.code)
	for k, vv := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		}
		if httpguts.ValidHeaderFieldName(k) {
			writeField(bw, k, vv)
		}
	}
	_, _ = fmt.Fprintf(bw, "Connection: close\r\nContent-Length: %d\r\n\r\n", len(body))
	_, _ = bw.Write(body)
	_ = bw.Flush()
}

// lingerTime is how long a connection closed with a request body unread
// keeps reading (and dropping) what the client still sends, so that its
// close does not reset the connection before the client read the answer.
const lingerTime = 500 * time.Millisecond

// lingerClose half-closes the connection and drains it for up to
// lingerTime (net/http's server does the same).
func (c *srvConn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerTime))
	buf := make([]byte, 4<<10)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			return
		}
	}
}

// beforeBodyRead runs (under bodyMu) before a request body read: it sends
// "100 Continue" if the client waits for it and, when the read may wait on
// the network, puts the body's deadline in force (see BodyReadTimeout):
// what is left of the timeout after the time earlier reads waited since
// the body last made BodyProgress bytes of progress. The deadline is moved
// only when it would move by more than a sixteenth of the timeout, so a
// steady upload changes it about once every two seconds, not per read. It
// returns the time the read starts (zero: not timed).
func (c *srvConn) beforeBodyRead(b *reqBody) time.Time {
	if c.cont.Load() == contPending {
		c.contMu.Lock()
		if c.cont.Load() == contPending {
			c.cont.Store(contSent)
			_, _ = c.nc.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n"))
		}
		c.contMu.Unlock()
	}
	if b.kind == kindLength && b.left <= int64(c.br.Buffered()) {
		return time.Time{} // all there: no wait
	}
	t := c.srv.bodyTimeout()
	if t <= 0 {
		if !c.deadline.IsZero() {
			c.setDeadline(time.Time{}) // an upload may take its time
		}
		return time.Time{}
	}
	now := time.Now()
	if c.bodyGot-c.bodyMark >= BodyProgress {
		c.bodyMark, c.bodyWaited = c.bodyGot, 0
	}
	d := now.Add(t - c.bodyWaited)
	if c.deadline.IsZero() || d.Before(c.deadline) || d.Sub(c.deadline) > t/16 {
		c.setDeadline(d)
	}
	return now
}

// dropContinue: the final answer goes out; a client still waiting for
// "100 Continue" gets the answer instead (and the connection closes).
func (c *srvConn) dropContinue() {
	c.contMu.Lock()
	c.cont.CompareAndSwap(contPending, contDropped)
	c.contMu.Unlock()
}

// armWatch schedules the disconnect watch of a request.
func (c *srvConn) armWatch() {
	c.wmu.Lock()
	c.wstate = watchArmed
	if c.wtimer == nil {
		c.wtimer = time.AfterFunc(watchAfter, c.watch)
	} else {
		c.wtimer.Reset(watchAfter)
	}
	c.wmu.Unlock()
}

// watch runs when a handler outlives watchAfter: once the request body is
// read to its end, a read on the connection notices the client closing it
// and cancels the request's context (as net/http's background read does).
func (c *srvConn) watch() {
	c.wmu.Lock()
	if c.wstate != watchArmed {
		c.wmu.Unlock()
		return
	}
	if b := c.body; b != nil {
		c.bodyMu.Lock()
		eof := !b.reading && b.eof // eof is the reader's while reading
		c.bodyMu.Unlock()
		if !eof { // the handler may still read it; its reads see a close
			c.wstate = watchOff
			c.wmu.Unlock()
			return
		}
	}
	if c.br.Buffered() > 0 { // a pipelined request: the client is there
		c.wstate = watchOff
		c.wmu.Unlock()
		return
	}
	c.wstate = watchRunning
	c.wdone = make(chan struct{})
	rctx, done := c.rctx, c.wdone
	c.wmu.Unlock()
	for {
		_, err := c.br.Peek(1)
		if err == nil {
			break // bytes of a pipelined request: the client is there
		}
		if !isTimeout(err) {
			rctx.Cancel() // the client closed or reset the connection
			break
		}
		// The idle deadline passed while the handler runs (a long poll,
		// a stream): watch on without one, unless stopWatch interrupted.
		c.wmu.Lock()
		if c.wstate != watchRunning {
			c.wmu.Unlock()
			break
		}
		c.setDeadline(time.Time{})
		c.wmu.Unlock()
	}
	close(done)
}

// stopWatch ends the watch of the request that just ended.
func (c *srvConn) stopWatch() {
	c.wmu.Lock()
	switch c.wstate {
	case watchArmed:
		c.wtimer.Stop()
	case watchRunning:
		done := c.wdone
		c.wstate = watchStopping
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
		c.wmu.Unlock()
		<-done
		_ = c.nc.SetReadDeadline(c.deadline)
		c.wmu.Lock()
	}
	c.wstate = watchOff
	c.wmu.Unlock()
}

var aLongTimeAgo = time.Unix(1, 0)

// errWriteAfterHandler: the handler returned; its ResponseWriter is done.
var errWriteAfterHandler = errors.New("h1: write to a response after its handler returned")

// response is the http.ResponseWriter of one request.
type response struct {
	ctx         reqctx.Ctx   // the request's context
	hreq        http.Request // the request
	c           *srvConn
	req         *http.Request
	header      http.Header
	status      int
	wroteHeader bool
	headSent    bool
	chunked     bool
	closeAfter  bool
	done        bool
	clen        int64 // declared length; -1: unknown
	written     int64
}

var _ http.Flusher = (*response)(nil)

func (w *response) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
	}
	return w.header
}

// AdoptHeader makes h w's header map if the handler never asked for w's
// own (Header) and nothing was written yet: a proxy passing an answer on
// saves making a map and copying into it. The caller gives h up: it is w's
// from now on. It reports whether it did; if not, copy h into w.Header().
func (w *response) AdoptHeader(h http.Header) bool {
	if w.header != nil || w.wroteHeader || w.done || h == nil {
		return false
	}
	w.header = h
	return true
}

func (w *response) WriteHeader(code int) {
	if w.wroteHeader || w.done {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("h1: invalid WriteHeader code %d", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.writeInformational(code)
		return
	}
	w.wroteHeader, w.status = true, code
	if cl, ok := w.header["Content-Length"]; ok {
		if n, err := parseLength(cl); err == nil {
			w.clen = n
		}
	}
}

// bodyless: the answer carries no body whatever the handler writes.
func (w *response) bodyless() bool {
	return w.req.Method == http.MethodHead || w.status < 200 || w.status == http.StatusNoContent || w.status == http.StatusNotModified
}

func (w *response) Write(p []byte) (int, error) {
	if w.done {
		return 0, errWriteAfterHandler
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.bodyless() {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	c := w.c
	if !w.headSent {
		if w.clen < 0 && len(c.pend)+len(p) <= cap(c.pend) {
			c.pend = append(c.pend, p...)
			return len(p), nil
		}
		if err := w.sendPending(false); err != nil {
			return 0, err
		}
	}
	return w.writeBody(p)
}

// sendPending writes the head and the body held back so far.
func (w *response) sendPending(final bool) error {
	w.writeHead(final)
	c := w.c
	if len(c.pend) > 0 {
		_, err := w.writeBody(c.pend)
		c.pend = c.pend[:0]
		return err
	}
	return nil
}

func (w *response) writeBody(p []byte) (int, error) {
	bw := w.c.bw
	if w.chunked {
		var hb [20]byte
		h := strconv.AppendInt(hb[:0], int64(len(p)), 16)
		h = append(h, '\r', '\n')
		_, _ = bw.Write(h)
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.closeAfter = true
	}
	return n, err
}

// Flush sends what was written so far.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is Flush with the error (http.ResponseController uses it).
func (w *response) FlushError() error {
	if w.done {
		return errWriteAfterHandler
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		if err := w.sendPending(false); err != nil {
			return err
		}
	}
	err := w.c.bw.Flush()
	if err != nil {
		w.closeAfter = true
	}
	return err
}

// EnableFullDuplex is what http.ResponseController calls: this server always
// lets a handler read the request body while it writes the response.
func (w *response) EnableFullDuplex() error { return nil }

// finish ends the response when the handler returns.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		_ = w.sendPending(true)
	}
	bw := w.c.bw
	if w.chunked {
		_, _ = bw.WriteString("0\r\n")
		w.writeTrailers()
		_, _ = bw.WriteString("\r\n")
	} else if w.clen >= 0 && w.written < w.clen && !w.bodyless() {
		w.closeAfter = true // short body: the client sees the connection end
	}
	if err := bw.Flush(); err != nil {
		w.closeAfter = true
	}
	w.done = true
}

// writeTrailers writes the declared trailers and those set with
// http.TrailerPrefix.
func (w *response) writeTrailers() {
	bw := w.c.bw
	for _, k := range trailerKeys(w.header["Trailer"]) {
		if vv, ok := w.header[k]; ok && allowedTrailer(k) {
			writeField(bw, k, vv)
		}
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if k = k[len(http.TrailerPrefix):]; allowedTrailer(k) {
				writeField(bw, k, vv)
			}
		}
	}
}

// trailerKeys lists the keys a Trailer header declares, canonicalized.
func trailerKeys(vv []string) []string {
	var keys []string
	for _, v := range vv {
		for v != "" {
			var k string
			k, v, _ = strings.Cut(v, ",")
			if k = http.CanonicalHeaderKey(trimOWS(k)); k != "" {
				keys = append(keys, k)
			}
		}
	}
	return keys
}

func allowedTrailer(k string) bool {
	switch k {
	case "", "Transfer-Encoding", "Content-Length", "Trailer", "Connection", "Host":
		return false
	}
	return httpguts.ValidHeaderFieldName(k)
}

// writeHead writes the status line and the header fields. final: the
// handler has returned, so a body of unknown length is what is pending.
// Framing fields come from the response's state, never from the handler's
// map as it is now: a Content-Length set or deleted after WriteHeader
// cannot contradict the body that follows.
func (w *response) writeHead(final bool) {
	w.headSent = true
	c, h := w.c, w.header
	if c.cont.Load() != contNone {
		c.dropContinue()
	}
	noLength := w.status < 200 || w.status == http.StatusNoContent
	switch {
	case noLength, w.clen >= 0:
	case w.req.Method == http.MethodHead || w.status == http.StatusNotModified:
	case final && (w.req.ProtoMinor == 0 || !w.hasTrailers()):
		w.clen = int64(len(c.pend))
	case w.req.ProtoMinor == 1:
		w.chunked = true
	default:
		w.closeAfter = true // HTTP/1.0: the body ends with the connection
	}
	if w.status == http.StatusSwitchingProtocols {
		w.closeAfter = true // no upgrade over this server
	}
	if conn, ok := h["Connection"]; ok && shouldClose(1, conn) {
		w.closeAfter = true
	}
	if w.req.Close || c.srv.shutting.Load() {
		w.closeAfter = true
	}

	var declared []string // trailers: sent after the body, not here
	if tr, ok := h["Trailer"]; ok && w.chunked {
		declared = trailerKeys(tr)
	}
	bw := c.bw
	writeStatusLine(bw, w.status)
	for k, vv := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue
		case "Trailer":
			if !w.chunked {
				continue
			}
		}
		if declared != nil && slices.Contains(declared, k) {
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		writeField(bw, k, vv)
	}
	if _, ok := h["Date"]; !ok {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.WriteString(httpDate())
		_, _ = bw.WriteString("\r\n")
	}
	if w.clen >= 0 && !noLength {
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), w.clen, 10)) // in place: no escaping array
		_, _ = bw.WriteString("\r\n")
	}
	if w.chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		_, _ = bw.WriteString("Connection: close\r\n")
	} else if w.req.ProtoMinor == 0 {
		_, _ = bw.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = bw.WriteString("\r\n")
}

// hasTrailers: the handler declared trailers or set one.
func (w *response) hasTrailers() bool {
	if _, ok := w.header["Trailer"]; ok {
		return true
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// writeInformational writes a 1xx answer (other than 101) at once.
func (w *response) writeInformational(code int) {
	if w.req.ProtoMinor == 0 {
		return // HTTP/1.0 knows no 1xx
	}
	bw := w.c.bw
	writeStatusLine(bw, code)
	for k, vv := range w.header {
		if httpguts.ValidHeaderFieldName(k) && !strings.HasPrefix(k, http.TrailerPrefix) {
			writeField(bw, k, vv)
		}
	}
	_, _ = bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		w.closeAfter = true
	}
}

// writeField writes "k: v\r\n" for every value, with CR, LF and NUL in a
// value turned into spaces (no header injection through a value).
func writeField(bw *bufio.Writer, k string, vv []string) {
	for _, v := range vv {
		_, _ = bw.WriteString(k)
		_, _ = bw.WriteString(": ")
		if strings.ContainsAny(v, "\r\n\x00") {
			v = strings.Map(func(r rune) rune {
				if r == '\r' || r == '\n' || r == 0 {
					return ' '
				}
				return r
			}, v)
		}
		_, _ = bw.WriteString(trimOWS(v))
		_, _ = bw.WriteString("\r\n")
	}
}

// statusLines holds the status lines of the common codes.
var statusLines = func() map[int]string {
	m := map[int]string{}
	for _, code := range []int{100, 103, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308,
		400, 401, 403, 404, 405, 408, 409, 412, 413, 415, 429, 431, 499, 500, 501, 502, 503, 504} {
		m[code] = statusLine(code)
	}
	return m
}()

func statusLine(code int) string {
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
}

func writeStatusLine(bw *bufio.Writer, code int) {
	if l, ok := statusLines[code]; ok {
		_, _ = bw.WriteString(l)
		return
	}
	_, _ = bw.WriteString(statusLine(code))
}

// httpDate is the current time in the Date header's format, formatted once
// a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.sec == now {
		return d.s
	}
	d := &cachedDate{sec: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.s
}

type cachedDate struct {
	sec int64
	s   string
}

var dateCache atomic.Pointer[cachedDate]
