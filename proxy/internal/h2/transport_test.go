package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// clientNoLeak fails t if goroutines started during it outlive it (after
// its own cleanups, which run first).
func clientNoLeak(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// clientEnv is a net/http HTTP/2 server and a Transport dialing it.
type clientEnv struct {
	url      string
	tr       *Transport
	conns    atomic.Int32 // connections accepted
	srv      *httptest.Server
	h2cSrv   *http.Server
	listener net.Listener
}

// newNetHTTPEnv starts net/http's HTTP/2 server with h, over TLS or h2c.
func clientNewEnv(t *testing.T, useTLS bool, h http.Handler, cfg *http.HTTP2Config) *clientEnv {
	t.Helper()
	e := &clientEnv{}
	if cfg == nil {
		cfg = &http.HTTP2Config{}
	}
	if useTLS {
		s := httptest.NewUnstartedServer(h)
		s.EnableHTTP2 = true
		s.Config.HTTP2 = cfg
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				e.conns.Add(1)
			}
		}
		s.Config.ErrorLog = clientQuietLog()
		s.StartTLS()
		e.srv = s
		e.url = s.URL
		d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}} //nolint:gosec // test
		e.tr = &Transport{DialContext: d.DialContext}
		t.Cleanup(s.Close)
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		s := &http.Server{Handler: h, Protocols: p, HTTP2: cfg, ErrorLog: clientQuietLog(), ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				e.conns.Add(1)
			}
		}}
		go func() { _ = s.Serve(ln) }()
		e.h2cSrv, e.listener = s, ln
		e.url = "http://" + ln.Addr().String()
		var d net.Dialer
		e.tr = &Transport{DialContext: d.DialContext}
		t.Cleanup(func() { _ = s.Close() })
	}
	t.Cleanup(e.tr.CloseIdleConnections)
	return e
}

func (e *clientEnv) kill() {
	if e.srv != nil {
		e.srv.CloseClientConnections()
	} else {
		_ = e.h2cSrv.Close()
	}
}

func clientBoth(t *testing.T, f func(t *testing.T, useTLS bool)) {
	t.Run("tls", func(t *testing.T) { clientNoLeak(t); f(t, true) })
	t.Run("h2c", func(t *testing.T) { clientNoLeak(t); f(t, false) })
}

func clientGet(t *testing.T, tr *Transport, ctx context.Context, method, url string, body io.Reader) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return tr.RoundTrip(req)
}

func clientReadAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	_ = resp.Body.Close()
	return string(b)
}

func clientEcho(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Proto", r.Proto)
	w.Header().Set("X-Len", fmt.Sprint(r.ContentLength))
	w.Header().Set("X-Custom", r.Header.Get("X-Custom"))
	w.Header()["X-Multi"] = []string{"a", "b"}
	_, _ = w.Write(b)
}

func TestClientBasic(t *testing.T) {
	clientBoth(t, func(t *testing.T, useTLS bool) {
		e := clientNewEnv(t, useTLS, http.HandlerFunc(clientEcho), nil)
		ctx := context.Background()
		req, _ := http.NewRequest("GET", e.url+"/a?b=c", nil)
		req.Header.Set("X-Custom", "v1")
		resp, err := e.tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("X-Proto") != "HTTP/2.0" || resp.Header.Get("X-Custom") != "v1" || resp.Header.Get("X-Method") != "GET" {
			t.Fatalf("resp %d %s %v", resp.StatusCode, resp.Proto, resp.Header)
		}
		if got := resp.Header["X-Multi"]; len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Fatalf("X-Multi %q", got)
		}
		if s := clientReadAll(t, resp); s != "" {
			t.Fatalf("body %q", s)
		}
		// Known length, inline.
		resp, err = clientGet(t, e.tr, ctx, "POST", e.url+"/p", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		if s := clientReadAll(t, resp); s != "hello" || resp.Header.Get("X-Len") != "5" {
			t.Fatalf("POST: %q len %s", s, resp.Header.Get("X-Len"))
		}
		// Unknown length, streamed by the writer.
		resp, err = clientGet(t, e.tr, ctx, "POST", e.url+"/p", io.MultiReader(strings.NewReader("hel"), strings.NewReader("lo!")))
		if err != nil {
			t.Fatal(err)
		}
		if s := clientReadAll(t, resp); s != "hello!" {
			t.Fatalf("POST streamed: %q", s)
		}
		if n := e.conns.Load(); n != 1 {
			t.Fatalf("%d connections, want 1 (multiplexed)", n)
		}
	})
}

