package sentry

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/token"
	"github.com/meshd/meshd/sentry/token/insecure"
	"github.com/meshd/meshd/sentry/token/join"
	"github.com/meshd/meshd/telemetry/logging"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NewLogger returns a slog logger writing to w. level is debug, info, warn
// or error; format is text or json.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	log, err := logging.New(w, level, format)
	if err != nil {
		return nil, fmt.Errorf("sentry: %w", err)
	}
	return log, nil
}

// Token validator names for --token-validator.
const (
	ValidatorJoin     = "join"
	ValidatorInsecure = "insecure"
)

// NewValidator builds the token validator called name. The join validator's
// key lives in dataDir (created on first use).
func NewValidator(name, dataDir string, log *slog.Logger) (token.Validator, error) {
	switch name {
	case ValidatorJoin:
		key, err := join.LoadOrCreateKey(dataDir)
		if err != nil {
			return nil, fmt.Errorf("sentry: %w", err)
		}
		ledger, err := join.OpenLedger(dataDir)
		if err != nil {
			return nil, fmt.Errorf("sentry: %w", err)
		}
		return join.NewValidator(key.Public().(ed25519.PublicKey), nil).WithLedger(ledger), nil
	case ValidatorInsecure:
		return insecure.New(log), nil
	}
	return nil, fmt.Errorf("sentry: token validator %q: want %s or %s", name, ValidatorJoin, ValidatorInsecure)
}

// CreateJoinToken makes a join token for app in namespace ns with the key in
// dataDir. trustDomain may be "" to use the data dir's trust domain (or the
// default one if sentry never ran there); if both are known they must agree.
// once makes the token single-use. The claims carry the token's ID, which
// RevokeJoinToken takes.
func CreateJoinToken(dataDir, trustDomain, ns, app string, ttl time.Duration, once bool, now time.Time) (string, join.Claims, error) {
	td, err := dataDirTrustDomain(dataDir, trustDomain)
	if err != nil {
		return "", join.Claims{}, err
	}
	id, err := certs.NewIdentity(td.String(), ns, app)
	if err != nil {
		return "", join.Claims{}, fmt.Errorf("sentry: token: %w", err)
	}
	key, err := join.LoadOrCreateKey(dataDir)
	if err != nil {
		return "", join.Claims{}, fmt.Errorf("sentry: token: %w", err)
	}
	tok, c, err := join.Issue(key, id, ttl, now, once)
	if err != nil {
		return "", join.Claims{}, fmt.Errorf("sentry: token: %w", err)
	}
	return tok, c, nil
}

// RevokeJoinToken revokes a join token of dataDir: tok (verified with the
// data dir's key, so its expiry is known) or, if tok is "", the token ID jti
// (kept on the list for the longest token lifetime, join.MaxTTL). A running
// sentry refuses the token from its next request on. It returns the claims
// of tok, or claims holding only the ID.
func RevokeJoinToken(dataDir, tok, jti string, now time.Time) (join.Claims, error) {
	tok = strings.TrimSpace(tok)
	switch {
	case tok == "" && jti == "":
		return join.Claims{}, fmt.Errorf("sentry: token revoke: give a token or its ID")
	case tok != "":
		key, err := join.LoadKey(dataDir)
		if err != nil {
			return join.Claims{}, fmt.Errorf("sentry: token revoke: %w", err)
		}
		c, err := join.Parse(tok, key.Public().(ed25519.PublicKey))
		if err != nil {
			return join.Claims{}, fmt.Errorf("sentry: token revoke: %w", err)
		}
		if jti != "" && jti != c.ID {
			return join.Claims{}, fmt.Errorf("sentry: token revoke: the token's ID is %s, not %s", c.ID, jti)
		}
		if err := join.Revoke(dataDir, c.ID, c.ExpiresAt(), now); err != nil {
			return join.Claims{}, fmt.Errorf("sentry: token revoke: %w", err)
		}
		return c, nil
	}
	if err := join.Revoke(dataDir, jti, now.Add(join.MaxTTL), now); err != nil {
		return join.Claims{}, fmt.Errorf("sentry: token revoke: %w", err)
	}
	return join.Claims{ID: jti}, nil
}

func dataDirTrustDomain(dataDir, flag string) (spiffeid.TrustDomain, error) {
	known, err := ca.TrustDomainOf(dataDir)
	if err != nil {
		known = spiffeid.TrustDomain{} // sentry has not initialized it yet
	}
	switch {
	case flag == "" && known.IsZero():
		flag = certs.DefaultTrustDomain
	case flag == "":
		return known, nil
	}
	td, err := spiffeid.TrustDomainFromString(flag)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("sentry: trust domain %q: %w", flag, err)
	}
	if !known.IsZero() && known != td {
		return spiffeid.TrustDomain{}, fmt.Errorf("sentry: data dir %s serves trust domain %s, not %s", dataDir, known, td)
	}
	return td, nil
}

// RotateFiles name CA material a user brings to rotate-root (all empty:
// generate a new root and issuer).
type RotateFiles struct {
	RootCert, IssuerCert, IssuerKey, RootKey string
}

// RotateRoot stages a new root and issuer in dataDir; the running sentry
// publishes it, then switches to it (see package sentry/ca). It returns the
// new root's subject and expiry for the operator.
func RotateRoot(dataDir string, files RotateFiles, caTTL time.Duration, now time.Time) (*ca.Material, error) {
	var (
		m   *ca.Material
		err error
	)
	if files.RootCert != "" || files.IssuerCert != "" || files.IssuerKey != "" {
		if files.RootCert == "" || files.IssuerCert == "" || files.IssuerKey == "" {
			return nil, fmt.Errorf("sentry: rotate-root: --root-cert, --issuer-cert and --issuer-key go together")
		}
		m, err = ca.LoadFiles(files.RootCert, files.IssuerCert, files.IssuerKey, files.RootKey)
	} else {
		td, tdErr := ca.TrustDomainOf(dataDir)
		if tdErr != nil {
			return nil, fmt.Errorf("sentry: rotate-root: %w", tdErr)
		}
		m, err = ca.Generate(td, caTTL, now)
	}
	if err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	if err := ca.Stage(dataDir, m, now); err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	return m, nil
}
