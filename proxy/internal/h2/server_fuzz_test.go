package h2

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// srvFuzzConn is a connection that reads the fuzzer's bytes, then EOF, and
// keeps what the server writes.
type srvFuzzConn struct {
	r  *bytes.Reader
	mu sync.Mutex
	w  bytes.Buffer
}

func (c *srvFuzzConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *srvFuzzConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}
func (c *srvFuzzConn) Close() error                     { return nil }
func (c *srvFuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *srvFuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *srvFuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *srvFuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *srvFuzzConn) SetWriteDeadline(time.Time) error { return nil }

// srvFuzzSeed frames a client's conversation.
func srvFuzzSeed(build func(fr *http2.Framer, enc func(kv ...string) []byte)) []byte {
	var buf, hb bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	he := hpack.NewEncoder(&hb)
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	build(fr, func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			_ = he.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	})
	return buf.Bytes()
}

// FuzzServerConn: no frame sequence makes the server panic or hang, every
// ServeConn returns once the input ends (its handlers too), and what the
// server writes is well-formed HTTP/2.
func FuzzServerConn(f *testing.F) {
	req := []string{":method", "POST", ":scheme", "http", ":path", "/a", ":authority", "x", "content-length", "3"}
	f.Add(srvFuzzSeed(func(fr *http2.Framer, enc func(kv ...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(req...), EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("abc"))
	}))
	f.Add(srvFuzzSeed(func(fr *http2.Framer, enc func(kv ...string) []byte) {
		b := enc(":method", "GET", ":scheme", "http", ":path", "/", "x-a", "1", "te", "trailers")
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3], EndStream: true})
		_ = fr.WriteContinuation(1, true, b[3:])
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WriteWindowUpdate(1, 1000)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(req...), EndHeaders: true})
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
		_ = fr.WriteDataPadded(3, true, []byte("abc"), []byte{0, 0})
		_ = fr.WritePriority(5, http2.PriorityParam{StreamDep: 1, Weight: 3})
		_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	}))
	f.Add(srvFuzzSeed(func(fr *http2.Framer, enc func(kv ...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(req[:8]...), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("abc"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-t", "1"), EndHeaders: true, EndStream: true})
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	}))
	s := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T")
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
			_, _ = w.Write(bytes.Repeat([]byte("x"), 200)) // beyond the window of 100
			w.Header().Set("X-T", "t")
		}),
		MaxConcurrentStreams: 4,
		MaxHeaderListSize:    1 << 10,
		SendTimeout:          50 * time.Millisecond,
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &srvFuzzConn{r: bytes.NewReader(append([]byte(srvPreface), data...))}
		done := make(chan struct{})
		go func() {
			s.ServeConn(c, nil)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the input ended")
		}
		c.mu.Lock()
		out := bytes.NewReader(c.w.Bytes())
		c.mu.Unlock()
		fr := http2.NewFramer(nil, out)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		for {
			_, err := fr.ReadFrame()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("the server wrote a bad frame: %v", err)
			}
		}
	})
}