func TestClientLargeBodies(t *testing.T) {
	// Bodies beyond every window, both ways, on one connection.
	clientBoth(t, func(t *testing.T, useTLS bool) {
		e := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			w.Header().Set("X-Sum", fmt.Sprintf("%x/%d", h.Sum(nil), n))
			chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
			for i := 0; i < 160; i++ { // 10 MiB
				_, _ = w.Write(chunk)
			}
		}), nil)
		up := bytes.Repeat([]byte("x"), 3<<20)
		sum := sha256.Sum256(up)
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := clientGet(t, e.tr, context.Background(), "PUT", e.url, struct{ io.Reader }{bytes.NewReader(up)})
				if err != nil {
					t.Error(err)
					return
				}
				if got, want := resp.Header.Get("X-Sum"), fmt.Sprintf("%x/%d", sum, len(up)); got != want {
					t.Errorf("upload: server saw %s, want %s", got, want)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if err != nil || n != 10<<20 {
					t.Errorf("download: %d bytes, %v", n, err)
				}
			}()
		}
		wg.Wait()
	})
}

func TestClientTrailers(t *testing.T) {
	clientBoth(t, func(t *testing.T, useTLS bool) {
		e := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Declared")
			_, _ = w.Write([]byte("body"))
			w.(http.Flusher).Flush()
			w.Header().Set("X-Declared", "d")
			w.Header().Set(http.TrailerPrefix+"X-Late", "l")
		}), nil)
		resp, err := clientGet(t, e.tr, context.Background(), "GET", e.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if v := resp.Trailer.Get("X-Declared"); v != "" {
			t.Fatalf("trailer before EOF: %q", v)
		}
		if s := clientReadAll(t, resp); s != "body" {
			t.Fatalf("body %q", s)
		}
		if resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Late") != "l" {
			t.Fatalf("trailers %v", resp.Trailer)
		}
	})
}

func TestClientBidi(t *testing.T) {
	// Full duplex: each chunk's echo arrives before the next chunk leaves.
	clientBoth(t, func(t *testing.T, useTLS bool) {
		e := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			buf := make([]byte, 100)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 {
					_, _ = w.Write(bytes.ToUpper(buf[:n]))
					w.(http.Flusher).Flush()
				}
				if err != nil {
					return
				}
			}
		}), nil)
		pr, pw := io.Pipe()
		resp, err := clientGet(t, e.tr, context.Background(), "POST", e.url, pr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		for _, m := range []string{"one", "two", "three"} {
			if _, err := pw.Write([]byte(m)); err != nil {
				t.Fatal(err)
			}
			n, err := io.ReadAtLeast(resp.Body, buf, len(m))
			if err != nil || string(buf[:n]) != strings.ToUpper(m) {
				t.Fatalf("echo of %q: %q %v", m, buf[:n], err)
			}
		}
		_ = pw.Close()
		if s := clientReadAll(t, resp); s != "" {
			t.Fatalf("rest %q", s)
		}
	})
}

