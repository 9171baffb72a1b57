package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientScript is a scripted HTTP/2 server: for the n-th connection it
// reads the preface, sends SETTINGS and runs script.
func clientScript(t *testing.T, script func(n int, fr *http2.Framer, c net.Conn), settings ...http2.Setting) (*Transport, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, len(clientPreface))
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				_ = fr.WriteSettings(settings...)
				script(n, fr, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	var d net.Dialer
	tr := &Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, "http://" + ln.Addr().String()
}

// clientNextHeaders reads frames up to a request's HEADERS.
func clientNextHeaders(fr *http2.Framer) *http2.MetaHeadersFrame {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			return f
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		}
	}
}

// clientAnswer writes a 200 with body and END_STREAM.
func clientAnswer(fr *http2.Framer, id uint32, body string) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(id, true, []byte(body))
}

// drain reads (and answers the SETTINGS and PINGs of) the client until it
// hangs up.
func clientDrain(fr *http2.Framer) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
			_ = fr.WritePing(true, p.Data)
		}
	}
}

func TestClientRefusedRetried(t *testing.T) {
	// The first connection refuses the stream (GOAWAY with last stream 0,
	// then REFUSED_STREAM on the next); the call succeeds on another.
	clientNoLeak(t)
	var conns atomic.Int32
	tr, url := clientScript(t, func(n int, fr *http2.Framer, c net.Conn) {
		conns.Add(1)
		h := clientNextHeaders(fr)
		if h == nil {
			return
		}
		switch n % 3 {
		case 0:
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		case 1:
			_ = fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
			h = clientNextHeaders(fr)
			if h != nil {
				clientAnswer(fr, h.StreamID, "late")
			}
		default:
			clientAnswer(fr, h.StreamID, "ok")
		}
		clientDrain(fr)
	})
	for _, body := range []io.Reader{nil, strings.NewReader("inline body")} {
		conns.Store(0)
		resp, err := clientGet(t, tr, context.Background(), "POST", url, body)
		if err != nil {
			t.Fatalf("refused call not retried: %v", err)
		}
		if s := clientReadAll(t, resp); s != "ok" {
			t.Fatalf("body %q", s)
		}
		if n := conns.Load(); n != 3 {
			t.Fatalf("%d connections, want 3 (GOAWAY, REFUSED_STREAM, answer)", n)
		}
		tr.CloseIdleConnections()
	}
	// A streamed body already read, no GetBody: not resent, the error
	// says the server did not process it.
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write([]byte("streamed")); _ = pw.Close() }()
	tr2, url2 := clientScript(t, func(n int, fr *http2.Framer, c net.Conn) {
		if h := clientNextHeaders(fr); h != nil {
			_ = fr.WriteRSTStream(h.StreamID, http2.ErrCodeRefusedStream)
		}
		clientDrain(fr)
	})
	req, _ := http.NewRequest("POST", url2, pr)
	if _, err := tr2.RoundTrip(req); !errors.Is(err, ErrStreamRefused) {
		t.Fatalf("refused streamed call: %v, want ErrStreamRefused", err)
	}
}

// clientRelay forwards TCP between a client and backend until frozen:
// then it stops reading both ways (a peer that hangs).
type clientRelay struct {
	ln     net.Listener
	frozen chan struct{}
	once   sync.Once
}

func clientNewRelay(t *testing.T, backend string) *clientRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &clientRelay{ln: ln, frozen: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				_ = c.Close()
				continue
			}
			mu.Lock()
			all = append(all, c, b)
			mu.Unlock()
			for _, p := range [][2]net.Conn{{c, b}, {b, c}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := make([]byte, 32<<10)
					for {
						n, err := p[0].Read(buf)
						select {
						case <-r.frozen:
							return
						default:
						}
						if n > 0 {
							if _, err := p[1].Write(buf[:n]); err != nil {
								return
							}
						}
						if err != nil {
							return
						}
					}
				}()
			}
		}
	}()
	t.Cleanup(func() {
		r.freeze()
		_ = ln.Close()
		mu.Lock()
		for _, c := range all {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return r
}

func (r *clientRelay) freeze() { r.once.Do(func() { close(r.frozen) }) }

func TestClientKeepalive(t *testing.T) {
	// A real server behind a relay that stops forwarding: the unanswered
	// PING fails the call in flight with ErrPeerUnresponsive.
	clientNoLeak(t)
	started := make(chan struct{}, 1)
	e := clientNewEnv(t, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-r.Context().Done()
			return
		}
		_, _ = w.Write([]byte("ok"))
	}), nil)
	relay := clientNewRelay(t, e.listener.Addr().String())
	var d net.Dialer
	tr := &Transport{DialContext: d.DialContext, Keepalive: 100 * time.Millisecond, KeepaliveTimeout: 100 * time.Millisecond}
	defer tr.CloseIdleConnections()
	url := "http://" + relay.ln.Addr().String()
	// A live, idle connection survives PINGs.
	resp, err := clientGet(t, tr, context.Background(), "GET", url+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	clientReadAll(t, resp)
	time.Sleep(400 * time.Millisecond)
	resp, err = clientGet(t, tr, context.Background(), "GET", url+"/", nil)
	if err != nil {
		t.Fatalf("idle connection with PINGs answered: %v", err)
	}
	clientReadAll(t, resp)
	errc := make(chan error, 1)
	go func() {
		_, err := clientGet(t, tr, context.Background(), "GET", url+"/slow", nil)
		errc <- err
	}()
	<-started
	relay.freeze()
	start := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerUnresponsive) {
			t.Fatalf("call on a hung peer: %v, want ErrPeerUnresponsive", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("detected after %v", el)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call on a hung peer did not fail")
	}
}

func TestClientServerAllowsNoStream(t *testing.T) {
	// SETTINGS_MAX_CONCURRENT_STREAMS 0: the call fails at once (no spin
	// of new connections), as refused.
	clientNoLeak(t)
	var conns atomic.Int32
	tr, url := clientScript(t, func(n int, fr *http2.Framer, c net.Conn) {
		conns.Add(1)
		clientDrain(fr)
	}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := clientGet(t, tr, ctx, "GET", url, nil); !errors.Is(err, ErrStreamRefused) || ctx.Err() != nil {
		t.Fatalf("server allowing no stream: %v", err)
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("%d connections dialed", n)
	}
}
