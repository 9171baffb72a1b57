package h2

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestReviewShutdownBeforePreface: a connection that Shutdown finds before
// the client's preface still gets SETTINGS as the server's first frame
// (RFC 9113 §3.4), or nothing at all; never a GOAWAY first, which
// net/http's and grpc-go's clients treat as a protocol error.
func TestReviewShutdownBeforePreface(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the server tracks the connection.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		ts.mu.Lock()
		n := len(ts.conns)
		ts.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("connection not tracked")
		}
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- ts.Shutdown(ctx)
	}()
	time.Sleep(50 * time.Millisecond)
	_, _ = io.WriteString(c, srvPreface)
	fr := http2.NewFramer(c, c)
	_ = fr.WriteSettings()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := fr.ReadFrame(); err == nil {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			t.Fatalf("server's first frame is %v, want SETTINGS", f)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReviewRapidResetGoroutines: streams opened and reset at once whose
// handlers ignore the cancellation (stuck in a call of their own) cannot
// make the goroutines grow beyond a bound per connection
// (srvMaxRunning × MaxConcurrentStreams); past it streams are refused and
// the connection ends with ENHANCE_YOUR_CALM. After the handlers return,
// the goroutines are back where they were.
func TestReviewRapidResetGoroutines(t *testing.T) {
	srvCheckLeaks(t)
	const maxStreams = 10
	release := make(chan struct{})
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // ignores r.Context()
	}), false, func(s *Server) { s.MaxConcurrentStreams = maxStreams })
	before := runtime.NumGoroutine()
	rc := srvDialRaw(t, ts.addr)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		blk := rc.block(":method", "GET", ":scheme", "http", ":path", "/")
		for id := uint32(1); id < 2*(srvResetBudget+500); id += 2 {
			// Not rc.request: its t.Fatal must not run off the test's goroutine.
			if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndHeaders: true}); err != nil {
				return
			}
			if err := rc.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				return
			}
		}
	}()
	rc.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	<-sent
	if grew := runtime.NumGoroutine() - before; grew > srvMaxRunning*maxStreams+10 {
		t.Fatalf("goroutines grew by %d under rapid reset (bound %d)", grew, srvMaxRunning*maxStreams)
	}
	close(release)
}

// srvReviewFrames is the client-visible frame sequence of one answer: a
// line per frame (type, END_STREAM, header fields without date and
// content-length).
func srvReviewFrames(t *testing.T, addr, path string) []string {
	t.Helper()
	rc := srvDialRaw(t, addr)
	rc.headers(1, true, ":method", "POST", ":scheme", "http", ":path", path, ":authority", "x", "content-type", "application/grpc", "te", "trailers")
	var out []string
	for {
		f := rc.next(5 * time.Second)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			var fields []string
			for _, hf := range f.Fields {
				// date differs by nature; content-length net/http adds
				// when an answer ends within its buffer (RFC 9113 lets
				// it be left out; gRPC ignores it).
				if hf.Name != "date" && hf.Name != "content-length" {
					fields = append(fields, hf.Name+"="+hf.Value)
				}
			}
			slices.Sort(fields)
			out = append(out, fmt.Sprintf("HEADERS end=%v %s", f.StreamEnded(), strings.Join(fields, " ")))
		case *http2.DataFrame:
			// END_STREAM on an empty DATA frame after DATA is the same
			// answer as END_STREAM on that DATA (this server writes the
			// body as the handler does and ends it when it returns).
			if n := len(out); n > 0 && len(f.Data()) == 0 && f.StreamEnded() && strings.HasPrefix(out[n-1], "DATA end=false") {
				out[n-1] = strings.Replace(out[n-1], "end=false", "end=true", 1)
				break
			}
			if len(f.Data()) > 0 || f.StreamEnded() {
				out = append(out, fmt.Sprintf("DATA end=%v %q", f.StreamEnded(), f.Data()))
			}
		case *http2.RSTStreamFrame:
			out = append(out, "RST_STREAM "+f.ErrCode.String())
		case nil:
			t.Fatal("connection ended")
		}
		if len(out) > 0 && (strings.Contains(out[len(out)-1], "end=true") || strings.HasPrefix(out[len(out)-1], "RST")) {
			return out
		}
	}
}

// srvReviewGRPCShapes answers as gRPC servers do, one shape per path.
var srvReviewGRPCShapes = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	switch r.URL.Path {
	case "/declared": // grpc-go's server: declare, write, set
		h.Set("Trailer", "Grpc-Status, Grpc-Message")
		w.WriteHeader(200)
		_, _ = w.Write([]byte("\x00\x00\x00\x00\x02hi"))
		h.Set("Grpc-Status", "0")
		h.Set("Grpc-Message", "")
	case "/prefix": // TrailerPrefix after a Flush
		_, _ = w.Write([]byte("\x00\x00\x00\x00\x02hi"))
		w.(http.Flusher).Flush()
		h.Set(http.TrailerPrefix+"Grpc-Status", "0")
	case "/trailers-only": // an error without a body: one HEADERS frame
		h.Set("Grpc-Status", "5")
		h.Set("Grpc-Message", "not found")
		w.WriteHeader(200)
	case "/declared-unset": // trailers declared, none set
		h.Set("Trailer", "Grpc-Status")
		_, _ = w.Write([]byte("\x00\x00\x00\x00\x02hi"))
	case "/flush-then-trailers": // headers flushed first, then trailers only
		h.Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		h.Set("Grpc-Status", "0")
	}
})