func TestClientMaxConcurrentStreams(t *testing.T) {
	// The server allows 4 streams per connection: 32 concurrent calls
	// need more connections, and none fails.
	clientBoth(t, func(t *testing.T, useTLS bool) {
		release := make(chan struct{})
		var inside atomic.Int32
		e := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inside.Add(1)
			<-release
			_, _ = w.Write([]byte("ok"))
		}), &http.HTTP2Config{MaxConcurrentStreams: 4})
		// The first call learns the server's limit.
		close(release)
		resp, err := clientGet(t, e.tr, context.Background(), "GET", e.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		clientReadAll(t, resp)
		release = make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := clientGet(t, e.tr, context.Background(), "GET", e.url, nil)
				if err != nil {
					errs <- err
					return
				}
				if s, err := io.ReadAll(resp.Body); err != nil || string(s) != "ok" {
					errs <- fmt.Errorf("body %q %v", s, err)
				}
				_ = resp.Body.Close()
			}()
		}
		deadline := time.Now().Add(10 * time.Second)
		for inside.Load() < 33 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := inside.Load(); n != 33 {
			t.Errorf("%d calls reached the server at once, want all 32 (+1)", n-1)
		}
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := e.conns.Load(); n < 8 {
			t.Errorf("%d connections for 32 calls at 4 streams each", n)
		}
	})
}

func TestClientCancel(t *testing.T) {
	clientBoth(t, func(t *testing.T, useTLS bool) {
		gone := make(chan struct{}, 4)
		e := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for {
				if _, err := w.Write([]byte("tick")); err != nil {
					break
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					gone <- struct{}{}
					return
				case <-time.After(time.Millisecond):
				}
			}
			gone <- struct{}{}
		}), nil)
		// Context ended mid-body.
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := clientGet(t, e.tr, ctx, "GET", e.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		cancel()
		_, err = io.Copy(io.Discard, resp.Body)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("read after cancel: %v, want context.Canceled", err)
		}
		_ = resp.Body.Close()
		clientWait(t, gone, "the server to see the cancel (RST_STREAM)")
		// Body closed before its end.
		resp, err = clientGet(t, e.tr, context.Background(), "GET", e.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		clientWait(t, gone, "the server to see the closed body (RST_STREAM)")
		// Context ended before the headers.
		ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		slow := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		}), nil)
		start := time.Now()
		_, err = clientGet(t, slow.tr, ctx, "GET", slow.url, nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Fatalf("deadline before headers: %v after %v", err, time.Since(start))
		}
	})
}

func clientWait(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestClientServerKilled(t *testing.T) {
	clientBoth(t, func(t *testing.T, useTLS bool) {
		started := make(chan struct{})
		e := clientNewEnv(t, useTLS, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("part"))
			w.(http.Flusher).Flush()
			close(started)
			<-r.Context().Done()
		}), nil)
		resp, err := clientGet(t, e.tr, context.Background(), "GET", e.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-started
		e.kill()
		b, err := io.ReadAll(resp.Body)
		if err == nil || !errors.Is(err, ErrConnClosed) {
			t.Fatalf("read after the server died: %q, %v (want ErrConnClosed)", b, err)
		}
		_ = resp.Body.Close()
	})
}

func TestClientGracefulShutdown(t *testing.T) {
	// net/http's Shutdown sends GOAWAY: the call in flight completes.
	clientNoLeak(t)
	release := make(chan struct{})
	started := make(chan struct{})
	e := clientNewEnv(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = w.Write([]byte("done"))
	}), nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := clientGet(t, e.tr, context.Background(), "GET", e.url, nil)
		if err != nil {
			errc <- err
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err == nil && string(b) != "done" {
			err = fmt.Errorf("body %q", b)
		}
		errc <- err
	}()
	<-started
	sd := make(chan error, 1)
	go func() { sd <- e.h2cSrv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("call in flight during GOAWAY: %v", err)
	}
	if err := <-sd; err != nil {
		t.Fatal(err)
	}
}

