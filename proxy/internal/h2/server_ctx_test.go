package h2

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshd/meshd/proxy/internal/reqctx"
)

// TestServerContextCancelsTransport: a proxy on our Server forwarding with
// our Transport under the request's own context (the in-place watch, no
// context.AfterFunc) ends its upstream stream when the downstream client
// resets its stream, when the client's connection goes away, and at once
// when the context had ended before the call; the upstream handler's
// context ends each time, the proxy's call fails with context.Canceled,
// and nothing is left running. Derived contexts (WithTimeout, AfterFunc)
// of the request's context end with it.
func TestServerContextCancelsTransport(t *testing.T) {
	srvCheckLeaks(t)
	upStarted := make(chan string, 4)
	upEnded := make(chan string, 4)
	backend := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		upStarted <- r.URL.Path
		<-r.Context().Done()
		upEnded <- r.URL.Path
	}), false, nil)
	var d net.Dialer
	tr := &Transport{DialContext: d.DialContext}
	defer tr.CloseIdleConnections()

	type outcome struct {
		rtErr, readErr    error
		derived, afterRan bool
	}
	results := make(chan outcome, 4)
	front := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		if _, ok := ctx.(*reqctx.Ctx); !ok {
			t.Errorf("request context is %T, not the in-place one", ctx)
		}
		derived, cancelDerived := context.WithTimeout(ctx, time.Hour)
		defer cancelDerived()
		afterRan := make(chan struct{})
		context.AfterFunc(ctx, func() { close(afterRan) })
		if r.URL.Path == "/late" {
			<-ctx.Done() // the client reset us: call upstream anyway
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+backend.addr+r.URL.Path, nil)
		var o outcome
		resp, err := tr.RoundTrip(req)
		o.rtErr = err
		if err == nil {
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			_, o.readErr = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		if context.Cause(ctx) == nil {
			t.Errorf("%s: context.Cause of the ended request context is nil", r.URL.Path)
		}
		select {
		case <-derived.Done():
			o.derived = true
		case <-time.After(5 * time.Second):
		}
		select {
		case <-afterRan:
			o.afterRan = true
		case <-time.After(5 * time.Second):
		}
		results <- o
	}), false, nil)

	check := func(name string, o outcome, wantRTErr bool) {
		t.Helper()
		switch {
		case wantRTErr && !errors.Is(o.rtErr, context.Canceled):
			t.Errorf("%s: RoundTrip error %v, want context.Canceled", name, o.rtErr)
		case !wantRTErr && (o.rtErr != nil || !errors.Is(o.readErr, context.Canceled)):
			t.Errorf("%s: RoundTrip %v, body read %v; want the read to fail with context.Canceled", name, o.rtErr, o.readErr)
		}
		if !o.derived || !o.afterRan {
			t.Errorf("%s: WithTimeout child ended %v, AfterFunc ran %v", name, o.derived, o.afterRan)
		}
	}
	waitUp := func(name string, ch chan string) {
		t.Helper()
		select {
		case p := <-ch:
			if p != "/"+name {
				t.Errorf("%s: upstream saw %s", name, p)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: upstream handler not reached or not cancelled", name)
		}
	}

	// The client resets its stream (net/http's client on a cancel).
	cl := front.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", front.url()+"/reset", nil)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	waitUp("reset", upStarted)
	cancel()
	resp.Body.Close()
	waitUp("reset", upEnded)
	check("reset", <-results, false)

	// The client's connection goes away.
	rc := srvDialRaw(t, front.addr)
	rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/gone", ":authority", "x")
	waitUp("gone", upStarted)
	if st := rc.expectStatus(1); st != "200" { // the front's answer began: RoundTrip returned
		t.Fatalf("gone: status %s", st)
	}
	_ = rc.c.Close()
	waitUp("gone", upEnded)
	check("gone", <-results, false)

	// The context ended before the call: the stream opens and is reset at
	// once, the call fails.
	rc = srvDialRaw(t, front.addr)
	rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/late", ":authority", "x")
	time.Sleep(50 * time.Millisecond)
	if err := rc.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	o := <-results
	check("late", o, true)
	select {
	case p := <-upStarted:
		waitUp(strings.TrimPrefix(p, "/"), upEnded)
	case <-time.After(200 * time.Millisecond): // reset before the handler ran
	}
	_ = rc.c.Close()
}

