package proxy

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// hopByHop are the connection-specific headers (RFC 9110 7.6.1) that never
// cross a proxy. Keys are canonical.
var hopByHop = [...]string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Transfer-Encoding", "Upgrade", "Expect",
}

// cleanRequestHeader removes hop-by-hop headers (and those named by
// Connection) in place. "TE: trailers" is kept: gRPC needs it.
func cleanHopByHop(h http.Header) {
	if c, ok := h["Connection"]; ok {
		for _, v := range c {
			for v != "" {
				var tok string
				tok, v, _ = strings.Cut(v, ",")
				if tok = strings.TrimSpace(tok); tok != "" {
					h.Del(tok)
				}
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
	if te, ok := h["Te"]; ok && !(len(te) == 1 && strings.EqualFold(te[0], "trailers")) {
		delete(h, "Te")
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// prefixedTrailer avoids building http.TrailerPrefix+key for the gRPC trailers.
var prefixedTrailer = map[string]string{
	"Grpc-Status":             http.TrailerPrefix + "Grpc-Status",
	"Grpc-Message":            http.TrailerPrefix + "Grpc-Message",
	"Grpc-Status-Details-Bin": http.TrailerPrefix + "Grpc-Status-Details-Bin",
}

// copyResponse streams resp to w: headers, status, body (flushed as it
// arrives, so server-sent events and gRPC streams are not delayed), then
// trailers. It closes resp.Body.
// headerAdopter is a server's ResponseWriter that can take a header map as
// it is (proxy/internal/h1's and h2's).
type headerAdopter interface {
	AdoptHeader(h http.Header) bool
}

// adoptHeader hands h to the server's writer under w (reached through
// Unwrap, as http.ResponseController does) if it can take it: true, and h
// is w's from now on; false, and h is to be copied into w.Header().
func adoptHeader(w http.ResponseWriter, h http.Header) bool {
	for {
		switch rw := w.(type) {
		case headerAdopter:
			return rw.AdoptHeader(h)
		case interface{ Unwrap() http.ResponseWriter }:
			w = rw.Unwrap()
		default:
			return false
		}
	}
}

func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	if !adoptHeader(w, resp.Header) { // our HTTP/1.1 and HTTP/2 servers take the map as it is
		h := w.Header()
		for k, v := range resp.Header {
			h[k] = v
		}
	}
	h := w.Header()
	cleanHopByHop(h)
	delete(h, "Te")
	w.WriteHeader(resp.StatusCode)
	// Flush every chunk of a streamed answer (unknown length: chunked
	// HTTP/1.1, gRPC, server-sent events) the moment it arrives; a
	// known-length answer flushes when the server's buffer fills and at
	// the end, which saves a write per call.
	var fl http.Flusher
	if resp.ContentLength < 0 {
		fl, _ = w.(http.Flusher)
	}
	// A body that knows its end is already there (proxy/internal/h2's)
	// needs no flush before it: the rest, the trailers and the end leave
	// together when the handler returns.
	bb, _ := resp.Body.(buffered)
	if resp.Body != http.NoBody {
		bp := bufPool.Get().(*[]byte)
		buf := *bp
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					break
				}
				if fl != nil {
					if bb == nil {
						fl.Flush()
					} else if _, final := bb.Buffered(); !final {
						fl.Flush()
					}
				}
			}
			if err != nil {
				break
			}
		}
		bufPool.Put(bp)
	}
	for k, v := range resp.Trailer {
		pk, ok := prefixedTrailer[k]
		if !ok {
			pk = http.TrailerPrefix + k
		}
		h[pk] = v
	}
}

// Body states of sealableBody.
const (
	bodyFresh int32 = iota
	bodyRead
	bodySealed
)

// sealableBody wraps a request body for one attempt. It records whether the
// transport ever read from it; an attempt whose body was never read can be
// sealed (later reads fail) and the underlying body handed to the next
// attempt. Close does not close the underlying body: the server does.
type sealableBody struct {
	r     io.Reader
	state atomic.Int32
}

var errSealed = io.ErrClosedPipe

func (b *sealableBody) Read(p []byte) (int, error) {
	if b.state.Load() != bodyRead && !b.state.CompareAndSwap(bodyFresh, bodyRead) {
		return 0, errSealed
	}
	return b.r.Read(p)
}

func (b *sealableBody) Close() error { return nil }

// buffered is a body that tells what it holds (proxy/internal/h2's
// response body, meshd's HTTP/2 server's request body): n bytes a Read
// returns without blocking, and whether they are all that is left.
type buffered interface {
	Buffered() (n int, final bool)
}

// Buffered forwards the body's Buffered, so a transport can send a body
// that has all arrived with its headers. It reads nothing: the seal
// semantics stay. A sealed body, or one that cannot tell, reports (0, false).
func (b *sealableBody) Buffered() (int, bool) {
	if b.state.Load() == bodySealed {
		return 0, false
	}
	if bb, ok := b.r.(buffered); ok {
		return bb.Buffered()
	}
	return 0, false
}

// seal stops the body from being read by this attempt. It reports whether
// no byte was ever read, i.e. whether the body may be sent again.
func (b *sealableBody) seal() bool {
	return b.state.CompareAndSwap(bodyFresh, bodySealed) || b.state.Load() == bodySealed
}

// recordingBody keeps what the transport reads of a streamed body, up to
// maxReplayBody, so that the body can be resent once it was read to its end.
// Like sealableBody, an attempt that never read it can hand the body on.
type recordingBody struct {
	sealableBody
	mu   sync.Mutex
	buf  []byte
	over bool
	eof  bool
}

func newRecordingBody(r io.Reader) *recordingBody {
	return &recordingBody{sealableBody: sealableBody{r: r}}
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.sealableBody.Read(p)
	if err == errSealed {
		return n, err
	}
	b.mu.Lock()
	if !b.over {
		if len(b.buf)+n > maxReplayBody {
			b.over, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	b.mu.Unlock()
	return n, err
}

// replay returns the whole body once it was read to its end and fits.
func (b *recordingBody) replay() ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.eof && !b.over
}
