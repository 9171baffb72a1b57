package sentryclient

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/meshd/meshd/certs"
)

// IdentityConfig is how a process (a sidecar, the control plane) gets its
// workload identity from sentry: the flags --sentry-address,
// --trust-anchors-file (or the TRUST_ANCHORS PEM) and --token-file.
type IdentityConfig struct {
	SentryAddress    string
	TrustAnchorsFile string
	TrustAnchorsPEM  []byte // used when TrustAnchorsFile is empty
	TokenFile        string // "": no token (sentry's insecure validator)
	Identity         certs.Identity
	Logger           *slog.Logger
}

// Identity is a running workload identity: the rotating source and the
// client that feeds it.
type Identity struct {
	// Source is the rotating X509-SVID and trust bundle.
	Source *certs.Source
	client *Client
	log    *slog.Logger
	close  func()
}

// StartIdentity gets the first workload certificate from sentry and
// returns the rotating source. WatchBundle then follows sentry's trust
// bundle; Close releases the client (and is safe after WatchBundle).
//
// The token is for bootstrap only (the first certificate, and again if
// the SVID expired or sentry refused to renew on its strength): renewals
// present the current SVID. The file is read afresh for every bootstrap,
// so replacing it heals a process whose token expired or was revoked.
func StartIdentity(ctx context.Context, cfg IdentityConfig) (*Identity, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.SentryAddress == "" {
		return nil, errors.New("sentryclient: --sentry-address is required (or run with --insecure)")
	}
	pemBytes := cfg.TrustAnchorsPEM
	if cfg.TrustAnchorsFile != "" {
		b, err := os.ReadFile(cfg.TrustAnchorsFile)
		if err != nil {
			return nil, fmt.Errorf("sentryclient: --trust-anchors-file: %w", err)
		}
		pemBytes = b
	}
	if len(pemBytes) == 0 {
		return nil, errors.New("sentryclient: no trust anchors: set --trust-anchors-file or TRUST_ANCHORS")
	}
	anchors, err := certs.ParseCertsPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("sentryclient: trust anchors: %w", err)
	}
	tokenFn := func() (string, error) { return "", nil }
	if cfg.TokenFile != "" {
		if _, err := os.ReadFile(cfg.TokenFile); err != nil {
			return nil, fmt.Errorf("sentryclient: --token-file: %w", err)
		}
		tokenFn = func() (string, error) {
			b, err := os.ReadFile(cfg.TokenFile)
			if err != nil {
				return "", fmt.Errorf("sentryclient: --token-file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	} else {
		log.Warn("sentryclient: no --token-file: asking sentry for a certificate without a token (works only with its insecure validator)")
	}
	client, err := New(ctx, cfg.SentryAddress, anchors, cfg.Identity, "", WithLogger(log), WithTokenFunc(tokenFn))
	if err != nil {
		return nil, err
	}
	src, err := certs.NewSource(ctx, client, certs.SourceOptions{Identity: cfg.Identity, Logger: log})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("sentryclient: first certificate from sentry %s: %w", cfg.SentryAddress, err)
	}
	return &Identity{Source: src, client: client, log: log, close: sync.OnceFunc(func() { client.Close() })}, nil
}

// WatchBundle follows sentry's trust bundle into the source until ctx is
// done, then closes the client.
func (id *Identity) WatchBundle(ctx context.Context) error {
	defer id.close()
	err := id.client.WatchBundle(ctx, func(roots []*x509.Certificate) {
		if err := id.Source.SetRoots(roots); err != nil {
			id.log.Error("sentryclient: trust bundle from sentry rejected", "err", err)
		}
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Close closes the sentry client (not the source).
func (id *Identity) Close() { id.close() }
