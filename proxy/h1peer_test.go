package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/appchannel"
	"github.com/meshd/meshd/proxy/internal/h1"
	"github.com/meshd/meshd/proxy/internal/h2"
)

func h1Client(cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	return &http.Client{Transport: tr}
}

// TestInternalPortHTTP1: the internal port speaks HTTP/1.1 too, with the
// same mTLS refusals and the caller identity from the certificate only.
func TestInternalPortHTTP1(t *testing.T) {
	e := newEnv(t, nil)
	orders := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/orders")
	foreign := newCA(t, "evil.example")
	for name, cfg := range map[string]*tls.Config{
		"cert from another trust domain": tlsconfig.MTLSClientConfig(foreign.svid(t, "default", "frontend"), e.ca.bundle(), tlsconfig.AuthorizeID(orders)),
		"no client cert":                 tlsconfig.TLSClientConfig(e.ca.bundle(), tlsconfig.AuthorizeID(orders)),
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := h1Client(cfg).Get("https://" + e.orders.internal + "/x")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request accepted with status %d", resp.StatusCode)
			}
		})
	}
	t.Run("valid cert, spoofed caller header", func(t *testing.T) {
		req, _ := http.NewRequest("POST", "https://"+e.orders.internal+"/x", strings.NewReader("hello"))
		req.Header.Set(HeaderCallerAppID, "admin")
		resp, err := h1Client(tlsconfig.MTLSClientConfig(e.ca.svid(t, "default", "frontend"), e.ca.bundle(), tlsconfig.AuthorizeID(orders))).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 1 {
			t.Errorf("answered over %s, want HTTP/1.1", resp.Proto)
		}
		got := decodeEcho(t, resp)
		if v := got.Header.Values(HeaderCallerAppID); len(v) != 1 || v[0] != "frontend" {
			t.Fatalf("caller header %q, want [frontend]", v)
		}
		if got.BodyLen != 5 {
			t.Errorf("app got %d body bytes, want 5", got.BodyLen)
		}
	})
}

