package grpccreds_test

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
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds/bootstrap"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/xds/grpccreds"
)

type ca struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newCA(t *testing.T) *ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &ca{key, c}
}

// svid issues an SVID for id and returns it as a tls.Certificate.
func (c *ca) svid(t *testing.T, id string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// files writes cert, key and bundle files as certs/svidfiles names them.
func (c *ca) files(t *testing.T, cert tls.Certificate) (certF, keyF, caF string) {
	t.Helper()
	dir := t.TempDir()
	keyPEM, err := certs.EncodeKeyPEM(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certF, keyF, caF = filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid-key.pem"), filepath.Join(dir, "bundle.pem")
	for f, b := range map[string][]byte{certF: certs.EncodeCertsPEM(cert.Leaf), keyF: keyPEM, caF: certs.EncodeCertsPEM(c.cert)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return
}

// server is a gRPC server with an mTLS SVID, serving health; it records
// the client's SPIFFE ID.
func server(t *testing.T, c *ca, id string) (addr string, clientID chan string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.cert)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{c.svid(t, id)}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		p, _ := peer.FromContext(ctx)
		ti := p.AuthInfo.(credentials.TLSInfo)
		select {
		case clientID <- ti.State.PeerCertificates[0].URIs[0].String():
		default:
		}
		return h(ctx, req)
	}))
	clientID = make(chan string, 1)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	return l.Addr().String(), clientID
}

const cpID = "spiffe://cluster.local/ns/meshd-system/controlplane"

// call builds the credentials from a bootstrap config, as grpc-go's xDS
// client does, and makes one health check.
func call(t *testing.T, addr string, cfg grpccreds.Config) error {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	b, cleanup, err := bootstrap.GetChannelCredentials(grpccreds.Name).Build(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	cc, err := grpc.NewClient(addr, grpc.WithCredentialsBundle(b))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestControlPlaneVerifiedByID(t *testing.T) {
	mesh := newCA(t)
	certF, keyF, caF := mesh.files(t, mesh.svid(t, "spiffe://cluster.local/ns/default/client"))
	cfg := grpccreds.Config{CertificateFile: certF, PrivateKeyFile: keyF, CACertificateFile: caF, ServerSPIFFEID: cpID, RefreshInterval: "1s"}

	addr, seen := server(t, mesh, cpID)
	if err := call(t, addr, cfg); err != nil {
		t.Fatalf("the right control plane: %v", err)
	}
	if got := <-seen; got != "spiffe://cluster.local/ns/default/client" {
		t.Errorf("the server saw client %s", got)
	}

	// Another SVID of the same mesh is not the control plane.
	impostor, _ := server(t, mesh, "spiffe://cluster.local/ns/default/orders")
	if err := call(t, impostor, cfg); err == nil || !strings.Contains(err.Error(), "control plane is spiffe://cluster.local/ns/default/orders, want "+cpID) {
		t.Errorf("impostor with a mesh SVID: %v, want a refusal naming both IDs", err)
	}

	// The right ID from another CA is not trusted.
	foreign, _ := server(t, newCA(t), cpID)
	if err := call(t, foreign, cfg); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("foreign CA: %v, want unknown authority", err)
	}
}

func TestBuildBadConfig(t *testing.T) {
	b := bootstrap.GetChannelCredentials(grpccreds.Name)
	if b == nil {
		t.Fatal("meshd_spiffe is not registered")
	}
	good := `"certificate_file":"/d/svid.pem","private_key_file":"/d/svid-key.pem","ca_certificate_file":"/d/bundle.pem"`
	for _, c := range []struct{ name, cfg, want string }{
		{"not JSON", `{`, "config"},
		{"unknown field", `{` + good + `,"server_spiffe_id":"` + cpID + `","verify":false}`, "unknown field"},
		{"no server ID", `{` + good + `}`, "server_spiffe_id is required"},
		{"bad server ID", `{` + good + `,"server_spiffe_id":"https://cp"}`, "server_spiffe_id"},
		{"no cert", `{"ca_certificate_file":"/d/b.pem","server_spiffe_id":"` + cpID + `"}`, "certificate_file and private_key_file"},
		{"no CA", `{"certificate_file":"/d/c.pem","private_key_file":"/d/k.pem","server_spiffe_id":"` + cpID + `"}`, "ca_certificate_file"},
		{"bad refresh", `{` + good + `,"server_spiffe_id":"` + cpID + `","refresh_interval":"soon"}`, "refresh_interval"},
		{"negative refresh", `{` + good + `,"server_spiffe_id":"` + cpID + `","refresh_interval":"-1s"}`, "not positive"},
		{"key and cert apart", `{"certificate_file":"/a/c.pem","private_key_file":"/b/k.pem","ca_certificate_file":"/d/b.pem","server_spiffe_id":"` + cpID + `"}`, "same directory"},
	} {
		_, _, err := b.Build(json.RawMessage(c.cfg))
		if err == nil || !strings.HasPrefix(err.Error(), "grpccreds: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a grpccreds error with %q", c.name, err, c.want)
		}
	}
}

// TestMissingFiles: files that are not there fail the handshake (within
// the call's deadline), never fall back to anything weaker.
func TestMissingFiles(t *testing.T) {
	mesh := newCA(t)
	addr, _ := server(t, mesh, cpID)
	dir := t.TempDir()
	err := call(t, addr, grpccreds.Config{CertificateFile: filepath.Join(dir, "svid.pem"), PrivateKeyFile: filepath.Join(dir, "svid-key.pem"),
		CACertificateFile: filepath.Join(dir, "bundle.pem"), ServerSPIFFEID: cpID})
	if err == nil {
		t.Fatal("a call without SVID files succeeded")
	}
}

// FuzzBuild: any bootstrap config is either refused with a grpccreds error
// or builds credentials that close cleanly; nothing panics.
func FuzzBuild(f *testing.F) {
	f.Add([]byte(`{"certificate_file":"/d/svid.pem","private_key_file":"/d/svid-key.pem","ca_certificate_file":"/d/bundle.pem","server_spiffe_id":"` + cpID + `","refresh_interval":"60s"}`))
	f.Add([]byte(`{"server_spiffe_id":"spiffe://x/y","refresh_interval":"1.5s"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"refresh_interval":"99999999999999999999s"}`))
	b := grpccreds.Builder{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		bundle, cleanup, err := b.Build(raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "grpccreds: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		if bundle.TransportCredentials() == nil {
			t.Fatal("no transport credentials")
		}
		cleanup()
	})
}
