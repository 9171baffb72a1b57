package join

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/token"
)

const (
	prefix = "mjt1."
	// MaxTokenLength bounds what the parser looks at.
	MaxTokenLength = 1024
	// KeyFile is the signing key's name inside sentry's data directory.
	KeyFile = "join.key"
	// MaxTTL is the longest lifetime a join token may have.
	MaxTTL = 366 * 24 * time.Hour
	// clockSkew tolerates an issue time slightly in the future.
	clockSkew = time.Minute
)

var b64 = base64.RawURLEncoding.Strict()

// Claims are the signed content of a join token.
type Claims struct {
	TrustDomain string `json:"td"`
	Namespace   string `json:"ns"`
	AppID       string `json:"app"`
	IssuedAt    int64  `json:"iat"`
	Expiry      int64  `json:"exp"`
	ID          string `json:"jti"`
	// Once marks a single-use token: sentry records its ID on first use
	// and refuses it afterwards.
	Once bool `json:"once,omitempty"`
}

// ExpiresAt is the token's expiry.
func (c Claims) ExpiresAt() time.Time { return time.Unix(c.Expiry, 0) }

// Create returns a reusable join token for id, valid for ttl from now.
func Create(key ed25519.PrivateKey, id certs.Identity, ttl time.Duration, now time.Time) (string, error) {
	tok, _, err := Issue(key, id, ttl, now, false)
	return tok, err
}

// Issue returns a join token for id, valid for ttl from now, and its claims
// (the ID is what `sentry token revoke --jti` takes). once makes it
// single-use.
func Issue(key ed25519.PrivateKey, id certs.Identity, ttl time.Duration, now time.Time, once bool) (string, Claims, error) {
	if ttl <= 0 || ttl > MaxTTL {
		return "", Claims{}, fmt.Errorf("join: TTL %s must be in (0, %s]", ttl, MaxTTL)
	}
	if _, err := certs.NewIdentity(id.TrustDomain.String(), id.Namespace, id.AppID); err != nil {
		return "", Claims{}, fmt.Errorf("join: %w", err)
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", Claims{}, fmt.Errorf("join: %w", err)
	}
	c := Claims{
		TrustDomain: id.TrustDomain.String(),
		Namespace:   id.Namespace,
		AppID:       id.AppID,
		IssuedAt:    now.Unix(),
		Expiry:      now.Add(ttl).Unix(),
		ID:          hex.EncodeToString(jti[:]),
		Once:        once,
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", Claims{}, fmt.Errorf("join: %w", err)
	}
	signed := prefix + b64.EncodeToString(payload)
	sig := ed25519.Sign(key, []byte(signed))
	return signed + "." + b64.EncodeToString(sig), c, nil
}

// Parse verifies tok's signature with pub and decodes its claims. It does
// not check expiry or identity: Validator does.
func Parse(tok string, pub ed25519.PublicKey) (Claims, error) {
	if len(tok) > MaxTokenLength {
		return Claims{}, fmt.Errorf("%w: join token longer than %d bytes", token.ErrInvalid, MaxTokenLength)
	}
	if !strings.HasPrefix(tok, prefix) {
		return Claims{}, fmt.Errorf("%w: not a join token (want prefix %q)", token.ErrInvalid, prefix)
	}
	dot := strings.LastIndexByte(tok, '.')
	if dot < len(prefix) {
		return Claims{}, fmt.Errorf("%w: join token has no signature", token.ErrInvalid)
	}
	signed, sigB64 := tok[:dot], tok[dot+1:]
	payloadB64 := signed[len(prefix):]
	if strings.IndexByte(payloadB64, '.') >= 0 {
		return Claims{}, fmt.Errorf("%w: join token has too many parts", token.ErrInvalid)
	}
	sig, err := b64.DecodeString(sigB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claims{}, fmt.Errorf("%w: join token signature is malformed", token.ErrInvalid)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, []byte(signed), sig) {
		return Claims{}, fmt.Errorf("%w: join token signature does not verify", token.ErrInvalid)
	}
	payload, err := b64.DecodeString(payloadB64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: join token claims are not base64url", token.ErrInvalid)
	}
	return ParseClaims(payload)
}

