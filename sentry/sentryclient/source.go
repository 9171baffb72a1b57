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

// SourceConfig says how StartSource reaches sentry and who asks.
type SourceConfig struct {
	Address string              // sentry's address (required)
	Anchors []*x509.Certificate // trust anchors until sentry sends a bundle (required)
	// AnchorsFile, if set, is the file Anchors came from: read again for
	// every connection to sentry (WithAnchorsFile).
	AnchorsFile string
	TokenFile   string // bootstrap token, read afresh for every bootstrap; "": none
	Identity    certs.Identity
	Logger      *slog.Logger // nil: slog.Default()
	// Fetcher, if set, wraps the client as the Source's fetcher (a sidecar
	// diagnoses sentry's refusals this way); nil: the client itself.
	Fetcher func(*Client) certs.Fetcher
}

// Identity is a workload's rotating identity from sentry: the Source, the
// trust-bundle watch that keeps the Source's bundle in step, and the
// client's teardown.
type Identity struct {
	Source *certs.Source
	// WatchBundle follows sentry's trust bundle into Source until ctx is
	// done (it then returns nil), then closes the client.
	WatchBundle func(ctx context.Context) error
	// CloseClient closes the sentry client if WatchBundle never ran (a
	// start that failed later). Safe to call more than once.
	CloseClient func()
}

// StartSource gets the first workload certificate for cfg.Identity from
// sentry (retrying with backoff until ctx ends) and returns the rotating
// Source built on it. The token is for bootstrap only (the first
// certificate, and again if the SVID expired or sentry refused to renew on
// its strength): renewals present the current SVID. The token file is read
// afresh for every bootstrap, so replacing it heals a workload whose token
// expired or was revoked.
func StartSource(ctx context.Context, cfg SourceConfig) (*Identity, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Address == "" {
		return nil, errors.New("sentryclient: no sentry address")
	}
	tokenFn := func() (string, error) { return "", nil }
	if cfg.TokenFile != "" {
		if _, err := os.ReadFile(cfg.TokenFile); err != nil {
			return nil, fmt.Errorf("sentryclient: token file: %w", err)
		}
		tokenFn = func() (string, error) {
			b, err := os.ReadFile(cfg.TokenFile)
			if err != nil {
				return "", fmt.Errorf("sentryclient: token file: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	} else {
		log.Warn("sentryclient: no token file: asking sentry for a certificate without a token (works only with its insecure validator)")
	}
	client, err := New(ctx, cfg.Address, cfg.Anchors, cfg.Identity, "", WithLogger(log), WithTokenFunc(tokenFn), WithAnchorsFile(cfg.AnchorsFile))
	if err != nil {
		return nil, err
	}
	var fetcher certs.Fetcher = client
	if cfg.Fetcher != nil {
		fetcher = cfg.Fetcher(client)
	}
	src, err := certs.NewSource(ctx, fetcher, certs.SourceOptions{Identity: cfg.Identity, Logger: log})
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("sentryclient: first certificate from sentry %s: %w", cfg.Address, err)
	}
	closeClient := sync.OnceFunc(func() { client.Close() })
	watch := func(ctx context.Context) error {
		defer closeClient()
		err := client.WatchBundle(ctx, func(roots []*x509.Certificate) {
			if err := src.SetRoots(roots); err != nil {
				log.Error("sentryclient: trust bundle from sentry rejected", "err", err)
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return &Identity{Source: src, WatchBundle: watch, CloseClient: closeClient}, nil
}

// ReadAnchors reads a PEM file of trust anchors (CA certificates).
func ReadAnchors(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sentryclient: trust anchors: %w", err)
	}
	anchors, err := certs.ParseCertsPEM(b)
	if err != nil {
		return nil, fmt.Errorf("sentryclient: trust anchors %s: %w", path, err)
	}
	return anchors, nil
}
