package h2

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// srvOK answers 200 "ok" after reading the body.
var srvOK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	_, _ = io.WriteString(w, "ok")
})

// TestServerMalformedRequests: every malformed header block of RFC 9113
// §8.3 is a stream error (PROTOCOL_ERROR) and the connection serves on.
func TestServerMalformedRequests(t *testing.T) {
	srvCheckLeaks(t)
	var served atomic.Int32
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		srvOK(w, r)
	}), false, nil)
	cases := map[string][]string{
		"no method":         {":scheme", "http", ":path", "/", ":authority", "x"},
		"no path":           {":method", "GET", ":scheme", "http", ":authority", "x"},
		"no scheme":         {":method", "GET", ":path", "/", ":authority", "x"},
		"empty path":        {":method", "GET", ":scheme", "http", ":path", "", ":authority", "x"},
		"relative path":     {":method", "GET", ":scheme", "http", ":path", "a/b", ":authority", "x"},
		"two methods":       {":method", "GET", ":method", "POST", ":scheme", "http", ":path", "/"},
		"two paths":         {":method", "GET", ":scheme", "http", ":path", "/", ":path", "/b"},
		"unknown pseudo":    {":method", "GET", ":scheme", "http", ":path", "/", ":bogus", "1"},
		"response pseudo":   {":method", "GET", ":scheme", "http", ":path", "/", ":status", "200"},
		"pseudo after":      {":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/"},
		"connection":        {":method", "GET", ":scheme", "http", ":path", "/", "connection", "close"},
		"keep-alive":        {":method", "GET", ":scheme", "http", ":path", "/", "keep-alive", "1"},
		"transfer-encoding": {":method", "GET", ":scheme", "http", ":path", "/", "transfer-encoding", "chunked"},
		"upgrade":           {":method", "GET", ":scheme", "http", ":path", "/", "upgrade", "h2c"},
		"proxy-connection":  {":method", "GET", ":scheme", "http", ":path", "/", "proxy-connection", "x"},
		"te gzip":           {":method", "GET", ":scheme", "http", ":path", "/", "te", "gzip"},
		"uppercase name":    {":method", "GET", ":scheme", "http", ":path", "/", "X-Upper", "1"},
		"bad value":         {":method", "GET", ":scheme", "http", ":path", "/", "x-a", "a\nb"},
		"protocol":          {":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/"},
		"bad length":        {":method", "GET", ":scheme", "http", ":path", "/", "content-length", "x"},
		"two lengths":       {":method", "POST", ":scheme", "http", ":path", "/", "content-length", "1", "content-length", "2"},
		"length, no body":   {":method", "POST", ":scheme", "http", ":path", "/", "content-length", "3"},
	}
	for name, kv := range cases {
		t.Run(name, func(t *testing.T) {
			rc := srvDialRaw(t, ts.addr)
			rc.headers(1, true, kv...)
			rc.expectReset(1, http2.ErrCodeProtocol)
			// The connection serves on.
			rc.request(3, true, "GET")
			if st := rc.expectStatus(3); st != "200" {
				t.Fatalf("next request: status %s", st)
			}
		})
	}
	if n := served.Load(); n != int32(len(cases)) {
		t.Fatalf("handler ran %d times, want %d (only for the good requests)", n, len(cases))
	}
}

// TestServerConnect: CONNECT is answered 405.
func TestServerConnect(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.headers(1, false, ":method", "CONNECT", ":authority", "example.com:443")
	if st := rc.expectStatus(1); st != "405" {
		t.Fatalf("status %s, want 405", st)
	}
}

// TestServerContentLengthMismatch: DATA longer or shorter than the
// content-length is a stream error.
func TestServerContentLengthMismatch(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.request(1, false, "POST", "content-length", "3")
	_ = rc.fr.WriteData(1, true, []byte("ab"))
	rc.expectReset(1, http2.ErrCodeProtocol)
	rc.request(3, false, "POST", "content-length", "3")
	_ = rc.fr.WriteData(3, false, []byte("abcd"))
	rc.expectReset(3, http2.ErrCodeProtocol)
}

