package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/net/http2"

	"github.com/meshd/meshd/proxy/internal/hostport"
	"github.com/meshd/meshd/proxy/internal/reqctx"
)

// clientBuffered is the shared contract of a body that knows what it holds.
type clientBuffered interface {
	Buffered() (n int, final bool)
}

// clientMaxTries bounds the tries of a refused stream.
const clientMaxTries = 3

var (
	errClientBodyClosed = errors.New("h2: response body closed")
	errClientUnusable   = fmt.Errorf("%w (connection takes no new streams)", ErrStreamRefused)
)

// clientStream is one request and its response.
type clientStream struct {
	cc  *clientConn
	id  uint32
	req *http.Request

	sendWindow int32 // under cc.mu
	wclosed    bool  // under cc.wmu: END_STREAM or RST_STREAM written
	wreset     bool  // under cc.wmu: RST_STREAM written

	watch ctxWatch    // of the request's context
	link  reqctx.Link // in a server request context's watch list

	mu       sync.Mutex
	cond     sync.Cond
	resp     *http.Response
	buf      []byte
	bufp     *[]byte // pooled backing of buf
	off      int
	eof      bool // END_STREAM received
	sendDone bool // the request side ended (END_STREAM written)
	err      error
	trailer  http.Header
	copied   bool  // trailers copied to resp.Trailer
	inflow   int32 // what the peer may still send on the stream
	unsent   int32
	finished bool // forgotten by the connection
}

// ctxWatch is a stream's watch of its request's context: in place on a
// request context of our servers (reqctx), or context.AfterFunc's.
type ctxWatch struct {
	sctx *reqctx.Ctx
	stop func() bool
}

func (w ctxWatch) active() bool { return w.sctx != nil || w.stop != nil }

// end stops the watch (cs's own); ending it twice does nothing more.
func (w ctxWatch) end(cs *clientStream) {
	switch {
	case w.sctx != nil:
		w.sctx.Unwatch(&cs.link)
	case w.stop != nil:
		w.stop()
	}
}

// Abort is the request context's end (reqctx.Aborter): the stream is
// reset (RST_STREAM CANCEL, context.Canceled for the caller) from a
// goroutine of its own, as the context may end on a server connection's
// reader, which must not wait on this connection's writes.
func (cs *clientStream) Abort() {
	go cs.reset(http2.ErrCodeCancel, context.Canceled)
}

var clientBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.URL == nil {
		clientCloseReqBody(req)
		return nil, errors.New("h2: request has no URL")
	}
	addr := hostport.DialAddr(req.URL)
	hl, err := clientCheckHeaders(req)
	if err != nil {
		clientCloseReqBody(req)
		return nil, err
	}
	// The body: nil, in memory (inline, sent with the headers when the
	// windows allow), or streamed by a writer goroutine.
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	var inline *[]byte
	streamed := false
	if body != nil {
		n, final := -1, false
		if b, ok := body.(clientBuffered); ok {
			n, final = b.Buffered()
		}
		switch {
		case final && n <= int(t.inline()):
			inline, err = clientReadInline(body, n, true)
		case req.ContentLength > 0 && req.ContentLength <= t.inline():
			inline, err = clientReadInline(body, int(req.ContentLength), false)
		default:
			streamed = true
		}
		if err != nil {
			return nil, err
		}
	}
	defer func() {
		if inline != nil {
			clientBufPool.Put(inline)
		}
	}()
	var data []byte
	if inline != nil {
		data = *inline
	}
	var skip *clientConn
	for try := 1; ; try++ {
		cc, err := t.getConn(ctx, addr, skip)
		if err != nil {
			if streamed {
				clientCloseReqBody(req)
			}
			return nil, err
		}
		resp, wrote, err := cc.roundTrip(ctx, req, hl, body != nil, data, streamed)
		if wrote && inline != nil {
			// The writer goroutine sends from it: never back to the pool.
			inline = nil
		}
		if err == nil {
			return resp, nil
		}
		if !errors.Is(err, ErrStreamRefused) || try == clientMaxTries || ctx.Err() != nil {
			return nil, err
		}
		if wrote && streamed { // a streamed body was read: send it again only with GetBody
			if req.GetBody == nil {
				return nil, err
			}
			b, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			r2 := *req
			r2.Body = b
			req = &r2
		}
		skip = cc
	}
}

