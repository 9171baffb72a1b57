package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meshd/meshd/proxy/internal/ascii"
)

// DefaultMaxRequestHeader bounds a request line and its header fields,
// net/http's default (http.DefaultMaxHeaderBytes).
const DefaultMaxRequestHeader = 1 << 20

// DefaultMaxHeaderFields bounds the number of header fields of a request
// (Envoy's max_headers_count and Apache's LimitRequestFields default): a
// browser sends 10–30.
const DefaultMaxHeaderFields = 100

// errTooManyFields: a head with more header fields than allowed (431).
var errTooManyFields = errors.New("h1: too many header fields")

// requestError is a request the server refuses: the status it answers with
// and a reason that never quotes the request.
type requestError struct {
	code   int
	reason string
}

func (e *requestError) Error() string { return fmt.Sprintf("h1: %d %s", e.code, e.reason) }

func badRequest(reason string) error { return &requestError{http.StatusBadRequest, reason} }

// ReadRequest reads one request head from br and frames its body, which
// reads from br. Malformed and ambiguous requests are refused: the framing
// rules are those of RFC 9112 §6 with every ambiguity a smuggling attack
// needs (Content-Length with Transfer-Encoding, conflicting lengths, codings
// other than chunked, folded or space-prefixed fields, bare CR, control
// bytes) an error. Exported for the fuzz test and for tools; it bounds no
// number of header fields.
func ReadRequest(br *bufio.Reader, maxHeader int) (*http.Request, error) {
	req, _, err := readRequest(context.Background(), br, maxHeader, -1, nil, nil)
	return req, err
}

// readRequest also returns the request's body when it has one. More than
// maxFields header fields (negative: no bound) is refused with 431. The
// request is made in *dst (a field of the server's response) when dst is
// not nil; its header goes into hb's map when hb is not nil.
func readRequest(ctx context.Context, br *bufio.Reader, maxHeader, maxFields int, dst *http.Request, hb *headerBuf) (*http.Request, *reqBody, error) {
	sp := getBuf()
	defer putBuf(sp)
	var spansArr [32]lineSpan
	budget := maxHeader
	blk, lineE, spans, err := readBlock(br, &budget, maxFields, sp, spansArr[:0])
	if err != nil {
		switch {
		case errors.Is(err, ErrHeaderTooLarge):
			return nil, nil, &requestError{http.StatusRequestHeaderFieldsTooLarge, "request header fields too large"}
		case err == errTooManyFields:
			return nil, nil, &requestError{http.StatusRequestHeaderFieldsTooLarge, "more than " + strconv.Itoa(maxFields) + " header fields"}
		case errors.Is(err, ErrMalformed):
			return nil, nil, badRequest("malformed header field")
		}
		return nil, nil, err
	}

	// Request line: method SP request-target SP HTTP-version.
	line := blk[:lineE]
	m := bytes.IndexByte(line, ' ')
	if m <= 0 {
		return nil, nil, badRequest("malformed request line")
	}
	t := bytes.IndexByte(line[m+1:], ' ')
	if t <= 0 {
		return nil, nil, badRequest("malformed request line")
	}
	t += m + 1
	version := line[t+1:]
	for _, c := range line[:m] {
		if !isTokenByte(c) {
			return nil, nil, badRequest("malformed request method")
		}
	}
	for _, c := range line[m+1 : t] {
		if c <= ' ' || c == 0x7f {
			return nil, nil, badRequest("malformed request target")
		}
	}
	var minor int
	switch string(version) {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
		minor = 0
	default:
		if len(version) > 5 && string(version[:5]) == "HTTP/" {
			return nil, nil, &requestError{http.StatusHTTPVersionNotSupported, "HTTP version not supported"}
		}
		return nil, nil, badRequest("malformed HTTP version")
	}

	// One string for the head; method, target, keys and values are its
	// substrings (interned where common).
	s := string(blk)
	req := &http.Request{} // on the stack: WithContext makes the one handed out
	*req = http.Request{
		Method:     methodString(s[:m]),
		RequestURI: s[m+1 : t],
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: minor,
		Header:     headerInto(hb, blk, s, spans),
	}
	if minor == 0 {
		req.Proto = "HTTP/1.0"
	}

	// Target (RFC 9112 §3.2): origin-form, absolute-form (the HTTP proxy
	// form), asterisk-form for OPTIONS; parsed as net/http parses it, so
	// that handlers see what they would there.
	if req.Method == http.MethodConnect {
		// No tunnels: after a 2xx to CONNECT the bytes that follow are no
		// longer HTTP, and this server would go on parsing them as such.
		return nil, nil, &requestError{http.StatusMethodNotAllowed, "CONNECT is not supported"}
	}
	raw := req.RequestURI
	if req.URL, err = url.ParseRequestURI(raw); err != nil {
		return nil, nil, badRequest("malformed request target")
	}
	if raw == "*" && req.Method != http.MethodOptions {
		return nil, nil, badRequest("asterisk-form target is for OPTIONS only")
	}

	// Host (RFC 9112 §3.2): exactly one in HTTP/1.1; an absolute-form
	// target's authority wins over it.
	hosts := req.Header["Host"]
	if len(hosts) > 1 || (minor == 1 && len(hosts) == 0) {
		return nil, nil, badRequest("missing or repeated Host header")
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, nil, badRequest("malformed Host header")
	}
	req.Host = req.URL.Host
	if req.Host == "" && len(hosts) == 1 {
		req.Host = hosts[0]
	}
	delete(req.Header, "Host")

	req.Close = shouldClose(minor, req.Header["Connection"])
	body, err := frameRequest(req, br)
	if err != nil {
		return nil, nil, err
	}
	var out *http.Request
	if dst != nil {
		// WithContext is inlined and its copy does not escape: this sets
		// the context without the allocation WithContext makes.
		*dst = *req.WithContext(ctx)
		out = dst
	} else {
		out = req.WithContext(ctx)
	}
	if body != nil {
		body.req = out
		out.Body = body
	}
	return out, body, nil
}

