package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startServer serves h on a loopback listener until the test ends.
func startServer(t *testing.T, h http.Handler, tune func(*Server)) (string, *Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h}
	if tune != nil {
		tune(s)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.ServeConn(c, nil) })
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		s.Close()
		wg.Wait()
	})
	return l.Addr().String(), s
}

// rawConn is a client connection for hand-written requests; answers are
// read with net/http's own response parser.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// read reads one answer to a request of method and its whole body.
func (r *rawConn) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("read answer body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection (EOF next).
func (r *rawConn) closed() bool {
	r.t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := r.br.ReadByte()
	return err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err)
}

// echo answers with the method, target, Host and body it got.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s host=%s body=%s", r.Method, r.RequestURI, r.Host, b)
	for k, v := range r.Trailer {
		fmt.Fprintf(w, " trailer:%s=%s", k, strings.Join(v, ","))
	}
})

func TestServerRefusesAmbiguousRequests(t *testing.T) {
	var called atomic.Int32
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		echo(w, r)
	}), nil)
	big := strings.Repeat("a", DefaultMaxRequestHeader)
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
		{"two lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
		{"length list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\nabcd", 400},
		{"signed length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400},
		{"negative length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"hex length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc", 400},
		{"huge length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"empty length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
		{"gzip coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"Kelvin sign coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\u212Aed\r\n\r\n0\r\n\r\n", 501},
		{"framing trailer", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400},
		{"CONNECT", "CONNECT a.b:443 HTTP/1.1\r\nHost: a.b:443\r\n\r\n", 405},
		{"identity coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501},
		{"chunked junk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501},
		{"TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"folded line", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\nabc", 400},
		{"bad name", "GET / HTTP/1.1\r\nHost: a\r\nX@A: 1\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\rContent-Length: 3\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"no version", "GET /\r\nHost: a\r\n\r\n", 400},
		{"lower version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"HTTP/2 line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
		{"bad method", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"control in target", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"asterisk for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"empty line first", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"expect other", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417},
		{"head too large", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + big + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := called.Load()
			c := dialRaw(t, addr)
			c.send(tc.req)
			resp, body := c.read("GET")
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if !resp.Close || !c.closed() {
				t.Errorf("connection stays open after a refused request")
			}
			if called.Load() != before {
				t.Errorf("the handler ran")
			}
		})
	}
}

func TestServerKeepAliveAndPipelining(t *testing.T) {
	addr, _ := startServer(t, echo, nil)
	c := dialRaw(t, addr)
	// Three requests in one write: no body, a sized body, a chunked body
	// with a trailer (bare LF line ends are accepted, as net/http does).
	c.send("GET /a?x=1 HTTP/1.1\r\nHost: h1\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: h2\r\nContent-Length: 5\r\n\r\nhello" +
		"PUT /c HTTP/1.1\nHost: h3\nTransfer-Encoding: chunked\n\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")
	for _, want := range []string{
		"GET /a?x=1 host=h1 body=",
		"POST /b host=h2 body=hello",
		"PUT /c host=h3 body=abcde trailer:X-Sum=5",
	} {
		resp, body := c.read("GET")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("got %d %q, want %q", resp.StatusCode, body, want)
		}
		if resp.Close {
			t.Fatalf("answer %q closes the connection", want)
		}
		if resp.ContentLength != int64(len(want)) || resp.Header.Get("Date") == "" {
			t.Errorf("answer %q: Content-Length %d, Date %q", want, resp.ContentLength, resp.Header.Get("Date"))
		}
	}
	// Absolute form (the HTTP proxy form): its authority is the Host.
	c.send("GET http://orders.prod/x HTTP/1.1\r\nHost: ignored\r\n\r\n")
	if _, body := c.read("GET"); body != "GET http://orders.prod/x host=orders.prod body=" {
		t.Fatalf("absolute form: %q", body)
	}
	c.send("OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	resp, body := c.read("OPTIONS")
	if body != "OPTIONS * host=a body=" || !resp.Close || !c.closed() {
		t.Fatalf("OPTIONS * with Connection: close: %q close=%v", body, resp.Close)
	}
}

func TestServerHTTP10(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			io.WriteString(w, "part1 ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part2")
			return
		}
		echo(w, r)
	}), nil)
	c := dialRaw(t, addr)
	c.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, body := c.read("GET")
	if body != "GET /a host= body=" || resp.Close || resp.Header.Get("Connection") != "keep-alive" {
		t.Fatalf("1.0 keep-alive: %q close=%v Connection=%q", body, resp.Close, resp.Header.Get("Connection"))
	}
	// A streamed answer to HTTP/1.0 ends with the connection.
	c.send("GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp, body = c.read("GET")
	if body != "part1 part2" || resp.ContentLength != -1 || !resp.Close {
		t.Fatalf("1.0 stream: %q length %d close=%v", body, resp.ContentLength, resp.Close)
	}
	c = dialRaw(t, addr)
	c.send("GET /b HTTP/1.0\r\n\r\n")
	if resp, _ := c.read("GET"); !resp.Close || !c.closed() {
		t.Fatal("HTTP/1.0 without keep-alive: connection stays open")
	}
}

func TestServerResponseFraming(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream": // flushed: chunked, with trailers both ways of declaring them
			w.Header().Set("Trailer", "X-Declared")
			io.WriteString(w, "one ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "two")
			w.Header().Set("X-Declared", "d")
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		case "/large": // unflushed but larger than the held-back buffer: chunked
			io.WriteString(w, strings.Repeat("x", 5000))
		case "/short": // declares 10 bytes, writes 5: the connection must end
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "12345")
		case "/over":
			w.Header().Set("Content-Length", "2")
			if _, err := io.WriteString(w, "123"); !errors.Is(err, http.ErrContentLength) {
				panic("write over Content-Length: " + fmt.Sprint(err))
			}
			io.WriteString(w, "12")
		case "/inject":
			w.Header().Set("X-Evil", "a\r\nSet-Cookie: owned=1")
			w.Header()["Bad Name"] = []string{"x"}
			io.WriteString(w, "ok")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "x"); !errors.Is(err, http.ErrBodyNotAllowed) {
				panic("write on 204: " + fmt.Sprint(err))
			}
		case "/hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
			io.WriteString(w, "final")
		default:
			io.WriteString(w, "body of "+r.Method)
		}
	}), nil)
	c := dialRaw(t, addr)

	c.send("GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := c.read("GET")
	if body != "one two" || resp.ContentLength != -1 || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("stream: %q length %d trailer %v", body, resp.ContentLength, resp.Trailer)
	}
	c.send("GET /large HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); len(body) != 5000 || resp.TransferEncoding == nil {
		t.Fatalf("large: %d bytes, TE %v", len(body), resp.TransferEncoding)
	}
	c.send("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("HEAD"); body != "" || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	c.send("GET /nocontent HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 204 || body != "" || resp.Header.Get("Content-Length") != "" {
		t.Fatalf("204: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	c.send("GET /inject HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body = c.read("GET")
	if body != "ok" || resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-Evil") != "a  Set-Cookie: owned=1" || resp.Header.Get("Bad Name") != "" {
		t.Fatalf("header injection: %q %v", body, resp.Header)
	}
	c.send("GET /over HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := c.read("GET"); body != "12" {
		t.Fatalf("over: %q", body)
	}
	c.send("GET /hints HTTP/1.1\r\nHost: a\r\n\r\n")
	hints, err := http.ReadResponse(c.br, nil)
	if err != nil || hints.StatusCode != http.StatusEarlyHints || hints.Header.Get("Link") == "" {
		t.Fatalf("103: %v %v", hints, err)
	}
	if resp, body := c.read("GET"); resp.StatusCode != 200 || body != "final" || resp.Header.Get("Link") != "" {
		t.Fatalf("after 103: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	c.send("GET /short HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err = http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); !errors.Is(err, io.ErrUnexpectedEOF) || string(b) != "12345" {
		t.Fatalf("short body: %q %v, want the 5 bytes then unexpected EOF", b, err)
	}
}

func TestServerExpectContinue(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(w, "no", http.StatusForbidden) // never reads the body
			return
		}
		echo(w, r)
	}), nil)
	c := dialRaw(t, addr)
	c.send("POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	cont, err := http.ReadResponse(c.br, nil)
	if err != nil || cont.StatusCode != 100 {
		t.Fatalf("no 100 Continue: %v %v", cont, err)
	}
	c.send("data")
	if resp, body := c.read("POST"); resp.StatusCode != 200 || body != "POST /e host=a body=data" || resp.Close {
		t.Fatalf("after 100: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	// Answered without reading: no 100, and the connection ends (the
	// client still holds its body).
	c.send("POST /refuse HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	resp, _ := c.read("POST")
	if resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Fatalf("refused upload: %d close=%v", resp.StatusCode, resp.Close)
	}
}

func TestServerUnreadBody(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "early") // never reads the body
	}), nil)
	c := dialRaw(t, addr)
	// A small unread body already in the buffer is skipped: the
	// connection carries the next request.
	c.send("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	for range 2 {
		if resp, body := c.read("GET"); body != "early" || resp.Close {
			t.Fatalf("%q close=%v", body, resp.Close)
		}
	}
	// A large one still on its way: the answer arrives whole, then the
	// connection ends gently (no reset eating the answer).
	c = dialRaw(t, addr)
	done := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c.c, "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n"+strings.Repeat("z", 1<<20))
		done <- err
	}()
	if resp, body := c.read("POST"); body != "early" || !resp.Close {
		t.Fatalf("big unread body: %q close=%v", body, resp.Close)
	}
	<-done
}

