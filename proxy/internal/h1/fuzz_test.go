package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// FuzzReadResponse: no input makes the parser panic, hang or exceed its
// header budget; a parsed answer has a sane status and framing.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n3\r\nabc\r\n0\r\nX: 1\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nraw",
		"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		req := &http.Request{Method: "GET"}
		if head {
			req.Method = "HEAD"
		}
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		resp, err := ReadResponse(br, req, 4096)
		// The Transport's way, the answer in the exchange's room, reads
		// the same.
		ex := &exchange{req: req}
		sbr := bufio.NewReaderSize(bytes.NewReader(data), 16)
		sresp, serr := readResponse(sbr, req, 4096, &ex.slot)
		if serr == nil {
			if b := bodyOf(sresp); b != nil {
				b.ex = ex
				ex.br.Store(sbr)
			}
		}
		if (err == nil) != (serr == nil) {
			t.Fatalf("ReadResponse error %v, in a slot %v", err, serr)
		}
		if err != nil {
			return
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 || (resp.StatusCode < 200 && resp.StatusCode != 101) {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if sresp != &ex.slot.resp || sresp.StatusCode != resp.StatusCode || sresp.ContentLength != resp.ContentLength ||
			!reflect.DeepEqual(sresp.Header, resp.Header) {
			t.Fatalf("in a slot: %d %d %v, want %d %d %v", sresp.StatusCode, sresp.ContentLength, sresp.Header,
				resp.StatusCode, resp.ContentLength, resp.Header)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(len(data))+1))
		sbody, _ := io.ReadAll(io.LimitReader(sresp.Body, int64(len(data))+1))
		sresp.Body.Close()
		if !bytes.Equal(body, sbody) {
			t.Fatalf("body %q, in a slot %q", body, sbody)
		}
		n := int64(len(body))
		if n > int64(len(data)) {
			t.Fatalf("read %d body bytes from %d input bytes", n, len(data))
		}
		if resp.ContentLength > 0 && n > resp.ContentLength {
			t.Fatalf("body %d bytes over Content-Length %d", n, resp.ContentLength)
		}
		resp.Body.Close()
	})
}

// FuzzReadRequest holds the server's request parser against net/http's: no
// input makes it panic or hang, and whatever it accepts net/http accepts
// too, with the same method, target, Host, headers, length and body bytes.
// Being stricter is allowed; reading a request differently is what request
// smuggling is made of.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chun\u212Aed\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X, Content-Length\r\n\r\n0\r\nX: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: clo\u017fe\r\n\r\n",
		"GET http://a.b/c HTTP/1.1\r\nHost: d\r\n\r\n",
		"CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.0\nX: 1\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
		"GET /%2e%2e/a HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ours, err := ReadRequest(bufio.NewReaderSize(bytes.NewReader(data), 16), 4096)
		// A connection's second request, in the first one's header map
		// (Server.ReuseHeader), reads the same.
		var hb headerBuf
		prev := "GET / HTTP/1.1\r\nHost: p\r\nX-Old: 1\r\nX-A: old\r\nX-A: older\r\n\r\n"
		if _, _, perr := readRequest(context.Background(), bufio.NewReader(strings.NewReader(prev)), 4096, -1, nil, &hb); perr != nil || hb.h == nil {
			t.Fatalf("the first request: %v, kept map %v", perr, hb.h != nil)
		}
		again, _, rerr := readRequest(context.Background(), bufio.NewReaderSize(bytes.NewReader(data), 16), 4096, -1, nil, &hb)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("ReadRequest error %v, in a reused header map %v; input %q", err, rerr, data)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(ours.Header, again.Header) {
			t.Fatalf("header read into a reused map %q, fresh %q; input %q", again.Header, ours.Header, data)
		}
		obody, err := io.ReadAll(io.LimitReader(ours.Body, int64(len(data))+1))
		if err != nil {
			return // a body that does not parse: the server closes the connection
		}
		if len(obody) > len(data) {
			t.Fatalf("read %d body bytes from %d input bytes", len(obody), len(data))
		}
		theirs, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v): %q", err, data)
		}
		tbody, err := io.ReadAll(theirs.Body)
		if err != nil {
			t.Fatalf("body read that net/http cannot read (%v): %q", err, data)
		}
		if ours.Method != theirs.Method || ours.RequestURI != theirs.RequestURI || ours.Host != theirs.Host ||
			ours.ProtoMinor != theirs.ProtoMinor || ours.ContentLength != theirs.ContentLength || ours.Close != theirs.Close ||
			ours.URL.String() != theirs.URL.String() || !bytes.Equal(obody, tbody) {
			t.Fatalf("read differently: ours %s %q host %q 1.%d len %d url %q body %q; net/http %s %q host %q 1.%d len %d url %q body %q; input %q",
				ours.Method, ours.RequestURI, ours.Host, ours.ProtoMinor, ours.ContentLength, ours.URL, obody,
				theirs.Method, theirs.RequestURI, theirs.Host, theirs.ProtoMinor, theirs.ContentLength, theirs.URL, tbody, data)
		}
		for _, h := range []http.Header{ours.Header, theirs.Header} {
			delete(h, "Content-Length") // net/http folds repeated equal values into one
			if _, ok := h["Pragma"]; ok {
				delete(h, "Cache-Control") // net/http adds it for "Pragma: no-cache"
			}
		}
		if !reflect.DeepEqual(ours.Header, theirs.Header) {
			t.Fatalf("headers differ: ours %q, net/http %q; input %q", ours.Header, theirs.Header, data)
		}
	})
}

