package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"

	"github.com/meshd/meshd/proxy/internal/ascii"
)

// max1xx bounds the informational answers skipped before the final one.
const max1xx = 5

// commonKeys interns canonical header keys: no string is built for them.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Cache-Control",
		"Connection", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Type", "Date", "Etag", "Expires", "Keep-Alive", "Last-Modified",
		"Location", "Server", "Set-Cookie", "Trailer", "Transfer-Encoding",
		"Vary", "Www-Authenticate", "X-Content-Type-Options", "Content-Security-Policy",
		"Strict-Transport-Security", "Traceparent", "Tracestate", "Grpc-Status",
		"Grpc-Message", "Meshd-Error-Code", "Meshd-Short-Circuit", "X-Request-Id",
	} {
		m[k] = k
	}
	return m
}()

// ReadResponse reads one response to req from br (1xx answers other than
// 101 skipped), with at most maxHeader bytes of status lines and headers.
// The body reads from br; it is not tied to any connection (see Transport
// for that). Exported for the fuzz test and for tools.
func ReadResponse(br *bufio.Reader, req *http.Request, maxHeader int) (*http.Response, error) {
	resp, err := readResponse(br, req, maxHeader, nil)
	if err != nil {
		return nil, err
	}
	if b := bodyOf(resp); b != nil {
		b.ex = &exchange{req: req}
		b.ex.br.Store(br)
	}
	return resp, nil
}