func TestServerClientGoneCancelsContext(t *testing.T) {
	canceled := make(chan error, 1)
	// As with net/http, the watch starts once the body is read (or when
	// there is none): before, the handler's own reads see the close.
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			canceled <- r.Context().Err()
		case <-time.After(5 * time.Second):
			canceled <- errors.New("not canceled within 5s")
		}
	}), nil)
	for _, req := range []string{
		"POST /wait HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
		"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		c := dialRaw(t, addr)
		c.send(req)
		time.Sleep(50 * time.Millisecond)
		_ = c.c.Close()
		if err := <-canceled; !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

func TestServerShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	addr, srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "done "+r.URL.Path)
	}), nil)
	idle := dialRaw(t, addr)
	idle.send("GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
	idle.read("GET")
	busy := dialRaw(t, addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Fatal("an idle connection stays open during Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	resp, body := busy.read("GET")
	if body != "done /slow" || !resp.Close {
		t.Fatalf("in-flight request: %q close=%v", body, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	// A bounded Shutdown reports its context's end.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with no connection left: %v", err)
	}
}

func TestServerPanicClosesOnlyItsConnection(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		io.WriteString(w, "fine")
	}), nil)
	c := dialRaw(t, addr)
	c.send("GET /panic HTTP/1.1\r\nHost: a\r\n\r\n")
	if !c.closed() {
		t.Fatal("connection of a panicking handler stays open")
	}
	c = dialRaw(t, addr)
	c.send("GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := c.read("GET"); body != "fine" {
		t.Fatalf("after a panic: %q", body)
	}
}