// TestServerConnectionErrors: what RFC 9113 makes a connection error ends
// the connection with GOAWAY and the right code.
func TestServerConnectionErrors(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // reads nothing: the windows stay closed
	}), false, func(s *Server) { s.ConnWindow = srvMinWindow })
	cases := map[string]struct {
		code http2.ErrCode
		send func(rc *srvRaw)
	}{
		"even stream": {http2.ErrCodeProtocol, func(rc *srvRaw) { rc.request(2, true, "GET") }},
		"DATA on idle stream": {http2.ErrCodeProtocol, func(rc *srvRaw) {
			_ = rc.fr.WriteData(5, true, []byte("x"))
		}},
		"RST_STREAM on idle stream": {http2.ErrCodeProtocol, func(rc *srvRaw) {
			_ = rc.fr.WriteRSTStream(5, http2.ErrCodeCancel)
		}},
		"WINDOW_UPDATE on idle stream": {http2.ErrCodeProtocol, func(rc *srvRaw) {
			_ = rc.fr.WriteWindowUpdate(5, 1)
		}},
		"HEADERS on closed stream": {http2.ErrCodeStreamClosed, func(rc *srvRaw) {
			rc.request(1, true, "GET")
			_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			rc.request(1, true, "GET")
		}},
		"PUSH_PROMISE": {http2.ErrCodeProtocol, func(rc *srvRaw) {
			_ = rc.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: rc.block(":method", "GET"), EndHeaders: true})
		}},
		"lone CONTINUATION": {http2.ErrCodeProtocol, func(rc *srvRaw) {
			_ = rc.fr.WriteContinuation(1, true, rc.block("a", "b"))
		}},
		"connection window overflow": {http2.ErrCodeFlowControl, func(rc *srvRaw) {
			_ = rc.fr.WriteWindowUpdate(0, 1<<31-1)
		}},
		"connection window exceeded": {http2.ErrCodeFlowControl, func(rc *srvRaw) {
			big := make([]byte, 1<<14)
			for id := uint32(1); id < 11; id += 2 {
				rc.request(id, false, "POST")
				_ = rc.fr.WriteData(id, false, big)
			}
		}},
		"frame too large": {http2.ErrCodeFrameSize, func(rc *srvRaw) {
			rc.request(1, false, "POST")
			_ = rc.fr.WriteData(1, false, make([]byte, 1<<14+1))
		}},
		"bad setting": {http2.ErrCodeFlowControl, func(rc *srvRaw) {
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}},
		"bad HPACK": {http2.ErrCodeCompression, func(rc *srvRaw) {
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rc := srvDialRaw(t, ts.addr)
			tc.send(rc)
			rc.expectGoAway(tc.code)
		})
	}
}

// TestServerStreamErrors: what RFC 9113 makes a stream error resets the
// stream only.
func TestServerStreamErrors(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-r.Context().Done() // reads nothing: the window stays closed
			return
		}
		srvOK(w, r)
	}), false, func(s *Server) { s.StreamWindow = srvMinWindow })
	t.Run("stream window exceeded", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		rc.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/hold")
		for range 4 {
			_ = rc.fr.WriteData(1, false, make([]byte, 1<<14))
		}
		_ = rc.fr.WriteData(1, false, make([]byte, srvMinWindow-4<<14+1))
		rc.expectReset(1, http2.ErrCodeFlowControl)
	})
	t.Run("DATA after END_STREAM", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		hold := make(chan struct{})
		defer close(hold)
		rc.request(1, true, "GET")
		_ = rc.fr.WriteData(1, false, []byte("x"))
		rc.expectReset(1, http2.ErrCodeStreamClosed)
	})
	t.Run("stream window overflow", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		rc.request(1, false, "POST")
		_ = rc.fr.WriteWindowUpdate(1, 1<<31-1)
		rc.expectReset(1, http2.ErrCodeFlowControl)
	})
	t.Run("self-dependency", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		_ = rc.fr.WritePriority(3, http2.PriorityParam{StreamDep: 3, Weight: 1})
		rc.expectReset(3, http2.ErrCodeProtocol)
	})
}

// TestServerBadPreface: a connection that does not start with the preface
// gets GOAWAY PROTOCOL_ERROR and is closed.
func TestServerBadPreface(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc := &srvRaw{t: t, c: c, fr: http2.NewFramer(c, c)}
	rc.expectGoAway(http2.ErrCodeProtocol)

	// And the first frame must be SETTINGS.
	c2, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, _ = io.WriteString(c2, srvPreface)
	rc2 := &srvRaw{t: t, c: c2, fr: http2.NewFramer(c2, c2)}
	_ = rc2.fr.WritePing(false, [8]byte{})
	rc2.expectGoAway(http2.ErrCodeProtocol)
}

