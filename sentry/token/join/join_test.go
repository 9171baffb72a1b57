package join

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/token"
)

func mustID(t testing.TB, ns, app string) certs.Identity {
	id, err := certs.NewIdentity("cluster.local", ns, app)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestValidate(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	id := mustID(t, "default", "orders")
	mk := func(k ed25519.PrivateKey, id certs.Identity, ttl time.Duration, at time.Time) string {
		tok, err := Create(k, id, ttl, at)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mk(priv, id, time.Hour, now)
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	sign := func(payload string) string {
		signed := prefix + enc(payload)
		return signed + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(signed)))
	}
	canon := `{"td":"cluster.local","ns":"default","app":"orders","iat":1800000000,"exp":1800003600,"jti":"0123456789abcdef0123456789abcdef"}`
	otherTD, _ := certs.NewIdentity("other.example", "default", "orders")
	v := NewValidator(pub, func() time.Time { return now.Add(time.Minute) })
	cases := []struct {
		name string
		tok  string
		id   certs.Identity
		want error
		msg  string
	}{
		{"good", good, id, nil, ""},
		{"hand-made canonical", sign(canon), id, nil, ""},
		{"missing", "", id, token.ErrMissing, "missing"},
		{"expired", mk(priv, id, time.Minute, now.Add(-time.Minute)), id, token.ErrInvalid, "expired"},
		{"issued in future", mk(priv, id, time.Hour, now.Add(time.Hour)), id, token.ErrInvalid, "future"},
		{"forged", mk(other, id, time.Hour, now), id, token.ErrInvalid, "does not verify"},
		{"other app", good, mustID(t, "default", "payments"), token.ErrDenied, "orders"},
		{"other namespace", good, mustID(t, "prod", "orders"), token.ErrDenied, "default"},
		{"other trust domain", good, otherTD, token.ErrDenied, "cluster.local"},
		{"no prefix", strings.TrimPrefix(good, prefix), id, token.ErrInvalid, "not a join token"},
		{"wrong version", "mjt2." + strings.TrimPrefix(good, prefix), id, token.ErrInvalid, "not a join token"},
		{"no signature", prefix + enc(canon), id, token.ErrInvalid, "no signature"},
		{"extra part", good + ".x", id, token.ErrInvalid, ""},
		{"padded base64", good + "==", id, token.ErrInvalid, "malformed"},
		{"truncated sig", good[:len(good)-2], id, token.ErrInvalid, ""},
		{"too long", prefix + strings.Repeat("A", MaxTokenLength), id, token.ErrInvalid, "longer"},
		{"whitespace JSON", sign(strings.Replace(canon, ",", ", ", 1)), id, token.ErrInvalid, "canonical"},
		{"reordered JSON", sign(`{"ns":"default","td":"cluster.local","app":"orders","iat":1800000000,"exp":1800003600,"jti":"0123456789abcdef0123456789abcdef"}`), id, token.ErrInvalid, "canonical"},
		{"duplicate key", sign(strings.Replace(canon, `{"td":"cluster.local",`, `{"td":"x","td":"cluster.local",`, 1)), id, token.ErrInvalid, "canonical"},
		{"case-folded key", sign(strings.Replace(canon, `"app"`, `"APP"`, 1)), id, token.ErrInvalid, "canonical"},
		{"unknown field", sign(strings.Replace(canon, `}`, `,"admin":true}`, 1)), id, token.ErrInvalid, "unknown field"},
		{"trailing data", sign(canon + " {}"), id, token.ErrInvalid, "canonical"},
		{"empty app", sign(strings.Replace(canon, `"orders"`, `""`, 1)), id, token.ErrInvalid, "identity"},
		{"exp before iat", sign(strings.Replace(canon, "1800003600", "1799999999", 1)), id, token.ErrInvalid, "inconsistent"},
		{"lifetime too long", sign(strings.Replace(canon, "1800003600", "1899999999", 1)), id, token.ErrInvalid, "lifetime"},
		{"bad jti", sign(strings.Replace(canon, "0123456789abcdef0123456789abcdef", "zz23456789abcdef0123456789abcdef", 1)), id, token.ErrInvalid, "ID"},
		{"not JSON", sign("hello"), id, token.ErrInvalid, "claims"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := v.Validate(context.Background(), c.tok, c.id)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %q does not mention %q", err, c.msg)
			}
		})
	}
}

func TestCreateRejects(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	id := mustID(t, "default", "orders")
	for _, ttl := range []time.Duration{0, -time.Second, MaxTTL + time.Second} {
		if _, err := Create(priv, id, ttl, time.Now()); err == nil {
			t.Errorf("ttl %s accepted", ttl)
		}
	}
	if _, err := Create(priv, certs.Identity{}, time.Hour, time.Now()); err == nil {
		t.Error("empty identity accepted")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	keys := make([]ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for i := range keys {
		if !keys[i].Equal(keys[0]) {
			t.Fatal("concurrent callers got different keys")
		}
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil {
		t.Fatal("a corrupt key file was accepted (or silently replaced)")
	}
}

var fuzzPub, fuzzPriv, _ = ed25519.GenerateKey(strings.NewReader(strings.Repeat("fuzz-seed-bytes!", 4)))

// FuzzParse: the parser never panics, and whatever it accepts re-creates
// byte for byte (nothing but signed canonical tokens gets through).
func FuzzParse(f *testing.F) {
	id := mustID(f, "default", "orders")
	good, _ := Create(fuzzPriv, id, time.Hour, time.Unix(1_800_000_000, 0))
	for _, s := range []string{good, "", prefix, prefix + ".", good + ".", good[:40], "mjt1.e30.AAAA", strings.ToUpper(good)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Parse(tok, fuzzPub)
		if err != nil {
			if !errors.Is(err, token.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if c.AppID == "" || c.Expiry <= c.IssuedAt {
			t.Fatalf("accepted incomplete claims %+v", c)
		}
		dot := strings.LastIndexByte(tok, '.')
		payload, err := b64.DecodeString(tok[len(prefix):dot])
		if err != nil {
			t.Fatal(err)
		}
		again, _ := ParseClaims(payload)
		if again != c {
			t.Fatal("claims not stable")
		}
	})
}

// FuzzParseClaims reaches the JSON decoder directly (a fuzzer cannot forge
// signatures, so FuzzParse rarely gets there).
func FuzzParseClaims(f *testing.F) {
	f.Add([]byte(`{"td":"cluster.local","ns":"default","app":"orders","iat":1800000000,"exp":1800003600,"jti":"0123456789abcdef0123456789abcdef"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"td":"a","td":"b"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := ParseClaims(payload)
		if err != nil {
			if !errors.Is(err, token.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if c.TrustDomain == "" || c.Namespace == "" || c.AppID == "" || c.Expiry <= c.IssuedAt || len(c.ID) != 32 {
			t.Fatalf("accepted bad claims %+v", c)
		}
	})
}
