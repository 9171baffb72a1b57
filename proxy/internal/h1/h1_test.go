package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTransport() *Transport {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &Transport{DialContext: d.DialContext}
}

// countConns serves h and counts the connections it accepted.
func countConns(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &n
}

func do(t *testing.T, tr http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Uri", r.RequestURI)
		w.Header().Set("X-Te", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Cl", strconv.FormatInt(r.ContentLength, 10))
		w.Header().Set("X-Host", r.Host)
		w.Header()["x-lower"] = []string{"a", "b"}
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(200)
			for i := 0; i < 3; i++ {
				_, _ = w.Write([]byte("part" + strconv.Itoa(i)))
				w.(http.Flusher).Flush()
			}
			w.Header().Set("X-Sum", "3")
			return
		case "/204":
			w.WriteHeader(204)
			return
		case "/304":
			w.WriteHeader(304)
			return
		case "/103":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(103)
			w.WriteHeader(200)
			_, _ = io.WriteString(w, "after hints")
			return
		case "/close":
			w.Header().Set("Connection", "close")
		}
		_, _ = w.Write(b)
	})
}

// TestAgainstNetHTTPServer: requests of every shape against net/http's
// server, and connection reuse.
func TestAgainstNetHTTPServer(t *testing.T) {
	srv, conns := countConns(t, echoHandler())
	tr := newTransport()
	defer tr.CloseIdleConnections()
	big := strings.Repeat("y", 100<<10)
	type tc struct {
		name, method, path string
		body               io.Reader
		cl                 int64
		wantStatus         int
		wantBody, wantTE   string
		wantCL             string
	}
	for _, c := range []tc{
		{"get", "GET", "/x?a=1&b=%2F", nil, 0, 200, "", "", "0"},
		{"post inline", "POST", "/p", strings.NewReader("hello"), 5, 200, "hello", "", "5"},
		{"post empty", "POST", "/p", nil, 0, 200, "", "", "0"},
		{"post streamed", "POST", "/p", strings.NewReader(big), int64(len(big)), 200, big, "", strconv.Itoa(len(big))},
		{"post unknown length", "POST", "/p", io.MultiReader(strings.NewReader("ab"), strings.NewReader("cd")), -1, 200, "abcd", "chunked", "-1"},
		{"chunked answer", "GET", "/chunked", nil, 0, 200, "part0part1part2", "", "0"},
		{"204", "GET", "/204", nil, 0, 204, "", "", "0"},
		{"304", "GET", "/304", nil, 0, 304, "", "", "0"},
		{"103 skipped", "GET", "/103", nil, 0, 200, "after hints", "", "0"},
		{"head", "HEAD", "/x", nil, 0, 200, "", "", "0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			u, _ := url.Parse(srv.URL + c.path)
			req := &http.Request{Method: c.method, URL: u, Header: http.Header{"X-In": {"v"}}, ContentLength: c.cl, Host: u.Host}
			if c.body != nil {
				req.Body = io.NopCloser(c.body)
			}
			resp, body := do(t, tr, req)
			if resp.StatusCode != c.wantStatus || body != c.wantBody {
				t.Fatalf("status %d body %.40q, want %d %.40q", resp.StatusCode, body, c.wantStatus, c.wantBody)
			}
			if c.wantStatus == 200 && c.method != "HEAD" && c.path != "/103" && c.path != "/chunked" {
				if got := resp.Header.Get("X-Uri"); got != c.path {
					t.Errorf("server saw URI %q, want %q", got, c.path)
				}
				if got := resp.Header.Get("X-Te"); got != c.wantTE {
					t.Errorf("server saw Transfer-Encoding %q, want %q", got, c.wantTE)
				}
				if got := resp.Header.Get("X-Cl"); got != c.wantCL {
					t.Errorf("server saw Content-Length %q, want %q", got, c.wantCL)
				}
				if v := resp.Header.Values("X-Lower"); len(v) != 2 {
					t.Errorf("canonical X-Lower: %q (header %v)", v, resp.Header)
				}
			}
			if c.path == "/chunked" {
				if resp.ContentLength != -1 || resp.Trailer.Get("X-Sum") != "3" {
					t.Errorf("chunked: length %d, trailer %v", resp.ContentLength, resp.Trailer)
				}
			}
			if c.method == "HEAD" && resp.Body != http.NoBody {
				t.Errorf("HEAD answer has a body")
			}
		})
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for sequential calls, want 1 kept alive", n)
	}
	// Connection: close is honored.
	u, _ := url.Parse(srv.URL + "/close")
	resp, _ := do(t, tr, &http.Request{Method: "GET", URL: u, Header: http.Header{}})
	if !resp.Close {
		t.Error("Connection: close answer not marked Close")
	}
	u, _ = url.Parse(srv.URL + "/x")
	do(t, tr, &http.Request{Method: "GET", URL: u, Header: http.Header{}})
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections after Connection: close, want 2", n)
	}
}

