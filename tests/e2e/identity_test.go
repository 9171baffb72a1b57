package e2e_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshd/meshd/certs"
)

// testWorkloadAPI is bullet 5: go-spiffe's Workload API client gets the
// sidecar's SVID and sees it rotate.
func testWorkloadAPI(t *testing.T, m *mesh) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+m.wlSocket)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if want := "spiffe://cluster.local/ns/default/orders"; svid.ID.String() != want {
		t.Fatalf("SVID %s, want %s", svid.ID, want)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, src); err != nil {
		t.Fatalf("SVID does not verify against the Workload API bundle: %v", err)
	}
	// The bundle is sentry's.
	pemBytes, err := os.ReadFile(m.sentry.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	roots, err := certs.ParseCertsPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	if !certs.SameRoots(roots, b.X509Authorities()) {
		t.Fatalf("Workload API bundle differs from sentry's bundle.pem")
	}
	if left := time.Until(svid.Certificates[0].NotAfter); left > 11*time.Second {
		t.Fatalf("SVID valid for another %s; sentry runs with --workload-ttl 10s", left)
	}

	first := svid.Certificates[0].SerialNumber
	start := time.Now()
	for {
		select {
		case <-src.Updated():
		case <-time.After(20*time.Second - time.Since(start)):
			t.Fatalf("no new SVID within 20s (serial still %x)", first)
		}
		now, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if now.Certificates[0].SerialNumber.Cmp(first) != 0 {
			if now.ID != svid.ID {
				t.Fatalf("rotated SVID has ID %s", now.ID)
			}
			if _, _, err := x509svid.Verify(now.Certificates, src); err != nil {
				t.Fatalf("rotated SVID does not verify: %v", err)
			}
			t.Logf("rotation seen after %s (serial %x -> %x)", time.Since(start).Round(time.Millisecond), first, now.Certificates[0].SerialNumber)
			return
		}
	}
}

// genuineSource returns a sentry-issued SVID source for app (join token).
func genuineSource(t *testing.T, m *mesh, app string) *certs.Source {
	t.Helper()
	return m.sentry.Source(t, app, "default")
}

// foreignCert is a certificate for spiffe://cluster.local/ns/default/frontend
// signed by a CA the mesh does not trust.
func foreignCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "foreign CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://cluster.local/ns/default/frontend")
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// internalClient is an HTTP/2 client for a sidecar's internal port.
func internalClient(cfg *tls.Config) *http.Client {
	cfg.NextProtos = []string{"h2"}
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// testMTLSRefusals is bullet 8.
func testMTLSRefusals(t *testing.T, m *mesh) {
	ordersURL := "https://" + m.orders.Ports.InternalAddr() + "/refusal-check"
	ordersID := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/orders")
	intruder := genuineSource(t, m, "intruder")
	serverOnly := func() *tls.Config {
		// Verifies the callee like a sidecar would, presents no client cert.
		return tlsconfig.TLSClientConfig(intruder, tlsconfig.AuthorizeID(ordersID))
	}

	t.Run("GenuineCertOfAnotherAppIsItsIdentity", func(t *testing.T) {
		// Control: the client setup works, and the identity the callee
		// sees is the certificate's, whatever the headers say.
		c := internalClient(tlsconfig.MTLSClientConfig(intruder, intruder, tlsconfig.AuthorizeID(ordersID)))
		e := decodeEcho(t, do(t, c, http.MethodGet, ordersURL, http.Header{
			"Dapr-Caller-App-Id": {appFrontend}, "Dapr-Caller-Namespace": {"default"}}, nil))
		if e.CallerAppID != "intruder" || e.CallerNamespace != "default" || len(e.Headers["Dapr-Caller-App-Id"]) != 1 {
			t.Fatalf("callee saw caller %q/%q (%v), want intruder/default", e.CallerAppID, e.CallerNamespace, e.Headers["Dapr-Caller-App-Id"])
		}
	})

	for _, c := range []struct {
		name string
		cfg  func() *tls.Config
	}{
		{"ForeignCA", func() *tls.Config {
			cfg := serverOnly()
			fc := foreignCert(t)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &fc, nil }
			return cfg
		}},
		{"NoClientCert", serverOnly},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := internalClient(c.cfg()).Get(ordersURL)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("the internal port answered %s to a client with %s; want the handshake refused", resp.Status, c.name)
			}
			if !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "tls") {
				t.Logf("refused with: %v", err)
			}
		})
	}

	t.Run("CalleeIsNotTheAppDialled", func(t *testing.T) {
		// Control: audit answers, and the spy counts.
		before := m.spyHits.Load()
		r := do(t, nil, http.MethodGet, m.frontend.HTTPURL()+"/v1.0/invoke/audit/method/ping", nil, nil)
		if r.status != http.StatusOK || m.spyHits.Load() != before+1 {
			t.Fatalf("control call to audit: %d %s, spy hits %d -> %d", r.status, r.body, before, m.spyHits.Load())
		}
		// payments resolves to audit's sidecar: the caller must refuse it.
		before = m.spyHits.Load()
		r = do(t, nil, http.MethodPost, m.frontend.HTTPURL()+"/v1.0/invoke/payments/method/charge", nil, strings.NewReader("100 EUR"))
		assertError(t, "payments->audit", r, http.StatusBadGateway, "ERR_DIRECT_INVOKE")
		if !strings.Contains(string(r.body), "payments") {
			t.Errorf("error message does not name the app: %s", r.body)
		}
		if got := m.spyHits.Load(); got != before {
			t.Fatalf("the app behind the wrong callee received %d request(s)", got-before)
		}
	})
}

// assertError checks a sidecar error answer.
func assertError(t testing.TB, what string, r result, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d; body %s", what, r.status, status, r.body)
		return
	}
	var e errorReply
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Errorf("%s: body %q is not the JSON error: %v", what, r.body, err)
		return
	}
	if e.ErrorCode != code || e.Message == "" {
		t.Errorf("%s: errorCode %q message %q, want %q and a message", what, e.ErrorCode, e.Message, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	if got := r.header.Get("Meshd-Error-Code"); got != code {
		t.Errorf("%s: Meshd-Error-Code header %q, want %q", what, got, code)
	}
}