// TestReviewGRPCFramesAsNetHTTP: the frames of gRPC-shaped answers
// (declared trailers, TrailerPrefix, trailers-only, flushed headers then
// trailers) are the ones net/http's HTTP/2 server sends for the same
// handler, so grpc-go clients see the same thing through either.
func TestReviewGRPCFramesAsNetHTTP(t *testing.T) {
	srvCheckLeaks(t)
	ours := srvStart(t, srvReviewGRPCShapes, false, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srvReviewGRPCShapes, Protocols: new(http.Protocols)}
	hs.Protocols.SetUnencryptedHTTP2(true)
	var wg sync.WaitGroup
	wg.Go(func() { _ = hs.Serve(ln) })
	t.Cleanup(func() { _ = hs.Close(); wg.Wait() })
	for _, path := range []string{"/declared", "/prefix", "/trailers-only", "/flush-then-trailers", "/declared-unset"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			want := srvReviewFrames(t, ln.Addr().String(), path)
			got := srvReviewFrames(t, ours.addr, path)
			if !slices.Equal(got, want) {
				t.Fatalf("frames:\n%s\nnet/http's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestReviewStreamIDWentDown: a HEADERS frame opening a stream below the
// highest one seen (never opened, so not "closed") is a connection error
// PROTOCOL_ERROR (RFC 9113 §5.1.1; h2spec 5.1.1/2; net/http's answer).
func TestReviewStreamIDWentDown(t *testing.T) {
	srvCheckLeaks(t)
	ts := srvStart(t, srvOK, false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.request(5, true, "GET")
	if st := rc.expectStatus(5); st != "200" {
		t.Fatal(st)
	}
	rc.request(3, true, "GET")
	rc.expectGoAway(http2.ErrCodeProtocol)
}

// srvReviewSettingsTime is how long the server takes to acknowledge
// frames SETTINGS frames, each full of SETTINGS_INITIAL_WINDOW_SIZE
// entries, with open streams whose handlers wait.
func srvReviewSettingsTime(t *testing.T, addr string, streams, frames int) time.Duration {
	t.Helper()
	rc := srvDialRaw(t, addr)
	for i := range streams {
		rc.request(uint32(2*i+1), true, "GET")
	}
	set := make([]http2.Setting, srvFrameSize/6)
	for i := range set {
		set[i] = http2.Setting{ID: http2.SettingInitialWindowSize, Val: uint32(65535 + i%2)}
	}
	// A ping round trip: the streams are open.
	_ = rc.fr.WritePing(false, [8]byte{9})
	_ = rc.c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
	start := time.Now()
	go func() {
		for range frames {
			if rc.fr.WriteSettings(set...) != nil {
				return
			}
		}
	}()
	for acks := 0; acks < frames; {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				acks++
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %d SETTINGS", f.ErrCode, acks)
		}
	}
	d := time.Since(start)
	_ = rc.c.Close()
	return d
}

// TestReviewSettingsWindowCost: a SETTINGS frame carrying 2,730
// SETTINGS_INITIAL_WINDOW_SIZE entries costs about what it costs with no
// stream open, not entries × streams (each entry walked every stream: with
// 250 streams, 7 ms of CPU per 16 KiB frame; 1 s of CPU a second for
// 2.4 MB/s of a peer's traffic, within the control budget).
func TestReviewSettingsWindowCost(t *testing.T) {
	srvCheckLeaks(t)
	release := make(chan struct{})
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}), false, nil)
	defer close(release)
	const frames = 300
	none := srvReviewSettingsTime(t, ts.addr, 0, frames)
	full := srvReviewSettingsTime(t, ts.addr, DefaultServerMaxConcurrentStreams, frames)
	t.Logf("%d SETTINGS frames: %s without streams, %s with %d", frames, none, full, DefaultServerMaxConcurrentStreams)
	if full > 3*none+time.Second {
		t.Fatalf("%d SETTINGS frames took %s with %d streams open, %s without", frames, full, DefaultServerMaxConcurrentStreams, none)
	}
}

// TestReviewSettingsWindowOverflow: a SETTINGS_INITIAL_WINDOW_SIZE raise
// that takes an open stream's send window beyond 2^31-1 is a connection
// error FLOW_CONTROL_ERROR (RFC 9113 §6.9.2).
func TestReviewSettingsWindowOverflow(t *testing.T) {
	srvCheckLeaks(t)
	release := make(chan struct{})
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}), false, nil)
	defer close(release)
	rc := srvDialRaw(t, ts.addr)
	rc.request(1, true, "GET")
	_ = rc.fr.WriteWindowUpdate(1, 1<<31-1-65535) // the stream's window at the maximum
	_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
	rc.expectGoAway(http2.ErrCodeFlowControl)
}

// TestReviewHalfClosedRemote: on a stream the client has ended
// (half-closed remote) WINDOW_UPDATE and PRIORITY are fine and the answer
// comes; a second HEADERS frame is a stream error STREAM_CLOSED (RFC 9113
// §5.1) that leaves the connection serving.
func TestReviewHalfClosedRemote(t *testing.T) {
	srvCheckLeaks(t)
	release, block := make(chan struct{}), make(chan struct{})
	defer close(block)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hold":
			<-release
		case "/block":
			<-block
		}
		_, _ = io.WriteString(w, "ok")
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/hold")
	_ = rc.fr.WriteWindowUpdate(1, 100)
	_ = rc.fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 7})
	close(release)
	if st := rc.expectStatus(1); st != "200" {
		t.Fatal(st)
	}
	rc.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/hold")
	if st := rc.expectStatus(3); st != "200" {
		t.Fatal(st)
	}
	rc.headers(5, true, ":method", "GET", ":scheme", "http", ":path", "/block")
	rc.headers(5, true, "x-trailer", "1") // the client already ended stream 5
	rc.expectReset(5, http2.ErrCodeStreamClosed)
	_ = rc.fr.WritePing(false, [8]byte{7})
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
}