// FuzzReadResponseDifferential: every response our parser accepts is one
// net/http's http.ReadResponse reads the same way — status, framing, body
// and headers — so that a response cannot mean one thing to the sidecar
// and another to the app's HTTP client behind it (response splitting and
// desync). Where net/http is more lenient our parser may refuse.
func FuzzReadResponseDifferential(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 304 Not Modified\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		ours, err := ReadResponse(bufio.NewReaderSize(bytes.NewReader(data), 16), &http.Request{Method: method}, 4096)
		if err != nil || ours.StatusCode == http.StatusSwitchingProtocols {
			return // refused, or an upgrade (the rest is not HTTP)
		}
		obody, err := io.ReadAll(io.LimitReader(ours.Body, int64(len(data))+1))
		if err != nil {
			return // a body that does not parse: the connection is closed
		}
		// net/http hands 1xx answers to the caller; ours skips them.
		br := bufio.NewReader(bytes.NewReader(data))
		var theirs *http.Response
		for {
			theirs, err = http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatalf("accepted what net/http refuses (%v): %q", err, data)
			}
			if theirs.StatusCode >= 200 || theirs.StatusCode == http.StatusSwitchingProtocols {
				break
			}
		}
		tbody, err := io.ReadAll(theirs.Body)
		if err != nil {
			t.Fatalf("body read that net/http cannot read (%v): %q", err, data)
		}
		if ours.StatusCode != theirs.StatusCode || ours.ProtoMinor != theirs.ProtoMinor ||
			ours.ContentLength != theirs.ContentLength || ours.Close != theirs.Close || !bytes.Equal(obody, tbody) {
			t.Fatalf("read differently: ours %d 1.%d len %d close %v body %q; net/http %d 1.%d len %d close %v body %q; input %q",
				ours.StatusCode, ours.ProtoMinor, ours.ContentLength, ours.Close, obody,
				theirs.StatusCode, theirs.ProtoMinor, theirs.ContentLength, theirs.Close, tbody, data)
		}
		for _, h := range []http.Header{ours.Header, theirs.Header} {
			delete(h, "Content-Length") // net/http folds repeated equal values into one
		}
		if !reflect.DeepEqual(ours.Header, theirs.Header) {
			t.Fatalf("headers differ: ours %q, net/http %q; input %q", ours.Header, theirs.Header, data)
		}
	})
}
