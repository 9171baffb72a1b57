package h2

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// srvTestServer is a Server on a loopback listener.
type srvTestServer struct {
	*Server
	addr string
	tls  *tls.Config // client config; nil: h2c
}

// srvCheckLeaks fails t if a goroutine started during it is still running
// at its end (cleanups registered after this one run first).
func srvCheckLeaks(t testing.TB) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		if err := goleak.Find(opt); err != nil {
			t.Error(err)
		}
	})
}

// srvStart serves h on a loopback listener, with TLS (ALPN h2) when
// withTLS. mod adjusts the Server.
func srvStart(t testing.TB, h http.Handler, withTLS bool, mod func(*Server)) *srvTestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h}
	if mod != nil {
		mod(s)
	}
	ts := &srvTestServer{Server: s, addr: ln.Addr().String()}
	var scfg *tls.Config
	if withTLS {
		scfg, ts.tls = srvTestTLS(t)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				if scfg == nil {
					s.ServeConn(c, nil)
					return
				}
				tc := tls.Server(c, scfg)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					_ = c.Close()
					return
				}
				_ = tc.SetDeadline(time.Time{})
				s.ServeConn(tc, nil)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		s.Close()
		wg.Wait()
	})
	return ts
}

// client is net/http's HTTP/2 client for ts (h2c or h2 over TLS).
func (ts *srvTestServer) client(t testing.TB) *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols), TLSClientConfig: ts.tls}
	if ts.tls != nil {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (ts *srvTestServer) url() string {
	if ts.tls != nil {
		return "https://" + ts.addr
	}
	return "http://" + ts.addr
}

// srvTestTLS makes a self-signed certificate for 127.0.0.1: the server's
// config and a client config trusting it.
func srvTestTLS(t testing.TB) (*tls.Config, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "h2 test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	srv := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS13,
	}
	return srv, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
}

// srvRaw is a hand-driven HTTP/2 client: it sends whatever a test wants,
// well-formed or not.
type srvRaw struct {
	t    testing.TB
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

// srvDialRaw connects, sends the preface and settings.
func srvDialRaw(t testing.TB, addr string, settings ...http2.Setting) *srvRaw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rc := &srvRaw{t: t, c: c}
	rc.fr = http2.NewFramer(c, c)
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.fr.AllowIllegalWrites = true
	rc.enc = hpack.NewEncoder(&rc.hbuf)
	if _, err := c.Write([]byte(srvPreface)); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return rc
}

// block encodes name/value pairs.
func (rc *srvRaw) block(kv ...string) []byte {
	rc.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(rc.hbuf.Bytes())
}

// get opens stream id with a GET (plus extra fields).
func (rc *srvRaw) request(id uint32, end bool, method string, extra ...string) {
	kv := append([]string{":method", method, ":scheme", "http", ":path", "/", ":authority", "x"}, extra...)
	rc.headers(id, end, kv...)
}

func (rc *srvRaw) headers(id uint32, end bool, kv ...string) {
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.block(kv...), EndStream: end, EndHeaders: true}); err != nil {
		rc.t.Fatal(err)
	}
}

// next reads the next frame that is not SETTINGS, a SETTINGS ACK, PING or
// WINDOW_UPDATE; nil when the connection ended (EOF or reset).
func (rc *srvRaw) next(timeout time.Duration) http2.Frame {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				rc.t.Fatalf("no frame within %s", timeout)
			}
			return nil
		}
		switch f.(type) {
		case *http2.SettingsFrame, *http2.WindowUpdateFrame, *http2.PingFrame:
			continue
		}
		return f
	}
}

// expectGoAway reads until a GOAWAY and checks its code, then closes the
// connection (the server would, within srvDrainTime).
func (rc *srvRaw) expectGoAway(code http2.ErrCode) {
	rc.t.Helper()
	for {
		f := rc.next(5 * time.Second)
		if f == nil {
			rc.t.Fatalf("connection ended without GOAWAY %v", code)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != code {
				rc.t.Fatalf("GOAWAY %v, want %v", ga.ErrCode, code)
			}
			break
		}
	}
	_ = rc.c.Close()
}

// expectEnd reads until the connection ends.
func (rc *srvRaw) expectEnd() {
	rc.t.Helper()
	for {
		if f := rc.next(5 * time.Second); f == nil {
			return
		}
	}
}

// expectReset reads until stream id's RST_STREAM and checks its code.
func (rc *srvRaw) expectReset(id uint32, code http2.ErrCode) {
	rc.t.Helper()
	for {
		f := rc.next(5 * time.Second)
		if f == nil {
			rc.t.Fatalf("connection ended before RST_STREAM %v on %d", code, id)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			rc.t.Fatalf("GOAWAY %v before RST_STREAM %v on %d", ga.ErrCode, code, id)
		}
		if r, ok := f.(*http2.RSTStreamFrame); ok && r.StreamID == id {
			if r.ErrCode != code {
				rc.t.Fatalf("RST_STREAM %v on %d, want %v", r.ErrCode, id, code)
			}
			return
		}
	}
}

// expectStatus reads until stream id's response HEADERS and returns its
// :status.
func (rc *srvRaw) expectStatus(id uint32) string {
	rc.t.Helper()
	for {
		f := rc.next(5 * time.Second)
		if f == nil {
			rc.t.Fatalf("connection ended before the answer on %d", id)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				rc.t.Fatalf("RST_STREAM %v on %d, want an answer", f.ErrCode, id)
			}
		case *http2.GoAwayFrame:
			rc.t.Fatalf("GOAWAY %v before the answer on %d", f.ErrCode, id)
		}
	}
}
