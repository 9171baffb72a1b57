package h2

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientFuzzSeed builds a server's answer to stream 1 (and 3) with a
// Framer: the seeds of FuzzClientConn.
func clientFuzzSeed(write func(fr *http2.Framer, enc func(kv ...string) []byte)) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	var hb bytes.Buffer
	henc := hpack.NewEncoder(&hb)
	enc := func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			_ = henc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	write(fr, enc)
	return buf.Bytes()
}

// FuzzClientConn feeds a scripted server's bytes (after its SETTINGS) to
// the client's response side: whatever they are, two calls end (an answer
// or an error), nothing panics, nothing hangs or leaks.
func FuzzClientConn(f *testing.F) {
	f.Add(clientFuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("\x00\x00\x00\x00\x02hi"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("grpc-status", "0"), EndHeaders: true, EndStream: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "204"), EndHeaders: true, EndStream: true})
	}))
	f.Add(clientFuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
		_ = fr.WriteWindowUpdate(0, 100)
		_ = fr.WritePing(false, [8]byte{1})
		b := enc(":status", "100", "x", strings.Repeat("y", 100))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:10], EndHeaders: false})
		_ = fr.WriteContinuation(1, true, b[10:])
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "200", "content-length", "3", "trailer", "x-t"), EndHeaders: true})
		_ = fr.WriteDataPadded(1, true, []byte("abc"), make([]byte, 7))
		_ = fr.WriteRSTStream(3, http2.ErrCodeRefusedStream)
	}))
	f.Add(clientFuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteGoAway(1, http2.ErrCodeEnhanceYourCalm, []byte("calm"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(":status", "503"), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("x"))
		_ = fr.WriteRSTStream(1, http2.ErrCodeInternal)
	}))
	f.Add(clientFuzzSeed(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteData(1, true, []byte("data before headers"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: enc(":status", "200"), EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(":status", "2000", ":path", "/"), EndHeaders: true})
		_ = fr.WriteWindowUpdate(1, 1<<31-1)
	}))
	f.Fuzz(func(t *testing.T, script []byte) {
		tr := &Transport{
			MaxResponseHeaderBytes: 4 << 10,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				c, s := net.Pipe()
				go func() {
					go func() { _, _ = io.Copy(io.Discard, s) }()
					var settings bytes.Buffer
					_ = http2.NewFramer(&settings, nil).WriteSettings()
					_, _ = s.Write(settings.Bytes())
					_, _ = s.Write(script)
					time.Sleep(time.Millisecond)
					_ = s.Close()
				}()
				return c, nil
			},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan struct{}, 2)
		for _, m := range []string{"GET", "POST"} {
			go func() {
				defer func() { done <- struct{}{} }()
				req, _ := http.NewRequestWithContext(ctx, m, "http://fuzz/", strings.NewReader("body"))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}()
		}
		<-done
		<-done
		if ctx.Err() != nil {
			t.Fatal("a call hung on the script")
		}
		tr.CloseIdleConnections()
	})
}