// TestPeerProtocolFollowsCaller: an HTTP/1.1 caller's call rides an
// HTTP/1.1 mTLS connection to the callee sidecar, an HTTP/2 caller's an
// HTTP/2 one; HTTP/1.1 trailers and small and large bodies cross intact.
func TestPeerProtocolFollowsCaller(t *testing.T) {
	ca := newCA(t, "cluster.local")
	res := newResolver()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Count")
		w.Header().Set("X-Proto", r.Proto)
		_, _ = io.WriteString(w, "got "+strconv.FormatInt(n, 10))
		w.Header().Set("X-Count", strconv.FormatInt(n, 10))
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	port, _ := strconv.Atoi(u.Port())
	ch, _ := appchannel.New(appchannel.Config{Port: port})
	callee := startSidecar(t, ca, Config{Identity: mustIdentity(t, "orders"), Resolver: res, App: ch})
	caller := startSidecar(t, ca, Config{Identity: mustIdentity(t, "frontend"), Resolver: res})
	res.set("orders", callee.internal)

	// Count the connections each transport makes, and what ALPN chose.
	pt, err := caller.p.peers.get(discovery.Target{AppID: "orders", Namespace: "default"})
	if err != nil {
		t.Fatal(err)
	}
	var dials [2]atomic.Int32
	var protos [2]atomic.Value
	for i, rt := range []http.RoundTripper{pt.h1, pt.h2} {
		count := func(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
			return func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dial(ctx, network, addr)
				if err == nil {
					dials[i].Add(1)
					protos[i].Store(c.(*tls.Conn).ConnectionState().NegotiatedProtocol)
				}
				return c, err
			}
		}
		switch tr := rt.(type) {
		case *http.Transport:
			tr.DialTLSContext = count(tr.DialTLSContext)
		case *h1.Transport:
			tr.DialContext = count(tr.DialContext)
		case *h2.Transport:
			tr.DialContext = count(tr.DialContext)
		}
	}
	target := caller.httpURL + "/v1.0/invoke/orders/method/x"

	h1 := &http.Client{Transport: &http.Transport{}}
	for _, n := range []int{0, 1024, smallBody, smallBody + 1, 3 << 20} {
		resp, err := h1.Post(target, "text/plain", strings.NewReader(strings.Repeat("x", n)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := strconv.Itoa(n)
		if resp.StatusCode != 200 || string(b) != "got "+want || resp.Trailer.Get("X-Count") != want {
			t.Fatalf("%d bytes: status %d, body %q, trailer %q", n, resp.StatusCode, b, resp.Trailer.Get("X-Count"))
		}
	}
	if d, p := dials[0].Load(), protos[0].Load(); d != 1 || p != "http/1.1" {
		t.Errorf("HTTP/1.1 caller: %d HTTP/1.1 peer connections (ALPN %v), want 1 kept alive, http/1.1", d, p)
	}
	if d := dials[1].Load(); d != 0 {
		t.Errorf("HTTP/1.1 caller opened %d HTTP/2 peer connections", d)
	}

	h2 := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	resp, err := h2.Post(target, "text/plain", strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(b) != "got 3" || resp.Trailer.Get("X-Count") != "3" {
		t.Fatalf("HTTP/2 caller: %s, body %q, trailer %q", resp.Proto, b, resp.Trailer.Get("X-Count"))
	}
	if d, p := dials[1].Load(), protos[1].Load(); d != 1 || p != "h2" {
		t.Errorf("HTTP/2 caller: %d HTTP/2 peer connections (ALPN %v), want 1, h2", d, p)
	}
}

// TestInsecurePeerProtocols: without mTLS the internal port serves
// HTTP/1.1 and h2c side by side.
func TestInsecurePeerProtocols(t *testing.T) {
	ca := newCA(t, "cluster.local")
	res := newResolver()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "got "+strconv.FormatInt(n, 10))
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	port, _ := strconv.Atoi(u.Port())
	ch, _ := appchannel.New(appchannel.Config{Port: port})
	callee := startSidecar(t, ca, Config{Identity: mustIdentity(t, "orders"), Resolver: res, App: ch, Insecure: true})
	caller := startSidecar(t, ca, Config{Identity: mustIdentity(t, "frontend"), Resolver: res, Insecure: true})
	res.set("orders", callee.internal)
	h2 := &http.Transport{Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	for name, c := range map[string]*http.Client{"HTTP/1.1": {Transport: &http.Transport{}}, "h2c": {Transport: h2}} {
		resp, err := c.Post(caller.httpURL+"/v1.0/invoke/orders/method/x", "text/plain", strings.NewReader("abcd"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "got 4" {
			t.Errorf("%s: status %d body %q", name, resp.StatusCode, b)
		}
	}
}

// smallBody is the largest body sent with its headers in one write.
const smallBody = h1.DefaultInlineBody

// TestNetHTTPFallback: with Config.NetHTTPServer and NetHTTPClient (the
// --h1-server/--h1-client nethttp switches) a pair of sidecars, mTLS and
// cleartext, carries HTTP/1.1 calls on net/http alone, bodies small and
// large, with the app channel on net/http's Transport too.
func TestNetHTTPFallback(t *testing.T) {
	ca := newCA(t, "cluster.local")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Method+" got "+strconv.FormatInt(n, 10))
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	port, _ := strconv.Atoi(u.Port())
	for _, insecure := range []bool{false, true} {
		res := newResolver()
		ch, err := appchannel.New(appchannel.Config{Port: port, NetHTTPClient: true})
		if err != nil {
			t.Fatal(err)
		}
		cfg := func(app string) Config {
			return Config{Identity: mustIdentity(t, app), Resolver: res, Insecure: insecure, NetHTTPServer: true, NetHTTPClient: true}
		}
		calleeCfg := cfg("orders")
		calleeCfg.App = ch
		callee := startSidecar(t, ca, calleeCfg)
		caller := startSidecar(t, ca, cfg("frontend"))
		res.set("orders", callee.internal)
		c := &http.Client{Transport: &http.Transport{}}
		for _, n := range []int{0, smallBody + 1, 1 << 20} {
			resp, err := c.Post(caller.httpURL+"/v1.0/invoke/orders/method/x", "text/plain", strings.NewReader(strings.Repeat("x", n)))
			if err != nil {
				t.Fatalf("insecure=%v, %d bytes: %v", insecure, n, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "POST got " + strconv.Itoa(n); resp.StatusCode != 200 || string(b) != want {
				t.Errorf("insecure=%v, %d bytes: status %d body %q, want %q", insecure, n, resp.StatusCode, b, want)
			}
		}
		c.CloseIdleConnections()
	}
}
