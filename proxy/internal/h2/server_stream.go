package h2

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/meshd/meshd/proxy/internal/reqctx"
)

// serverStream is one request of a connection: its state, request body and
// response writer in one allocation.
type serverStream struct {
	conn *serverConn
	id   uint32
	req  *http.Request // &reqv
	reqv http.Request
	ctx  reqctx.Ctx // the request's context
	body serverBody
	resp serverResponse
	url  url.URL     // the request's URL when its path needs no parsing
	gone atomic.Bool // reset (either side) or the connection ended: no more frames

	// Under conn.mu.
	sendWin     int64
	recvLeft    int64
	received    int64 // body bytes received
	declared    int64 // content-length; -1: none
	remoteDone  bool  // END_STREAM received (or reset)
	localDone   bool  // the handler returned
	removed     bool  // out of the stream map
	resetByPeer bool
	resetSent   bool
	stalled     bool // a write waited SendTimeout for the window
}

// processHeaders opens a stream (or takes a stream's trailers).
func (c *serverConn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return srvConnErr{http2.ErrCodeProtocol, "even stream ID from a client"}
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		// A stream cannot depend on itself (RFC 9113 §5.3.1).
		return c.streamError(http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol})
	}
	s := c.srv
	c.mu.Lock()
	if id <= c.maxStreamID {
		st := c.streams[id]
		c.mu.Unlock()
		switch {
		case st == nil && id < c.maxStreamID:
			// Maybe never opened: the IDs went down (RFC 9113 §5.1.1).
			return srvConnErr{http2.ErrCodeProtocol, "stream ID went down"}
		case st == nil:
			return srvConnErr{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
		}
		return c.processTrailers(st, f)
	}
	c.maxStreamID = id
	if c.goAwaySent {
		c.mu.Unlock()
		return nil // beyond GOAWAY's last stream: the client retries it elsewhere
	}
	maxS := int(s.maxStreams())
	if len(c.streams) >= maxS || c.running >= srvMaxRunning*maxS {
		c.resetBudget--
		over := c.resetBudget < 0
		c.mu.Unlock()
		c.writeReset(id, http2.ErrCodeRefusedStream)
		if over {
			return srvConnErr{http2.ErrCodeEnhanceYourCalm, "too many streams refused"}
		}
		return nil
	}
	c.mu.Unlock()
	if f.Truncated {
		c.refuse(id, f.StreamEnded(), http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	st := &serverStream{conn: c, id: id, declared: -1}
	req, status, err := c.newRequest(st, f)
	if err != nil {
		c.srv.log().Debug("h2: malformed request", "remote", c.remote, "stream", id, "err", err)
		return c.streamError(http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol, Cause: err})
	}
	if status != 0 {
		c.refuse(id, f.StreamEnded(), status)
		return nil
	}
	st.req = req
	st.resp.st = st
	st.resp.clen = -1
	st.body.st = st
	st.body.cond.L = &st.body.mu
	c.mu.Lock()
	st.sendWin = c.initSendWin
	st.recvLeft = int64(s.streamWindow())
	if f.StreamEnded() {
		st.remoteDone = true
		st.body.eof = true
	}
	c.streams[id] = st
	c.running++
	c.mu.Unlock()
	c.ctlStreams++ // a served request: more control frames are fair (a malformed one is not)
	c.handlers.Add(1)
	s.run(st)
	return nil
}

// refuse answers a stream with status and no body, from the reader.
func (c *serverConn) refuse(id uint32, ended bool, status int) {
	c.wmu.Lock()
	c.hbuf.Reset()
	c.encodeField(":status", strconv.Itoa(status))
	c.writeBlockLocked(id, true)
	if !ended {
		_ = c.fr.WriteRSTStream(id, http2.ErrCodeNo)
	}
	c.flushLocked()
	c.wmu.Unlock()
}

var (
	srvErrNoMethod   = errors.New("h2: no :method")
	srvErrPseudo     = errors.New("h2: :scheme and :path are required")
	srvErrProtocol   = errors.New("h2: :protocol is not supported")
	srvErrPath       = errors.New("h2: bad :path")
	srvErrConnHeader = errors.New("h2: connection-specific header field")
	srvErrTE         = errors.New("h2: te other than trailers")
	srvErrLength     = errors.New("h2: bad content-length")
)

// newRequest builds st's request from its header block (RFC 9113 §8.3).
// A non-zero status refuses the request with that answer.
func (c *serverConn) newRequest(st *serverStream, f *http2.MetaHeadersFrame) (*http.Request, int, error) {
	var method, scheme, path, authority, protocol string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":path":
			path = hf.Value
		case ":authority":
			authority = hf.Value
		case ":protocol":
			protocol = hf.Value
		}
	}
	switch {
	case method == "":
		return nil, 0, srvErrNoMethod
	case protocol != "":
		return nil, 0, srvErrProtocol
	case method == http.MethodConnect:
		return nil, http.StatusMethodNotAllowed, nil
	case scheme == "" || path == "":
		return nil, 0, srvErrPseudo
	}
	regular := f.RegularFields()
	header := make(http.Header, len(regular))
	vals := make([]string, len(regular))
	var cookies []string
	for i, hf := range regular {
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, 0, srvErrConnHeader
		case "te":
			if hf.Value != "trailers" {
				return nil, 0, srvErrTE
			}
		case "host":
			if authority == "" {
				authority = hf.Value
			}
			continue
		case "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		k := srvCanonicalKey(hf.Name)
		if vv := header[k]; vv != nil {
			header[k] = append(vv, hf.Value)
			continue
		}
		vals[i] = hf.Value
		header[k] = vals[i : i+1 : i+1]
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	var u *url.URL
	if path == "*" && method == http.MethodOptions {
		u = &url.URL{Path: "*"}
	} else {
		if path[0] != '/' {
			return nil, 0, srvErrPath
		}
		if srvPlainPath(path) { // what ParseRequestURI would give, one allocation less
			st.url.Path = path
			u = &st.url
		} else {
			var err error
			if u, err = url.ParseRequestURI(path); err != nil {
				return nil, 0, srvErrPath
			}
		}
	}
	clen := int64(-1)
	if cl, ok := header["Content-Length"]; ok {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return nil, 0, srvErrLength
			}
		}
		n, err := strconv.ParseUint(cl[0], 10, 63)
		if err != nil {
			return nil, 0, srvErrLength
		}
		if f.StreamEnded() && n > 0 {
			return nil, 0, srvErrLength
		}
		clen = int64(n)
		st.declared = clen
	}
	st.ctx.Init(c.ctx)   // ended by the handler's return, a reset or the connection's end
	r := &http.Request{} // on the stack: the stream holds the one handed out
	r.Method = method
	r.URL = u
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.Header = header
	r.Host = authority
	r.RemoteAddr = c.remote
	r.RequestURI = path
	r.TLS = c.tlsState
	if vv, ok := header["Trailer"]; ok {
		r.Trailer = http.Header{}
		for _, v := range vv {
			for k := range strings.SplitSeq(v, ",") {
				if k = textproto.TrimString(k); k != "" {
					k = http.CanonicalHeaderKey(k)
					if httpguts.ValidTrailerHeader(k) {
						r.Trailer[k] = nil
					}
				}
			}
		}
		delete(header, "Trailer")
	}
	if ex, ok := header["Expect"]; ok && len(ex) == 1 && strings.EqualFold(ex[0], "100-continue") {
		st.body.needContinue = true
		delete(header, "Expect")
	}
	if f.StreamEnded() {
		r.Body = http.NoBody
		r.ContentLength = 0
	} else {
		r.Body = &st.body
		r.ContentLength = clen
	}
	// WithContext is inlined and its copy does not escape: this sets the
	// context without the allocation WithContext makes.
	st.reqv = *r.WithContext(&st.ctx)
	return &st.reqv, 0, nil
}

