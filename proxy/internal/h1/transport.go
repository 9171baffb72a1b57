package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meshd/meshd/proxy/internal/hostport"
	"github.com/meshd/meshd/proxy/internal/reqctx"
)

// Defaults of Transport's fields.
const (
	DefaultMaxIdlePerHost    = 256
	DefaultIdleTimeout       = 90 * time.Second
	DefaultMaxResponseHeader = 1 << 20
	DefaultInlineBody        = 8 << 10
)

// staleAfter is the idle time after which a pooled connection is checked
// (one non-blocking peek) for a close or unsolicited bytes from the server
// before it is used: a server's keep-alive timeout is rarely shorter.
var staleAfter = time.Second

// Transport is an HTTP/1.1 client. Its zero value is not usable: set
// DialContext. A Transport is safe for concurrent use.
type Transport struct {
	// DialContext connects to addr (host:port of the request URL). It may
	// return a *tls.Conn (handshake done); its errors are returned wrapped.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost bounds the idle connections kept per address
	// (default DefaultMaxIdlePerHost; negative: none kept).
	MaxIdlePerHost int
	// IdleTimeout closes connections idle for longer (default 90s).
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds the status lines and headers of one
	// response, 1xx answers included (default 1 MiB).
	MaxResponseHeaderBytes int
	// InlineBody is the largest request body of known length that is read
	// and sent with the headers in one write (default 8 KiB).
	InlineBody int
	// Keepalive, if positive, watches the peers for a hang (HTTP/1.1 has
	// no PING): when an exchange has waited longer than Keepalive for its
	// response headers and nothing was heard from its address for as long,
	// the Transport dials the address afresh (DialContext, the TLS
	// handshake included). If that dial does not succeed within
	// KeepaliveTimeout, every connection to the address is closed and the
	// exchanges on them fail with ErrPeerUnresponsive (not retried by the
	// Transport). A live peer that is only slow to answer passes the check
	// (its new connection joins the idle pool). See keepalive.go.
	Keepalive time.Duration
	// KeepaliveTimeout bounds the check dial (default Keepalive).
	KeepaliveTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]*conn
	reaper *time.Timer
	closed bool
	ka     keepalive // Keepalive's state, under mu
}

// Errors of the protocol, wrapped in the errors returned.
var (
	ErrHeaderTooLarge = errors.New("h1: response headers too large")
	ErrMalformed      = errors.New("h1: malformed response")
	errServerClosed   = errors.New("h1: server closed the connection before answering")
	// ErrRequestBody marks a failure reading the request body.
	ErrRequestBody = errors.New("h1: read request body")
)

type conn struct {
	nc     net.Conn
	raw    net.Conn // under TLS, the TCP connection (hard close)
	aw     *awaiter // writes a request and waits for its answer (nil: plain write)
	addr   string
	idleAt time.Time
	reused bool
	peer   *peer      // Keepalive: the address's shared state (nil without)
	t      *Transport // with peer
	// waitSince is when the exchange on c began to wait for its response
	// headers (monotonic nanoseconds, see now), 0 when it does not wait.
	waitSince atomic.Int64
	killed    atomic.Bool // closed by Keepalive: the peer does not answer
	gone      atomic.Bool // closed: out of the live set
}

func (t *Transport) maxIdle() int {
	if t.MaxIdlePerHost == 0 {
		return DefaultMaxIdlePerHost
	}
	return t.MaxIdlePerHost
}

func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout <= 0 {
		return DefaultIdleTimeout
	}
	return t.IdleTimeout
}

func (t *Transport) inline() int64 {
	if t.InlineBody <= 0 {
		return DefaultInlineBody
	}
	return int64(t.InlineBody)
}

func (t *Transport) maxHeader() int {
	if t.MaxResponseHeaderBytes <= 0 {
		return DefaultMaxResponseHeader
	}
	return t.MaxResponseHeaderBytes
}

// getIdle takes the most recently used idle connection to addr, or nil.
func (t *Transport) getIdle(addr string) *conn {
	now := time.Now()
	for {
		t.mu.Lock()
		l := t.idle[addr]
		if len(l) == 0 {
			t.mu.Unlock()
			return nil
		}
		c := l[len(l)-1]
		l[len(l)-1] = nil
		t.idle[addr] = l[:len(l)-1]
		t.mu.Unlock()
		idle := now.Sub(c.idleAt)
		if idle > t.idleTimeout() || (idle > staleAfter && !alive(c.raw)) {
			c.close()
			continue
		}
		c.reused = true
		return c
	}
}

