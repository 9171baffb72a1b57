package sentryclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/meshd/meshd/certs"
)

// IdentityConfig is how a process (a sidecar, the control plane) gets its
// workload identity from sentry, in the shape of their flags:
// --sentry-address, --trust-anchors-file (or the TRUST_ANCHORS PEM) and
// --token-file.
type IdentityConfig struct {
	SentryAddress    string
	TrustAnchorsFile string
	TrustAnchorsPEM  []byte // used when TrustAnchorsFile is empty
	TokenFile        string // "": no token (sentry's insecure validator)
	Identity         certs.Identity
	Logger           *slog.Logger
	Fetcher          func(*Client) certs.Fetcher // see SourceConfig.Fetcher
}

// StartIdentity checks cfg as flags (errors name the flag), reads the
// trust anchors, and starts the identity with StartSource.
func StartIdentity(ctx context.Context, cfg IdentityConfig) (*Identity, error) {
	if cfg.SentryAddress == "" {
		return nil, errors.New("sentryclient: --sentry-address is required")
	}
	if _, port, err := net.SplitHostPort(cfg.SentryAddress); !strings.Contains(cfg.SentryAddress, "://") && (err != nil || port == "") {
		return nil, fmt.Errorf("sentryclient: --sentry-address %q: want host:port (sentry listens on 127.0.0.1:50003 unless its --listen says otherwise)", cfg.SentryAddress)
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
	if cfg.TokenFile != "" {
		if _, err := os.ReadFile(cfg.TokenFile); err != nil {
			return nil, fmt.Errorf("sentryclient: --token-file: %w", err)
		}
	}
	return StartSource(ctx, SourceConfig{
		Address: cfg.SentryAddress, Anchors: anchors, AnchorsFile: cfg.TrustAnchorsFile, TokenFile: cfg.TokenFile,
		Identity: cfg.Identity, Logger: cfg.Logger, Fetcher: cfg.Fetcher,
	})
}