// processTrailers takes the trailers of a stream's request.
func (c *serverConn) processTrailers(st *serverStream, f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	done := st.remoteDone
	c.mu.Unlock()
	if done {
		return c.streamError(http2.StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed})
	}
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return c.streamError(http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol})
	}
	c.mu.Lock()
	if st.declared >= 0 && st.received != st.declared {
		c.mu.Unlock()
		return c.streamError(http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol})
	}
	st.remoteDone = true
	if st.localDone {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	b := &st.body
	b.mu.Lock()
	if st.req.Trailer == nil {
		st.req.Trailer = http.Header{}
	}
	for _, hf := range f.RegularFields() {
		k := srvCanonicalKey(hf.Name)
		if httpguts.ValidTrailerHeader(k) {
			st.req.Trailer[k] = append(st.req.Trailer[k], hf.Value)
		}
	}
	b.eof = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

// runHandler runs st's handler on a worker goroutine, then ends the
// stream.
func (c *serverConn) runHandler(st *serverStream) {
	panicked := true
	defer func() {
		if panicked {
			p := recover()
			if p != http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.srv.log().Error("h2: handler panicked", "method", st.req.Method, "path", st.req.URL.Path, "panic", fmt.Sprint(p), "stack", string(buf))
			}
			st.resp.failed = true
		}
		c.endStream(st)
	}()
	c.srv.Handler.ServeHTTP(&st.resp, st.req)
	panicked = false
	st.resp.finish()
}

