package h2

// An adversarial review of the server: each test is a hostile or unlucky
// client and asserts what that client (or the handler) sees.

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// srvReviewSized answers /n bytes for the path "/<n>".
var srvReviewSized = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
	_, _ = w.Write(bytes.Repeat([]byte("x"), n))
})

// TestReviewWriteDeadlineAfterQuiet: a response larger than the write
// buffer, written after the connection was quiet for longer than
// SendTimeout, arrives whole. (The write deadline was only moved on
// flushes, so a DATA frame written straight through the buffer met the
// deadline of the last flush, long past, and the connection died.)
func TestReviewWriteDeadlineAfterQuiet(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvReviewSized, false, func(s *Server) { s.SendTimeout = 200 * time.Millisecond })
	c := ts.client(t)
	get := func(n int) {
		t.Helper()
		resp, err := c.Get(ts.url() + "/" + strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || len(b) != n {
			t.Fatalf("GET %d bytes: got %d, %v", n, len(b), err)
		}
	}
	get(10)
	time.Sleep(500 * time.Millisecond) // quiet, longer than SendTimeout
	get(256 << 10)
}

// TestReviewWriteDeadlineLongStream: a response streamed for longer than
// SendTimeout to a client that reads it all the while is not cut.
func TestReviewWriteDeadlineLongStream(t *testing.T) {
	srvCheckLeaks(t)
	const chunks = 30
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := bytes.Repeat([]byte("y"), 64<<10)
		for range chunks {
			if _, err := w.Write(buf); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // 600 ms in all, SendTimeout is 200 ms
		}
	}), false, func(s *Server) { s.SendTimeout = 200 * time.Millisecond })
	resp, err := ts.client(t).Get(ts.url() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != chunks*64<<10 {
		t.Fatalf("got %d bytes, %v; want %d", n, err, chunks*64<<10)
	}
}

// TestReviewSlowReaderFreesHandler: a client that never reads its socket
// cannot pin a handler writing a large answer: the write fails within
// about SendTimeout, and the goroutines go away.
func TestReviewSlowReaderFreesHandler(t *testing.T) {
	srvCheckLeaks(t)
	werr := make(chan error, 1)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		var err error
		for i := 0; i < 64 && err == nil; i++ {
			_, err = w.Write(buf)
		}
		werr <- err
	}), false, func(s *Server) { s.SendTimeout = 300 * time.Millisecond })
	rc := srvDialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.request(1, true, "GET")
	start := time.Now()
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("64 MiB written to a client that reads nothing")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("handler freed after %s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler pinned by a client that never reads")
	}
}

// TestReviewBodyBufferBounded: a request body streamed to a handler that
// always leaves some of it unread (a slow consumer) is held in a buffer
// bounded by the stream window, not by the body's length. (The buffer was
// only reset when fully drained; otherwise it grew by every DATA frame.)
func TestReviewBodyBufferBounded(t *testing.T) {
	srvCheckLeaks(t)
	const total = 32 << 20
	var maxCap atomic.Int64
	var got atomic.Int64
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := r.Body.(*serverBody)
		p := make([]byte, 4<<10)
		for {
			// Read only while more than 64 KiB wait (all of it at the end).
			for {
				n, final := b.Buffered()
				if n > 64<<10 || final {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			n, err := b.Read(p)
			got.Add(int64(n))
			b.mu.Lock()
			if c := int64(cap(b.buf)); c > maxCap.Load() {
				maxCap.Store(c)
			}
			b.mu.Unlock()
			if err != nil {
				break
			}
		}
		_, _ = io.WriteString(w, "ok")
	}), false, nil)
	resp, err := ts.client(t).Post(ts.url()+"/", "application/octet-stream", bytes.NewReader(make([]byte, total)))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got.Load() != total {
		t.Fatalf("handler read %d bytes, want %d", got.Load(), total)
	}
	if limit := int64(4 * DefaultServerStreamWindow); maxCap.Load() > limit {
		t.Fatalf("request body buffer grew to %d bytes for a %d-byte body (window %d)", maxCap.Load(), total, DefaultServerStreamWindow)
	}
}

// TestReviewClosedStreamDataFlood: DATA frames on a closed stream, each
// answered with RST_STREAM, are a flood like PING's: past the control
// budget the connection ends with ENHANCE_YOUR_CALM. The same for a flood
// of malformed requests, each answered with RST_STREAM.
func TestReviewClosedStreamDataFlood(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	floods := map[string]func(rc *srvRaw, i int) error{
		"DATA on closed": func(rc *srvRaw, i int) error { return rc.fr.WriteData(1, true, nil) },
		"DATA with a byte on closed": func(rc *srvRaw, i int) error {
			return rc.fr.WriteData(1, false, []byte("x"))
		},
		"malformed requests": func(rc *srvRaw, i int) error {
			id := uint32(3 + 2*i)
			return rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(":method", "GET", ":path", "/"), EndStream: true, EndHeaders: true})
		},
	}
	for name, send := range floods {
		t.Run(name, func(t *testing.T) {
			rc := srvDialRaw(t, ts.addr)
			rc.request(1, true, "GET")
			rc.expectStatus(1)
			for {
				if _, ok := rc.next(5 * time.Second).(*http2.DataFrame); ok {
					break
				}
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := range 20 * srvControlBudget {
					if send(rc, i) != nil {
						return
					}
				}
			}()
			rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
			_ = rc.c.Close()
			<-done
		})
	}
}