// ParseClaims decodes claims strictly: the JSON must be exactly what Create
// produces for the same values.
func ParseClaims(payload []byte) (Claims, error) {
	var c Claims
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Claims{}, fmt.Errorf("%w: join token claims: %w", token.ErrInvalid, err)
	}
	again, err := json.Marshal(c)
	if err != nil || !bytes.Equal(again, payload) {
		return Claims{}, fmt.Errorf("%w: join token claims are not in canonical form", token.ErrInvalid)
	}
	switch {
	case c.TrustDomain == "" || c.Namespace == "" || c.AppID == "":
		return Claims{}, fmt.Errorf("%w: join token claims lack an identity", token.ErrInvalid)
	case c.IssuedAt <= 0 || c.Expiry <= c.IssuedAt:
		return Claims{}, fmt.Errorf("%w: join token times are inconsistent", token.ErrInvalid)
	case c.Expiry-c.IssuedAt > int64(MaxTTL/time.Second):
		return Claims{}, fmt.Errorf("%w: join token lifetime exceeds %s", token.ErrInvalid, MaxTTL)
	case len(c.ID) != 32:
		return Claims{}, fmt.Errorf("%w: join token ID is malformed", token.ErrInvalid)
	}
	if _, err := hex.DecodeString(c.ID); err != nil {
		return Claims{}, fmt.Errorf("%w: join token ID is malformed", token.ErrInvalid)
	}
	return c, nil
}

// Validator accepts join tokens signed by one key.
type Validator struct {
	pub    ed25519.PublicKey
	now    func() time.Time
	ledger *Ledger
}

// NewValidator returns a validator for tokens signed by pub's private key.
// now may be nil (time.Now).
func NewValidator(pub ed25519.PublicKey, now func() time.Time) *Validator {
	if now == nil {
		now = time.Now
	}
	return &Validator{pub: pub, now: now}
}

// WithLedger makes v refuse revoked tokens and spend single-use ones in l.
// Without a ledger, single-use tokens are refused (they could not be spent).
func (v *Validator) WithLedger(l *Ledger) *Validator {
	v.ledger = l
	return v
}

// Validate implements token.Validator.
func (v *Validator) Validate(_ context.Context, tok string, id certs.Identity) error {
	if tok == "" {
		return token.ErrMissing
	}
	c, err := Parse(tok, v.pub)
	if err != nil {
		return err
	}
	now := v.now()
	if now.Unix() >= c.Expiry {
		return fmt.Errorf("%w: join token expired at %s", token.ErrInvalid, time.Unix(c.Expiry, 0).UTC().Format(time.RFC3339))
	}
	if time.Unix(c.IssuedAt, 0).After(now.Add(clockSkew)) {
		return fmt.Errorf("%w: join token issued in the future", token.ErrInvalid)
	}
	if c.TrustDomain != id.TrustDomain.String() || c.Namespace != id.Namespace || c.AppID != id.AppID {
		return fmt.Errorf("%w: join token is for app %q in namespace %q of %q, not %s",
			token.ErrDenied, c.AppID, c.Namespace, c.TrustDomain, id)
	}
	if v.ledger == nil {
		if c.Once {
			return fmt.Errorf("%w: single-use join token %s cannot be spent: this validator keeps no ledger", token.ErrInvalid, c.ID)
		}
		return nil
	}
	revoked, err := v.ledger.Revoked(c.ID)
	if err != nil {
		return fmt.Errorf("join: %w", err) // neither missing nor invalid: Unauthenticated is still what the caller sees
	}
	if revoked {
		return fmt.Errorf("%w: join token %s has been revoked", token.ErrInvalid, c.ID)
	}
	if c.Once {
		return v.ledger.Spend(c, now)
	}
	return nil
}

// LoadOrCreateKey reads the join-token signing key from dataDir, creating
// it (mode 0600; directory 0700) if it does not exist yet. Concurrent callers
// end up with the same key.
func LoadOrCreateKey(dataDir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dataDir, KeyFile)
	if k, err := loadKey(path); !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	pemBytes, err := certs.EncodeKeyPEM(priv)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	tmp, err := os.CreateTemp(dataDir, KeyFile+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(pemBytes); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	// Link fails if another process created the key first: use theirs.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("join: %w", err)
	}
	return loadKey(path)
}

// LoadKey reads the join-token signing key from dataDir; unlike
// LoadOrCreateKey it never creates one.
func LoadKey(dataDir string) (ed25519.PrivateKey, error) {
	return loadKey(filepath.Join(dataDir, KeyFile))
}

func loadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("join: key: %w", err)
	}
	s, err := certs.ParseKeyPEM(b)
	if err != nil {
		return nil, fmt.Errorf("join: key %s: %w", path, err)
	}
	k, ok := s.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("join: key %s is %T, want Ed25519", path, s)
	}
	return k, nil
}
