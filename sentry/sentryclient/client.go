package sentryclient

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Sentry's own identity (see sentry/ca.SentryID; repeated here so that
// sidecars do not import the CA).
const (
	sentryNamespace = "meshd-system"
	sentryAppID     = "sentry"
)

// Defaults for the stream reconnect backoff.
const (
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
)

// Option configures a Client.
type Option func(*Client)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithBackoff sets the bounds of the stream reconnect backoff.
func WithBackoff(min, max time.Duration) Option {
	return func(c *Client) { c.minBackoff, c.maxBackoff = min, max }
}

// WithTokenFunc makes the client ask fn for the token on every Fetch (for
// example to re-read a token file); it replaces the token given to New.
func WithTokenFunc(fn func() (string, error)) Option { return func(c *Client) { c.tokenFn = fn } }

// bundleState is one immutable trust bundle the client holds.
type bundleState struct {
	version uint64
	roots   []*x509.Certificate
	bundle  *x509bundle.Bundle
	changed chan struct{} // closed when replaced
}

// Client talks to one sentry for one identity. It is safe for concurrent use.
type Client struct {
	id         certs.Identity
	tokenFn    func() (string, error)
	log        *slog.Logger
	minBackoff time.Duration
	maxBackoff time.Duration
	// anchorsFile: WithAnchorsFile ("": none); trust is the bundle source
	// of the connections to sentry.
	anchorsFile string
	trust       x509bundle.Source

	addr     string
	sentryID spiffeid.ID
	conn     *grpc.ClientConn // server-authenticated only: bootstrap and the bundle stream
	api      sentrypb.CAClient

	mu     sync.Mutex // serializes bundle updates
	bundle atomic.Pointer[bundleState]

	cancel context.CancelFunc
	done   chan struct{}
}

// New connects to sentry at addr (the connection is made lazily) for
// identity id, trusting anchors until sentry sends a newer bundle. token is
// the credential sent with every request (surrounding whitespace is
// trimmed, so a token file can be passed as read). The client follows the
// trust-bundle stream in the background until ctx ends or Close is called.
func New(ctx context.Context, addr string, anchors []*x509.Certificate, id certs.Identity, token string, opts ...Option) (*Client, error) {
	if len(anchors) == 0 {
		return nil, errors.New("sentryclient: no trust anchors")
	}
	for i, a := range anchors {
		if a == nil || !a.IsCA {
			return nil, fmt.Errorf("sentryclient: trust anchor %d is not a CA certificate", i)
		}
	}
	if id.TrustDomain.IsZero() {
		return nil, errors.New("sentryclient: identity has no trust domain")
	}
	tok := strings.TrimSpace(token)
	c := &Client{
		id:         id,
		tokenFn:    func() (string, error) { return tok, nil },
		log:        slog.New(slog.DiscardHandler),
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
		done:       make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	if c.minBackoff <= 0 || c.maxBackoff < c.minBackoff {
		return nil, fmt.Errorf("sentryclient: bad backoff bounds %s..%s", c.minBackoff, c.maxBackoff)
	}
	c.bundle.Store(c.newState(0, slices.Clone(anchors)))

	sentryID, err := spiffeid.FromSegments(id.TrustDomain, "ns", sentryNamespace, sentryAppID)
	if err != nil {
		return nil, fmt.Errorf("sentryclient: %w", err)
	}
	c.addr, c.sentryID = addr, sentryID
	c.trust = c
	if c.anchorsFile != "" {
		c.trust = &sentryTrust{c: c}
	}
	tlsCfg := tlsconfig.TLSClientConfig(c.trust, certs.RequireServerAuth(tlsconfig.AuthorizeID(sentryID)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("sentryclient: dial %s: %w", addr, err)
	}
	c.conn = conn
	c.api = sentrypb.NewCAClient(conn)

	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	go func() {
		select {
		case <-ctx.Done():
			cancel()
		case <-wctx.Done():
		}
	}()
	go c.follow(wctx)
	return c, nil
}

func (c *Client) newState(version uint64, roots []*x509.Certificate) *bundleState {
	return &bundleState{
		version: version,
		roots:   roots,
		bundle:  x509bundle.FromX509Authorities(c.id.TrustDomain, roots),
		changed: make(chan struct{}),
	}
}

// Close stops following the bundle and closes the connection.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("sentryclient: close: %w", err)
	}
	return nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the bundle
// the client currently trusts.
func (c *Client) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != c.id.TrustDomain {
		return nil, fmt.Errorf("sentryclient: no bundle for trust domain %q", td)
	}
	return c.bundle.Load().bundle, nil
}

// Roots returns the roots the client currently trusts and their version
// (0: the anchors given to New). The slice must not be modified.
func (c *Client) Roots() ([]*x509.Certificate, uint64) {
	b := c.bundle.Load()
	return b.roots, b.version
}

