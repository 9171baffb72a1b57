package h2

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"

	"github.com/meshd/meshd/proxy/internal/ascii"
)

// clientSkipHeader are the request headers not sent as they are:
// connection-specific ones (RFC 9113 8.2.2), Host (:authority) and
// Content-Length (from req.ContentLength).
var clientSkipHeader = map[string]bool{
	"Host": true, "Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Trailer": true,
}

// clientRequestPath is the :path of req.
func clientRequestPath(req *http.Request) string {
	u := req.URL
	if u.Opaque != "" && u.Opaque[0] == '/' && (len(u.Opaque) < 2 || u.Opaque[1] != '/') {
		if u.ForceQuery || u.RawQuery != "" {
			return u.Opaque + "?" + u.RawQuery
		}
		return u.Opaque
	}
	return u.RequestURI()
}

func clientAuthority(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// clientCheckHeaders validates req's method, target and headers before
// anything is encoded (an error half-way through would desynchronize the
// connection's HPACK state), and returns the size of the header list.
func clientCheckHeaders(req *http.Request) (uint32, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	if !clientValidMethod(method) {
		return 0, fmt.Errorf("h2: invalid method %q", method)
	}
	if method == http.MethodConnect {
		return 0, errors.New("h2: CONNECT is not supported")
	}
	host := clientAuthority(req)
	if !httpguts.ValidHostHeader(host) {
		return 0, fmt.Errorf("h2: invalid Host %q", host)
	}
	path := clientRequestPath(req)
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c == 0x7f {
			return 0, fmt.Errorf("h2: invalid request target %q", path)
		}
	}
	size := uint32(len(method)+len(host)+len(path)+len(req.URL.Scheme)) + 4*32 + 7 + 10 + 7 + 5
	for k, vv := range req.Header {
		if clientSkipHeader[k] {
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return 0, fmt.Errorf("h2: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return 0, fmt.Errorf("h2: invalid header field value for %q", k)
			}
			size += uint32(len(k)+len(v)) + 32
		}
	}
	for k, vv := range req.Trailer {
		if !httpguts.ValidHeaderFieldName(k) {
			return 0, fmt.Errorf("h2: invalid trailer field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return 0, fmt.Errorf("h2: invalid trailer field value for %q", k)
			}
		}
	}
	return size, nil
}

func clientValidMethod(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 0x80 || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

func clientHF(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

// clientEncodeHeaders HPACK-encodes req's header block (checked by
// clientCheckHeaders) with enc.
func clientEncodeHeaders(enc *hpack.Encoder, req *http.Request, hasBody bool) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	scheme := req.URL.Scheme
	if scheme == "" {
		scheme = "https"
	}
	_ = enc.WriteField(clientHF(":method", method))
	_ = enc.WriteField(clientHF(":scheme", scheme))
	_ = enc.WriteField(clientHF(":authority", clientAuthority(req)))
	_ = enc.WriteField(clientHF(":path", clientRequestPath(req)))
	for k, vv := range req.Header {
		if clientSkipHeader[k] {
			continue
		}
		name := clientLower(k)
		if name == "te" {
			for _, v := range vv {
				if ascii.EqualFold(strings.TrimSpace(v), "trailers") {
					_ = enc.WriteField(clientHF("te", "trailers"))
					break
				}
			}
			continue
		}
		for _, v := range vv {
			_ = enc.WriteField(hpackField(name, v))
		}
	}
	switch {
	case hasBody && req.ContentLength > 0:
		_ = enc.WriteField(clientHF("content-length", strconv.FormatInt(req.ContentLength, 10)))
	case !hasBody && (method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch):
		_ = enc.WriteField(clientHF("content-length", "0"))
	}
}

// Header names seen often: their lower-case (wire) and canonical forms,
// kept so that a call allocates neither. Bounded: a peer cannot grow them
// past clientCacheMax entries.
const clientCacheMax = 1000

var (
	clientLowerCache sync.Map // canonical -> lower
	clientCanonCache sync.Map // lower -> canonical
	clientLowerN     atomic.Int32
	clientCanonN     atomic.Int32
)

func init() {
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag",
		"Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message", "Grpc-Status",
		"Grpc-Status-Details-Bin", "Grpc-Timeout", "Last-Modified", "Location", "Server",
		"Set-Cookie", "Te", "Trailer", "Traceparent", "Tracestate", "User-Agent", "Vary",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id",
	} {
		l := strings.ToLower(k)
		clientLowerCache.Store(k, l)
		clientCanonCache.Store(l, k)
	}
}

// clientLower is the wire name of header key k.
func clientLower(k string) string {
	if v, ok := clientLowerCache.Load(k); ok {
		return v.(string)
	}
	l := strings.ToLower(k)
	if clientLowerN.Add(1) <= clientCacheMax {
		clientLowerCache.Store(k, l)
	}
	return l
}

// clientCanonical is the http.Header key of wire name l.
func clientCanonical(l string) string {
	if v, ok := clientCanonCache.Load(l); ok {
		return v.(string)
	}
	c := textproto.CanonicalMIMEHeaderKey(l)
	if clientCanonN.Add(1) <= clientCacheMax {
		clientCanonCache.Store(l, c)
	}
	return c
}

// clientHeader builds an http.Header of regular fields, their values in
// one allocation.
func clientHeader(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	vals := make([]string, len(fields))
	for i, f := range fields {
		k := clientCanonical(f.Name)
		if vv, ok := h[k]; ok {
			h[k] = append(vv, f.Value)
			continue
		}
		vals[i] = f.Value
		h[k] = vals[i : i+1 : i+1]
	}
	return h
}

func clientSplitComma(s string) []string {
	var out []string
	for s != "" {
		var tok string
		tok, s, _ = strings.Cut(s, ",")
		if tok = strings.TrimSpace(tok); tok != "" {
			out = append(out, tok)
		}
	}
	return out
}