func TestServerTimeouts(t *testing.T) {
	addr, _ := startServer(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = 300 * time.Millisecond
	})
	// A head trickling in is cut at ReadHeaderTimeout.
	c := dialRaw(t, addr)
	start := time.Now()
	c.send("GET / HTTP/1.1\r\nHost: a\r\n")
	if !c.closed() {
		t.Fatal("an unfinished head keeps the connection")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("unfinished head closed after %v", d)
	}
	// An idle connection ends after IdleTimeout.
	c = dialRaw(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	c.read("GET")
	start = time.Now()
	if !c.closed() {
		t.Fatal("an idle connection stays open")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("idle connection closed after %v, before IdleTimeout", d)
	}
	// An upload slower than IdleTimeout is not cut: the body reads lift it.
	c = dialRaw(t, addr)
	c.send("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
	time.Sleep(500 * time.Millisecond)
	c.send("cd")
	if _, body := c.read("POST"); body != "POST /slow host=a body=abcd" {
		t.Fatalf("slow upload: %q", body)
	}
}

func TestServerFullDuplex(t *testing.T) {
	// The handler streams its answer while the client's upload goes on.
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	}), nil)
	c := dialRaw(t, addr)
	c.send("POST /dup HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nping1\r\n")
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "ping1" {
		t.Fatalf("first echo: %q %v", buf, err)
	}
	c.send("5\r\nping2\r\n0\r\n\r\n")
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "ping2" {
		t.Fatalf("rest: %q %v", rest, err)
	}
}

