package join

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/token"
)

func TestLedgerOnceRevokeAndPrune(t *testing.T) {
	dir := t.TempDir()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	id, err := certs.NewIdentity("cluster.local", "default", "orders")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l, err := OpenLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := NewValidator(key.Public().(ed25519.PublicKey), func() time.Time { return now }).WithLedger(l)

	once, oc, err := Issue(key, id, time.Hour, now, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(context.Background(), once, id); err != nil {
		t.Fatalf("single-use token, first use: %v", err)
	}
	err = v.Validate(context.Background(), once, id)
	if !errors.Is(err, token.ErrInvalid) || !strings.Contains(err.Error(), "already been used") {
		t.Fatalf("single-use token, second use: %v", err)
	}
	// Another ledger on the same directory (a restarted sentry) agrees.
	v2 := NewValidator(key.Public().(ed25519.PublicKey), func() time.Time { return now })
	l2, err := OpenLedger(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := v2.WithLedger(l2).Validate(context.Background(), once, id); err == nil {
		t.Fatal("a second ledger on the same directory accepted the spent token")
	}
	// Without a ledger a single-use token cannot be honoured.
	if err := NewValidator(key.Public().(ed25519.PublicKey), nil).Validate(context.Background(), once, id); err == nil {
		t.Fatal("a validator without a ledger accepted a single-use token")
	}

	reusable, rc, err := Issue(key, id, 2*time.Hour, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(context.Background(), reusable, id); err != nil {
		t.Fatal(err)
	}
	// Revoked through the package function (the CLI), seen by the open ledger.
	if err := Revoke(dir, rc.ID, rc.ExpiresAt(), now); err != nil {
		t.Fatal(err)
	}
	err = v.Validate(context.Background(), reusable, id)
	if !errors.Is(err, token.ErrInvalid) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked token: %v", err)
	}
	if err := Revoke(dir, "not-hex", now.Add(time.Hour), now); err == nil {
		t.Fatal("revoked a malformed ID")
	}

	// Entries leave the lists once their token has expired.
	later := now.Add(3 * time.Hour)
	_, other, _ := Issue(key, id, 4*time.Hour, later, false)
	if err := Revoke(dir, other.ID, other.ExpiresAt(), later); err != nil {
		t.Fatal(err)
	}
	if ok, _ := l.Revoked(rc.ID); ok {
		t.Fatal("an expired token's revocation was kept")
	}
	if ok, _ := l.Revoked(other.ID); !ok {
		t.Fatal("a live token's revocation was dropped")
	}
	_, o2, _ := Issue(key, id, time.Hour, later, true)
	if err := l.Spend(o2, later); err != nil {
		t.Fatal(err)
	}
	if used, _ := l.Used(oc.ID); used {
		t.Fatal("an expired single-use token was kept on the spent list")
	}
}
