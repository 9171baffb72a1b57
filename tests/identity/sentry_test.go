package identity_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestBinaryJoinTokenToCertificate: sentry binary, `sentry token create`,
// a certificate over gRPC with that token, verified with go-spiffe; a token
// for another app is refused; a restart keeps the bundle.
func TestBinaryJoinTokenToCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sentry")
	p := startSentry(t, dir)
	roots := p.bundle(t)
	id, err := certs.NewIdentity("cluster.local", "default", "orders")
	if err != nil {
		t.Fatal(err)
	}
	c, err := sentryclient.New(context.Background(), p.addr, roots, id, p.token(t, "orders", "default"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := certs.GenerateKey()
	csr, _ := certs.NewCSR(key)
	iss, err := c.Fetch(context.Background(), csr)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	got, _, err := x509svid.Verify(iss.Chain, x509bundle.FromX509Authorities(id.TrustDomain, roots))
	if err != nil || got != id.ID() {
		t.Fatalf("Verify = %v, %v", got, err)
	}
	if !key.PublicKey.Equal(iss.Chain[0].PublicKey) {
		t.Fatal("certificate is not for our key")
	}

	wrong, err := sentryclient.New(context.Background(), p.addr, roots, id, p.token(t, "payments", "default"))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if _, err := wrong.Fetch(context.Background(), csr); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("token for another app: %v, want PermissionDenied", err)
	}

	p.stop(t)
	p2 := startSentry(t, dir)
	if !certs.SameRoots(roots, p2.bundle(t)) {
		t.Fatal("restart on the same data dir changed the bundle")
	}
	c2, err := sentryclient.New(context.Background(), p2.addr, roots, id, p.token(t, "orders", "default"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Fetch(context.Background(), csr); err != nil {
		t.Fatalf("Fetch after restart: %v", err)
	}
}
