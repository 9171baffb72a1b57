package h1

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fields is n header fields "X-Fn: v".
func fields(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("X-F" + strconv.Itoa(i) + ": v\r\n")
	}
	return b.String()
}

func TestServerMaxHeaderFields(t *testing.T) {
	var called atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Add(1) })
	addr, _ := startServer(t, h, func(s *Server) {
		s.MaxHeaderFields = 10
		s.Refusal = func(status int, reason string) (http.Header, []byte) {
			return http.Header{"Content-Type": {"application/json"}, "X-Why": {reason}}, []byte(`{"status":` + strconv.Itoa(status) + `}`)
		}
	})
	// Host plus 9: the limit exactly.
	c := dialRaw(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n" + fields(9) + "\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != 200 {
		t.Fatalf("10 fields: %d %s", resp.StatusCode, body)
	}
	c.send("GET / HTTP/1.1\r\nHost: a\r\n" + fields(10) + "\r\n")
	resp, body := c.read("GET")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || body != `{"status":431}` ||
		resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Why") != "more than 10 header fields" {
		t.Fatalf("11 fields: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if !resp.Close || !c.closed() {
		t.Errorf("connection stays open after 431")
	}
	if n := called.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestServerDefaultMaxHeaderFields(t *testing.T) {
	addr, _ := startServer(t, echo, nil)
	c := dialRaw(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n" + fields(10000) + "\r\n")
	if resp, body := c.read("GET"); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("10,001 fields: %d %s", resp.StatusCode, body)
	}
}

// bodyResult is what a handler's body read ended with.
type bodyResult struct {
	n   int
	err error
	in  time.Duration
}

func bodyRecorder(ch chan<- bodyResult, pause time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		buf := make([]byte, 512)
		total := 0
		var err error
		for {
			var n int
			n, err = r.Body.Read(buf)
			total += n
			if err != nil {
				break
			}
			time.Sleep(pause) // a slow consumer: not the client's fault
		}
		if errors.Is(err, io.EOF) {
			err = nil
		}
		ch <- bodyResult{total, err, time.Since(start)}
		if errors.Is(err, ErrBodyTimeout) {
			w.WriteHeader(http.StatusRequestTimeout)
		}
	})
}

func TestServerBodyTrickleTimesOut(t *testing.T) {
	for _, framing := range []string{"Content-Length: 100", "Transfer-Encoding: chunked"} {
		t.Run(framing, func(t *testing.T) {
			ch := make(chan bodyResult, 1)
			addr, _ := startServer(t, bodyRecorder(ch, 0), func(s *Server) { s.BodyReadTimeout = 600 * time.Millisecond })
			c := dialRaw(t, addr)
			c.send("POST / HTTP/1.1\r\nHost: a\r\n" + framing + "\r\n\r\n")
			stop := make(chan struct{})
			defer close(stop)
			go func() { // one byte (a chunk of one) every 100ms: progress, but far too little
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					b := "x"
					if strings.Contains(framing, "chunked") {
						b = "1\r\nx\r\n"
					}
					if _, err := io.WriteString(c.c, b); err != nil {
						return
					}
				}
			}()
			select {
			case res := <-ch:
				if !errors.Is(res.err, ErrBodyTimeout) || res.in < 500*time.Millisecond || res.in > 2*time.Second {
					t.Fatalf("body read: %d bytes, %v after %s; want ErrBodyTimeout after ~600ms", res.n, res.err, res.in)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a trickled body still reads after 5s")
			}
			resp, _ := c.read("POST")
			if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
				t.Fatalf("answer %d close=%v, want 408 and close", resp.StatusCode, resp.Close)
			}
		})
	}
}

// A slow handler (pauses between reads) and a steady client: the pauses
// are not the client's, the body passes.
func TestServerBodySlowConsumerPasses(t *testing.T) {
	ch := make(chan bodyResult, 1)
	addr, _ := startServer(t, bodyRecorder(ch, 150*time.Millisecond), func(s *Server) { s.BodyReadTimeout = 300 * time.Millisecond })
	const size = 8 << 10
	c := dialRaw(t, addr)
	c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
	go func() {
		for range size / 1024 { // 1 KiB every 100ms: progress in every window
			if _, err := io.WriteString(c.c, strings.Repeat("y", 1024)); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	res := <-ch
	if res.err != nil || res.n != size {
		t.Fatalf("body read: %d bytes, %v after %s; want all %d", res.n, res.err, res.in, size)
	}
	if resp, _ := c.read("POST"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("answer %d close=%v", resp.StatusCode, resp.Close)
	}
}