// TestServerConcurrencyLimit: a stream beyond MaxConcurrentStreams is
// refused with REFUSED_STREAM; the others are served.
func TestServerConcurrencyLimit(t *testing.T) {
	srvCheckLeaks(t)
	release := make(chan struct{})
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}), false, func(s *Server) { s.MaxConcurrentStreams = 2 })
	rc := srvDialRaw(t, ts.addr)
	rc.request(1, true, "GET")
	rc.request(3, true, "GET")
	rc.request(5, true, "GET")
	rc.expectReset(5, http2.ErrCodeRefusedStream)
	close(release)
	if st := rc.expectStatus(1); st != "200" {
		t.Fatal(st)
	}
}

// TestServerHeaderListSize: a header list beyond MaxHeaderListSize is
// answered 431; one far beyond it, or CONTINUATION frames without end, end
// the connection.
func TestServerHeaderListSize(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, func(s *Server) {
		s.MaxHeaderListSize = 1 << 10
		s.ReadHeaderTimeout = 300 * time.Millisecond
	})
	t.Run("431", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		rc.request(1, true, "GET", "x-big", strings.Repeat("a", 600), "x-big2", strings.Repeat("b", 600))
		if st := rc.expectStatus(1); st != "431" {
			t.Fatalf("status %s, want 431", st)
		}
		rc.request(3, true, "GET")
		if st := rc.expectStatus(3); st != "200" {
			t.Fatalf("next request: status %s", st)
		}
	})
	t.Run("far beyond", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		rc.request(1, true, "GET", "x-big", strings.Repeat("a", 9000))
		rc.expectGoAway(http2.ErrCodeProtocol)
	})
	t.Run("CONTINUATION flood", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		blk := rc.block(":method", "GET", ":scheme", "http", ":path", "/")
		_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndHeaders: false})
		start := time.Now()
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			for i := 0; ; i++ {
				if err := rc.fr.WriteContinuation(1, false, nil); err != nil {
					return
				}
			}
		}()
		rc.expectEnd()
		<-ended
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("connection lasted %s under a CONTINUATION flood", d)
		}
	})
	t.Run("CONTINUATION flood with bytes", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(":method", "GET"), EndHeaders: false})
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			frag := rc.block("x-a", strings.Repeat("a", 200))
			for {
				if err := rc.fr.WriteContinuation(1, false, frag); err != nil {
					return
				}
			}
		}()
		rc.expectGoAway(http2.ErrCodeProtocol)
		_ = rc.c.Close()
		<-ended
	})
}

// TestServerRapidReset: streams opened and reset at once (CVE-2023-44487)
// end the connection with GOAWAY ENHANCE_YOUR_CALM once past the budget.
func TestServerRapidReset(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	blk := rc.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")
	done := make(chan struct{})
	go func() {
		// Off the test goroutine: no rc.request (its t.Fatal); the server
		// ending the connection ends the flood.
		defer close(done)
		for id := uint32(1); id < 2*(srvResetBudget+100); id += 2 {
			if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndHeaders: true}); err != nil {
				return
			}
			if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				return
			}
		}
	}()
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	_ = rc.c.Close()
	<-done
}

