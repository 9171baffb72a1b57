// Package security_test holds the regression tests of meshd's security
// findings (docs/security.md) against real processes: sentry, meshd
// sidecars and a Python WSGI app (wsgiref, which folds "_" and "-" of
// header names the way CGI, WSGI and Rack do, and reports the path a
// servlet container would serve for a request), under a namespace policy
// that lets app "a" GET only /public/...
package security_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/tests/harness"
)

// policyB lets app "a" GET /public/... on app "b"; the sidecar of b runs
// with --policy-default deny, so everything else is refused.
const policyB = `package mesh.authz

allow if {
	input.destination.app_id == "b"
	input.source.app_id == "a"
	input.request.method == "GET"
	startswith(input.request.path, "/public/")
}
`

type mesh struct {
	sentry *harness.Sentry
	a, b   *harness.Sidecar
	wsgi   string // the WSGI app's host:port

	// fake callees for the serverAuth check: TLS servers with hand-made
	// certificates for spiffe://cluster.local/ns/default/{cbad,cgood}
	cbadHits, cgoodHits atomic.Int64
}

func startMesh(t *testing.T) *mesh {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for the WSGI app (it is on every machine meshd is tested on): ", err)
	}
	bins := harness.Build(t)
	m := &mesh{}
	m.sentry = harness.StartSentry(t, bins, "")

	wsgiPort := harness.FreePort(t)
	m.wsgi = "127.0.0.1:" + strconv.Itoa(wsgiPort)
	harness.Start(t, "wsgiapp", python, filepath.Join(harness.RepoRoot(), "tests", "security", "testdata", "wsgiapp.py"), strconv.Itoa(wsgiPort))
	harness.WaitTCP(t, m.wsgi, 30*time.Second)

	issuer := loadIssuer(t, m.sentry.DataDir)
	cbad := m.fakeCallee(t, issuer, "cbad", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, &m.cbadHits)
	cgood := m.fakeCallee(t, issuer, "cgood", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, &m.cgoodHits)

	ap, bp := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
	resolver := filepath.Join(t.TempDir(), "apps.yaml")
	harness.WriteStatic(t, resolver,
		harness.StaticApp{AppID: "a", Addresses: []string{ap.InternalAddr()}},
		harness.StaticApp{AppID: "b", Addresses: []string{bp.InternalAddr()}},
		harness.StaticApp{AppID: "cbad", Addresses: []string{cbad}},
		harness.StaticApp{AppID: "cgood", Addresses: []string{cgood}},
	)
	policyDir := filepath.Join(t.TempDir(), "policies")
	if err := os.MkdirAll(filepath.Join(policyDir, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(policyDir, "default", "b.rego"), []byte(policyB), 0o644); err != nil {
		t.Fatal(err)
	}
	m.a = harness.StartSidecar(t, bins, m.sentry, harness.SidecarConfig{AppID: "a", Ports: ap, ResolverFile: resolver})
	m.b = harness.StartSidecar(t, bins, m.sentry, harness.SidecarConfig{AppID: "b", Ports: bp, ResolverFile: resolver,
		AppPort: wsgiPort, Extra: []string{"--policy-dir", policyDir, "--policy-default", "deny"}})
	return m
}

func TestSecurity(t *testing.T) {
	m := startMesh(t)
	t.Run("DotSegmentParams", func(t *testing.T) { testDotSegmentParams(t, m) })
	t.Run("IdentityHeaderTwins", func(t *testing.T) { testIdentityHeaderTwins(t, m) })
	t.Run("ExtendedKeyUsage", func(t *testing.T) { testExtendedKeyUsage(t, m) })
}

// ---- the ways an app reaches its sidecar ----

// reply is what a caller sees.
type reply struct {
	status int
	body   []byte
}

// wsgiReply is the WSGI app's answer.
type wsgiReply struct {
	PathInfo    string            `json:"path_info"`
	RequestURI  string            `json:"request_uri"`
	ServletPath string            `json:"servlet_path"`
	Env         map[string]string `json:"env"`
}

type errorReply struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

// form sends GET {method path} to app "b" through sidecar a in one of the
// invoke forms, over HTTP/1.1 (raw bytes: the path goes as written) or
// h2c. headers are "Name: value" lines.
type form struct {
	name string
	send func(t *testing.T, m *mesh, path string, headers ...string) reply
}

var forms = []form{
	{"invoke/HTTP1.1", func(t *testing.T, m *mesh, path string, headers ...string) reply {
		return raw1(t, hostPort(m.a.HTTPURL()), "/v1.0/invoke/b/method"+path, headers...)
	}},
	{"header/HTTP1.1", func(t *testing.T, m *mesh, path string, headers ...string) reply {
		return raw1(t, hostPort(m.a.HTTPURL()), path, append(headers, "dapr-app-id: b")...)
	}},
	{"proxy/HTTP1.1", func(t *testing.T, m *mesh, path string, headers ...string) reply {
		return raw1(t, hostPort(m.a.HTTPURL()), "http://b"+path, headers...)
	}},
	{"invoke/h2c", func(t *testing.T, m *mesh, path string, headers ...string) reply {
		return h2c(t, hostPort(m.a.HTTPURL()), "/v1.0/invoke/b/method"+path, headers...)
	}},
	{"header/h2c", func(t *testing.T, m *mesh, path string, headers ...string) reply {
		return h2c(t, hostPort(m.a.HTTPURL()), path, append(headers, "dapr-app-id: b")...)
	}},
}