// putIdle returns c to the pool (or closes it).
func (t *Transport) putIdle(c *conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	if t.closed || len(t.idle[c.addr]) >= t.maxIdle() {
		t.mu.Unlock()
		c.close()
		return
	}
	if t.idle == nil {
		t.idle = map[string][]*conn{}
	}
	t.idle[c.addr] = append(t.idle[c.addr], c)
	if t.reaper == nil {
		t.reaper = time.AfterFunc(t.idleTimeout(), t.reap)
	}
	t.mu.Unlock()
}

// reap closes the connections idle for longer than IdleTimeout.
func (t *Transport) reap() {
	cutoff := time.Now().Add(-t.idleTimeout())
	var old []*conn
	t.mu.Lock()
	for a, l := range t.idle {
		n := 0
		for n < len(l) && l[n].idleAt.Before(cutoff) {
			n++
		}
		if n > 0 {
			old = append(old, l[:n]...)
			rest := make([]*conn, len(l)-n, cap(l))
			copy(rest, l[n:])
			t.idle[a] = rest
		}
		if len(t.idle[a]) == 0 {
			delete(t.idle, a)
		}
	}
	if len(t.idle) > 0 {
		t.reaper.Reset(t.idleTimeout() / 2)
	} else {
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, c := range old {
		c.close()
	}
}

// CloseIdleConnections closes the idle connections. Connections in use
// return to the pool afterwards.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	m := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, l := range m {
		for _, c := range l {
			c.close()
		}
	}
}

func (c *conn) close() {
	c.forget()
	_ = c.nc.Close()
}

// abort closes the connection at once (no TLS close_notify, which could
// block on a peer that does not read).
func (c *conn) abort() {
	c.forget()
	_ = c.raw.Close()
}

func (t *Transport) dial(ctx context.Context, addr string) (*conn, error) {
	if t.DialContext == nil {
		return nil, errors.New("h1: Transport.DialContext is nil")
	}
	dctx, pd, done := t.startDial(ctx, addr)
	nc, err := t.DialContext(dctx, "tcp", addr)
	done()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("h1: dial %s: %w", addr, ctx.Err())
		}
		if pd != nil && pd.killed.Load() {
			// The peer hangs (a keepalive check failed): err says
			// what the dial saw (a cancelled handshake).
			return nil, fmt.Errorf("h1: dial %s: %w: %w", addr, ErrPeerUnresponsive, err)
		}
		return nil, fmt.Errorf("h1: dial %s: %w", addr, err)
	}
	c := &conn{nc: nc, raw: tcpConn(nc), addr: addr}
	c.aw = newAwaiter(nc, c.raw)
	t.track(c)
	return c, nil
}

// tcpConn is the TCP connection under nc (nc itself unless TLS).
func tcpConn(nc net.Conn) net.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return nc
}

var (
	brPool  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
)

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// exchange is one request on one connection.
type exchange struct {
	t      *Transport
	c      *conn
	req    *http.Request
	br     atomic.Pointer[bufio.Reader] // while the exchange reads
	stop   func() bool                  // stops the context watch
	rctx   *reqctx.Ctx                  // or the server request context watching it
	link   reqctx.Link                  // in rctx's watch list
	slot   respSlot                     // the answer and its body
	done   atomic.Bool                  // the context watch fired
	writer chan error                   // streamed body: the writer's result (nil: inline)
	close  bool                         // the connection must not be reused
	wrote  atomic.Bool                  // the streamed body was all read: only a write is left
}