// endStream: the handler returned.
func (c *serverConn) endStream(st *serverStream) {
	st.resp.done = true
	st.ctx.Cancel()
	if unread := st.body.close(); unread > 0 {
		c.giveBack(int64(unread))
	}
	c.mu.Lock()
	st.localDone = true
	var code http2.ErrCode
	rst := false
	if !st.removed {
		switch {
		case st.resp.failed || !st.resp.endSent:
			rst, code = true, http2.ErrCodeInternal
			if st.stalled {
				code = http2.ErrCodeCancel
			}
		case !st.remoteDone:
			rst, code = true, http2.ErrCodeNo // the body is not wanted any more
		}
		if st.remoteDone || rst {
			c.removeLocked(st)
		}
		if rst {
			st.gone.Store(true)
		}
	}
	if !st.resetByPeer && !rst && c.resetBudget < srvResetBudget {
		c.resetBudget++
	}
	c.running--
	if len(c.streams) == 0 && c.running == 0 {
		c.idleSince = time.Now()
	}
	closeNow := c.goAwaySent && len(c.streams) == 0 && c.running == 0
	c.mu.Unlock()
	if rst {
		c.writeReset(st.id, code)
	}
	if closeNow {
		c.closeSoon()
	}
	c.handlers.Done()
}

// serverBody is a request body: the DATA the reader pushed, read by the
// handler.
type serverBody struct {
	st           *serverStream
	mu           sync.Mutex
	cond         sync.Cond
	buf          []byte
	r            int
	eof          bool  // END_STREAM received
	err          error // the stream or connection failed
	dlErr        bool  // the read deadline passed
	closed       bool  // the handler returned
	needContinue bool
	dlTimer      *time.Timer
	unacked      int64   // bytes read not yet given back to the stream's window (handler only)
	pooled       *[]byte // buf's backing array came from srvBodyBufs
}

// srvBodyBufSize is the size of the pooled request body buffers: a small
// body (a unary gRPC call's) fits, a streamed one grows its own.
const srvBodyBufSize = 4 << 10

var srvBodyBufs = sync.Pool{New: func() any {
	b := make([]byte, srvBodyBufSize)
	return &b
}}

var srvErrBodyClosed = errors.New("h2: read on a closed request body")

// push appends DATA (reader goroutine); false: the handler is done, the
// bytes were dropped.
func (b *serverBody) push(p []byte, end bool) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	if len(p) > 0 {
		if b.r == len(b.buf) {
			b.buf, b.r = b.buf[:0], 0
		} else if b.r > 0 && cap(b.buf)-len(b.buf) < len(p) {
			// Move the unread bytes to the front rather than grow: the
			// buffer stays bounded by the stream window, not by the body.
			n := copy(b.buf, b.buf[b.r:])
			b.buf, b.r = b.buf[:n], 0
		}
		if b.buf == nil {
			if len(p) <= srvBodyBufSize {
				b.pooled = srvBodyBufs.Get().(*[]byte)
				b.buf = (*b.pooled)[:0]
			} else {
				b.buf = make([]byte, 0, len(p))
			}
		}
		b.buf = append(b.buf, p...)
	}
	if end {
		b.eof = true
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	return true
}

// fail ends the body with err (a reset, the connection gone).
func (b *serverBody) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// close: the handler returned; it reports the bytes left unread.
func (b *serverBody) close() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	n := len(b.buf) - b.r
	if b.pooled != nil {
		if cap(b.buf) == srvBodyBufSize { // not grown (else the grown one stays with the GC)
			srvBodyBufs.Put(b.pooled)
		}
		b.pooled = nil
	}
	b.buf, b.r = nil, 0
	if b.dlTimer != nil {
		b.dlTimer.Stop()
	}
	b.cond.Broadcast()
	return n
}

