package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hangServer is an HTTP/1.1 peer that can hang the way a SIGSTOPped
// process does: the kernel still completes TCP handshakes, but nothing is
// accepted, read or answered. Each accepted connection first sends one
// greeting byte, which greetDial waits for, as a TLS client waits for the
// server's handshake.
type hangServer struct {
	l     net.Listener
	hung  atomic.Bool
	delay atomic.Int64 // answer after this long (a slow, live peer)
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	stop  chan struct{}
}

func startHangServer(t *testing.T) *hangServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hangServer{l: l, stop: make(chan struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		close(s.stop)
		s.hung.Store(false)
		_ = l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *hangServer) accept() {
	defer s.wg.Done()
	for {
		for s.hung.Load() {
			select {
			case <-s.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *hangServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	if _, err := c.Write([]byte{'G'}); err != nil {
		return
	}
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		if d := s.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		for s.hung.Load() { // stopped: never answers
			select {
			case <-s.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

// greetDial connects and waits for the greeting byte, bounded by ctx.
func greetDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) }) // as tls.HandshakeContext
	defer stop()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

func kaGet(t *testing.T, tr *Transport, addr string) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/x", nil)
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return time.Since(start), err
}

// TestKeepaliveHungPeer: exchanges waiting on a peer that hangs (accepts
// nothing, answers nothing) fail with ErrPeerUnresponsive within about
// Keepalive + KeepaliveTimeout, not when the caller gives up; pooled idle
// connections to it are dropped too.
func TestKeepaliveHungPeer(t *testing.T) {
	s := startHangServer(t)
	addr := s.l.Addr().String()
	tr := &Transport{DialContext: greetDial, Keepalive: 100 * time.Millisecond, KeepaliveTimeout: 200 * time.Millisecond}
	defer tr.CloseIdleConnections()
	// Warm the pool: several connections, idle.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := kaGet(t, tr, addr); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s.hung.Store(true)
	errs := make(chan error, 3)
	took := make(chan time.Duration, 3)
	for range 3 {
		go func() {
			d, err := kaGet(t, tr, addr)
			took <- d
			errs <- err
		}()
	}
	for range 3 {
		err := <-errs
		d := <-took
		if !errors.Is(err, ErrPeerUnresponsive) {
			t.Fatalf("exchange on a hung peer: err = %v, want ErrPeerUnresponsive", err)
		}
		if d > 5*time.Second { // generous: ~300ms expected; the test is about not waiting forever
			t.Fatalf("exchange on a hung peer failed after %s", d)
		}
		t.Logf("failed after %s: %v", d, err)
	}
	tr.mu.Lock()
	idle := len(tr.idle[addr])
	tr.mu.Unlock()
	if idle != 0 {
		t.Fatalf("%d idle connections to the hung peer kept", idle)
	}
	// Back: the next exchange dials afresh and works.
	s.hung.Store(false)
	if _, err := kaGet(t, tr, addr); err != nil {
		t.Fatalf("after the peer came back: %v", err)
	}
}

// TestKeepaliveSlowPeer: a live peer that takes longer than Keepalive to
// answer passes the check (a fresh connection completes): the exchange is
// not failed.
func TestKeepaliveSlowPeer(t *testing.T) {
	s := startHangServer(t)
	addr := s.l.Addr().String()
	s.delay.Store(int64(600 * time.Millisecond))
	tr := &Transport{DialContext: greetDial, Keepalive: 100 * time.Millisecond, KeepaliveTimeout: time.Second}
	defer tr.CloseIdleConnections()
	for range 2 {
		if _, err := kaGet(t, tr, addr); err != nil {
			t.Fatalf("slow, live peer: %v", err)
		}
	}
}

// TestKeepaliveOffByDefault: without Keepalive no connection is tracked.
func TestKeepaliveOffByDefault(t *testing.T) {
	s := startHangServer(t)
	tr := &Transport{DialContext: greetDial}
	defer tr.CloseIdleConnections()
	if _, err := kaGet(t, tr, s.l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.ka.peers != nil || tr.ka.timer != nil {
		t.Fatal("keepalive state without Keepalive")
	}
}

// TestKeepaliveHungDial: a dial to a peer that never completes its
// handshake (hung before the first connection) is given up after about
// Keepalive + KeepaliveTimeout, with ErrPeerUnresponsive, not after the
// caller's own dial timeout.
func TestKeepaliveHungDial(t *testing.T) {
	s := startHangServer(t)
	s.hung.Store(true)
	tr := &Transport{DialContext: greetDial, Keepalive: 100 * time.Millisecond, KeepaliveTimeout: 200 * time.Millisecond}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.l.Addr().String()+"/x", nil)
	start := time.Now()
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, ErrPeerUnresponsive) {
		t.Fatalf("dial to a hung peer: err = %v, want ErrPeerUnresponsive", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial to a hung peer given up after %s", d)
	}
}