// slot, if not nil, holds the response and its body (one allocation with
// the exchange instead of three).
func readResponse(br *bufio.Reader, req *http.Request, maxHeader int, slot *respSlot) (*http.Response, error) {
	budget := maxHeader
	for n := 0; ; n++ {
		resp, err := readHead(br, &budget, slot)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if n >= max1xx {
				return nil, fmt.Errorf("%w: more than %d informational answers", ErrMalformed, max1xx)
			}
			continue
		}
		resp.Request = req
		if err := frame(resp, br, req, slot); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// lineSpan is one header field: key and value offsets in the head block.
type lineSpan struct{ ks, ke, vs, ve int }

// respSlot is the room for an answer and its body inside an exchange.
type respSlot struct {
	resp http.Response
	body body
}

// readHead reads a status line and header fields into slot's response, or a
// new one when slot is nil.
func readHead(br *bufio.Reader, budget *int, slot *respSlot) (*http.Response, error) {
	sp := getBuf()
	defer putBuf(sp)
	var spansArr [32]lineSpan
	blk, statusE, spans, err := readBlock(br, budget, -1, sp, spansArr[:0])
	if err != nil {
		if errors.Is(err, ErrHeaderTooLarge) || errors.Is(err, ErrMalformed) {
			return nil, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("h1: read response head: %w", err)
	}
	// Status line: "HTTP/1.x NNN reason".
	sl := blk[:statusE]
	if len(sl) < 12 || string(sl[:7]) != "HTTP/1." || (sl[7] != '0' && sl[7] != '1') || sl[8] != ' ' ||
		(len(sl) > 12 && sl[12] != ' ') {
		return nil, fmt.Errorf("%w: status line %q", ErrMalformed, clip(sl))
	}
	code := 0
	for _, c := range sl[9:12] {
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("%w: status line %q", ErrMalformed, clip(sl))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil, fmt.Errorf("%w: status code %d", ErrMalformed, code)
	}
	for _, c := range sl[9:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return nil, fmt.Errorf("%w: status line %q", ErrMalformed, clip(sl))
		}
	}
	// One string for the whole head; keys and values are substrings.
	s := string(blk)
	var resp *http.Response
	if slot != nil {
		resp = &slot.resp
	} else {
		resp = new(http.Response)
	}
	*resp = http.Response{
		Status:     s[9:statusE],
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     headerOf(blk, s, spans),
	}
	if sl[7] == '0' {
		resp.Proto, resp.ProtoMinor = "HTTP/1.0", 0
	}
	return resp, nil
}

// headerOf builds the header of the fields at spans in blk, whose string
// copy is s: values (and uncommon keys) are substrings of s, common keys
// interned, all values in one backing array.
func headerOf(blk []byte, s string, spans []lineSpan) http.Header {
	return headerInto(nil, blk, s, spans)
}

// headerBuf is a header map and its values' backing array, kept by a
// server connection from one request to the next (Server.ReuseHeader).
type headerBuf struct {
	h    http.Header
	vals []string
}

// maxReusedFields bounds the heads whose map a connection keeps: clearing
// a map costs in proportion to its size, and one odd request must not make
// every later one pay for it.
const maxReusedFields = 32

// headerInto is headerOf into hb's map and values when hb is not nil
// (cleared first; made when hb has none or too small a values array).
func headerInto(hb *headerBuf, blk []byte, s string, spans []lineSpan) http.Header {
	var h http.Header
	var vals []string
	if hb != nil && hb.h != nil && len(spans) <= cap(hb.vals) {
		h, vals = hb.h, hb.vals[:len(spans)]
		clear(h)
		clear(hb.vals[len(spans):cap(hb.vals)]) // no earlier head kept alive
	} else {
		n := len(spans)
		if hb != nil {
			n = max(n, 16) // room for the next, longer head
		}
		h, vals = make(http.Header, len(spans)), make([]string, len(spans), n)
		if hb != nil && len(spans) <= maxReusedFields {
			hb.h, hb.vals = h, vals
		}
	}
	for i, f := range spans {
		k, ok := commonKeys[string(blk[f.ks:f.ke])]
		if !ok {
			k = s[f.ks:f.ke]
		}
		vals[i] = s[f.vs:f.ve]
		if vv, ok := h[k]; ok {
			h[k] = append(vv, vals[i])
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	return h
}

// readBlock reads a start line and header fields, up to the empty line,
// into *sp (which it may grow): the block, where the start line ends and
// the fields' spans. Keys are canonicalized in place. With skipEmpty, empty
// lines before the start line are skipped (RFC 9112 §2.2; they count
// against the budget). More than maxFields fields (negative: no bound) is
// errTooManyFields. Errors are ErrHeaderTooLarge, errTooManyFields,
// ErrMalformed (wrapped) or the reader's (io.ErrUnexpectedEOF for an end
// inside the block).
func readBlock(br *bufio.Reader, budget *int, maxFields int, sp *[]byte, spans []lineSpan) (blk []byte, firstEnd int, _ []lineSpan, err error) {
	blk = (*sp)[:0]
	defer func() { *sp = blk }()
	start, first := 0, true
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > *budget {
			return nil, 0, nil, ErrHeaderTooLarge
		}
		*budget -= len(line)
		blk = append(blk, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(blk) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, nil, err
		}
		// One full line in blk[start:], ending in "\n".
		end := len(blk) - 1
		if end > start && blk[end-1] == '\r' {
			end--
		}
		if first {
			firstEnd, first, start = end, false, len(blk)
			continue
		}
		if end == start {
			return blk, firstEnd, spans, nil
		}
		if len(spans) == maxFields {
			return nil, 0, nil, errTooManyFields
		}
		s, err := parseField(blk, start, end)
		if err != nil {
			return nil, 0, nil, err
		}
		spans = append(spans, s)
		start = len(blk)
	}
}

// parseField checks "key: value" in blk[start:end], canonicalizes the key in
// place (as textproto.CanonicalMIMEHeaderKey) and trims the value.
func parseField(blk []byte, start, end int) (lineSpan, error) {
	l := blk[start:end]
	colon := -1
	for i, c := range l {
		if c == ':' {
			colon = i
			break
		}
	}
	if colon <= 0 {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			return lineSpan{}, fmt.Errorf("%w: folded header line %q", ErrMalformed, clip(l))
		}
		return lineSpan{}, fmt.Errorf("%w: header line %q", ErrMalformed, clip(l))
	}
	upper := true
	for i := 0; i < colon; i++ {
		c := l[i]
		if !isTokenByte(c) {
			return lineSpan{}, fmt.Errorf("%w: header name %q", ErrMalformed, clip(l[:colon]))
		}
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		l[i] = c
		upper = c == '-'
	}
	vs, ve := colon+1, len(l)
	for vs < ve && (l[vs] == ' ' || l[vs] == '\t') {
		vs++
	}
	for ve > vs && (l[ve-1] == ' ' || l[ve-1] == '\t') {
		ve--
	}
	for _, c := range l[vs:ve] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return lineSpan{}, fmt.Errorf("%w: control byte in the value of %q", ErrMalformed, clip(l[:colon]))
		}
	}
	return lineSpan{start, start + colon, start + vs, start + ve}, nil
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// Body kinds.
const (
	kindLength  = iota // Content-Length
	kindChunked        // chunked
	kindEOF            // until the server closes
)