// readInline reads the n bytes of body that are there (and, with final,
// checks that they are all), then closes body.
func clientReadInline(body io.ReadCloser, n int, final bool) (*[]byte, error) {
	bp := clientBufPool.Get().(*[]byte)
	b := *bp
	if cap(b) < n+1 {
		b = make([]byte, 0, n+1)
	}
	b = b[:n+1]
	_, err := io.ReadFull(body, b[:n])
	if err == nil && final {
		var m int
		m, err = body.Read(b[n : n+1])
		if err == io.EOF && m == 0 {
			err = nil
		} else if err == nil {
			err = errors.New("body longer than Buffered said")
		}
	}
	_ = body.Close()
	if err != nil {
		clientBufPool.Put(bp)
		return nil, fmt.Errorf("%w: %w", ErrRequestBody, err)
	}
	*bp = b[:n]
	return bp, nil
}

func clientCloseReqBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// roundTrip runs one try of req on cc (a slot reserved): it opens the
// stream, writes headers and inline data, and waits for the response
// headers. wrote reports whether a streamed body was handed to the writer.
func (cc *clientConn) roundTrip(ctx context.Context, req *http.Request, hl uint32, hasBody bool, data []byte, streamed bool) (*http.Response, bool, error) {
	cs := &clientStream{cc: cc, req: req, inflow: cc.t.streamWindow()}
	cs.cond.L = &cs.mu
	endWithHeaders := !hasBody
	cc.wmu.Lock()
	cc.mu.Lock()
	cc.reserved--
	if cc.closed || cc.goAway || cc.nextID > clientLastStreamID {
		cc.goAway = true
		cc.mu.Unlock()
		cc.wmu.Unlock()
		return nil, false, errClientUnusable
	}
	if cc.peerMaxHeaders != 0 && hl > cc.peerMaxHeaders {
		cc.mu.Unlock()
		cc.wmu.Unlock()
		return nil, false, fmt.Errorf("h2: request headers (%d bytes) exceed the server's limit of %d", hl, cc.peerMaxHeaders)
	}
	cs.id = cc.nextID
	cc.nextID += 2
	cc.streams[cs.id] = cs
	cs.sendWindow = cc.initialWindow
	// Inline data leaves with the headers if the windows allow it all.
	inlineNow := !streamed && hasBody && int64(len(data)) <= int64(min(cc.sendWindow, cs.sendWindow)) && uint32(len(data)) <= cc.maxFrame
	if inlineNow {
		cc.sendWindow -= int32(len(data))
		cs.sendWindow -= int32(len(data))
	}
	maxFrame := cc.maxFrame
	cc.mu.Unlock()

	cc.hbuf.Reset()
	clientEncodeHeaders(cc.henc, req, hasBody)
	block := cc.hbuf.Bytes()
	err := cc.werr
	if err == nil {
		err = cc.writeHeaderBlock(cs.id, block, endWithHeaders, maxFrame)
	}
	if err == nil && inlineNow {
		err = cc.fr.WriteData(cs.id, true, data)
	}
	if err == nil {
		cc.flushLocked()
		err = cc.werr
	}
	ended := endWithHeaders || inlineNow
	if ended {
		cs.wclosed = true
	}
	cc.wmu.Unlock()
	if err != nil {
		cc.writeErrClose(err)
		cs.fail(fmt.Errorf("%w: write: %w", ErrConnClosed, err), false)
		return nil, false, cs.abortErr()
	}
	if ended {
		cs.sendFinished()
	}
	if sc, ok := ctx.(*reqctx.Ctx); ok { // our servers' request: no allocation
		cs.mu.Lock()
		canceled := false
		if cs.err == nil {
			if sc.Watch(&cs.link, cs) {
				cs.watch.sctx = sc
			} else {
				canceled = true
			}
		}
		cs.mu.Unlock()
		if canceled {
			cs.reset(http2.ErrCodeCancel, context.Canceled)
		}
	} else if ctx.Done() != nil {
		cs.mu.Lock()
		if cs.err == nil {
			cs.watch.stop = context.AfterFunc(ctx, func() { cs.reset(http2.ErrCodeCancel, ctx.Err()) })
		}
		cs.mu.Unlock()
	}
	wrote := false
	if hasBody && !inlineNow {
		wrote = true
		var body io.ReadCloser
		if streamed {
			body = req.Body
		}
		go cs.writeBody(data, body)
	}
	cs.mu.Lock()
	for cs.resp == nil && cs.err == nil {
		cs.cond.Wait()
	}
	resp, err := cs.resp, cs.err
	w := cs.watch
	done := cs.finished
	cs.mu.Unlock()
	if err != nil {
		return nil, wrote, err
	}
	if done {
		w.end(cs) // all over (a trailers-only answer): nothing left to cancel
	}
	return resp, wrote, nil
}

