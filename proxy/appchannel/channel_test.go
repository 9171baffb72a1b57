package appchannel

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/proxy/internal/h1"
)

// oneReadApp accepts one connection, reads once, answers 204 and reports
// what that single read returned.
func oneReadApp(t *testing.T) (port int, got <-chan []byte) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ch := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		n, _ := c.Read(buf)
		ch <- buf[:n]
		// Drain the rest of the request, then answer.
		_, _ = c.Write([]byte("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
	}()
	return l.Addr().(*net.TCPAddr).Port, ch
}

// streamBody is a body net/http cannot tell is in memory.
type streamBody struct{ io.Reader }

func (streamBody) Close() error { return nil }

// lateReader returns its bytes only after a pause, as a body still on its
// way from the caller does.
type lateReader struct {
	r      io.Reader
	waited bool
}

func (l *lateReader) Read(p []byte) (int, error) {
	if !l.waited {
		l.waited = true
		time.Sleep(50 * time.Millisecond)
	}
	return l.r.Read(p)
}

// TestSmallBodyOneWrite: headers and a small body of known length leave in
// one write, so the app's first read sees the whole request.
func TestSmallBodyOneWrite(t *testing.T) {
	for _, n := range []int{1, 1024, smallBody} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			port, got := oneReadApp(t)
			c, err := New(Config{Port: port})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			body := bytes.Repeat([]byte("b"), n)
			req := &http.Request{Method: http.MethodPost, URL: c.URL("/x", ""), Header: http.Header{},
				Body: streamBody{&lateReader{r: bytes.NewReader(body)}}, ContentLength: int64(n), Host: c.Addr()}
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			first := <-got
			if !bytes.HasSuffix(first, append([]byte("\r\n\r\n"), body...)) {
				t.Errorf("the app's first read got %d bytes without the whole body: %.80q", len(first), first)
			}
		})
	}
}

// TestBodies: every body reaches the app intact, read ahead or streamed.
func TestBodies(t *testing.T) {
	sizes := []int{0, 1, smallBody, smallBody + 1, 1 << 20}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", strconv.Itoa(len(b)))
		w.Header().Set("X-Cl", strconv.FormatInt(r.ContentLength, 10))
		_, _ = w.Write(b)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	c, err := New(Config{Port: l.Addr().(*net.TCPAddr).Port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range sizes {
		for _, known := range []bool{true, false} {
			body := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
			cl := int64(n)
			if !known {
				cl = -1
			}
			req := &http.Request{Method: http.MethodPost, URL: c.URL("/x", ""), Header: http.Header{},
				Body: streamBody{bufio.NewReader(bytes.NewReader(body))}, ContentLength: cl, Host: c.Addr()}
			if n == 0 && known {
				req.Body = nil
			}
			resp, err := c.RoundTrip(req)
			if err != nil {
				t.Fatalf("%d bytes (known length %v): %v", n, known, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Equal(got, body) || resp.Header.Get("X-Len") != strconv.Itoa(n) {
				t.Errorf("%d bytes (known length %v): app got %s bytes, echoed %d", n, known, resp.Header.Get("X-Len"), len(got))
			}
		}
	}
}

// TestShortBody: a body shorter than its Content-Length fails with an
// appchannel error and never reaches the app.
func TestShortBody(t *testing.T) {
	port, got := oneReadApp(t)
	c, _ := New(Config{Port: port})
	defer c.Close()
	req := &http.Request{Method: http.MethodPost, URL: c.URL("/x", ""), Header: http.Header{},
		Body: streamBody{strings.NewReader("short")}, ContentLength: 100, Host: c.Addr()}
	_, err := c.RoundTrip(req)
	if err == nil || !strings.HasPrefix(err.Error(), "appchannel: read request body") {
		t.Fatalf("err %v, want an appchannel body error", err)
	}
	select {
	case b := <-got:
		t.Fatalf("app got %q", b)
	default:
	}
}

// smallBody is the largest body RoundTrip reads ahead.
const smallBody = h1.DefaultInlineBody