// TestServerControlFloods: PING, SETTINGS, empty DATA, PRIORITY floods end
// the connection with ENHANCE_YOUR_CALM.
func TestServerControlFloods(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	floods := map[string]func(rc *srvRaw) error{
		"PING":     func(rc *srvRaw) error { return rc.fr.WritePing(false, [8]byte{1}) },
		"SETTINGS": func(rc *srvRaw) error { return rc.fr.WriteSettings() },
		"empty DATA": func(rc *srvRaw) error {
			return rc.fr.WriteData(1, false, nil)
		},
		"PRIORITY": func(rc *srvRaw) error {
			return rc.fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 1})
		},
	}
	for name, send := range floods {
		t.Run(name, func(t *testing.T) {
			rc := srvDialRaw(t, ts.addr)
			rc.request(1, false, "POST") // for the DATA
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range 5 * srvControlBudget {
					if send(rc) != nil {
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

// TestServerZeroWindow: a client that never opens its window cannot pin a
// handler: the write fails after SendTimeout and the stream is reset.
func TestServerZeroWindow(t *testing.T) {
	srvCheckLeaks(t)
	werr := make(chan error, 1)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write(make([]byte, 100))
		if err == nil {
			w.(http.Flusher).Flush()
			_, err = w.Write(make([]byte, 100))
		}
		werr <- err
	}), false, func(s *Server) { s.SendTimeout = 200 * time.Millisecond })
	rc := srvDialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	rc.request(1, true, "GET")
	select {
	case err := <-werr:
		if err == nil {
			t.Fatal("write into a closed window succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler pinned by a zero window")
	}
	rc.expectReset(1, http2.ErrCodeCancel)
}

// TestServerTimeouts: idle connections get GOAWAY NO_ERROR and close; a
// frame that never completes ends the connection after ReadHeaderTimeout.
func TestServerTimeouts(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, func(s *Server) {
		s.IdleTimeout = 200 * time.Millisecond
		s.ReadHeaderTimeout = 200 * time.Millisecond
	})
	t.Run("idle", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		rc.request(1, true, "GET")
		rc.expectStatus(1)
		start := time.Now()
		for {
			f := rc.next(5 * time.Second)
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				if ga.ErrCode != http2.ErrCodeNo {
					t.Fatalf("GOAWAY %v", ga.ErrCode)
				}
				break
			}
		}
		rc.expectEnd() // the server closes
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("idle connection lasted %s", d)
		}
	})
	t.Run("partial frame", func(t *testing.T) {
		rc := srvDialRaw(t, ts.addr)
		_, _ = rc.c.Write([]byte{0, 0, 10, 0, 0, 0, 0, 0, 1, 'a'}) // a DATA header, one byte of ten
		start := time.Now()
		rc.expectEnd()
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("connection lasted %s with a frame pending", d)
		}
	})
	t.Run("no preface", func(t *testing.T) {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || srvIsTimeout(err) {
			t.Fatalf("silent connection not closed: %v", err)
		}
	})
}

// TestServerReadDeadline: http.ResponseController's SetReadDeadline fails
// a body read in flight.
func TestServerReadDeadline(t *testing.T) {
	srvCheckLeaks(t)
	got := make(chan error, 1)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := r.Body.Read(make([]byte, 10))
		got <- err
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.request(1, false, "POST")
	select {
	case err := <-got:
		if !srvIsTimeout(err) {
			t.Fatalf("read ended with %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deadline did not end the read")
	}
}

// TestServerShutdownStuckClient: a client that stops reading (its socket
// full) holds neither Shutdown past its context nor Close.
func TestServerShutdownStuckClient(t *testing.T) {
	srvCheckLeaks(t)
	writing := make(chan struct{})
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(writing)
		chunk := make([]byte, 1<<14)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}), false, nil)
	rc := srvDialRaw(t, ts.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = rc.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rc.request(1, true, "GET")
	<-writing
	time.Sleep(200 * time.Millisecond) // the socket buffers fill
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ts.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil with a stream stuck writing")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %s past its 300ms context", d)
	}
	ts.Close() // ends the stuck write; the leak check sees everything end
}

// TestServerWindowAtTheTimeout: a window that opens while a write's
// SendTimeout fires serves that write, and the timer that fired does not
// fail the stream's next write (the timer marked the stream stalled after
// its wait had already taken the window).
func TestServerWindowAtTheTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	const timeout = 50 * time.Millisecond
	c := newServerConn(&Server{SendTimeout: timeout}, a, bufio.NewReader(a))
	st := &serverStream{conn: c, id: 1}
	c.sendWin = 1 << 20

	got := make(chan error, 1)
	go func() {
		_, err := c.takeWindow(st, 100)
		got <- err
	}()
	time.Sleep(timeout / 5) // the wait is parked with its timer armed
	c.mu.Lock()
	st.sendWin = 100
	time.Sleep(2 * timeout) // the timer fires now and waits for c.mu with the writer
	c.cond.Broadcast()
	c.mu.Unlock()
	if err := <-got; err != nil {
		t.Fatalf("the write that got its window: %v", err)
	}
	time.Sleep(timeout / 5) // let a late timer callback run
	c.mu.Lock()
	st.sendWin = 100
	c.mu.Unlock()
	if _, err := c.takeWindow(st, 100); err != nil {
		t.Fatalf("the next write, with its window open: %v", err)
	}
}
