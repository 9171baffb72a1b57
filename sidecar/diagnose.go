package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/sentryclient"
)

// sentryProblem is why a sidecar has no certificate yet, in words for the
// operator, with what to do.
type sentryProblem struct {
	class  string // for saying it once: one ERROR per class, not per attempt
	reason string
	heals  bool // false: retrying alone will not fix it
}

// diagnoseSentry reads a failed first fetch. Errors that cannot heal by
// retrying (sentry's certificate does not verify with our trust anchors,
// a token for another app, namespace or CA, a trust domain sentry does not
// serve) are told apart from the ones that may (sentry not up yet).
func diagnoseSentry(cfg Config, err error) sentryProblem {
	msg := err.Error()
	anchors := cfg.TrustAnchorsFile
	if anchors == "" {
		anchors = "TRUST_ANCHORS"
	}
	tokenFile := cfg.TokenFile
	if tokenFile == "" {
		tokenFile = "--token-file (none given)"
	}
	mint := "mint one for this app with `sentry token create --data-dir SENTRY_DATA_DIR --app-id " + cfg.AppID +
		" --namespace " + cfg.Namespace + " > " + tokenFile + "` (the file is read again at the next attempt)"
	// The innermost status: status.FromError of a wrapped error carries
	// the whole chain in its message.
	var st *status.Status
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st = se.GRPCStatus()
	}
	switch {
	case strings.Contains(msg, "x509: certificate signed by unknown authority"),
		strings.Contains(msg, "failed to verify certificate"):
		return sentryProblem{class: "anchors", reason: "sentry at " + cfg.SentryAddress +
			" presents a certificate that the trust anchors of " + anchors + " do not verify: they belong to another CA. " +
			"Give --trust-anchors-file the bundle.pem in the --data-dir of the sentry at " + cfg.SentryAddress}
	case status.Code(err) == codes.PermissionDenied:
		return sentryProblem{class: "denied", reason: "sentry at " + cfg.SentryAddress + " refused this sidecar's join token: " +
			statusMessage(st, msg) + "; the token must be for app " + cfg.AppID + " in namespace " + cfg.Namespace + ": " + mint}
	case status.Code(err) == codes.Unauthenticated:
		return sentryProblem{class: "token", reason: "sentry at " + cfg.SentryAddress + " refused this sidecar's join token: " +
			statusMessage(st, msg) + "; " + mint}
	case status.Code(err) == codes.NotFound:
		return sentryProblem{class: "trust-domain", reason: "sentry at " + cfg.SentryAddress + ": " + statusMessage(st, msg) +
			"; set --trust-domain to the one sentry serves"}
	}
	return sentryProblem{class: "unreachable", heals: true,
		reason: "waiting for its identity from sentry at " + cfg.SentryAddress + " (last attempt: " + msg + ")"}
}

func statusMessage(st *status.Status, fallback string) string {
	if st != nil && st.Message() != "" {
		return st.Message()
	}
	return fallback
}

// diagnosingClient is the sentry client as the certs.Source's fetcher: a
// failed bootstrap is diagnosed, the not-ready answers of the sidecar's
// ports carry the diagnosis, and one that cannot heal by itself is logged
// once at ERROR with what to do. The sidecar keeps retrying (a replaced
// token file heals it).
type diagnosingClient struct {
	*sentryclient.Client
	cfg       Config
	log       *slog.Logger
	setReason func(string)

	mu     sync.Mutex
	logged string // class last logged at ERROR
}

func (d *diagnosingClient) Fetch(ctx context.Context, csrPEM []byte) (*certs.Issued, error) {
	iss, err := d.Client.Fetch(ctx, csrPEM)
	if err == nil {
		return iss, nil
	}
	p := diagnoseSentry(d.cfg, err)
	if d.setReason != nil {
		d.setReason("sidecar is not ready: " + p.reason)
	}
	d.mu.Lock()
	first := d.logged != p.class
	d.logged = p.class
	d.mu.Unlock()
	if first && !p.heals {
		d.log.Error("sidecar: CANNOT GET AN IDENTITY, and retrying will not fix it: " + p.reason)
	}
	return iss, err
}
