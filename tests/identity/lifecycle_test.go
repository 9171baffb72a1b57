package identity_test

import (
	"crypto/x509"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// These tests run real meshd sidecars against the real sentry binary and
// assert what an operator sees: the sidecar's /v1.0/healthz (204 while it
// holds a valid identity, 503 once its certificate expired) and sentry's
// answers.

// healthz returns the sidecar's /v1.0/healthz status (0 if unreachable).
func healthz(sc *harness.Sidecar) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(sc.HTTPURL() + "/v1.0/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// stayHealthy polls the sidecar for d and fails on the first answer that is
// not 204.
func stayHealthy(t *testing.T, sc *harness.Sidecar, d time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if code := healthz(sc); code != http.StatusNoContent {
			t.Fatalf("%s: /v1.0/healthz = %d after %s (want 204 throughout %s)", sc.Name, code, time.Since(start).Round(time.Millisecond), d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tokenFile(t *testing.T, tok string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	harness.WriteToken(t, path, tok)
	return path
}

// TestRenewalOutlivesToken (item 3a): the join token expires well before the
// certificate would, yet the sidecar keeps renewing (with its SVID) and stays
// healthy for several certificate lifetimes past the token's expiry.
func TestRenewalOutlivesToken(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "", "--workload-ttl", "10s")
	tok, _ := s.Token(t, "orders", "default", "--ttl", "8s")
	tokenExpiry := time.Now().Add(8 * time.Second)
	sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", TokenFile: tokenFile(t, tok)})
	// Until 2.5 certificate lifetimes after the token expired.
	stayHealthy(t, sc, time.Until(tokenExpiry.Add(25*time.Second)))
	if n := strings.Count(sc.Log(), "X509-SVID rotated"); n < 4 {
		t.Fatalf("sidecar renewed %d times in ~33s with a 10s certificate TTL, want >= 4", n)
	}
}

// TestOnceToken (item 3b): a --once token gets one sidecar its certificate;
// a second sidecar with the same token is refused, while the first keeps
// renewing without the (spent) token.
func TestOnceToken(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "", "--workload-ttl", "6s")
	tok, jti := s.Token(t, "orders", "default", "--once", "--ttl", "1h")
	if jti == "" {
		t.Fatal("token create printed no jti= on stderr")
	}
	path := tokenFile(t, tok)
	first := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", TokenFile: path})
	second := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", TokenFile: path, NoWait: true})
	start := time.Now()
	for time.Since(start) < 14*time.Second {
		if code := healthz(first); code != http.StatusNoContent {
			t.Fatalf("first sidecar: /v1.0/healthz = %d after %s", code, time.Since(start).Round(time.Millisecond))
		}
		if code := healthz(second); code == http.StatusNoContent {
			t.Fatalf("second sidecar with the spent single-use token is healthy after %s", time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(s.Log(), "single-use join token "+jti+" has already been used") {
		t.Fatalf("sentry did not log the reuse of the single-use token %s", jti)
	}
	if n := strings.Count(first.Log(), "X509-SVID rotated"); n < 2 {
		t.Fatalf("first sidecar renewed %d times in 14s with a 6s TTL, want >= 2", n)
	}
}

// TestTokenFileReplacedHeals (item 3d): a sidecar whose certificate expired
// while sentry was down, and whose token expired meanwhile, re-bootstraps
// with the token now in its --token-file.
func TestTokenFileReplacedHeals(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "", "--workload-ttl", "5s")
	tok, _ := s.Token(t, "orders", "default", "--ttl", "6s")
	tokenExpiry := time.Now().Add(6 * time.Second)
	path := tokenFile(t, tok)
	sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", TokenFile: path})
	if err := s.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	harness.WaitHTTP(t, sc.HTTPURL()+"/v1.0/healthz", http.StatusServiceUnavailable, 20*time.Second)
	time.Sleep(time.Until(tokenExpiry.Add(time.Second)))
	fresh, _ := s.Token(t, "orders", "default", "--ttl", "1h")
	harness.WriteToken(t, path, fresh)
	s.Restart(t)
	harness.WaitHTTP(t, sc.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
}

// revoke runs `sentry token revoke` with args.
func revoke(t *testing.T, dataDir string, args ...string) {
	t.Helper()
	out, err := exec.Command(sentryBin, append([]string{"token", "revoke", "--data-dir", dataDir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sentry token revoke %v: %v: %s", args, err, out)
	}
}

// tokenJTI runs `sentry token create` and returns the token and its jti.
func (p *sentryProc) tokenJTI(t *testing.T, app string, extra ...string) (string, string) {
	t.Helper()
	var stderr strings.Builder
	cmd := exec.Command(sentryBin, append([]string{"token", "create", "--data-dir", p.dataDir, "--app-id", app}, extra...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token create: %v: %s", err, stderr.String())
	}
	var jti string
	for _, f := range strings.Fields(stderr.String()) {
		if v, ok := strings.CutPrefix(f, "jti="); ok {
			jti = v
		}
	}
	if len(jti) != 32 {
		t.Fatalf("token create printed no jti on stderr: %q", stderr.String())
	}
	return strings.TrimSpace(string(out)), jti
}

// expectRefused checks that a bootstrap with tok is refused with code
// Unauthenticated and a message containing want.
func expectRefused(t *testing.T, p *sentryProc, roots []*x509.Certificate, tok, want string) {
	t.Helper()
	_, err := fetchWith(t, p, roots, "orders", tok)
	if err == nil {
		t.Fatalf("sentry issued a certificate for a token it should refuse (%s)", want)
	}
	if !strings.Contains(err.Error(), "Unauthenticated") || !strings.Contains(err.Error(), want) {
		t.Fatalf("refusal = %v, want Unauthenticated with %q", err, want)
	}
}

// TestTokenRevokeAndOnceSurviveRestart (item 3c and the persistence of 3b):
// `sentry token revoke` (by jti and by token file) takes effect in the
// running sentry at once and after a restart; a spent single-use token stays
// spent across a restart.
func TestTokenRevokeAndOnceSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sentry")
	p := startSentry(t, dir)
	roots := p.bundle(t)

	byJTI, jti := p.tokenJTI(t, "orders")
	byFile, _ := p.tokenJTI(t, "orders")
	once, _ := p.tokenJTI(t, "orders", "--once")
	for i, tok := range []string{byJTI, byFile} {
		if _, err := fetchWith(t, p, roots, "orders", tok); err != nil {
			t.Fatalf("token %d before revocation: %v", i, err)
		}
	}
	if _, err := fetchWith(t, p, roots, "orders", once); err != nil {
		t.Fatalf("single-use token, first use: %v", err)
	}
	expectRefused(t, p, roots, once, "already been used")

	revoke(t, dir, "--jti", jti)
	expectRefused(t, p, roots, byJTI, "revoked")
	revoke(t, dir, "--token-file", tokenFile(t, byFile))
	expectRefused(t, p, roots, byFile, "revoked")

	p.stop(t)
	p = startSentry(t, dir)
	expectRefused(t, p, roots, byJTI, "revoked")
	expectRefused(t, p, roots, byFile, "revoked")
	expectRefused(t, p, roots, once, "already been used")
	fresh, _ := p.tokenJTI(t, "orders")
	if _, err := fetchWith(t, p, roots, "orders", fresh); err != nil {
		t.Fatalf("an unrevoked token after the restart: %v", err)
	}
	if n := strings.Count(p.logs.String(), "certificate request refused"); n != 3 {
		t.Fatalf("restarted sentry logged %d refusals, want 3", n)
	}
}