// writeErrClose closes cc after a failed write.
func (cc *clientConn) writeErrClose(err error) {
	cc.closeWith(fmt.Errorf("%w: write: %w", ErrConnClosed, err))
}

// writeHeaderBlock writes a HEADERS frame and its CONTINUATIONs (wmu held).
func (cc *clientConn) writeHeaderBlock(id uint32, block []byte, end bool, maxFrame uint32) error {
	first := true
	for first || len(block) > 0 {
		frag := block
		if uint32(len(frag)) > maxFrame {
			frag = frag[:maxFrame]
		}
		block = block[len(frag):]
		var err error
		if first {
			err = cc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = cc.fr.WriteContinuation(id, len(block) == 0, frag)
		}
		if err != nil {
			cc.writeErrLocked(err)
			return err
		}
	}
	return nil
}

// writeBody sends pre, then what body yields (if not nil), in DATA frames
// as the windows allow, then END_STREAM (and trailers). It runs on its
// own goroutine.
func (cs *clientStream) writeBody(pre []byte, body io.ReadCloser) {
	err := cs.sendBody(pre, body)
	if body != nil {
		_ = body.Close()
	}
	if err != nil {
		cs.reset(http2.ErrCodeCancel, err)
		return
	}
	cs.sendFinished()
}

// sendFinished: the request side ended (END_STREAM written). The stream
// is forgotten once the response ended too.
func (cs *clientStream) sendFinished() {
	cs.mu.Lock()
	cs.sendDone = true
	done := cs.eof && !cs.finished
	if done {
		cs.finished = true
	}
	cs.mu.Unlock()
	if done {
		cs.cc.forgetStream(cs)
	}
}

func (cs *clientStream) sendBody(pre []byte, body io.ReadCloser) error {
	cc := cs.cc
	var bp *[]byte
	var buf []byte
	if body != nil {
		bp = clientBufPool.Get().(*[]byte)
		defer clientBufPool.Put(bp)
		buf = (*bp)[:cap(*bp)]
	}
	eof := body == nil
	for {
		p := pre
		pre = nil
		if p == nil && !eof {
			n, err := body.Read(buf)
			p = buf[:n]
			if err == io.EOF {
				eof = true
			} else if err != nil {
				return fmt.Errorf("%w: %w", ErrRequestBody, err)
			}
		}
		for {
			// Wait for both windows, then send what they allow.
			cc.mu.Lock()
			for len(p) > 0 && (cc.sendWindow <= 0 || cs.sendWindow <= 0) && !cc.closed && !cs.aborted() {
				cc.cond.Wait()
			}
			if cc.closed || cs.aborted() {
				err := cc.err
				cc.mu.Unlock()
				if e := cs.abortErr(); e != nil {
					return e
				}
				return err
			}
			k := min(int32(len(p)), cc.sendWindow, cs.sendWindow, int32(cc.maxFrame))
			cc.sendWindow -= k
			cs.sendWindow -= k
			cc.mu.Unlock()
			last := eof && int(k) == len(p) && len(cs.req.Trailer) == 0
			cc.wmu.Lock()
			if cs.wclosed {
				cc.wmu.Unlock()
				return cs.abortErr()
			}
			err := cc.werr
			if err == nil {
				if err = cc.fr.WriteData(cs.id, last, p[:k]); err != nil {
					cc.writeErrLocked(err)
				} else {
					cc.flushLocked()
					err = cc.werr
				}
			}
			if last {
				cs.wclosed = true
			}
			cc.wmu.Unlock()
			if err != nil {
				return fmt.Errorf("%w: write: %w", ErrConnClosed, err)
			}
			p = p[k:]
			if len(p) == 0 {
				break
			}
		}
		if eof {
			return cs.endRequest()
		}
	}
}