// TestHeadersMatchNetHTTP: the same answers read by net/http's Transport
// and by ours give the same headers.
func TestHeadersMatchNetHTTP(t *testing.T) {
	srv := httptest.NewServer(echoHandler())
	defer srv.Close()
	ours := newTransport()
	theirs := &http.Transport{DisableCompression: true}
	defer theirs.CloseIdleConnections()
	for _, p := range []string{"/x", "/chunked", "/204", "/close"} {
		u, _ := url.Parse(srv.URL + p)
		r1, b1 := do(t, ours, &http.Request{Method: "GET", URL: u, Header: http.Header{}})
		r2, b2 := do(t, theirs, &http.Request{Method: "GET", URL: u, Header: http.Header{}})
		delete(r1.Header, "Date")
		delete(r2.Header, "Date")
		if fmt.Sprint(r1.Header) != fmt.Sprint(r2.Header) || b1 != b2 || r1.Status != r2.Status ||
			r1.ContentLength != r2.ContentLength || r1.Close != r2.Close || fmt.Sprint(r1.Trailer) != fmt.Sprint(r2.Trailer) {
			t.Errorf("%s:\nours   %s %d %v %v %v %q\nnet/http %s %d %v %v %v %q", p,
				r1.Status, r1.ContentLength, r1.Close, r1.Header, r1.Trailer, b1,
				r2.Status, r2.ContentLength, r2.Close, r2.Header, r2.Trailer, b2)
		}
	}
}