// frameRequest frames the body of req from its framing headers (RFC 9112
// §6.1–6.3), refusing every ambiguous framing. A body, when there is one,
// is returned for the caller to attach (req itself may live on the stack).
func frameRequest(req *http.Request, br *bufio.Reader) (*reqBody, error) {
	h := req.Header
	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	switch {
	case hasTE && hasCL:
		return nil, badRequest("both Transfer-Encoding and Content-Length")
	case hasTE:
		if req.ProtoMinor == 0 {
			return nil, badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if len(te) != 1 || !ascii.EqualFold(te[0], "chunked") {
			return nil, &requestError{http.StatusNotImplemented, "unsupported Transfer-Encoding"}
		}
		delete(h, "Transfer-Encoding")
		req.TransferEncoding = []string{"chunked"}
		req.ContentLength = -1
		if err := declareTrailer(req); err != nil {
			return nil, err
		}
		return &reqBody{br: br, kind: kindChunked, left: -1, cr: httputil.NewChunkedReader(br)}, nil
	case hasCL:
		n, err := parseLength(cl)
		if err != nil {
			return nil, badRequest("malformed Content-Length")
		}
		req.ContentLength = n
		if len(cl) > 1 {
			h["Content-Length"] = cl[:1] // repeated equal values: one, as net/http keeps
		}
		if n == 0 {
			req.Body = http.NoBody
			return nil, nil
		}
		return &reqBody{br: br, kind: kindLength, left: n}, nil
	}
	req.Body = http.NoBody
	return nil, nil
}

// declareTrailer reads the Trailer header of a chunked request as net/http
// does: the declared keys are in req.Trailer before the body is read (their
// values after), and a declaration of a framing field is refused.
func declareTrailer(req *http.Request) error {
	vv, ok := req.Header["Trailer"]
	if !ok {
		return nil
	}
	t := make(http.Header, len(vv))
	for _, v := range vv {
		for v != "" {
			var k string
			k, v, _ = strings.Cut(v, ",")
			if k = http.CanonicalHeaderKey(trimOWS(k)); k == "" {
				continue
			}
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return badRequest("bad trailer key")
			}
			t[k] = nil
		}
	}
	delete(req.Header, "Trailer")
	req.Trailer = t
	return nil
}

// methodString interns the common methods.
func methodString(m string) string {
	switch m {
	case "GET":
		return http.MethodGet
	case "POST":
		return http.MethodPost
	case "PUT":
		return http.MethodPut
	case "DELETE":
		return http.MethodDelete
	case "HEAD":
		return http.MethodHead
	case "PATCH":
		return http.MethodPatch
	case "OPTIONS":
		return http.MethodOptions
	}
	return m
}