// RoundTrip sends req and reads the response headers. See the package doc.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("h1: request has no URL")
	}
	addr := hostport.DialAddr(req.URL)
	hasBody := req.Body != nil && req.Body != http.NoBody
	bp := getBuf()
	defer putBuf(bp)
	inline, err := t.encodeHead(bp, req, hasBody)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	bodyRead := false
	if inline {
		// Read the body now: it leaves with the headers, and is resent
		// as-is on a retry.
		b := *bp
		n := int(req.ContentLength)
		b = slices.Grow(b, n)[:len(b)+n]
		_, err := io.ReadFull(req.Body, b[len(b)-n:])
		closeBody(req)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRequestBody, err)
		}
		*bp = b
		hasBody = false
	}
	for try := 0; ; try++ {
		c := (*conn)(nil)
		if try == 0 {
			c = t.getIdle(addr)
		}
		if c == nil {
			if c, err = t.dial(ctx, addr); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		resp, retry, err := t.exchange(ctx, c, req, *bp, hasBody, &bodyRead)
		if err == nil {
			return resp, nil
		}
		if !retry || try > 0 || !c.reused || ctx.Err() != nil || c.killed.Load() {
			if hasBody && !bodyRead {
				closeBody(req)
			}
			return nil, err
		}
		if bodyRead && req.GetBody != nil {
			b, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			r2 := *req
			r2.Body = b
			req = &r2
			bodyRead = false
		} else if bodyRead {
			return nil, err
		}
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// replayable is net/http's rule for a request that may be sent again after
// the server closed the connection without answering.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// exchange writes head (request line, headers, inline body) on c, starts the
// body writer for a streamed body, and reads the response headers. retry
// reports whether nothing of the request can have been processed by the
// server (see the package doc).
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request, head []byte, stream bool, bodyRead *bool) (*http.Response, bool, error) {
	ex := &exchange{t: t, c: c, req: req}
	if rc, ok := ctx.(*reqctx.Ctx); ok {
		// A request context of our servers: the hook goes in place (if it
		// has ended, ex is aborted now and stopWatch reports it fired).
		ex.rctx = rc
		if !rc.Watch(&ex.link, ex) {
			ex.Abort()
		}
	} else if ctx.Done() != nil {
		ex.stop = context.AfterFunc(ctx, func() {
			ex.done.Store(true)
			c.abort()
		})
	}
	c.waitSince.Store(now())
	var werr error
	if c.aw != nil && !stream {
		werr = c.aw.writeAndAwait(head) // no read that finds nothing (waitfirst.go)
	} else {
		_, werr = c.nc.Write(head)
	}
	if err := werr; err != nil {
		c.waitSince.Store(0)
		ex.abort()
		// A short write on a dead connection: the server cannot have
		// processed an incomplete request.
		return nil, true, ex.err("write request", err)
	}
	if stream {
		*bodyRead = true
		ex.writer = make(chan error, 1)
		go ex.writeBody()
	}
	br := brPool.Get().(*bufio.Reader)
	br.Reset(c.nc)
	ex.br.Store(br)
	_, err := br.Peek(1)
	c.heard()
	if err != nil {
		ex.abort()
		// Nothing of the answer arrived: the server closed an idle
		// connection (or reset it) under us.
		werr := ex.writerErr()
		if werr != nil && !errors.Is(werr, net.ErrClosed) {
			return nil, false, ex.err("write request body", werr)
		}
		retry := !stream && replayable(req) && !isTimeout(err)
		if errors.Is(err, io.EOF) {
			return nil, retry, ex.err("read response", errServerClosed)
		}
		return nil, retry, ex.err("read response", err)
	}
	resp, err := readResponse(br, req, t.maxHeader(), &ex.slot)
	if err != nil {
		ex.abort()
		return nil, false, ex.err("read response", err)
	}
	ex.close = resp.Close || req.Close
	b := bodyOf(resp)
	if b == nil { // no body: the connection is free now
		ex.finish(true)
		return resp, false, nil
	}
	b.ex = ex
	return resp, false, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// err maps an error of the exchange: the context's error if it ended,
// ErrPeerUnresponsive if Keepalive closed the connection.
func (ex *exchange) err(op string, err error) error {
	if ex.c != nil && ex.c.killed.Load() {
		return fmt.Errorf("h1: %s: %w", op, ErrPeerUnresponsive)
	}
	if ex.done.Load() && ex.req != nil {
		if cerr := ex.req.Context().Err(); cerr != nil {
			return fmt.Errorf("h1: %s: %w", op, cerr)
		}
	}
	return fmt.Errorf("h1: %s: %w", op, err)
}

// writerErr returns the body writer's error if it has ended (it reports
// before it closes the connection on an error of its own).
func (ex *exchange) writerErr() error {
	if ex.writer == nil {
		return nil
	}
	select {
	case err := <-ex.writer:
		return err
	default:
		return nil
	}
}

// abort ends the exchange on an error: the connection is closed.
func (ex *exchange) abort() {
	ex.stopWatch()
	ex.closeConn()
	ex.releaseReader()
}

// Abort is the context watch firing (reqctx.Aborter): the exchange is
// marked cancelled and its connection closed, which ends its reads and
// writes.
func (ex *exchange) Abort() {
	ex.done.Store(true)
	ex.c.abort()
}

// stopWatch stops the context watch; false if it fired.
func (ex *exchange) stopWatch() bool {
	if ex.rctx != nil {
		return ex.rctx.Unwatch(&ex.link)
	}
	return ex.stop == nil || ex.stop()
}

func (ex *exchange) closeConn() {
	if ex.c != nil {
		ex.c.abort()
	}
}

// releaseReader returns the reader to the pool, once, when no read runs.
func (ex *exchange) releaseReader() {
	if br := ex.br.Swap(nil); br != nil && ex.c != nil {
		br.Reset(nil)
		brPool.Put(br)
	}
}

// finish ends the exchange after the response: the connection returns to
// the pool if clean is set and nothing forbids it.
func (ex *exchange) finish(clean bool) {
	if ex.c == nil { // ReadResponse: no connection
		return
	}
	if !ex.stopWatch() {
		clean = false // the context ended: the connection is closed
	}
	if br := ex.br.Load(); clean && br != nil && br.Buffered() > 0 {
		clean = false // bytes nobody asked for
	}
	if clean && ex.writer != nil {
		if ex.wrote.Load() {
			// Only its last write is left: wait for it here.
			ex.releaseReader()
			ex.c.releaseOnWrite(ex)
			return
		} else {
			select {
			case err := <-ex.writer:
				clean = err == nil
			default:
				// The server answered before the upload ended: wait a
				// little, as net/http does, then give up the connection.
				ex.releaseReader()
				go ex.c.releaseOnWrite(ex)
				return
			}
		}
	}
	ex.releaseReader()
	if clean && !ex.close {
		ex.t.putIdle(ex.c)
	} else {
		ex.c.abort()
	}
}

func (c *conn) releaseOnWrite(ex *exchange) {
	tm := time.NewTimer(50 * time.Millisecond)
	clean := !ex.close
	select {
	case err := <-ex.writer:
		clean = clean && err == nil
	case <-tm.C:
		clean = false
	}
	tm.Stop()
	if clean {
		ex.t.putIdle(c)
	} else {
		c.abort()
	}
}

// encodeHead appends the request line and headers to *bp. inline reports
// whether the body (of known length, at most InlineBody) is to be appended.
func (t *Transport) encodeHead(bp *[]byte, req *http.Request, hasBody bool) (inline bool, err error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return false, fmt.Errorf("h1: invalid method %q", method)
	}
	u := req.URL
	host := req.Host
	if host == "" {
		host = u.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return false, fmt.Errorf("h1: invalid Host %q", host)
	}
	b := append(*bp, method...)
	b = append(b, ' ')
	start := len(b)
	if u.Opaque != "" && u.Opaque[0] == '/' && (len(u.Opaque) < 2 || u.Opaque[1] != '/') {
		b = append(b, u.Opaque...)
		if u.ForceQuery || u.RawQuery != "" {
			b = append(b, '?')
			b = append(b, u.RawQuery...)
		}
	} else {
		b = append(b, u.RequestURI()...)
	}
	for _, ch := range b[start:] {
		if ch <= ' ' || ch == 0x7f {
			return false, fmt.Errorf("h1: invalid request target %q", b[start:])
		}
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	switch {
	case !hasBody:
		switch method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			b = append(b, "Content-Length: 0\r\n"...)
		}
	case req.ContentLength > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, req.ContentLength, 10)
		b = append(b, "\r\n"...)
		inline = req.ContentLength <= t.inline()
	default:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	if req.Close {
		b = append(b, "Connection: close\r\n"...)
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return false, fmt.Errorf("h1: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false, fmt.Errorf("h1: invalid header field value for %q", k)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, trimOWS(v)...)
			b = append(b, "\r\n"...)
		}
	}
	*bp = append(b, "\r\n"...)
	return inline, nil
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

var chunkBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeBody streams the request body (from its own goroutine) and reports
// on ex.writer. Each read of the body leaves in one write (a chunk when the
// length is unknown), so a streaming upload is never held back.
func (ex *exchange) writeBody() {
	req := ex.req
	err := ex.copyBody()
	ex.writer <- err
	if err != nil {
		// The body failed, or the connection did: unblock the reader.
		ex.c.abort()
	}
	_ = req.Body.Close()
}

func (ex *exchange) copyBody() error {
	req, nc := ex.req, ex.c.nc
	bp := chunkBufPool.Get().(*[]byte)
	defer chunkBufPool.Put(bp)
	buf := *bp
	if req.ContentLength > 0 {
		left := req.ContentLength
		for left > 0 {
			p := buf
			if int64(len(p)) > left {
				p = p[:left]
			}
			n, err := req.Body.Read(p)
			if n > 0 {
				left -= int64(n)
				if left == 0 {
					ex.wrote.Store(true)
				}
				if _, werr := nc.Write(p[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				if left > 0 {
					return fmt.Errorf("%w: %d bytes short of Content-Length %d", ErrRequestBody, left, req.ContentLength)
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: %w", ErrRequestBody, err)
			}
		}
		return nil
	}
	// Chunked: "<hex size>\r\n" in front of the data, "\r\n" after it.
	const front = 10
	for {
		n, err := req.Body.Read(buf[front : len(buf)-2])
		if n > 0 {
			hex := strconv.AppendInt(buf[:0:front], int64(n), 16)
			s := front - len(hex) - 2
			copy(buf[s:], hex)
			buf[front-2], buf[front-1] = '\r', '\n'
			buf[front+n], buf[front+n+1] = '\r', '\n'
			if _, werr := nc.Write(buf[s : front+n+2]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			ex.wrote.Store(true)
			_, werr := nc.Write([]byte("0\r\n\r\n"))
			return werr
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, err)
		}
	}
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenByte(s[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool {
	return c < 0x80 && httpguts.IsTokenRune(rune(c))
}