// endRequest writes the request trailers (END_STREAM), if it was not sent
// with the last DATA.
func (cs *clientStream) endRequest() error {
	cc := cs.cc
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cs.wclosed {
		if cs.wreset {
			return cs.abortErr()
		}
		return nil
	}
	cs.wclosed = true
	if cc.werr != nil {
		return cc.werr
	}
	cc.mu.Lock()
	maxFrame := cc.maxFrame
	cc.mu.Unlock()
	cc.hbuf.Reset()
	for k, vv := range cs.req.Trailer {
		name := clientLower(k)
		for _, v := range vv {
			_ = cc.henc.WriteField(hpackField(name, v))
		}
	}
	if err := cc.writeHeaderBlock(cs.id, cc.hbuf.Bytes(), true, maxFrame); err != nil {
		return err
	}
	cc.flushLocked()
	return cc.werr
}

// aborted reports whether cs failed (any lock).
func (cs *clientStream) aborted() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.err != nil
}

func (cs *clientStream) abortErr() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.err == nil {
		return errClientBodyClosed
	}
	return cs.err
}

// fail ends cs with err (unless it ended already). With rst, the server
// is told: RST_STREAM with code.
func (cs *clientStream) fail(err error, rst bool) {
	cs.failCode(err, rst, http2.ErrCodeCancel)
}

func (cs *clientStream) failCode(err error, rst bool, code http2.ErrCode) {
	cs.mu.Lock()
	if cs.err != nil || (cs.finished && cs.eof && cs.off == len(cs.buf)) {
		cs.mu.Unlock()
		return
	}
	w := cs.watch
	cs.err = err
	unread := int32(len(cs.buf)-cs.off) + cs.unsent
	needRST := rst && !(cs.eof && cs.sendDone)
	cs.buf, cs.off, cs.unsent = nil, 0, 0
	if cs.bufp != nil {
		clientBufPool.Put(cs.bufp)
		cs.bufp = nil
	}
	finished := cs.finished
	cs.finished = true
	cs.cond.Broadcast()
	cs.mu.Unlock()
	cc := cs.cc
	if needRST {
		cc.wmu.Lock()
		if !cs.wreset && cc.werr == nil && cs.id != 0 {
			cs.wreset, cs.wclosed = true, true
			if werr := cc.fr.WriteRSTStream(cs.id, code); werr != nil {
				cc.writeErrLocked(werr)
			}
			cc.flushLocked()
		}
		cc.wmu.Unlock()
	} else {
		cc.wmu.Lock()
		cs.wclosed = true
		cc.wmu.Unlock()
	}
	if !finished {
		cc.forgetStream(cs)
	}
	if unread > 0 {
		cc.consumed(nil, unread, 0)
	}
	w.end(cs)
}

// reset ends cs on our side: RST_STREAM(code) and err for the caller.
func (cs *clientStream) reset(code http2.ErrCode, err error) {
	cs.failCode(err, true, code)
}

// onReset handles the server's RST_STREAM.
func (cs *clientStream) onReset(code http2.ErrCode) {
	cs.mu.Lock()
	gotHeaders := cs.resp != nil
	eof := cs.eof
	cs.mu.Unlock()
	if eof && code == http2.ErrCodeNo {
		// The answer is complete; the server needs no more of the request.
		cs.cc.wmu.Lock()
		cs.wclosed, cs.wreset = true, true
		cs.cc.wmu.Unlock()
		cs.mu.Lock()
		cs.sendDone = true
		done := !cs.finished
		cs.finished = true
		cs.cond.Broadcast()
		cs.mu.Unlock()
		if done {
			cs.cc.forgetStream(cs)
		}
		return
	}
	var err error
	if code == http2.ErrCodeRefusedStream && !gotHeaders {
		err = fmt.Errorf("%w (RST_STREAM %v)", ErrStreamRefused, code)
	} else {
		err = fmt.Errorf("h2: stream reset by the server: %w", http2.StreamError{StreamID: cs.id, Code: code})
	}
	cs.cc.wmu.Lock()
	cs.wreset, cs.wclosed = true, true // no RST in answer to one
	cs.cc.wmu.Unlock()
	cs.fail(err, false)
}

