package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/meshd/meshd/proxy/internal/h1"
)

// Defaults of Config.MaxHeaderFields and Config.BodyReadTimeout (those of
// the HTTP/1.x server).
const (
	DefaultMaxHeaderFields = h1.DefaultMaxHeaderFields
	DefaultBodyReadTimeout = h1.DefaultBodyReadTimeout
)

// internalHeaderSlack is how many more header fields the internal port
// accepts than the app-facing ports: the caller sidecar adds a few
// (traceparent, tracestate, the call's deadline) to a request that was
// within the limit.
const internalHeaderSlack = 16

// maxFields is Config.MaxHeaderFields with its default; -1: no bound.
func (p *Proxy) maxFields() int {
	switch {
	case p.cfg.MaxHeaderFields > 0:
		return p.cfg.MaxHeaderFields
	case p.cfg.MaxHeaderFields < 0:
		return -1
	}
	return DefaultMaxHeaderFields
}

// bodyTimeout is Config.BodyReadTimeout with its default; 0: no bound.
func (p *Proxy) bodyTimeout() time.Duration {
	switch {
	case p.cfg.BodyReadTimeout > 0:
		return p.cfg.BodyReadTimeout
	case p.cfg.BodyReadTimeout < 0:
		return 0
	}
	return DefaultBodyReadTimeout
}

// refusal renders proxy/internal/h1's answer to a request it refuses (malformed,
// head too large, too many fields) as the sidecar's JSON error.
func refusal(status int, reason string) (http.Header, []byte) {
	code := ErrCodeMalformed
	if status == http.StatusRequestHeaderFieldsTooLarge {
		code = ErrCodeHeadersTooLarge
	}
	b, _ := json.Marshal(errorBody{ErrorCode: code, Message: "proxy: request refused: " + reason})
	return http.Header{"Content-Type": jsonContentType, HeaderErrorCode: {code}}, b
}

// limited wraps the handler of a port's net/http server (HTTP/2 on every
// port, and the gRPC port): what proxy/internal/h1's server enforces while parsing,
// here before any other work — at most maxFields header fields (431), and
// a request body that keeps making progress (h1.BodyProgress bytes per
// timeout of waiting; the handler answers 408). gRPC calls are exempt from
// the body timeout: a gRPC stream may rightly stay quiet for long, and has
// its own deadline and keepalives.
func limited(h http.Handler, maxFields int, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if maxFields >= 0 && tooManyFields(r.Header, maxFields) {
			writeError(w, isGRPCRequest(r), http.StatusRequestHeaderFieldsTooLarge, ErrCodeHeadersTooLarge,
				"proxy: request refused: more than "+strconv.Itoa(maxFields)+" header fields")
			return
		}
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			// Only net/http's HTTP/1.x server (--h1-server nethttp) gets
			// here. It has already dropped a Content-Length sent beside
			// "Transfer-Encoding: chunked" and reads the body as chunked,
			// so it cannot refuse that ambiguous framing as
			// proxy/internal/h1 does. RFC 9112 section 6.3 leaves the
			// server one other choice: read by Transfer-Encoding and close
			// the connection after the answer. Nothing sent after such a
			// body is ever served.
			w = &closingWriter{ResponseWriter: w}
		}
		if timeout > 0 && r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && !isGRPCRequest(r) {
			orig := r.Body
			b := &progressBody{rc: orig, w: w, timeout: timeout}
			r.Body = b
			// net/http's server decides whether to keep the connection by
			// looking at r.Body after the handler: it must find its own
			// body again, or an upload left unread (an early answer) is
			// taken for the next request on the connection.
			defer func() { b.stop(); r.Body = orig }()
		}
		h.ServeHTTP(w, r)
	})
}

// tooManyFields reports whether h holds more than max field lines
// (without allocating: the walk of a map of a dozen keys).
func tooManyFields(h http.Header, max int) bool {
	if len(h) > max {
		return true
	}
	n := 0
	for _, vv := range h {
		if n += len(vv); n > max {
			return true
		}
	}
	return false
}

// timedOutBody is a request body that can tell it timed out
// (h1.ErrBodyTimeout): proxy/internal/h1's, and progressBody.
type timedOutBody interface{ TimedOut() bool }

// answerBodyTimeout answers 408 when r's body timed out; it reports
// whether it did. For the error paths of a call only.
func (p *Proxy) answerBodyTimeout(w http.ResponseWriter, r *http.Request, isGRPC bool) bool {
	b, ok := r.Body.(timedOutBody)
	if !ok || !b.TimedOut() {
		return false
	}
	writeError(w, isGRPC, http.StatusRequestTimeout, ErrCodeBodyTimeout,
		fmt.Sprintf("proxy: the request body made less than %d bytes of progress in %s", h1.BodyProgress, p.bodyTimeout()))
	return true
}

// progressBody is a request body of net/http's server under the body
// timeout: the time its reads wait, since it last made h1.BodyProgress
// bytes of progress, is bounded by timeout. Only waiting counts (a read in
// flight), not the handler's pauses between reads. One timer, re-armed
// only when it fires while a read is in flight; expiry interrupts the read
// through the stream's read deadline.
type progressBody struct {
	rc      io.ReadCloser
	w       http.ResponseWriter
	timeout time.Duration

	mu        sync.Mutex
	timer     *time.Timer
	armed     bool
	reading   bool
	start     time.Time     // of the read in flight
	got, mark int64         // bytes read; got when progress was last made
	waited    time.Duration // time reads waited since mark
	timedOut  bool
	stopped   bool
}

var errBodyTimeout = fmt.Errorf("proxy: %w", h1.ErrBodyTimeout)

func (b *progressBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.timedOut {
		b.mu.Unlock()
		return 0, errBodyTimeout
	}
	if b.got-b.mark >= h1.BodyProgress {
		b.mark, b.waited = b.got, 0
	}
	b.reading, b.start = true, time.Now()
	if !b.armed && !b.stopped {
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(b.timeout-b.waited, b.check)
		} else {
			b.timer.Reset(b.timeout - b.waited)
		}
	}
	b.mu.Unlock()
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.reading = false
	b.got += int64(n)
	b.waited += time.Since(b.start)
	if err != nil && b.timedOut {
		err = errBodyTimeout
	}
	b.mu.Unlock()
	return n, err
}

// check runs when the timer fires.
func (b *progressBody) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	if !b.reading || b.stopped {
		return // between reads: the next read arms it again
	}
	waited := b.waited + time.Since(b.start)
	if b.got-b.mark >= h1.BodyProgress {
		waited = time.Since(b.start) // the read in flight starts a new window
	}
	if left := b.timeout - waited; left > 0 {
		b.armed = true
		b.timer.Reset(left)
		return
	}
	b.timedOut = true
	// A deadline in the past ends the read in flight (HTTP/2: the stream's
	// body only; the answer can still be written).
	_ = http.NewResponseController(b.w).SetReadDeadline(time.Unix(1, 0))
}

func (b *progressBody) Close() error { return b.rc.Close() }

// TimedOut reports whether the body timed out.
func (b *progressBody) TimedOut() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.timedOut
}

// stop ends the timer when the handler returns.
func (b *progressBody) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.timer != nil {
		b.timer.Stop()
	}
}

// closingWriter answers with "Connection: close", whatever headers the
// handler copies in, so net/http's server closes the connection after the
// answer.
type closingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (c *closingWriter) WriteHeader(code int) {
	if !c.wrote && code >= 200 {
		c.wrote = true
		c.Header().Set("Connection", "close")
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *closingWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(p)
}

func (c *closingWriter) Flush() {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(c.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (c *closingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