func hostPort(u string) string { return strings.TrimPrefix(u, "http://") }

// raw1 writes one HTTP/1.1 request byte for byte and reads the answer.
func raw1(t *testing.T, addr, target string, headers ...string) reply {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", target, addr)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, body}
}

var h2cClient = func() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}()

// h2c sends one request over cleartext HTTP/2; the path goes as written
// (URL.Opaque), header names as given (lower-cased by HTTP/2).
func h2c(t *testing.T, addr, path string, headers ...string) reply {
	t.Helper()
	return do2(t, h2cClient, &url.URL{Scheme: "http", Host: addr, Opaque: "//" + addr + path}, headers...)
}

func do2(t *testing.T, c *http.Client, u *url.URL, headers ...string) reply {
	t.Helper()
	req := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: http.Header{}}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header[k] = append(req.Header[k], strings.TrimSpace(v)) // the name exactly as given
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u.Opaque, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, body}
}

func (m *mesh) wsgiHits(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + m.wsgi + "/__hits")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ Hits int }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v.Hits
}

func decodeWSGI(t *testing.T, what string, r reply) wsgiReply {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status %d, want 200: %s", what, r.status, r.body)
	}
	var w wsgiReply
	if err := json.Unmarshal(r.body, &w); err != nil {
		t.Fatalf("%s: not the WSGI app's answer: %v: %s", what, err, r.body)
	}
	return w
}