// TestServerAdoptHeader: a handler passing an answer's header map on hands
// it to the writer when its own header was never asked for, and the client
// gets those headers; once the handler asked for its header or wrote,
// adoption is refused and the map it holds stays the one written.
func TestServerAdoptHeader(t *testing.T) {
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := http.Header{"X-From": {"upstream"}, "Content-Type": {"text/plain"}}
		rw := w.(*serverResponse)
		switch r.URL.Path {
		case "/adopt":
			if !rw.AdoptHeader(up) {
				t.Error("AdoptHeader refused a fresh writer")
			}
			w.Header()["X-After"] = []string{"1"} // the adopted map is w's now
		case "/asked":
			w.Header()["X-Own"] = []string{"1"}
			h := w.Header()
			if rw.AdoptHeader(up) {
				t.Error("AdoptHeader replaced a header map the handler holds")
			}
			h["X-Late"] = []string{"1"}
		case "/written":
			w.WriteHeader(http.StatusAccepted)
			if rw.AdoptHeader(up) {
				t.Error("AdoptHeader after WriteHeader")
			}
			return
		}
		_, _ = w.Write([]byte("ok"))
	}), false, nil)
	cl := ts.client(t)
	for _, tc := range []struct {
		path      string
		want, not []string
	}{
		{"/adopt", []string{"X-From", "Content-Type", "X-After"}, nil},
		{"/asked", []string{"X-Own", "X-Late"}, []string{"X-From"}},
		{"/written", nil, []string{"X-From"}},
	} {
		resp, err := cl.Get(ts.url() + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, k := range tc.want {
			if resp.Header.Get(k) == "" {
				t.Errorf("%s: no %s in the answer: %v", tc.path, k, resp.Header)
			}
		}
		for _, k := range tc.not {
			if resp.Header.Get(k) != "" {
				t.Errorf("%s: %s in the answer: %v", tc.path, k, resp.Header)
			}
		}
	}
}

// TestServerLowerKeyCache: an application's own header names go out
// lowercase, the same on every answer of a connection.
func TestServerLowerKeyCache(t *testing.T) {
	const n = 100
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range n {
			w.Header()["X-App-Key-"+strconv.Itoa(i)] = []string{strconv.Itoa(i)}
		}
		w.Header().Set("Trailer", "X-App-Trailer")
		_, _ = w.Write([]byte("ok"))
		w.Header().Set("X-App-Trailer", "t")
	}), false, nil)
	rc := srvDialRaw(t, ts.addr)
	for id := uint32(1); id <= 5; id += 2 {
		rc.headers(id, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x")
		got, trailer := 0, false
		for !trailer {
			f := rc.next(5 * time.Second)
			if f == nil {
				t.Fatalf("stream %d: connection ended", id)
			}
			mh, ok := f.(*http2.MetaHeadersFrame)
			if !ok || mh.StreamID != id {
				continue
			}
			for _, hf := range mh.RegularFields() {
				if hf.Name != strings.ToLower(hf.Name) {
					t.Fatalf("stream %d: field %q is not lowercase", id, hf.Name)
				}
				switch {
				case strings.HasPrefix(hf.Name, "x-app-key-"):
					if hf.Value != strings.TrimPrefix(hf.Name, "x-app-key-") {
						t.Fatalf("stream %d: %s: %s", id, hf.Name, hf.Value)
					}
					got++
				case hf.Name == "x-app-trailer":
					trailer = true
				}
			}
		}
		if got != n {
			t.Fatalf("stream %d: %d of %d fields", id, got, n)
		}
	}
}

// TestServerConnContextEnds: a ConnContext context that ends by itself
// ends the requests running under it and those opened after it ended.
func TestServerConnContextEnds(t *testing.T) {
	srvCheckLeaks(t)
	cancels := make(chan context.CancelFunc, 1)
	ended := make(chan string, 2)
	ts := srvStart(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			ended <- r.URL.Path
		case <-time.After(5 * time.Second):
			t.Errorf("%s: request context did not end", r.URL.Path)
		}
	}), false, func(s *Server) {
		s.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
			ctx, cancel := context.WithCancel(ctx)
			cancels <- cancel
			return ctx
		}
	})
	rc := srvDialRaw(t, ts.addr)
	rc.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/running", ":authority", "x")
	cancel := <-cancels
	time.Sleep(50 * time.Millisecond) // the handler runs
	cancel()
	if p := <-ended; p != "/running" {
		t.Fatalf("ended: %s", p)
	}
	rc.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/later", ":authority", "x")
	select {
	case p := <-ended:
		if p != "/later" {
			t.Fatalf("ended: %s", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request opened after ConnContext's context ended still runs")
	}
	_ = rc.c.Close()
}