// TestServerWithNetHTTPClient: net/http's client, over many requests and
// connections, sees what a net/http server would give it.
func TestServerWithNetHTTPClient(t *testing.T) {
	addr, _ := startServer(t, echo, nil)
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				body := strings.Repeat("b", (g*50+i)%3000)
				var rd io.Reader = strings.NewReader(body)
				if i%2 == 1 {
					rd = io.MultiReader(rd) // unknown length: chunked
				}
				resp, err := cl.Post("http://"+addr+"/p", "text/plain", rd)
				if err != nil {
					t.Error(err)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := "POST /p host=" + addr + " body=" + body; string(got) != want {
					t.Errorf("got %d bytes, want %d", len(got), len(want))
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestServerAnswersWhileUploadPending: a handler that hands the body to
// another goroutine (as the sidecar's transport does for large uploads)
// and answers before the upload is in gets its answer out at once.
func TestServerAnswersWhileUploadPending(t *testing.T) {
	readerDone := make(chan error, 1)
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			_, err := io.Copy(io.Discard, r.Body)
			readerDone <- err
		}()
		time.Sleep(20 * time.Millisecond) // the reader is blocked on the network
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}), nil)
	c := dialRaw(t, addr)
	c.send("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc")
	start := time.Now()
	resp, body := c.read("POST")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
		t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("answer took %v", d)
	}
	select {
	case err := <-readerDone:
		if err == nil {
			t.Fatal("the abandoned body read succeeded")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the body reader is still blocked")
	}
}

// TestServerFramingFromState: framing fields changed after WriteHeader do
// not reach the wire; trailers force chunked framing even for a short
// answer.
func TestServerFramingFromState(t *testing.T) {
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/set-late":
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, strings.Repeat("y", 3000))
		case "/del-late":
			w.Header().Set("Content-Length", "4")
			w.WriteHeader(200)
			w.Header().Del("Content-Length")
			io.WriteString(w, "four")
		case "/short-trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "hi")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		case "/trailers-only":
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "5")
		}
	}), nil)
	c := dialRaw(t, addr)
	c.send("GET /set-late HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); len(body) != 3000 || resp.Header.Get("Content-Length") != "" {
		t.Fatalf("set-late: %d bytes, Content-Length %q", len(body), resp.Header.Get("Content-Length"))
	}
	c.send("GET /del-late HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); body != "four" || resp.ContentLength != 4 {
		t.Fatalf("del-late: %q length %d", body, resp.ContentLength)
	}
	c.send("GET /short-trailer HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := c.read("GET")
	if body != "hi" || resp.Header.Get("X-Sum") != "" || resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("short-trailer: %q header %v trailer %v", body, resp.Header, resp.Trailer)
	}
	c.send("GET /trailers-only HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp, body := c.read("GET"); body != "" || resp.Trailer.Get("Grpc-Status") != "5" || resp.Close {
		t.Fatalf("trailers-only: %q trailer %v close=%v", body, resp.Trailer, resp.Close)
	}
}