// frame sets the body of resp from its framing headers (RFC 9112 §6), in
// slot's room if slot is not nil.
func frame(resp *http.Response, br *bufio.Reader, req *http.Request, slot *respSlot) error {
	newBody := func(kind int, left int64, cr io.Reader) *body {
		var b *body
		if slot != nil {
			b = &slot.body
		} else {
			b = new(body)
		}
		b.kind, b.br, b.left, b.cr, b.resp = kind, br, left, cr, resp
		return b
	}
	h := resp.Header
	resp.Close = shouldClose(resp.ProtoMinor, h["Connection"])
	if resp.Close {
		delete(h, "Connection")
	}
	chunked := false
	headLength := int64(-1) // of a chunked answer to HEAD
	if te, ok := h["Transfer-Encoding"]; ok {
		delete(h, "Transfer-Encoding")
		if resp.ProtoMinor > 0 {
			if len(te) != 1 || !ascii.EqualFold(te[0], "chunked") {
				return fmt.Errorf("%w: unsupported Transfer-Encoding %q", ErrMalformed, te)
			}
			chunked = true
			resp.TransferEncoding = []string{"chunked"}
			// Transfer-Encoding wins (RFC 9112 §6.3), as in net/http; a
			// malformed Content-Length beside it is refused as net/http
			// refuses it, and a HEAD answer keeps its length (net/http's
			// reading), so the two never read one answer two ways.
			if cl, ok := h["Content-Length"]; ok {
				n, err := parseLength(cl)
				if err != nil {
					return err
				}
				headLength = n
			}
			delete(h, "Content-Length")
		}
	}
	length := int64(-1)
	if cl, ok := h["Content-Length"]; ok {
		n, err := parseLength(cl)
		if err != nil {
			return err
		}
		length = n
	}
	if chunked {
		if tr, ok := h["Trailer"]; ok {
			resp.Trailer = make(http.Header, len(tr))
			for _, v := range tr {
				for _, k := range strings.Split(v, ",") {
					k = http.CanonicalHeaderKey(strings.TrimSpace(k))
					switch k {
					case "", "Transfer-Encoding", "Trailer", "Content-Length":
						continue
					}
					resp.Trailer[k] = nil
				}
			}
			delete(h, "Trailer")
		}
	}
	code := resp.StatusCode
	switch {
	case code == http.StatusSwitchingProtocols:
		resp.ContentLength = -1
		resp.Close = true
		resp.Body = &upgradedBody{body: body{kind: kindEOF, br: br, resp: resp}}
		return nil
	case req != nil && req.Method == http.MethodHead:
		resp.ContentLength = length
		if chunked {
			resp.ContentLength = headLength
		}
		resp.Body = http.NoBody
		return nil
	case code == http.StatusNoContent || code == http.StatusNotModified:
		resp.ContentLength = 0
		resp.Body = http.NoBody
		return nil
	case chunked:
		resp.ContentLength = -1
		resp.Body = newBody(kindChunked, 0, httputil.NewChunkedReader(br))
	case length == 0:
		resp.ContentLength = 0
		resp.Body = http.NoBody
	case length > 0:
		resp.ContentLength = length
		resp.Body = newBody(kindLength, length, nil)
	default:
		resp.ContentLength = -1
		resp.Close = true
		resp.Body = newBody(kindEOF, 0, nil)
	}
	return nil
}