// Read reads the body, waiting for DATA.
func (b *serverBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	for {
		if b.r < len(b.buf) && len(p) > 0 {
			n := copy(p, b.buf[b.r:])
			b.r += n
			eof := b.eof
			b.mu.Unlock()
			b.consumed(n, eof)
			return n, nil
		}
		switch {
		case b.closed:
			b.mu.Unlock()
			return 0, srvErrBodyClosed
		case b.eof:
			b.mu.Unlock()
			return 0, io.EOF
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		case b.dlErr:
			b.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		case len(p) == 0:
			b.mu.Unlock()
			return 0, nil
		}
		if b.needContinue {
			b.needContinue = false
			b.mu.Unlock()
			b.st.resp.writeContinue()
			b.mu.Lock()
			continue
		}
		b.cond.Wait()
	}
}

// consumed gives n bytes read back to the windows, in batches.
func (b *serverBody) consumed(n int, eof bool) {
	st := b.st
	c := st.conn
	if !eof {
		b.unacked += int64(n)
		if b.unacked >= int64(c.srv.streamWindow()/4) {
			u := b.unacked
			b.unacked = 0
			c.mu.Lock()
			st.recvLeft += u // before the client can use it
			gone := st.remoteDone || st.removed
			c.mu.Unlock()
			if !gone {
				c.wmu.Lock()
				_ = c.fr.WriteWindowUpdate(st.id, uint32(u))
				c.flushLocked()
				c.wmu.Unlock()
			}
		}
	}
	c.giveBack(int64(n))
}

// Close is the handler closing the body: reads fail from now on, what
// arrives is dropped (its window given back).
func (b *serverBody) Close() error {
	if n := b.close(); n > 0 {
		b.st.conn.giveBack(int64(n))
	}
	return nil
}

// Buffered reports how many body bytes can be read now without blocking,
// and whether those are all that is left (END_STREAM has been received).
func (b *serverBody) Buffered() (n int, final bool) {
	b.mu.Lock()
	n, final = len(b.buf)-b.r, b.eof
	b.mu.Unlock()
	return n, final
}

// setDeadline bounds the reads of the body (http.ResponseController's
// SetReadDeadline).
func (b *serverBody) setDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dlTimer != nil {
		b.dlTimer.Stop()
	}
	b.dlErr = false
	if t.IsZero() {
		return
	}
	d := time.Until(t)
	if d <= 0 {
		b.dlErr = true
		b.cond.Broadcast()
		return
	}
	if b.dlTimer == nil {
		b.dlTimer = time.AfterFunc(d, b.deadlinePassed)
	} else {
		b.dlTimer.Reset(d)
	}
}

func (b *serverBody) deadlinePassed() {
	b.mu.Lock()
	b.dlErr = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

// srvCanonicalKey is the canonical form of a lowercase header name,
// without allocating for the common ones.
func srvCanonicalKey(k string) string {
	if ck, ok := srvCommonCanonical[k]; ok {
		return ck
	}
	return textproto.CanonicalMIMEHeaderKey(k)
}

var srvCommonLower = map[string]string{}

var srvCommonCanonical = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Authorization", "Cache-Control", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expect", "Expires",
		"From", "Host", "If-Match", "If-Modified-Since", "If-None-Match", "Last-Modified",
		"Link", "Location", "Origin", "Referer", "Server", "Set-Cookie", "Te", "Trailer",
		"User-Agent", "Vary", "Via", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id",
		"Traceparent", "Tracestate", "Grpc-Timeout", "Grpc-Encoding", "Grpc-Accept-Encoding",
		"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin", "Dapr-App-Id",
		"Dapr-Api-Token", "Dapr-Caller-App-Id", "Dapr-Caller-Namespace", "Dapr-Callee-App-Id",
		"Forwarded", "Content-Disposition", "Retry-After", "Www-Authenticate",
	} {
		lk := strings.ToLower(k)
		m[lk] = k
		srvCommonLower[k] = lk
	}
	return m
}()

// srvPlainPath reports whether path (starting with '/') holds only
// unreserved characters and '/': url.ParseRequestURI would return a URL
// with that Path and nothing else set.
func srvPlainPath(path string) bool {
	for i := 0; i < len(path); i++ {
		switch b := path[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9',
			b == '/', b == '-', b == '.', b == '_', b == '~':
		default:
			return false
		}
	}
	return true
}
