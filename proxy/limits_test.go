package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLimitedNetHTTPServer runs limited under net/http's HTTP/1.1 server
// (--h1-server nethttp): an upload the handler leaves unread must not be
// read as the next request on the connection, and a chunked request (whose
// Content-Length net/http drops unseen) ends its connection.
func TestLimitedNetHTTPServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: limited(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > 0 || len(r.TransferEncoding) > 0 {
			_ = http.NewResponseController(w).EnableFullDuplex()
			defer r.Body.Close()
			_, _ = io.ReadFull(r.Body, make([]byte, 1024)) // answers early
		}
		w.Header().Set("Connection", "keep-alive") // as a copied app answer may
		_, _ = io.WriteString(w, "answer "+r.URL.Path)
	}), 100, time.Minute)}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() {
		_ = s.Close()
		// A connection closed after an unread body lingers in net/http
		// (closeWriteAndWait) for half a second.
		time.Sleep(700 * time.Millisecond)
	})

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	read := func(br *bufio.Reader) (*http.Response, string, error) {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return nil, "", err
		}
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	t.Run("early answer to an upload", func(t *testing.T) {
		c, br := dial()
		// 1 MiB announced; 600 KiB sent, of which the handler reads 1 KiB,
		// the rest looks like a request head.
		upload := strings.Repeat("GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 600<<10/36)
		go func() {
			_, _ = io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"+upload)
		}()
		if _, body, err := read(br); err != nil || body != "answer /upload" {
			t.Fatalf("first answer: %q, %v", body, err)
		}
		if next, body, _ := read(br); next != nil {
			t.Fatalf("a second answer (%d %q): the unread upload was served as a request", next.StatusCode, body)
		}
	})

	t.Run("chunked request closes the connection", func(t *testing.T) {
		c, br := dial()
		_, _ = io.WriteString(c, "POST /charge HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
			"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body, err := read(br)
		if err != nil || body != "answer /charge" {
			t.Fatalf("first answer: %q, %v", body, err)
		}
		if !resp.Close {
			t.Errorf("answer without Connection: close")
		}
		if next, body, _ := read(br); next != nil {
			t.Fatalf("a second answer (%d %q): the hidden request was served", next.StatusCode, body)
		}
	})
}
