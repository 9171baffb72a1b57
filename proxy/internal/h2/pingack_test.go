package h2

import (
	"bytes"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// srvCountingConn counts the server's socket writes.
type srvCountingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c srvCountingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// srvStartCounting serves h (h2c) with every accepted connection's writes
// counted in writes.
func srvStartCounting(t *testing.T, h http.Handler, writes *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.ServeConn(srvCountingConn{c, writes}, nil) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		s.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// srvPingAckClient dials addr, finishes the SETTINGS exchange and returns
// the raw client.
func srvPingAckClient(t *testing.T, addr string) *srvRaw {
	t.Helper()
	rc := srvDialRaw(t, addr)
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && sf.IsAck() {
			return rc
		}
	}
}

// readUntil reads frames until stop says so; it returns when the PING ack
// carrying data was read (zero: not before the stop) and when the stop
// frame was.
func (rc *srvRaw) readUntil(t *testing.T, data [8]byte, timeout time.Duration, stop func(http2.Frame) bool) (ackAt time.Time, stopAt time.Time) {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == data {
			ackAt = time.Now()
		}
		if stop(f) {
			return ackAt, time.Now()
		}
	}
}

// TestServerPingAckRidesTheAnswer: a gRPC client's BDP ping arriving with
// its next request is acked in the same socket write as the answer, not a
// write of its own.
func TestServerPingAckRidesTheAnswer(t *testing.T) {
	srvCheckLeaks(t)
	var writes atomic.Int64
	addr := srvStartCounting(t, srvOK, &writes)
	rc := srvPingAckClient(t, addr)

	for i := range 3 {
		data := [8]byte{1, 2, 3, byte(i)}
		var buf bytes.Buffer
		fr := http2.NewFramer(&buf, nil)
		_ = fr.WritePing(false, data)
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: rc.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x"), EndStream: true, EndHeaders: true})
		before := writes.Load()
		if _, err := rc.c.Write(buf.Bytes()); err != nil { // one segment: both frames in one read
			t.Fatal(err)
		}
		ackAt, _ := rc.readUntil(t, data, 5*time.Second, func(f http2.Frame) bool {
			return f.Header().StreamID == uint32(2*i+1) && f.Header().Flags.Has(http2.FlagDataEndStream)
		})
		if ackAt.IsZero() {
			t.Fatalf("call %d: no PING ack before the answer's end", i)
		}
		if got := writes.Load() - before; got != 1 {
			t.Errorf("call %d: %d socket writes for the ack and the answer, want 1", i, got)
		}
	}
}

// TestServerPingAckIdleAndBusy: a PING alone is acked at once; a PING
// behind a request whose handler runs on is acked within srvAckDelay, not
// held until the handler ends.
func TestServerPingAckIdleAndBusy(t *testing.T) {
	srvCheckLeaks(t)
	old := srvAckDelay
	srvAckDelay = 200 * time.Millisecond
	t.Cleanup(func() { srvAckDelay = old })
	release := make(chan struct{})
	var writes atomic.Int64
	addr := srvStartCounting(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), &writes)
	rc := srvPingAckClient(t, addr)

	idle := [8]byte{9}
	start := time.Now()
	if err := rc.fr.WritePing(false, idle); err != nil {
		t.Fatal(err)
	}
	isAck := func(d [8]byte) func(http2.Frame) bool {
		return func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck() && p.Data == d
		}
	}
	if _, at := rc.readUntil(t, idle, 5*time.Second, isAck(idle)); at.Sub(start) >= srvAckDelay {
		t.Errorf("idle PING acked after %v, want at once (< %v)", at.Sub(start), srvAckDelay)
	}

	busy := [8]byte{7}
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	_ = fr.WritePing(false, busy)
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: rc.block(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x"), EndStream: true, EndHeaders: true})
	start = time.Now()
	if _, err := rc.c.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	_, at := rc.readUntil(t, busy, 5*time.Second, isAck(busy))
	close(release)
	if d := at.Sub(start); d > 5*srvAckDelay {
		t.Errorf("PING behind a running handler acked after %v, want about %v", d, srvAckDelay)
	}
	rc.readUntil(t, busy, 5*time.Second, func(f http2.Frame) bool {
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
	})
}
