package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
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
		if err != nil {
			return
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 || (resp.StatusCode < 200 && resp.StatusCode != 101) {
			t.Fatalf("status %d", resp.StatusCode)
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, int64(len(data))+1))
		if n > int64(len(data)) {
			t.Fatalf("read %d body bytes from %d input bytes", n, len(data))
		}
		if resp.ContentLength > 0 && n > resp.ContentLength {
			t.Fatalf("body %d bytes over Content-Length %d", n, resp.ContentLength)
		}
		resp.Body.Close()
	})
}
