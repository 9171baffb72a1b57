package h2

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// serverResponse is the http.ResponseWriter of a stream. Its handler
// writes the frames itself, under the connection's write mutex.
type serverResponse struct {
	st          *serverStream
	header      http.Header
	status      int
	wroteHeader bool
	headSent    bool
	endSent     bool // END_STREAM sent
	done        bool // the handler returned
	failed      bool // a write failed or the handler panicked: the stream is reset
	clen        int64
	written     int64
}

var (
	_ http.ResponseWriter = (*serverResponse)(nil)
	_ http.Flusher        = (*serverResponse)(nil)
)

func (w *serverResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 4)
	}
	return w.header
}

// AdoptHeader makes h w's header map if the handler never asked for w's
// own (Header) and nothing was written yet: a proxy passing an answer on
// saves making a map and copying into it. The caller gives h up: it is w's
// from now on. It reports whether it did; if not, copy h into w.Header().
func (w *serverResponse) AdoptHeader(h http.Header) bool {
	if w.header != nil || w.wroteHeader || w.done || h == nil {
		return false
	}
	w.header = h
	return true
}

func (w *serverResponse) WriteHeader(code int) {
	if w.wroteHeader || w.done {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("h2: invalid WriteHeader code %d", code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols {
			w.writeInformational(code)
		}
		return
	}
	w.wroteHeader, w.status = true, code
	if cl, ok := w.header["Content-Length"]; ok && len(cl) == 1 {
		if n, err := strconv.ParseUint(cl[0], 10, 63); err == nil {
			w.clen = int64(n)
		}
	}
}

func (w *serverResponse) bodyless() bool {
	return w.st.req.Method == http.MethodHead || w.status == http.StatusNoContent || w.status == http.StatusNotModified
}

func (w *serverResponse) Write(p []byte) (int, error) {
	if w.done {
		return 0, srvErrHandlerDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.bodyless() {
		if w.st.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	if !w.headSent {
		if err := w.writeHead(false); err != nil {
			return 0, err
		}
	}
	n, err := w.writeData(p)
	w.written += int64(n)
	return n, err
}

func (w *serverResponse) WriteString(s string) (int, error) {
	return w.Write([]byte(s)) // the compiler avoids the copy for short-lived conversions
}

// writeData sends p as DATA frames within the flow-control windows.
func (w *serverResponse) writeData(p []byte) (int, error) {
	st := w.st
	c := st.conn
	sent := 0
	for sent < len(p) {
		n, err := c.takeWindow(st, len(p)-sent)
		if err != nil {
			w.failed = true
			return sent, err
		}
		c.wmu.Lock()
		if c.werr != nil {
			err := c.werr
			c.wmu.Unlock()
			w.failed = true
			return sent, err
		}
		_ = c.fr.WriteData(st.id, false, p[sent:sent+n])
		if err := c.werr; err != nil { // a write straight through bw failed
			c.wmu.Unlock()
			w.failed = true
			return sent, err
		}
		c.wmu.Unlock()
		sent += n
	}
	return sent, nil
}

// takeWindow waits until the stream and the connection may send, and takes
// up to want bytes of their windows (one frame's worth at most).
func (c *serverConn) takeWindow(st *serverStream, want int) (int, error) {
	var timer *time.Timer
	flushed := false
	var expired *bool // this wait's timer fired (under c.mu); made with the timer, so a wait without one allocates nothing
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		switch {
		case st.stalled:
			return 0, srvErrSendTimeout
		case st.resetByPeer || st.resetSent:
			return 0, srvErrStreamReset
		case c.closed:
			return 0, srvErrClientGone
		}
		if n := min(int64(want), st.sendWin, c.sendWin, c.peerFrame.Load()); n > 0 {
			st.sendWin -= n
			c.sendWin -= n
			return int(n), nil
		}
		if expired != nil && *expired {
			// Only a wait that timed out marks the stream: a timer firing
			// just after its wait got the window must not fail the next
			// write.
			st.stalled = true
			return 0, srvErrSendTimeout
		}
		if !flushed {
			// What waits in the buffer must leave, or the client may
			// never see a reason to open the window.
			flushed = true
			c.mu.Unlock()
			c.wmu.Lock()
			c.flushLocked()
			c.wmu.Unlock()
			c.mu.Lock()
			continue
		}
		if timer == nil {
			if t := c.srv.sendTimeout(); t > 0 {
				fired := new(bool)
				expired = fired
				timer = time.AfterFunc(t, func() {
					c.mu.Lock()
					*fired = true
					c.cond.Broadcast()
					c.mu.Unlock()
				})
			}
		}
		c.cond.Wait()
	}
}

// Flush sends what was written so far.
func (w *serverResponse) Flush() { _ = w.FlushError() }

// FlushError is Flush with the error (http.ResponseController uses it).
func (w *serverResponse) FlushError() error {
	if w.done {
		return srvErrHandlerDone
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		if err := w.writeHead(false); err != nil {
			return err
		}
	}
	c := w.st.conn
	c.flushSoon()
	c.flushDone()
	c.wmu.Lock()
	err := c.werr
	c.wmu.Unlock()
	return err
}

// EnableFullDuplex: this server always lets a handler read the request
// body while it writes the response.
func (w *serverResponse) EnableFullDuplex() error { return nil }

// SetReadDeadline bounds the request body's reads.
func (w *serverResponse) SetReadDeadline(t time.Time) error {
	w.st.body.setDeadline(t)
	return nil
}

// SetWriteDeadline is accepted and not enforced beyond SendTimeout.
func (w *serverResponse) SetWriteDeadline(time.Time) error { return nil }

// finish ends the response when the handler returns: the head if not sent,
// END_STREAM (on the head, an empty DATA frame or the trailers), a flush
// (shared with the other answers finishing at the same time).
func (w *serverResponse) finish() {
	if w.failed || w.st.gone.Load() {
		return
	}
	c := w.st.conn
	c.flushSoon()
	defer c.flushDone()
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	hasTrailers := w.hasTrailers()
	if !w.headSent {
		if err := w.writeHead(!hasTrailers); err != nil || !hasTrailers {
			return
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		w.failed = true
		return
	}
	if hasTrailers {
		c.hbuf.Reset()
		w.encodeTrailers()
		c.writeBlockLocked(w.st.id, true)
	} else {
		_ = c.fr.WriteData(w.st.id, true, nil)
	}
	w.endSent = true
}

// hasTrailers: the handler set a declared trailer or one with
// http.TrailerPrefix (declared ones left unset send none, as net/http).
func (w *serverResponse) hasTrailers() bool {
	for _, v := range w.header["Trailer"] {
		for v != "" {
			var k string
			k, v, _ = strings.Cut(v, ",")
			if len(w.header[http.CanonicalHeaderKey(strings.TrimSpace(k))]) > 0 {
				return true
			}
		}
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// writeHead writes the HEADERS (and CONTINUATION) frames of the answer.
func (w *serverResponse) writeHead(end bool) error {
	st := w.st
	c := st.conn
	w.headSent = true
	if st.gone.Load() {
		w.failed = true
		return srvErrStreamReset
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		w.failed = true
		return c.werr
	}
	c.hbuf.Reset()
	c.encodeField(":status", srvStatus(w.status))
	declared := w.header["Trailer"]
	for k, vv := range w.header {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		case "Content-Length":
			if w.clen < 0 || w.status == http.StatusNoContent {
				continue
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || declared != nil && srvDeclares(declared, k) {
			continue
		}
		c.encodeFields(k, vv)
	}
	if _, ok := w.header["Date"]; !ok {
		c.encodeField("date", srvDate())
	}
	c.writeBlockLocked(st.id, end)
	if end {
		w.endSent = true
	}
	return nil
}

// encodeTrailers encodes the trailers (wmu held): the declared ones with a
// value and those set with http.TrailerPrefix.
func (w *serverResponse) encodeTrailers() {
	c := w.st.conn
	for _, v := range w.header["Trailer"] {
		for v != "" {
			var k string
			k, v, _ = strings.Cut(v, ",")
			k = http.CanonicalHeaderKey(strings.TrimSpace(k)) // no allocation when canonical already
			if vv, ok := w.header[k]; ok && srvAllowedTrailer(k) {
				c.encodeFields(k, vv)
			}
		}
	}
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if k = k[len(http.TrailerPrefix):]; srvAllowedTrailer(k) {
				c.encodeFields(k, vv)
			}
		}
	}
}

// writeContinue sends "100 Continue" before the first body read.
func (w *serverResponse) writeContinue() {
	if w.headSent || w.st.gone.Load() {
		return
	}
	c := w.st.conn
	c.wmu.Lock()
	c.hbuf.Reset()
	c.encodeField(":status", "100")
	c.writeBlockLocked(w.st.id, false)
	c.flushLocked()
	c.wmu.Unlock()
}

func (w *serverResponse) writeInformational(code int) {
	if w.headSent || w.st.gone.Load() {
		return
	}
	c := w.st.conn
	c.wmu.Lock()
	c.hbuf.Reset()
	c.encodeField(":status", srvStatus(code))
	for k, vv := range w.header {
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			c.encodeFields(k, vv)
		}
	}
	c.writeBlockLocked(w.st.id, false)
	c.flushLocked()
	c.wmu.Unlock()
}

// encodeFields encodes k's values (wmu held), dropping invalid ones.
func (c *serverConn) encodeFields(k string, vv []string) {
	if !httpguts.ValidHeaderFieldName(k) {
		return
	}
	lk := c.lowerKey(k)
	for _, v := range vv {
		if !httpguts.ValidHeaderFieldValue(v) {
			continue
		}
		c.encodeField(lk, v)
	}
}

// lowerKey is the wire (lowercase) form of k: the common names from a
// table, others from the package's bounded cache (clientLower's), so an
// application's own metadata keys are lowercased once, not per answer.
func (c *serverConn) lowerKey(k string) string {
	if lk, ok := srvCommonLower[k]; ok {
		return lk
	}
	return clientLower(k)
}

func (c *serverConn) encodeField(k, v string) {
	_ = c.henc.WriteField(hpackField(k, v))
}

// writeBlockLocked writes hbuf as HEADERS and CONTINUATION frames (wmu
// held).
func (c *serverConn) writeBlockLocked(id uint32, end bool) {
	block := c.hbuf.Bytes()
	max := int(c.peerFrame.Load())
	first := block[:min(len(block), max)]
	block = block[len(first):]
	_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		frag := block[:min(len(block), max)]
		block = block[len(frag):]
		_ = c.fr.WriteContinuation(id, len(block) == 0, frag)
	}
}

// srvStatuses holds the :status values of the common codes.
var srvStatuses = func() map[int]string {
	m := map[int]string{}
	for code := 100; code < 600; code++ {
		if http.StatusText(code) != "" {
			m[code] = strconv.Itoa(code)
		}
	}
	return m
}()

func srvStatus(code int) string {
	if s, ok := srvStatuses[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}

// srvDeclares reports whether a Trailer header's values declare the
// canonical key k (without allocating).
func srvDeclares(trailer []string, k string) bool {
	for _, v := range trailer {
		for v != "" {
			var d string
			d, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(d), k) {
				return true
			}
		}
	}
	return false
}

func srvAllowedTrailer(k string) bool {
	switch k {
	case "", "Transfer-Encoding", "Content-Length", "Trailer", "Connection", "Host", "Keep-Alive", "Proxy-Connection", "Upgrade", "Te":
		return false
	}
	return httpguts.ValidHeaderFieldName(k)
}

// srvDate is the current time in the Date header's format, formatted once a
// second.
func srvDate() string {
	now := time.Now().Unix()
	if d := srvDateCache.Load(); d != nil && d.sec == now {
		return d.s
	}
	d := &srvCachedDate{sec: now, s: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	srvDateCache.Store(d)
	return d.s
}

type srvCachedDate struct {
	sec int64
	s   string
}

var srvDateCache atomic.Pointer[srvCachedDate]