func TestServerFirstRequestDeadline(t *testing.T) {
	addr, _ := startServer(t, echo, func(s *Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = time.Minute
	})
	// A new connection owes its first request within ReadHeaderTimeout.
	c := dialRaw(t, addr)
	start := time.Now()
	if !c.closed() {
		t.Fatal("a silent new connection stays open")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("silent connection closed after %v", d)
	}
}

func TestServerWatchOutlivesIdleTimeout(t *testing.T) {
	// A handler running past IdleTimeout still learns that its client left.
	canceled := make(chan error, 1)
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/long" {
			return
		}
		select {
		case <-r.Context().Done():
			canceled <- r.Context().Err()
		case <-time.After(5 * time.Second):
			canceled <- errors.New("not canceled within 5s")
		}
	}), func(s *Server) { s.IdleTimeout = 300 * time.Millisecond })
	c := dialRaw(t, addr)
	c.send("GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
	c.read("GET") // served at once: the next request waits under IdleTimeout
	c.send("GET /long HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(900 * time.Millisecond)
	_ = c.c.Close()
	if err := <-canceled; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

// TestServerReuseHeader: with ReuseHeader a connection's next request gets
// the last one's header map back, holding only its own fields: none of the
// last request's (also ones the handler added), the same values whatever
// the order and repetition of keys, and a head with more fields than the
// kept array, or than a kept map may hold, is parsed whole (Host is not a
// field of r.Header, as in net/http). Without it every request gets a map
// of its own and sees the same.
func TestServerReuseHeader(t *testing.T) {
	type seen struct {
		h   string
		ptr uintptr
	}
	for _, reuse := range []bool{true, false} {
		t.Run(fmt.Sprint("reuse=", reuse), func(t *testing.T) {
			got := make(chan seen, 16)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				keys := make([]string, 0, len(r.Header))
				for k, v := range r.Header {
					keys = append(keys, k+"="+strings.Join(v, ","))
				}
				slices.Sort(keys)
				got <- seen{strings.Join(keys, " "), reflect.ValueOf(r.Header).Pointer()}
				r.Header["X-Added-By-Handler"] = []string{"1"} // must not reach the next request
				r.Header["X-A"] = append(r.Header["X-A"], "appended")
				w.WriteHeader(http.StatusNoContent)
			})
			addr, _ := startServer(t, h, func(s *Server) { s.ReuseHeader = reuse })
			c := dialRaw(t, addr)
			var many strings.Builder
			var wantMany []string
			for i := range 40 {
				fmt.Fprintf(&many, "X-F%02d: v%d\r\n", i, i)
				wantMany = append(wantMany, fmt.Sprintf("X-F%02d=v%d", i, i))
			}
			slices.Sort(wantMany)
			steps := []struct{ head, want string }{
				{"X-A: 1\r\nX-B: 2\r\nX-A: 3\r\n", "X-A=1,3 X-B=2"},
				{"X-C: 4\r\n", "X-C=4"},
				{"X-A: 5\r\nX-A: 6\r\nX-A: 7\r\nX-D: 8\r\n", "X-A=5,6,7 X-D=8"},
				{many.String(), strings.Join(wantMany, " ")},
				{"X-E: 9\r\n", "X-E=9"},
				{"", ""},
			}
			var ptrs []uintptr
			for i, st := range steps {
				c.send("GET /" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: h\r\n" + st.head + "\r\n")
				if resp, _ := c.read("GET"); resp.StatusCode != http.StatusNoContent {
					t.Fatalf("request %d: status %d", i, resp.StatusCode)
				}
				s := <-got
				if s.h != st.want {
					t.Errorf("request %d: the handler saw header %q, want %q", i, s.h, st.want)
				}
				ptrs = append(ptrs, s.ptr)
			}
			// The first three fit the kept map: one map for them when
			// reusing. The 40-field head is too big to keep, so the map
			// made after it is kept for the last two.
			sameMap := ptrs[0] == ptrs[1] && ptrs[1] == ptrs[2]
			if reuse && (!sameMap || ptrs[4] != ptrs[5]) {
				t.Errorf("ReuseHeader: header maps %x, want the first three and the last two the same", ptrs)
			}
		})
	}
}
