package proxy

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// h2Client returns an HTTP/2 client with the given TLS config.
func h2Client(cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr}
}

func TestInternalPortRefusesStrangers(t *testing.T) {
	e := newEnv(t, nil)
	orders := spiffeid.RequireFromString("spiffe://cluster.local/ns/default/orders")
	other := newCA(t, "cluster.local")
	foreign := newCA(t, "evil.example")
	tests := []struct {
		name string
		cfg  *tls.Config
	}{
		{"cert from another CA, same trust domain", tlsconfig.MTLSClientConfig(other.svid(t, "default", "frontend"), e.ca.bundle(), tlsconfig.AuthorizeID(orders))},
		{"cert from another trust domain", tlsconfig.MTLSClientConfig(foreign.svid(t, "default", "frontend"), e.ca.bundle(), tlsconfig.AuthorizeID(orders))},
		{"no client cert", tlsconfig.TLSClientConfig(e.ca.bundle(), tlsconfig.AuthorizeID(orders))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h2Client(tc.cfg).Get("https://" + e.orders.internal + "/x")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request accepted with status %d", resp.StatusCode)
			}
			// With TLS 1.3 the client may learn of the rejection as a TLS
			// alert or as a closed connection; either way nothing was served.
			t.Logf("refused: %v", err)
		})
	}
	t.Run("valid cert is accepted", func(t *testing.T) {
		resp, err := h2Client(tlsconfig.MTLSClientConfig(e.ca.svid(t, "default", "frontend"), e.ca.bundle(), tlsconfig.AuthorizeID(orders))).Get("https://" + e.orders.internal + "/x")
		if err != nil {
			t.Fatal(err)
		}
		got := decodeEcho(t, resp)
		if got.Header.Get(HeaderCallerAppID) != "frontend" {
			t.Fatalf("caller header %v", got.Header)
		}
	})
	t.Run("non-workload SPIFFE ID is denied", func(t *testing.T) {
		cfg := tlsconfig.MTLSClientConfig(e.ca.svid(t, "default", "frontend"), e.ca.bundle(), tlsconfig.AuthorizeID(orders))
		s := e.ca.svid(t, "default", "x")
		s.ID = spiffeid.RequireFromString("spiffe://cluster.local/some/other/shape")
		cert, _ := e.ca.svidWithID(t, s.ID)
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		resp, err := h2Client(cfg).Get("https://" + e.orders.internal + "/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb errorBody
		_ = json.Unmarshal(b, &eb)
		if resp.StatusCode != 403 || eb.ErrorCode != ErrCodePermissionDenied {
			t.Fatalf("got %d %s", resp.StatusCode, b)
		}
	})
}

func TestCallerVerifiesCalleeIdentity(t *testing.T) {
	e := newEnv(t, nil)
	// "payments" is a real sidecar of the mesh, but not the app we dial.
	payments := startSidecar(t, e.ca, Config{Identity: mustIdentity(t, "payments"), Resolver: e.res, App: e.orders.p.cfg.App})
	e.res.set("orders", payments.internal)
	resp, err := http.Get(e.caller.httpURL + "/v1.0/invoke/orders/method/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || !strings.Contains(string(b), "spiffe://cluster.local/ns/default/orders") {
		t.Fatalf("got %d %s, want 502 naming the expected ID", resp.StatusCode, b)
	}
	if fail, _ := e.res.reports(); len(fail) != 1 || fail[0] != payments.internal {
		t.Errorf("failures %v", fail)
	}
}
