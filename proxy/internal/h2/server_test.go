package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// srvEcho answers with what it saw of the request, the body's digest, and
// trailers (declared and with http.TrailerPrefix).
func srvEcho(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Trailer", "X-Declared")
	w.Header().Set("X-Proto", r.Proto)
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Remote", r.RemoteAddr)
	w.Header().Set("X-TLS", strconv.FormatBool(r.TLS != nil))
	w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Custom", r.Header.Get("X-Custom"))
	w.Header().Set("X-Cookie", r.Header.Get("Cookie"))
	if size, _ := strconv.Atoi(r.URL.Query().Get("size")); size > 0 {
		chunk := bytes.Repeat([]byte("abcdefgh"), 1024)
		for size > 0 {
			k := min(size, len(chunk))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			size -= k
		}
	}
	w.Header().Set("X-Declared", "declared")
	w.Header().Set(http.TrailerPrefix+"X-Body-Sha", hex.EncodeToString(h.Sum(nil)))
	w.Header().Set(http.TrailerPrefix+"X-Body-Len", strconv.FormatInt(n, 10))
}

func srvSha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestServerNetHTTPClient: net/http's HTTP/2 client (h2c and h2 over TLS)
// gets the request through intact and the answer back with headers, a body
// beyond the flow-control windows and trailers.
func TestServerNetHTTPClient(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run("tls="+strconv.FormatBool(withTLS), func(t *testing.T) {
			srvCheckLeaks(t)
			ts := srvStart(t, http.HandlerFunc(srvEcho), withTLS, nil)
			cl := ts.client(t)

			t.Run("get", func(t *testing.T) {
				req, _ := http.NewRequest("GET", ts.url()+"/a/b?q=1", nil)
				req.Header.Set("X-Custom", "v")
				req.AddCookie(&http.Cookie{Name: "a", Value: "1"})
				req.AddCookie(&http.Cookie{Name: "b", Value: "2"})
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.ProtoMajor != 2 || len(body) != 0 {
					t.Fatalf("status %d proto %s body %q", resp.StatusCode, resp.Proto, body)
				}
				want := map[string]string{
					"X-Proto": "HTTP/2.0", "X-Host": ts.addr, "X-TLS": strconv.FormatBool(withTLS),
					"X-Content-Length": "0", "X-Method": "GET", "X-Path": "/a/b?q=1", "X-Custom": "v",
					"X-Cookie": "a=1; b=2",
				}
				for k, v := range want {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if !strings.HasPrefix(resp.Header.Get("X-Remote"), "127.0.0.1:") {
					t.Errorf("RemoteAddr %q", resp.Header.Get("X-Remote"))
				}
				if resp.Header.Get("Date") == "" {
					t.Error("no Date")
				}
				if resp.Trailer.Get("X-Declared") != "declared" || resp.Trailer.Get("X-Body-Len") != "0" {
					t.Errorf("trailers %v", resp.Trailer)
				}
			})

			t.Run("large both ways", func(t *testing.T) {
				up := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16+7) // 3 MiB+: beyond every window
				const down = 5 << 20
				resp, err := cl.Post(ts.url()+"/up?size="+strconv.Itoa(down), "application/octet-stream", bytes.NewReader(up))
				if err != nil {
					t.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != down {
					t.Fatalf("read %d bytes, %v; want %d", n, err, down)
				}
				if resp.Header.Get("X-Content-Length") != strconv.Itoa(len(up)) {
					t.Errorf("ContentLength %s, want %d", resp.Header.Get("X-Content-Length"), len(up))
				}
				if resp.Trailer.Get("X-Body-Sha") != srvSha(up) {
					t.Error("request body changed on the way")
				}
			})

			t.Run("unknown length body", func(t *testing.T) {
				pr, pw := io.Pipe()
				go func() {
					for i := 0; i < 100; i++ {
						_, _ = pw.Write([]byte("chunk "))
					}
					pw.Close()
				}()
				req, _ := http.NewRequest("PUT", ts.url()+"/", pr)
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Header.Get("X-Content-Length") != "-1" || resp.Trailer.Get("X-Body-Len") != "600" {
					t.Fatalf("ContentLength %s, body %s", resp.Header.Get("X-Content-Length"), resp.Trailer.Get("X-Body-Len"))
				}
			})

			t.Run("concurrent", func(t *testing.T) {
				var wg sync.WaitGroup
				errs := make(chan error, 64)
				for i := range 64 {
					wg.Go(func() {
						body := strings.Repeat("x", i*1000)
						resp, err := cl.Post(ts.url()+"/c?size="+strconv.Itoa(i*3000), "text/plain", strings.NewReader(body))
						if err != nil {
							errs <- err
							return
						}
						n, _ := io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if n != int64(i*3000) || resp.Trailer.Get("X-Body-Sha") != srvSha([]byte(body)) {
							errs <- fmt.Errorf("call %d: %d bytes, trailers %v", i, n, resp.Trailer)
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})

			t.Run("head", func(t *testing.T) {
				resp, err := cl.Head(ts.url() + "/?size=100")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatal(resp.Status)
				}
			})
		})
	}
}

// TestServerStatusAndLength: a handler's status, Content-Length and a
// body without trailers arrive as written.
func TestServerStatusAndLength(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/len":
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(201)
			_, _ = io.WriteString(w, "hello")
		case "/204":
			w.WriteHeader(204)
			if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrBodyNotAllowed) {
				panic("write on 204 allowed")
			}
		case "/flush":
			_, _ = io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "b")
		case "/too-long":
			w.Header().Set("Content-Length", "1")
			if _, err := io.WriteString(w, "ab"); !errors.Is(err, http.ErrContentLength) {
				panic("write beyond Content-Length allowed")
			}
		}
	}), false, nil)
	cl := ts.client(t)
	for path, want := range map[string]string{"/len": "201 hello 5", "/204": "204  0", "/flush": "200 ab -1", "/too-long": "200  1"} {
		resp, err := cl.Get(ts.url() + path)
		if err != nil {
			t.Fatal(path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := fmt.Sprintf("%d %s %d", resp.StatusCode, b, resp.ContentLength)
		if path == "/too-long" {
			// The declared length was not met: the client sees an error.
			if err == nil {
				t.Errorf("%s: short body read without error", path)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: %q (%v), want %q", path, got, err, want)
		}
	}
}

// TestServerCancel: a client cancelling its request (RST_STREAM) cancels
// the handler's context and fails its body reads; the connection serves on.
func TestServerCancel(t *testing.T) {
	srvCheckLeaks(t)
	started := make(chan struct{}, 1)
	ended := make(chan error, 1)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			return
		}
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		started <- struct{}{}
		_, err := io.ReadAll(r.Body)
		<-r.Context().Done()
		ended <- err
	}), false, nil)
	cl := ts.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.url()+"/", pr)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("body read ended without error after the reset")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not cancelled")
	}
	resp, err = cl.Get(ts.url() + "/ok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestServerConnContext: ConnContext runs once per connection and its
// context is under every request.
func TestServerConnContext(t *testing.T) {
	srvCheckLeaks(t)
	type key struct{}
	var mu sync.Mutex
	calls := 0
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Context().Value(key{}).(string))
	}), false, func(s *Server) {
		s.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			mu.Lock()
			calls++
			mu.Unlock()
			return context.WithValue(ctx, key{}, "conn:"+c.LocalAddr().String())
		}
	})
	cl := ts.client(t)
	for range 3 {
		resp, err := cl.Get(ts.url())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "conn:"+ts.addr {
			t.Fatalf("body %q", b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("ConnContext called %d times, want 1", calls)
	}
}

// TestServerBuffered: the request body tells what can be read without
// waiting, and when its end has arrived.
func TestServerBuffered(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := r.Body.(interface{ Buffered() (int, bool) })
		var n int
		var final bool
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if n, final = b.Buffered(); final {
				break
			}
		}
		p := make([]byte, 4)
		k, _ := io.ReadFull(r.Body, p)
		n2, final2 := b.Buffered()
		fmt.Fprintf(w, "%d %v %d %d %v", n, final, k, n2, final2)
	}), false, nil)
	resp, err := ts.client(t).Post(ts.url(), "text/plain", strings.NewReader("0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "10 true 4 6 true" {
		t.Fatalf("got %q, want %q", b, "10 true 4 6 true")
	}
}

// TestServerShutdown: Shutdown lets the call in flight finish (GOAWAY),
// then returns; new connections are refused.
func TestServerShutdown(t *testing.T) {
	srvCheckLeaks(t)
	release := make(chan struct{})
	started := make(chan struct{})
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "finished")
	}), false, nil)
	cl := ts.client(t)
	got := make(chan string, 1)
	go func() {
		resp, err := cl.Get(ts.url())
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a call in flight", err)
	default:
	}
	close(release)
	if s := <-got; s != "finished" {
		t.Fatalf("call in flight got %q", s)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// TestServerPanic: a handler panic resets its stream only.
func TestServerPanic(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
	}), false, nil)
	cl := ts.client(t)
	if resp, err := cl.Get(ts.url() + "/panic"); err == nil {
		resp.Body.Close()
		t.Fatal("panicking handler answered")
	}
	resp, err := cl.Get(ts.url() + "/fine")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}