// TestConcurrentReuse: parallel calls share a bounded pool.
func TestConcurrentReuse(t *testing.T) {
	srv, conns := countConns(t, echoHandler())
	tr := newTransport()
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				u, _ := url.Parse(srv.URL + "/p")
				body := strconv.Itoa(i)
				resp, err := tr.RoundTrip(&http.Request{Method: "POST", URL: u, Header: http.Header{},
					Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))})
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != body {
					t.Errorf("got %q want %q", b, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := conns.Load(); n > 8 {
		t.Errorf("%d connections for 8 concurrent callers", n)
	}
}

// rawServer answers each connection with fn.
func rawServer(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// readReq reads one request head and body (Content-Length or chunked).
func readReq(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

// TestCraftedResponses: a raw server feeds answers byte for byte.
func TestCraftedResponses(t *testing.T) {
	for _, c := range []struct {
		name, raw, method string
		wantStatus        int
		wantBody          string
		wantErr           string // in RoundTrip or the body read
		wantHeader        http.Header
		wantTrailer       http.Header
	}{
		{name: "content-length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", wantStatus: 200, wantBody: "abc"},
		{name: "bare LF", raw: "HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", wantStatus: 200, wantBody: "abc"},
		{name: "no reason", raw: "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", wantStatus: 404},
		{name: "http/1.0 until close", raw: "HTTP/1.0 200 OK\r\n\r\nall of it", wantStatus: 200, wantBody: "all of it"},
		{name: "chunked with trailer", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-t: 7\r\n\r\n",
			wantStatus: 200, wantBody: "abcde", wantTrailer: http.Header{"X-T": {"7"}}},
		{name: "chunked wins over length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n", wantStatus: 200, wantBody: "z"},
		{name: "canonical keys and repeated", raw: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-FOO-bar:  a \r\nX-Foo-Bar: b\r\n\r\n", wantStatus: 200,
			wantHeader: http.Header{"Content-Length": {"0"}, "X-Foo-Bar": {"a", "b"}}},
		{name: "HEAD keeps length", method: "HEAD", raw: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", wantStatus: 200},
		{name: "1xx skipped", raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nk", wantStatus: 200, wantBody: "k"},
		{name: "too many 1xx", raw: strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\n\r\n", wantErr: "informational"},
		{name: "bad chunk size", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", wantStatus: 200, wantErr: "invalid byte in chunk length"},
		{name: "chunk overflow", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n", wantStatus: 200, wantErr: "chunk length too large"},
		{name: "truncated chunk", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", wantStatus: 200, wantErr: "unexpected EOF"},
		{name: "early close in body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", wantStatus: 200, wantErr: "unexpected EOF"},
		{name: "early close in head", raw: "HTTP/1.1 200 OK\r\nContent-Len", wantErr: "unexpected EOF"},
		{name: "nothing", raw: "", wantErr: "closed the connection before answering"},
		{name: "bad status line", raw: "HTTP/2 200 OK\r\n\r\n", wantErr: "status line"},
		{name: "bad code", raw: "HTTP/1.1 2x0 OK\r\n\r\n", wantErr: "status line"},
		{name: "conflicting lengths", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", wantErr: "conflicting Content-Length"},
		{name: "negative length", raw: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", wantErr: "bad Content-Length"},
		{name: "unknown transfer-encoding", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", wantErr: "unsupported Transfer-Encoding"},
		{name: "folded line", raw: "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\n\r\n", wantErr: "folded"},
		{name: "space before colon", raw: "HTTP/1.1 200 OK\r\nX-A : 1\r\n\r\n", wantErr: "header name"},
		{name: "no colon", raw: "HTTP/1.1 200 OK\r\nX-A\r\n\r\n", wantErr: "header line"},
		{name: "control byte", raw: "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", wantErr: "control byte"},
		{name: "oversized headers", raw: "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("p", 1000)+"\r\n", 1100) + "\r\n", wantErr: "too large"},
		{name: "oversized single line", raw: "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 1<<20+10) + "\r\n\r\n", wantErr: "too large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := rawServer(t, func(conn net.Conn, br *bufio.Reader) {
				if _, err := readReq(br); err != nil {
					return
				}
				_, _ = io.WriteString(conn, c.raw)
			})
			tr := newTransport()
			defer tr.CloseIdleConnections()
			m := c.method
			if m == "" {
				m = "GET"
			}
			req := &http.Request{Method: m, URL: &url.URL{Scheme: "http", Host: addr, Path: "/"}, Header: http.Header{}}
			resp, err := tr.RoundTrip(req)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one with %q", err, c.wantErr)
				}
				if c.wantStatus != 0 && resp.StatusCode != c.wantStatus {
					t.Fatalf("status %d want %d", resp.StatusCode, c.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.wantStatus || string(body) != c.wantBody {
				t.Fatalf("status %d body %q, want %d %q", resp.StatusCode, body, c.wantStatus, c.wantBody)
			}
			for k, v := range c.wantHeader {
				if fmt.Sprint(resp.Header[k]) != fmt.Sprint(v) {
					t.Errorf("header %s = %q, want %q (all: %v)", k, resp.Header[k], v, resp.Header)
				}
			}
			if c.wantTrailer != nil && fmt.Sprint(resp.Trailer) != fmt.Sprint(c.wantTrailer) {
				t.Errorf("trailer %v want %v", resp.Trailer, c.wantTrailer)
			}
		})
	}
}

// TestServerClosedIdle: a pooled connection the server closed is replaced
// for a replayable request, never silently for a POST, and found by the
// idle peek before use.
func TestServerClosedIdle(t *testing.T) {
	var conns atomic.Int32
	addr := rawServer(t, func(conn net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if _, err := readReq(br); err != nil {
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// then close: keep-alive timeout of 0
	})
	get := func(tr *Transport, method string) error {
		req := &http.Request{Method: method, URL: &url.URL{Scheme: "http", Host: addr, Path: "/"}, Header: http.Header{}}
		if method == "POST" {
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader("abc")), 3
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && string(b) != "ok" {
			err = fmt.Errorf("body %q", b)
		}
		return err
	}
	saved := staleAfter
	defer func() { staleAfter = saved }()
	staleAfter = time.Hour // no peek: the close is found on use

	tr := newTransport()
	if err := get(tr, "GET"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the server's FIN arrives
	if err := get(tr, "GET"); err != nil {
		t.Fatalf("GET on a server-closed idle connection: %v (want one retry on a fresh connection)", err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	time.Sleep(20 * time.Millisecond)
	if err := get(tr, "POST"); err == nil || !strings.Contains(err.Error(), "closed the connection before answering") {
		t.Fatalf("POST on a server-closed idle connection: %v, want the close reported (not retried)", err)
	}

	staleAfter = 0 // peek every pooled connection
	tr = newTransport()
	if err := get(tr, "POST"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := get(tr, "POST"); err != nil {
		t.Fatalf("POST after the idle peek: %v", err)
	}
}

// TestCancelMidBody: cancelling the context fails the body read with the
// context's error and drops the connection.
func TestCancelMidBody(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countConns(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			<-release
		}
		if r.URL.Path == "/slow" {
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-release
		}
		_, _ = io.WriteString(w, "fine")
	}))
	defer close(release)
	tr := newTransport()
	ctx, cancel := context.WithCancel(context.Background())
	u, _ := url.Parse(srv.URL + "/slow")
	req, _ := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, _ := io.ReadAtLeast(resp.Body, buf, 5)
	if string(buf[:n]) != "5\r\nfirst\r\n"[3:8] && !strings.Contains(string(buf[:n]), "first") {
		t.Fatalf("first read %q", buf[:n])
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = io.ReadAll(resp.Body)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v, want context.Canceled", err)
	}
	resp.Body.Close()
	// Deadline before the answer: the context's error from RoundTrip.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	req2, _ := http.NewRequestWithContext(ctx2, "GET", srv.URL+"/hang", nil)
	if _, err := tr.RoundTrip(req2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v, want context.DeadlineExceeded", err)
	}
	// The pool still works, on a new connection.
	u3, _ := url.Parse(srv.URL + "/ok")
	if _, body := do(t, tr, &http.Request{Method: "GET", URL: u3, Header: http.Header{}}); body != "fine" {
		t.Fatalf("after cancel: %q", body)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (cancelled ones are not reused)", n)
	}
}

// TestEarlyAnswerFullDuplex: a server that answers before reading a 10 MB
// upload (and never reads it) does not deadlock the call.
func TestEarlyAnswerFullDuplex(t *testing.T) {
	addr := rawServer(t, func(conn net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(conn, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nnope")
		time.Sleep(200 * time.Millisecond) // answered; the upload stalls
	})
	for _, cl := range []int64{10 << 20, -1} {
		tr := newTransport()
		req := &http.Request{Method: "POST", URL: &url.URL{Scheme: "http", Host: addr, Path: "/"}, Header: http.Header{},
			Body: io.NopCloser(bytes.NewReader(make([]byte, 10<<20))), ContentLength: cl}
		done := make(chan error, 1)
		go func() {
			resp, err := tr.RoundTrip(req)
			if err != nil {
				done <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && (resp.StatusCode != 413 || string(b) != "nope") {
				err = fmt.Errorf("status %d body %q", resp.StatusCode, b)
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("length %d: %v", cl, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("length %d: deadlock", cl)
		}
	}
}

// TestBadRequests: invalid requests fail before anything is sent.
func TestBadRequests(t *testing.T) {
	tr := newTransport()
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:1", Path: "/"}
	for name, req := range map[string]*http.Request{
		"header injection": {Method: "GET", URL: u, Header: http.Header{"X": {"a\r\nEvil: 1"}}},
		"bad header name":  {Method: "GET", URL: u, Header: http.Header{"X Y": {"a"}}},
		"bad method":       {Method: "GE T", URL: u, Header: http.Header{}},
		"bad target":       {Method: "GET", URL: &url.URL{Scheme: "http", Host: "127.0.0.1:1", Opaque: "/a b"}, Header: http.Header{}},
	} {
		if _, err := tr.RoundTrip(req); err == nil || strings.Contains(err.Error(), "dial") {
			t.Errorf("%s: %v, want a validation error", name, err)
		}
	}
}

// TestDialError: dial errors come back wrapped.
func TestDialError(t *testing.T) {
	sentinel := errors.New("refused by test")
	tr := &Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return nil, sentinel }}
	_, err := tr.RoundTrip(&http.Request{Method: "GET", URL: &url.URL{Scheme: "http", Host: "x:1", Path: "/"}, Header: http.Header{}})
	if !errors.Is(err, sentinel) {
		t.Fatalf("%v, want the dial error wrapped", err)
	}
}

// TestIdleTimeout: connections idle for longer than IdleTimeout are closed.
func TestIdleTimeout(t *testing.T) {
	srv, conns := countConns(t, echoHandler())
	tr := newTransport()
	tr.IdleTimeout = 50 * time.Millisecond
	u, _ := url.Parse(srv.URL + "/x")
	do(t, tr, &http.Request{Method: "GET", URL: u, Header: http.Header{}})
	time.Sleep(150 * time.Millisecond)
	tr.mu.Lock()
	n := len(tr.idle)
	tr.mu.Unlock()
	if n != 0 {
		t.Errorf("%d idle pools left after the idle timeout", n)
	}
	do(t, tr, &http.Request{Method: "GET", URL: u, Header: http.Header{}})
	if c := conns.Load(); c != 2 {
		t.Errorf("%d connections, want 2", c)
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	srv := httptest.NewServer(echoHandler())
	defer srv.Close()
	for _, c := range []struct {
		name string
		tr   http.RoundTripper
	}{{"h1", newTransport()}, {"nethttp", &http.Transport{MaxIdleConnsPerHost: 64}}} {
		b.Run(c.name, func(b *testing.B) {
			u, _ := url.Parse(srv.URL + "/p")
			payload := strings.Repeat("x", 1024)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.tr.RoundTrip(&http.Request{Method: "POST", URL: u, Header: http.Header{},
						Body: io.NopCloser(strings.NewReader(payload)), ContentLength: 1024})
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