// update installs a bundle from sentry if it is newer than the current one.
func (c *Client) update(version uint64, pemBytes []byte) error {
	b, err := certs.ParseBundlePEM(c.id.TrustDomain, pemBytes)
	if err != nil {
		return fmt.Errorf("sentryclient: bundle from sentry: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.bundle.Load()
	if version <= cur.version {
		return nil
	}
	if certs.SameRoots(cur.roots, b.X509Authorities()) {
		// Same roots, newer version: record it silently.
		next := *cur
		next.version = version
		c.bundle.Store(&next)
		return nil
	}
	c.bundle.Store(c.newState(version, b.X509Authorities()))
	close(cur.changed)
	c.log.Info("sentryclient: trust bundle updated", "version", version, "roots", len(b.X509Authorities()))
	return nil
}

// Fetch implements certs.Fetcher: it sends csrPEM with the token (asked of
// the token function afresh, so a replaced token file is picked up) and
// returns the verified chain and the newest trust bundle the client knows.
// It is the bootstrap path: renewals go through Renew.
func (c *Client) Fetch(ctx context.Context, csrPEM []byte) (*certs.Issued, error) {
	tok, err := c.tokenFn()
	if err != nil {
		return nil, fmt.Errorf("sentryclient: token: %w", err)
	}
	return c.sign(ctx, c.api, csrPEM, strings.TrimSpace(tok))
}

// Renew implements certs.Renewer: it dials sentry on a fresh connection that
// presents current as the TLS client certificate and asks, without a token,
// for a certificate for csrPEM. Sentry signs for exactly the identity in
// current. A refusal (Unauthenticated, PermissionDenied) wraps
// certs.ErrRenewalRefused so the caller can bootstrap with the token again.
func (c *Client) Renew(ctx context.Context, csrPEM []byte, current *x509svid.SVID) (*certs.Issued, error) {
	if current == nil {
		return nil, fmt.Errorf("sentryclient: renew: %w: no current SVID", certs.ErrRenewalRefused)
	}
	if current.ID != c.id.ID() {
		return nil, fmt.Errorf("sentryclient: renew: %w: current SVID is %s, not %s", certs.ErrRenewalRefused, current.ID, c.id)
	}
	tlsCfg := tlsconfig.MTLSClientConfig(staticSVID{current}, c.trust, certs.RequireServerAuth(tlsconfig.AuthorizeID(c.sentryID)))
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("sentryclient: renew: dial %s: %w", c.addr, err)
	}
	defer conn.Close()
	iss, err := c.sign(ctx, sentrypb.NewCAClient(conn), csrPEM, "")
	if err != nil {
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied:
			return nil, fmt.Errorf("sentryclient: renew: %w: %w", certs.ErrRenewalRefused, err)
		}
		return nil, fmt.Errorf("sentryclient: renew: %w", err)
	}
	return iss, nil
}

// staticSVID is an x509svid.Source of one SVID.
type staticSVID struct{ svid *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

// sign sends one SignCertificate request on api and checks the answer.
func (c *Client) sign(ctx context.Context, api sentrypb.CAClient, csrPEM []byte, tok string) (*certs.Issued, error) {
	resp, err := api.SignCertificate(ctx, &sentrypb.SignCertificateRequest{
		AppId:       c.id.AppID,
		Namespace:   c.id.Namespace,
		TrustDomain: c.id.TrustDomain.String(),
		CsrPem:      csrPEM,
		Token:       tok,
	})
	if err != nil {
		return nil, fmt.Errorf("sentryclient: sign: %w", err)
	}
	if err := c.update(resp.GetTrustBundleVersion(), resp.GetTrustBundlePem()); err != nil {
		return nil, err
	}
	chain, err := certs.ParseCertsPEM(resp.GetCertChainPem())
	if err != nil {
		return nil, fmt.Errorf("sentryclient: certificate chain from sentry: %w", err)
	}
	b := c.bundle.Load()
	id, _, err := x509svid.Verify(chain, b.bundle)
	if err != nil {
		return nil, fmt.Errorf("sentryclient: certificate from sentry does not verify: %w", err)
	}
	if id != c.id.ID() {
		return nil, fmt.Errorf("sentryclient: sentry issued %s, asked for %s", id, c.id)
	}
	return &certs.Issued{Chain: chain, Roots: b.roots}, nil
}

// WatchBundle calls fn with the current roots at once and again after every
// change, until ctx ends (it then returns ctx's error) or the client is
// closed (nil). fn runs on the caller's goroutine; the roots must not be
// modified.
func (c *Client) WatchBundle(ctx context.Context, fn func(roots []*x509.Certificate)) error {
	for {
		b := c.bundle.Load()
		fn(b.roots)
		select {
		case <-b.changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return nil
		}
	}
}

// follow keeps a WatchTrustBundle stream open, reconnecting with jittered
// exponential backoff.
func (c *Client) follow(ctx context.Context) {
	defer close(c.done)
	backoff := c.minBackoff
	for ctx.Err() == nil {
		got, err := c.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = c.minBackoff
		}
		c.log.Debug("sentryclient: trust bundle stream ended; reconnecting", "err", err, "in", backoff)
		d := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, c.maxBackoff)
	}
}

// stream follows one stream; got reports whether it delivered anything.
func (c *Client) stream(ctx context.Context) (got bool, err error) {
	s, err := c.api.WatchTrustBundle(ctx, &sentrypb.WatchTrustBundleRequest{TrustDomain: c.id.TrustDomain.String()})
	if err != nil {
		return false, err
	}
	for {
		msg, err := s.Recv()
		if err != nil {
			return got, err
		}
		got = true
		if msg.GetTrustDomain() != c.id.TrustDomain.String() {
			return got, fmt.Errorf("sentryclient: stream sent trust domain %q", msg.GetTrustDomain())
		}
		if err := c.update(msg.GetVersion(), msg.GetTrustBundlePem()); err != nil {
			c.log.Warn("sentryclient: ignoring bad trust bundle", "err", err)
		}
	}
}
