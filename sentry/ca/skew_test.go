package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshd/meshd/certs"
)

// TestClockSkewEdges (#18, "a clock stepped 5 minutes on one host"): what a
// host whose clock differs from sentry's makes of a workload certificate
// sentry has just issued, with go-spiffe's verification (what every mTLS
// handshake between sidecars runs) at the host's time. A network
// namespace cannot have a clock of its own, so the suite cannot step one
// host's clock for real (docs/reliability.md); these are the edges it
// would hit. NotBefore is backdated by Backdate (5 min): a verifier up to
// 5 min behind sentry accepts a new certificate (with a 1 min backdate, a
// host 5 min behind refused every new certificate for 4 minutes); further
// behind, it is "not yet valid". A verifier ahead accepts it until
// NotAfter by its own clock: 5 min ahead, a 20 s certificate (the chaos
// suite's TTL) is already expired, a 1 h one (the default) has 55 min.
func TestClockSkewEdges(t *testing.T) {
	sentryClock := newClock()
	sentryClock.Add(-time.Hour) // the CA was made an hour ago: its root is not the edge
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		// skew of the verifying host's clock against sentry's
		skew time.Duration
		want string // "" accepted, else part of the error
	}{
		{"same clock", time.Hour, 0, ""},
		{"verifier 55s behind", time.Hour, -55 * time.Second, ""},
		{"verifier 62s behind", time.Hour, -62 * time.Second, ""},
		{"verifier 5 min behind", time.Hour, -5 * time.Minute, ""},
		{"verifier 5 min 2s behind", time.Hour, -5*time.Minute - 2*time.Second, "not yet valid"},
		{"verifier 6 min behind, 1 min later", time.Hour, -6*time.Minute + time.Minute + time.Second, ""},
		{"verifier 5 min ahead, TTL 1h", time.Hour, 5 * time.Minute, ""},
		{"verifier 5 min ahead, TTL 20s", 20 * time.Second, 5 * time.Minute, "expired"},
		{"verifier 15s ahead, TTL 20s", 20 * time.Second, 15 * time.Second, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: sentryClock.Now()}
			a := open(t, Options{DataDir: t.TempDir(), TrustDomain: td, WorkloadTTL: tc.ttl, Now: clk.Now})
			clk.Add(time.Hour) // sentry's now
			issued := clk.Now()
			id, err := certs.NewIdentity(td.Name(), "default", "echo")
			if err != nil {
				t.Fatal(err)
			}
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			s, err := a.Sign(id, &key.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(s.DER)
			if err != nil {
				t.Fatal(err)
			}
			bundle, err := a.GetX509BundleForTrustDomain(td)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = x509svid.Verify(append([]*x509.Certificate{leaf}, s.Chain...), bundle, x509svid.WithTime(issued.Add(tc.skew)))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused at skew %s (NotBefore %s, NotAfter %s, verifier at %s): %v", tc.skew,
					leaf.NotBefore.Sub(issued), leaf.NotAfter.Sub(issued), tc.skew, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("at skew %s: err = %v; want one containing %q", tc.skew, err, tc.want)
			}
		})
	}
}