func assertError(t *testing.T, what string, r reply, status int, code string) {
	t.Helper()
	var e errorReply
	if r.status != status || json.Unmarshal(r.body, &e) != nil || e.ErrorCode != code {
		t.Errorf("%s: got %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

// ---- 1. dot segments with ;params ----

func testDotSegmentParams(t *testing.T, m *mesh) {
	// The control: the policy and the app see the same allowed path.
	for _, f := range forms {
		w := decodeWSGI(t, f.name+" /public/x", f.send(t, m, "/public/x;v=1"))
		if w.PathInfo != "/public/x;v=1" || w.ServletPath != "/public/x" {
			t.Errorf("%s: app got PATH_INFO %q (servlet view %q), want /public/x;v=1 (/public/x)", f.name, w.PathInfo, w.ServletPath)
		}
		assertError(t, f.name+" /admin/X", f.send(t, m, "/admin/X"), http.StatusForbidden, "ERR_PERMISSION_DENIED")
	}
	before := m.wsgiHits(t)
	for _, f := range forms {
		for _, p := range []string{
			"/public/..;/admin/X",
			"/public/..%3b/admin/X",
			"/public/..%3B/admin/X",
			"/public/.;/admin/X",
			"/public/..;jsessionid=x/admin/X",
			"/public/a/..;/..;/admin/X",
		} {
			r := f.send(t, m, p)
			assertError(t, f.name+" "+p, r, http.StatusBadRequest, "ERR_MALFORMED_REQUEST")
		}
	}
	// A caller sidecar is another process: the callee must refuse the
	// path on its own too, whatever the caller sent.
	c := internalClient(t, m, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth})
	r := do2(t, c, &url.URL{Scheme: "https", Host: m.b.Ports.InternalAddr(), Opaque: "//" + m.b.Ports.InternalAddr() + "/public/..;/admin/X"})
	assertError(t, "internal port /public/..;/admin/X", r, http.StatusBadRequest, "ERR_MALFORMED_REQUEST")
	if after := m.wsgiHits(t); after != before {
		t.Errorf("the app served %d refused requests", after-before)
	}
}

// ---- 2. identity header twins ----

func testIdentityHeaderTwins(t *testing.T, m *mesh) {
	twins := []string{
		"dapr_caller_app_id: evil",
		"Dapr_Callee_App_Id: evil",
		"dapr-caller_app-id: evil",
		"dapr_caller_namespace: kube-system",
		"DAPR_CALLER_NAMESPACE: kube-system",
		"Dapr-Caller_Namespace: kube-system",
		"meshd_timeout: 1h",
	}
	want := map[string]string{
		"HTTP_DAPR_CALLER_APP_ID":    "a",
		"HTTP_DAPR_CALLER_NAMESPACE": "default",
		"HTTP_DAPR_CALLEE_APP_ID":    "b",
	}
	for _, f := range forms {
		w := decodeWSGI(t, f.name, f.send(t, m, "/public/who", twins...))
		for k, v := range want {
			if w.Env[k] != v {
				t.Errorf("%s: the WSGI app sees %s=%q, want %q", f.name, k, w.Env[k], v)
			}
		}
		for k, v := range w.Env {
			if _, ok := want[k]; !ok && k != "HTTP_MESHD_TIMEOUT" {
				t.Errorf("%s: the WSGI app sees %s=%q", f.name, k, v)
			}
			if k == "HTTP_MESHD_TIMEOUT" && strings.Contains(v, "1h") {
				t.Errorf("%s: the WSGI app sees the caller's %s=%q", f.name, k, v)
			}
		}
	}
}

// ---- 7. extended key usage ----

func testExtendedKeyUsage(t *testing.T, m *mesh) {
	// Inbound: a certificate the mesh CA signed for app a, but for
	// serverAuth only, must not be taken as a caller.
	before := m.wsgiHits(t)
	u := &url.URL{Scheme: "https", Host: m.b.Ports.InternalAddr(), Opaque: "//" + m.b.Ports.InternalAddr() + "/public/eku"}
	// TLS 1.3: the client finishes its side of the handshake before the
	// server judges the client certificate; the server's verdict is the
	// alert the first read gets.
	cfg := internalClient(t, m, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}).Transport.(*http.Transport).TLSClientConfig
	conn, err := tls.Dial("tcp", m.b.Ports.InternalAddr(), cfg)
	if err != nil {
		t.Fatalf("serverAuth-only client certificate: handshake: %v", err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	if _, err := conn.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Errorf("serverAuth-only client certificate: first read: %v, want the sidecar's bad certificate alert", err)
	}
	conn.Close()
	if after := m.wsgiHits(t); after != before {
		t.Errorf("the app served %d requests from a serverAuth-only certificate", after-before)
	}
	// The same hand-made certificate with clientAuth passes: the refusal
	// above is the usage, not the test's certificate.
	w := decodeWSGI(t, "clientAuth certificate", do2(t, internalClient(t, m, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}), u))
	if w.Env["HTTP_DAPR_CALLER_APP_ID"] != "a" {
		t.Errorf("clientAuth certificate: caller %q, want a", w.Env["HTTP_DAPR_CALLER_APP_ID"])
	}

	// Outbound: a callee whose certificate lacks serverAuth is refused by
	// the calling sidecar before any request is sent.
	r := raw1(t, hostPort(m.a.HTTPURL()), "/v1.0/invoke/cbad/method/x")
	assertError(t, "callee without serverAuth", r, http.StatusBadGateway, "ERR_DIRECT_INVOKE")
	if !strings.Contains(string(r.body), "serverAuth") {
		t.Errorf("callee without serverAuth: the error does not say why: %s", r.body)
	}
	if n := m.cbadHits.Load(); n != 0 {
		t.Errorf("the callee without serverAuth got %d requests", n)
	}
	if r := raw1(t, hostPort(m.a.HTTPURL()), "/v1.0/invoke/cgood/method/x"); r.status != http.StatusOK || m.cgoodHits.Load() != 1 {
		t.Errorf("callee with serverAuth: got %d %s (%d requests), want 200 from it", r.status, r.body, m.cgoodHits.Load())
	}
}

// ---- hand-made certificates from the mesh CA's issuer ----

type issuer struct {
	cert *x509.Certificate
	key  any
}

func loadIssuer(t *testing.T, dataDir string) issuer {
	t.Helper()
	cb, err := os.ReadFile(filepath.Join(dataDir, "ca", "0001", "issuer.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(filepath.Join(dataDir, "ca", "0001", "issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := certs.ParseCertsPEM(cb)
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.ParseKeyPEM(kb)
	if err != nil {
		t.Fatal(err)
	}
	return issuer{cs[0], key}
}

// leaf signs a certificate for spiffe://cluster.local/ns/default/{app} with
// the given extended key usages, otherwise as sentry would issue it.
func (is issuer) leaf(t *testing.T, app string, eku []x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://cluster.local/ns/default/" + app)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, &key.PublicKey, is.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, is.cert.Raw}, PrivateKey: key}
}

func (m *mesh) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(m.sentry.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no roots in the bundle")
	}
	return pool
}

// internalClient is an HTTP/2 client of a sidecar's internal port that
// presents a hand-made certificate for app "a" with the given usages. It
// checks only that the server chains to the mesh (its SPIFFE ID is the
// sidecar's business here).
func internalClient(t *testing.T, m *mesh, eku []x509.ExtKeyUsage) *http.Client {
	t.Helper()
	cert := loadIssuer(t, m.sentry.DataDir).leaf(t, "a", eku)
	roots := m.roots(t)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against the mesh roots, without a DNS name
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, r := range raw[1:] {
				if c, err := x509.ParseCertificate(r); err == nil {
					inter.AddCert(c)
				}
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// fakeCallee serves HTTP/2 over TLS on loopback with a hand-made
// certificate for app and counts the requests it gets.
func (m *mesh) fakeCallee(t *testing.T, is issuer, app string, eku []x509.ExtKeyUsage, hits *atomic.Int64) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits.Add(1)
			_, _ = io.WriteString(w, "fake "+app)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{is.leaf(t, app, eku)}, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return l.Addr().String()
}
