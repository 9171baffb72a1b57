package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/meshd/meshd/proxy/internal/reqctx"
)

// TestServerClientGoneAbortsExchange: a handler proxying through a
// Transport to a server that never answers; when the client leaves, the
// request's context ends, which aborts the exchange in flight (the
// upstream sees its connection close) and RoundTrip returns
// context.Canceled. This is the request context's in-place exchange watch.
func TestServerClientGoneAbortsExchange(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	upClosed := make(chan error, 1)
	go func() {
		c, err := up.Accept()
		if err != nil {
			upClosed <- err
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, c) // the request, then nothing: wait for the close
		upClosed <- err
	}()
	tr := newTransport()
	rtErr := make(chan error, 1)
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := &url.URL{Scheme: "http", Host: up.Addr().String(), Path: "/hang"}
		req := (&http.Request{Method: "GET", URL: u, Header: http.Header{}, Host: u.Host}).WithContext(r.Context())
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		rtErr <- err
	}), nil)
	c := dialRaw(t, addr)
	c.send("GET /call HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(200 * time.Millisecond) // past the disconnect watch's start
	_ = c.c.Close()
	select {
	case err := <-rtErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("RoundTrip: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RoundTrip still waiting 5 s after the client left")
	}
	select {
	case err := <-upClosed:
		if err != nil {
			t.Fatalf("upstream connection: %v, want a close (EOF)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream connection still open 5 s after the client left")
	}
}

// TestRequestContextEndsWithHandler: what a handler keeps of its
// request's context sees it end when the handler returns (Done closed,
// Err context.Canceled), with contexts derived from it and AfterFunc
// hooks, as with net/http; a stopped hook does not run.
func TestRequestContextEndsWithHandler(t *testing.T) {
	type kept struct {
		ctx, derived context.Context
		early        <-chan struct{} // Done asked for before the end
		ran, stopped chan struct{}
		stopOK       bool
	}
	got := make(chan kept, 1)
	addr, _ := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := kept{ctx: r.Context(), ran: make(chan struct{}), stopped: make(chan struct{})}
		if err := k.ctx.Err(); err != nil {
			t.Errorf("context ended while the handler runs: %v", err)
		}
		k.early = k.ctx.Done()
		var cancelDerived context.CancelFunc
		k.derived, cancelDerived = context.WithTimeout(k.ctx, time.Hour)
		t.Cleanup(cancelDerived) // it must end with its parent first, checked below
		context.AfterFunc(k.ctx, func() { close(k.ran) })
		stop := context.AfterFunc(k.ctx, func() { close(k.stopped) })
		k.stopOK = stop()
		got <- k
		_, _ = io.WriteString(w, "ok")
	}), nil)
	c := dialRaw(t, addr)
	c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if _, body := c.read("GET"); body != "ok" {
		t.Fatalf("body %q", body)
	}
	k := <-got
	for name, ch := range map[string]<-chan struct{}{"Done asked for early": k.early, "Done asked for late": k.ctx.Done(), "derived": k.derived.Done(), "AfterFunc": k.ran} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not ended 5 s after the handler returned", name)
		}
	}
	if !errors.Is(k.ctx.Err(), context.Canceled) || !errors.Is(k.derived.Err(), context.Canceled) {
		t.Fatalf("Err: %v, derived %v; want context.Canceled", k.ctx.Err(), k.derived.Err())
	}
	if !k.stopOK {
		t.Fatal("stop of an AfterFunc hook before the end reported false")
	}
	select {
	case <-k.stopped:
		t.Fatal("a stopped AfterFunc hook ran")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestRequestContextAllocs: a request context under a connection context
// that cannot end, and an exchange's watch of it, allocate nothing.
func TestRequestContextAllocs(t *testing.T) {
	parent := context.WithValue(context.Background(), struct{}{}, 1)
	ex := &exchange{c: &conn{}}
	rc := new(reqctx.Ctx) // a field of the request's response, in the server
	n := testing.AllocsPerRun(100, func() {
		*rc = reqctx.Ctx{}
		rc.Init(parent)
		ex.rctx = rc
		if !rc.Watch(&ex.link, ex) {
			t.Fatal("watch refused")
		}
		if !ex.stopWatch() {
			t.Fatal("unwatch reported a fired watch")
		}
		rc.Cancel()
	})
	if n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}