func TestClientBadInput(t *testing.T) {
	clientNoLeak(t)
	e := clientNewEnv(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("X-Big", strings.Repeat("b", 20<<10))
		}
		if r.URL.Path == "/read" { // no answer before the body's end
			if _, err := io.ReadAll(r.Body); err != nil {
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	}), nil)
	e.tr.MaxResponseHeaderBytes = 8 << 10
	ctx := context.Background()
	for _, c := range []struct {
		name string
		mod  func(r *http.Request)
	}{
		{"header name", func(r *http.Request) { r.Header["Bad Name"] = []string{"v"} }},
		{"header value", func(r *http.Request) { r.Header["X-V"] = []string{"a\nb"} }},
		{"method", func(r *http.Request) { r.Method = "GE T" }},
		{"host", func(r *http.Request) { r.Host = "a b" }},
		{"connect", func(r *http.Request) { r.Method = "CONNECT" }},
		{"trailer", func(r *http.Request) { r.Trailer = http.Header{"X": {"\x00"}} }},
	} {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.url, nil)
		c.mod(req)
		if _, err := e.tr.RoundTrip(req); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	if _, err := e.tr.RoundTrip(&http.Request{Method: "GET"}); err == nil {
		t.Error("nil URL: no error")
	}
	// Response headers over the bound: that call fails, the connection
	// serves on.
	if _, err := clientGet(t, e.tr, ctx, "GET", e.url+"/big", nil); !errors.Is(err, ErrHeaderTooLarge) && !errors.Is(err, ErrProtocol) {
		t.Errorf("big headers: %v, want ErrHeaderTooLarge", err)
	}
	resp, err := clientGet(t, e.tr, ctx, "GET", e.url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := clientReadAll(t, resp); s != "ok" {
		t.Fatalf("after: %q", s)
	}
	// A body that fails.
	_, err = clientGet(t, e.tr, ctx, "POST", e.url+"/read", io.MultiReader(strings.NewReader("a"), clientErrReader{}))
	if !errors.Is(err, ErrRequestBody) {
		t.Errorf("failing body: %v, want ErrRequestBody", err)
	}
	// The dial's error passes through as it is.
	sentinel := errors.New("no route")
	tr := &Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return nil, sentinel }}
	if _, err := clientGet(t, tr, ctx, "GET", "http://127.0.0.1:1/", nil); err != sentinel {
		t.Errorf("dial error: %v, want it as DialContext returned it", err)
	}
	if _, err := clientGet(t, &Transport{}, ctx, "GET", "http://127.0.0.1:1/", nil); err == nil {
		t.Error("no DialContext: no error")
	}
}

type clientErrReader struct{}

func (clientErrReader) Read([]byte) (int, error) { return 0, errors.New("broken body") }

// quietLog drops net/http's server log lines (a reset stream is expected).
func clientQuietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// clientBufBody is a request body that tells what it holds (the shared
// Buffered contract); extra bytes beyond n break the contract.
type clientBufBody struct {
	r     *strings.Reader
	n     int
	final bool
}

func (b *clientBufBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *clientBufBody) Close() error               { return nil }
func (b *clientBufBody) Buffered() (int, bool)      { return b.n, b.final }

func TestClientBufferedRequestBody(t *testing.T) {
	// A body whose end is there leaves with the headers; one still
	// arriving (final false) is streamed; either way the server gets it
	// all. A body longer than it said is refused, nothing sent.
	clientNoLeak(t)
	e := clientNewEnv(t, false, http.HandlerFunc(clientEcho), nil)
	ctx := context.Background()
	for _, c := range []struct {
		body  string
		n     int
		final bool
	}{{"abc", 3, true}, {"", 0, true}, {"abcdef", 3, false}, {strings.Repeat("z", 64<<10), 64 << 10, true}} {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url, nil)
		req.Body = &clientBufBody{r: strings.NewReader(c.body), n: c.n, final: c.final}
		req.ContentLength = -1
		resp, err := e.tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%d bytes, final %v: %v", len(c.body), c.final, err)
		}
		if s := clientReadAll(t, resp); s != c.body {
			t.Fatalf("%d bytes, final %v: server got %d bytes", len(c.body), c.final, len(s))
		}
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url, nil)
	req.Body = &clientBufBody{r: strings.NewReader("abcdef"), n: 3, final: true}
	if _, err := e.tr.RoundTrip(req); !errors.Is(err, ErrRequestBody) {
		t.Fatalf("a body longer than Buffered said: %v, want ErrRequestBody", err)
	}
}