// TestReviewHeadersSelfDependency: a HEADERS frame whose priority makes
// the stream depend on itself is a stream error PROTOCOL_ERROR (RFC 9113
// §5.3.1), as net/http's server answers; the handler does not run.
func TestReviewHeadersSelfDependency(t *testing.T) {
	srvCheckLeaks(t)
	var ran atomic.Int32
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		srvOK(w, r)
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: 1, EndStream: true, EndHeaders: true,
		BlockFragment: rc.block(":method", "GET", ":scheme", "http", ":path", "/"),
		Priority:      http2.PriorityParam{StreamDep: 1, Weight: 15},
	})
	rc.expectReset(1, http2.ErrCodeProtocol)
	rc.request(3, true, "GET")
	if st := rc.expectStatus(3); st != "200" {
		t.Fatalf("next request: %s", st)
	}
	if n := ran.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

// TestReviewHPACKBomb: one 4 KiB dynamic table entry referenced thousands
// of times (tens of MB decoded from 16 KiB) is refused quickly, without
// the memory, and the server stays up.
func TestReviewHPACKBomb(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	rc := srvDialRaw(t, ts.addr)
	blk := rc.block(":method", "GET", ":scheme", "http", ":path", "/", "x-bomb", strings.Repeat("b", 4000))
	// x-bomb is now entry 62 of the dynamic table; 0xbe indexes it.
	blk = append(blk, bytes.Repeat([]byte{0xbe}, 12000)...)
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndStream: true, EndHeaders: true})
	f := rc.next(5 * time.Second)
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if st := f.PseudoValue("status"); st != "431" {
			t.Fatalf("status %s, want 431", st)
		}
	case *http2.GoAwayFrame:
	default:
		t.Fatalf("answer %v, want 431 or GOAWAY", f)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("bomb took %s", d)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 8<<20 {
		t.Fatalf("decoding the bomb allocated %d bytes", grew)
	}
	// The server still serves.
	rc2 := srvDialRaw(t, ts.addr)
	rc2.request(1, true, "GET")
	if st := rc2.expectStatus(1); st != "200" {
		t.Fatal(st)
	}
}

// TestReviewRequestContext: the request's context ends when the client
// resets the stream and when the connection closes.
func TestReviewRequestContext(t *testing.T) {
	srvCheckLeaks(t)
	started := make(chan struct{}, 2)
	ended := make(chan error, 2)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-r.Context().Done()
		ended <- context.Cause(r.Context())
	}), false, nil)
	wait := func(what string) {
		t.Helper()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatalf("context not cancelled on %s", what)
		}
	}
	rc := srvDialRaw(t, ts.addr)
	rc.request(1, true, "GET")
	<-started
	_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	wait("RST_STREAM")
	rc.request(3, true, "GET")
	<-started
	_ = rc.c.Close()
	wait("connection close")
}

// TestReviewPanicKeepsServing: a handler panic after it wrote part of its
// answer resets the stream (INTERNAL_ERROR), the process lives and the
// connection serves the next request; nothing leaks.
func TestReviewPanicKeepsServing(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic("boom")
		}
		srvOK(w, r)
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/panic")
	rc.expectReset(1, http2.ErrCodeInternal)
	rc.request(3, true, "GET")
	if st := rc.expectStatus(3); st != "200" {
		t.Fatal(st)
	}
}

// TestReviewShutdownInFlight: Shutdown sends GOAWAY naming the stream in
// flight, which then completes with its whole body and trailers; a stream
// opened after the GOAWAY is not served.
func TestReviewShutdownInFlight(t *testing.T) {
	srvCheckLeaks(t)
	release := make(chan struct{})
	var ran atomic.Int32
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = io.WriteString(w, "head")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "tail")
		w.Header().Set("Grpc-Status", "0")
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.request(1, true, "GET")
	if st := rc.expectStatus(1); st != "200" {
		t.Fatal(st)
	}
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()
	var body []byte
	for {
		f := rc.next(5 * time.Second)
		if d, ok := f.(*http2.DataFrame); ok {
			body = append(body, d.Data()...)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 1 {
				t.Fatalf("GOAWAY %v last %d, want NO_ERROR last 1", ga.ErrCode, ga.LastStreamID)
			}
			break
		}
	}
	rc.request(3, true, "GET") // after GOAWAY: not served
	close(release)
	var trailer string
	for trailer == "" {
		switch f := rc.next(5 * time.Second).(type) {
		case *http2.DataFrame:
			body = append(body, f.Data()...)
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				for _, hf := range f.RegularFields() {
					if hf.Name == "grpc-status" {
						trailer = hf.Value
					}
				}
				if trailer == "" {
					t.Fatal("trailers without grpc-status")
				}
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v on %d", f.ErrCode, f.StreamID)
		case nil:
			t.Fatal("connection ended before the answer finished")
		}
	}
	if string(body) != "headtail" || trailer != "0" {
		t.Fatalf("body %q trailer %q", body, trailer)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if n := ran.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (stream 3 came after GOAWAY)", n)
	}
}