// onHeaders handles response headers, informational answers and
// trailers (the reader's goroutine).
func (cs *clientStream) onHeaders(f *http2.MetaHeadersFrame) {
	cs.mu.Lock()
	if cs.err != nil {
		cs.mu.Unlock()
		return
	}
	if cs.eof {
		cs.mu.Unlock()
		cs.reset(http2.ErrCodeStreamClosed, fmt.Errorf("%w: HEADERS after END_STREAM", ErrProtocol))
		return
	}
	if cs.resp != nil { // trailers
		if !f.StreamEnded() {
			cs.mu.Unlock()
			cs.reset(http2.ErrCodeProtocol, fmt.Errorf("%w: trailers without END_STREAM", ErrProtocol))
			return
		}
		if len(f.PseudoFields()) > 0 {
			cs.mu.Unlock()
			cs.reset(http2.ErrCodeProtocol, fmt.Errorf("%w: pseudo-header in trailers", ErrProtocol))
			return
		}
		cs.trailer = clientHeader(f.RegularFields())
		cs.eof = true
		cs.cond.Broadcast()
		cs.mu.Unlock()
		cs.recvDone()
		return
	}
	resp, err := cs.newResponse(f)
	if err != nil {
		cs.mu.Unlock()
		cs.reset(http2.ErrCodeProtocol, err)
		return
	}
	if resp == nil { // 1xx
		cs.mu.Unlock()
		return
	}
	cs.resp = resp
	if f.StreamEnded() {
		cs.eof = true
	}
	cs.cond.Broadcast()
	cs.mu.Unlock()
	if f.StreamEnded() {
		cs.recvDone()
	}
}

// newResponse builds the response of f, nil for an informational one.
func (cs *clientStream) newResponse(f *http2.MetaHeadersFrame) (*http.Response, error) {
	status := f.PseudoValue("status")
	if len(status) != 3 {
		return nil, fmt.Errorf("%w: bad :status %q", ErrProtocol, status)
	}
	code, err := strconv.Atoi(status)
	if err != nil || code < 100 {
		return nil, fmt.Errorf("%w: bad :status %q", ErrProtocol, status)
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols || f.StreamEnded() {
			return nil, fmt.Errorf("%w: :status %d", ErrProtocol, code)
		}
		return nil, nil
	}
	h := clientHeader(f.RegularFields())
	resp := &http.Response{
		Status:        clientStatus(status, code),
		StatusCode:    code,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		ContentLength: -1,
		Request:       cs.req,
		TLS:           cs.cc.tls,
	}
	if cl := h["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			resp.ContentLength = n
		}
	}
	if vv := h["Trailer"]; len(vv) > 0 {
		resp.Trailer = http.Header{}
		for _, v := range vv {
			for _, k := range clientSplitComma(v) {
				resp.Trailer[http.CanonicalHeaderKey(k)] = nil
			}
		}
	}
	if f.StreamEnded() {
		if resp.ContentLength < 0 {
			resp.ContentLength = 0
		}
		resp.Body = http.NoBody
	} else {
		resp.Body = cs
	}
	return resp, nil
}

// onData handles a DATA frame of n bytes (padding included).
func (cs *clientStream) onData(f *http2.DataFrame, n int32) {
	data := f.Data()
	cs.mu.Lock()
	if cs.err != nil {
		cs.mu.Unlock()
		cs.cc.consumed(nil, n, 0)
		return
	}
	if cs.resp == nil || cs.eof {
		cs.mu.Unlock()
		cs.cc.consumed(nil, n, 0)
		cs.reset(http2.ErrCodeProtocol, fmt.Errorf("%w: DATA before HEADERS or after END_STREAM", ErrProtocol))
		return
	}
	if n > cs.inflow {
		cs.mu.Unlock()
		cs.cc.consumed(nil, n, 0)
		cs.reset(http2.ErrCodeFlowControl, fmt.Errorf("%w: DATA beyond the stream's window", ErrProtocol))
		return
	}
	cs.inflow -= n
	if len(data) > 0 {
		if cs.bufp == nil && len(cs.buf) == 0 {
			cs.bufp = clientBufPool.Get().(*[]byte)
			cs.buf = (*cs.bufp)[:0]
		}
		cs.buf = append(cs.buf, data...)
	}
	pad := n - int32(len(data))
	end := f.StreamEnded()
	if end {
		cs.eof = true
	}
	cs.cond.Signal()
	cs.mu.Unlock()
	if pad > 0 {
		cs.consume(pad)
	}
	if end {
		cs.recvDone()
	}
}