func parseLength(vv []string) (int64, error) {
	first := ""
	for i, v := range vv {
		v = trimOWS(v)
		if i == 0 {
			first = v
		} else if v != first {
			return 0, fmt.Errorf("%w: conflicting Content-Length %q", ErrMalformed, vv)
		}
	}
	if first == "" || len(first) > 18 {
		return 0, fmt.Errorf("%w: bad Content-Length %q", ErrMalformed, first)
	}
	var n int64
	for i := 0; i < len(first); i++ {
		c := first[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad Content-Length %q", ErrMalformed, first)
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// shouldClose reads the Connection header: HTTP/1.1 keeps the connection
// unless "close", HTTP/1.0 closes it unless "keep-alive".
func shouldClose(minor int, conn []string) bool {
	closeTok, keep := false, false
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = trimOWS(tok)
			if ascii.EqualFold(tok, "close") {
				closeTok = true
			} else if ascii.EqualFold(tok, "keep-alive") {
				keep = true
			}
		}
	}
	if minor == 0 {
		return closeTok || !keep
	}
	return closeTok
}

// Body states.
const (
	bodyOpen   int32 = iota
	bodyDone         // read to the end (or failed)
	bodyClosed       // closed before the end
)

var errReadAfterClose = errors.New("h1: read on a closed response body")

// body is a response body on a connection of an exchange.
type body struct {
	ex      *exchange
	br      *bufio.Reader
	cr      io.Reader // chunked decoder
	resp    *http.Response
	kind    int
	left    int64
	err     error
	state   atomic.Int32
	reading atomic.Bool
}

func (b *body) Read(p []byte) (int, error) {
	if !b.reading.CompareAndSwap(false, true) {
		return 0, errors.New("h1: concurrent reads of a response body")
	}
	n, err := b.read(p)
	b.reading.Store(false)
	if b.state.Load() == bodyClosed {
		b.ex.releaseReader() // Close ran during the read
	}
	return n, err
}

func (b *body) read(p []byte) (int, error) {
	switch b.state.Load() {
	case bodyDone:
		if b.err != nil {
			return 0, b.err
		}
		return 0, io.EOF
	case bodyClosed:
		return 0, errReadAfterClose
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.kind {
	case kindLength:
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err := b.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			b.end(true)
			return n, io.EOF
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, b.fail(err)
		}
		return n, nil
	case kindChunked:
		n, err := b.cr.Read(p)
		if err == io.EOF {
			if terr := readTrailer(b.br, &b.resp.Trailer); terr != nil {
				return n, b.fail(terr)
			}
			b.end(true)
			return n, io.EOF
		}
		if err != nil {
			return n, b.fail(err)
		}
		return n, nil
	default:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.end(false)
			return n, io.EOF
		}
		if err != nil {
			return n, b.fail(err)
		}
		return n, nil
	}
}

// end: the body was read to its end; the connection is reused if clean.
func (b *body) end(clean bool) {
	if b.state.CompareAndSwap(bodyOpen, bodyDone) {
		b.ex.finish(clean)
	}
}

func (b *body) fail(err error) error {
	if b.state.CompareAndSwap(bodyOpen, bodyDone) {
		b.err = b.ex.err("read response body", err)
		b.ex.abort()
	}
	return b.err
}

// Close closes the connection unless the body was read to its end.
func (b *body) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.ex.stopWatch()
		b.ex.closeConn()
		if !b.reading.Load() {
			b.ex.releaseReader()
		}
	}
	return nil
}

func bodyOf(resp *http.Response) *body {
	switch b := resp.Body.(type) {
	case *body:
		return b
	case *upgradedBody:
		return &b.body
	}
	return nil
}

// upgradedBody is the connection after a 101 answer: read and write.
type upgradedBody struct{ body }

func (u *upgradedBody) Write(p []byte) (int, error) {
	if u.ex.c == nil {
		return 0, errors.New("h1: no connection")
	}
	return u.ex.c.nc.Write(p)
}

// readTrailer reads the trailer section after the last chunk into *trailer
// (allocated on the first field).
func readTrailer(br *bufio.Reader, trailer *http.Header) error {
	budget := DefaultMaxResponseHeader
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || len(line) > budget {
			return fmt.Errorf("%w: trailer line too long", ErrMalformed)
		}
		budget -= len(line)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("h1: read trailer: %w", err)
		}
		// CRLF only, as net/http reads a trailer section.
		end := len(line) - 2
		if end < 0 || line[end] != '\r' {
			return fmt.Errorf("%w: trailer line without CRLF", ErrMalformed)
		}
		if end == 0 {
			return nil
		}
		f, err := parseField(line, 0, end)
		if err != nil {
			return err
		}
		k := string(line[f.ks:f.ke])
		switch k {
		case "Transfer-Encoding", "Trailer", "Content-Length":
			continue
		}
		if *trailer == nil {
			*trailer = http.Header{}
		}
		(*trailer)[k] = append((*trailer)[k], string(line[f.vs:f.ve]))
	}
}