// errBodyAfterHandler: the handler returned; its request body is gone.
var errBodyAfterHandler = errors.New("h1: read of a request body after its handler returned")

// reqBody is a request body on a server connection. Reads may come from a
// goroutine other than the handler's (a full-duplex upload). bodyMu guards
// the state, never a network read: while reading is set, only the reader
// touches left, cr and br, and finish interrupts it instead of waiting.
type reqBody struct {
	br      *bufio.Reader
	cr      io.Reader // chunked decoder
	req     *http.Request
	kind    int
	left    int64 // bytes left of a Content-Length body
	c       *srvConn
	err     error // sticky
	eof     bool  // read to its end
	done    bool  // the handler returned
	reading bool  // a read is in flight
}

var errConcurrentRead = errors.New("h1: concurrent reads of a request body")

func (b *reqBody) Read(p []byte) (int, error) {
	c := b.c
	if c == nil { // ReadRequest's: no connection, no concurrency
		return b.read(p)
	}
	c.bodyMu.Lock()
	switch {
	case b.done:
		c.bodyMu.Unlock()
		return 0, errBodyAfterHandler
	case b.reading:
		c.bodyMu.Unlock()
		return 0, errConcurrentRead
	}
	if b.err != nil || b.eof || len(p) == 0 {
		c.bodyMu.Unlock()
		return b.read(p)
	}
	b.reading = true
	start := c.beforeBodyRead(b)
	c.bodyMu.Unlock()
	n, err := b.read(p)
	c.bodyMu.Lock()
	b.reading = false
	c.bodyGot += int64(n)
	if !start.IsZero() {
		c.bodyWaited += time.Since(start)
	}
	switch {
	case b.done && err == nil:
		err = errBodyAfterHandler
	case err != nil && !b.done && !start.IsZero() && isTimeout(err):
		// The body's deadline, not finish's interruption (done is set).
		b.err = fmt.Errorf("%w: %w: less than %d bytes in %s", ErrRequestBody, ErrBodyTimeout, BodyProgress, c.srv.bodyTimeout())
		err = b.err
	}
	c.bodyMu.Unlock()
	return n, err
}

// TimedOut reports whether a read of the body failed with ErrBodyTimeout.
func (b *reqBody) TimedOut() bool {
	if c := b.c; c != nil {
		c.bodyMu.Lock()
		defer c.bodyMu.Unlock()
	}
	return errors.Is(b.err, ErrBodyTimeout)
}

func (b *reqBody) read(p []byte) (int, error) {
	switch {
	case b.err != nil:
		return 0, b.err
	case b.eof:
		return 0, io.EOF
	case len(p) == 0:
		return 0, nil
	}
	var (
		n   int
		err error
	)
	if b.kind == kindLength {
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err = b.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			b.eof = true
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	} else {
		n, err = b.cr.Read(p)
		if err == io.EOF {
			if err = readTrailer(b.br, &b.req.Trailer); err == nil {
				b.eof = true
				return n, io.EOF
			}
		}
	}
	if err != nil {
		b.err = fmt.Errorf("%w: %w", ErrRequestBody, err)
		return n, b.err
	}
	return n, nil
}

// Close does nothing: the server decides, when the handler returns, whether
// what is left can be skipped or the connection must close.
func (b *reqBody) Close() error { return nil }

// finish ends the body when the handler returns; later reads fail. It
// reports whether the connection can carry another request: the body was
// read to its end, or what is left is already buffered and is skipped. It
// never waits on the network: a read still in flight (a full-duplex upload
// the handler gave up on) is interrupted and the connection closes.
func (b *reqBody) finish() bool {
	c := b.c
	c.bodyMu.Lock()
	defer c.bodyMu.Unlock()
	b.done = true
	switch {
	case b.reading:
		_ = c.nc.SetReadDeadline(aLongTimeAgo)
		return false
	case b.eof:
		return true
	case b.err != nil || b.kind != kindLength || b.left > int64(b.br.Buffered()):
		return false
	}
	_, err := b.br.Discard(int(b.left))
	return err == nil
}