// recvDone: END_STREAM arrived. The stream is forgotten once the request
// side ended too.
func (cs *clientStream) recvDone() {
	cs.mu.Lock()
	done := cs.sendDone && !cs.finished
	if done {
		cs.finished = true
	}
	cs.mu.Unlock()
	if done {
		cs.cc.forgetStream(cs)
	}
}

// consume gives n bytes back to the stream's and connection's windows.
func (cs *clientStream) consume(n int32) {
	var k int32
	cs.mu.Lock()
	if !cs.eof && cs.err == nil {
		cs.unsent += n
		if cs.unsent >= cs.cc.t.streamWindow()/4 {
			k = cs.unsent
			cs.inflow += k
			cs.unsent = 0
		}
	}
	cs.mu.Unlock()
	cs.cc.consumed(cs, n, k)
}

// Read reads the response body. Trailers are in resp.Trailer when it
// returns io.EOF.
func (cs *clientStream) Read(p []byte) (int, error) {
	cs.mu.Lock()
	for cs.off == len(cs.buf) && !cs.eof && cs.err == nil {
		cs.cond.Wait()
	}
	if cs.err != nil {
		err := cs.err
		cs.mu.Unlock()
		return 0, err
	}
	n := copy(p, cs.buf[cs.off:])
	cs.off += n
	if cs.off == len(cs.buf) {
		cs.buf, cs.off = cs.buf[:0], 0
	}
	end := cs.eof && len(cs.buf) == 0
	var w ctxWatch
	if end {
		cs.copyTrailers()
		w = cs.watch
	}
	cs.mu.Unlock()
	if n > 0 {
		cs.consume(int32(n))
	}
	if end {
		if w.active() && cs.sendDoneNow() {
			w.end(cs)
		}
		return n, io.EOF
	}
	return n, nil
}

// copyTrailers puts the trailers into resp.Trailer (cs.mu held).
func (cs *clientStream) copyTrailers() {
	if cs.copied {
		return
	}
	cs.copied = true
	if cs.bufp != nil {
		*cs.bufp = cs.buf[:0]
		clientBufPool.Put(cs.bufp)
		cs.bufp, cs.buf = nil, nil
	}
	if len(cs.trailer) == 0 {
		return
	}
	if cs.resp.Trailer == nil {
		cs.resp.Trailer = cs.trailer // the reader is done with it
		return
	}
	for k, v := range cs.trailer {
		cs.resp.Trailer[k] = v
	}
}

// Buffered reports how many body bytes can be read without blocking, and
// whether they are all that is left (END_STREAM received).
func (cs *clientStream) Buffered() (int, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.buf) - cs.off, cs.eof && cs.err == nil
}

// Close ends the response body. Before its end, the stream is reset
// (RST_STREAM CANCEL).
func (cs *clientStream) Close() error {
	cs.mu.Lock()
	complete := cs.eof && cs.off == len(cs.buf) && cs.sendDone
	cs.mu.Unlock()
	if complete {
		cs.mu.Lock()
		cs.copyTrailers()
		cs.mu.Unlock()
		cs.mu.Lock()
		w := cs.watch
		cs.mu.Unlock()
		w.end(cs)
		return nil
	}
	cs.reset(http2.ErrCodeCancel, errClientBodyClosed)
	return nil
}

func (cs *clientStream) sendDoneNow() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.sendDone
}

// clientStatus is the Status of a response: "200 OK" without an
// allocation for the common answer.
func clientStatus(status string, code int) string {
	if code == http.StatusOK {
		return "200 OK"
	}
	return status + " " + http.StatusText(code)
}
