package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Issued is what a Fetcher returns for a CSR.
type Issued struct {
	Chain []*x509.Certificate // workload cert first, then intermediates (not the root)
	Roots []*x509.Certificate // the trust bundle: every currently trusted root
}

// Fetcher obtains a signed certificate for the public key in csrPEM (sentry's
// client implements it). Fetch must honour ctx: the Source cancels it on Close
// and bounds each attempt with SourceOptions.FetchTimeout.
type Fetcher interface {
	Fetch(ctx context.Context, csrPEM []byte) (*Issued, error)
}

// Renewer is an optional interface of a Fetcher: it renews with the current,
// still-valid X509-SVID as the credential (sentry's client presents it as its
// TLS client certificate), so that a bootstrap credential such as a join
// token is needed for the first certificate only. Renew must wrap
// ErrRenewalRefused when the CA refuses the SVID (expired, unknown root,
// revoked): the Source then bootstraps again with Fetch. Any other error is
// retried with backoff.
type Renewer interface {
	Renew(ctx context.Context, csrPEM []byte, current *x509svid.SVID) (*Issued, error)
}

// ErrRenewalRefused is wrapped by a Renewer when the CA refused to renew on
// the strength of the current SVID.
var ErrRenewalRefused = errors.New("certs: renewal with the current X509-SVID refused")

// SourceOptions configures NewSource. Zero values pick the defaults.
type SourceOptions struct {
	Identity Identity     // the identity the cert must carry (its SPIFFE ID is checked)
	Logger   *slog.Logger // nil = slog.Default()
	RenewAt  float64      // fraction of lifetime after which to renew; 0 = 0.5 (half-life)
	Jitter   float64      // +- fraction of lifetime; 0 = 0.05

	// MinBackoff and MaxBackoff bound the retry delay when a fetch fails: it
	// doubles from MinBackoff up to MaxBackoff, each delay drawn at random
	// from its upper half. Defaults 200ms and 30s.
	MinBackoff, MaxBackoff time.Duration

	// FetchTimeout bounds each Fetch attempt, so a hung call cannot stop
	// renewal; 0 = 30s. The first fetch is also bounded by NewSource's ctx.
	FetchTimeout time.Duration

	Now func() time.Time // for tests; nil = time.Now
}

// Defaults of SourceOptions.
const (
	DefaultRenewAt      = 0.5
	DefaultJitter       = 0.05
	DefaultMinBackoff   = 200 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultFetchTimeout = 30 * time.Second
)

var (
	// ErrSourceClosed is returned by the getters of a closed Source.
	ErrSourceClosed = errors.New("certs: identity source is closed")
	// ErrSVIDExpired is returned by GetX509SVID once the held X509-SVID has
	// expired and no renewal succeeded in time. An expired SVID is never served.
	ErrSVIDExpired = errors.New("certs: X509-SVID expired")
)

// sourceState is one immutable snapshot of what a Source serves. It is
// replaced as a whole, never modified, so getters read it with one atomic load.
type sourceState struct {
	svid     *x509svid.SVID
	roots    []*x509.Certificate
	bundle   *x509bundle.Bundle
	notAfter time.Time
	closed   bool
}

// Source is a rotating X509-SVID and trust-bundle source for one workload
// identity. It implements go-spiffe's x509svid.Source and x509bundle.Source,
// so tlsconfig.MTLSServerConfig(src, src, authorizer) and
// tlsconfig.MTLSClientConfig(src, src, authorizer) pick up every rotation on
// their next handshake, without a restart and without touching connections
// that are already established.
//
// Getters are lock-free and allocation-free. The SVID and bundle they return
// are shared by all callers and must not be modified.
type Source struct {
	fetcher Fetcher
	ident   Identity
	id      spiffeid.ID
	log     *slog.Logger
	now     func() time.Time

	idAttr slog.Attr

	renewAt, jitter        float64
	minBackoff, maxBackoff time.Duration
	fetchTimeout           time.Duration

	state     atomic.Pointer[sourceState]   // never nil once NewSource returns
	updated   atomic.Pointer[chan struct{}] // closed and replaced on every change
	rotations atomic.Uint64
	mu        sync.Mutex    // serializes writers of state and updated
	kick      chan struct{} // renew now (buffered, 1)
	cancel    context.CancelFunc
	done      chan struct{} // closed when the renewal goroutine has returned
	closeOnce sync.Once
}

// NewSource fetches the first X509-SVID for opts.Identity, retrying with
// backoff, and blocks until it holds a valid one or ctx ends. It then starts
// the renewal goroutine, which runs until Close (ctx only bounds the first
// fetch; its values, not its cancellation, are passed on to later fetches).
func NewSource(ctx context.Context, f Fetcher, opts SourceOptions) (*Source, error) {
	if f == nil {
		return nil, errors.New("certs: source: fetcher is nil")
	}
	s, err := newSource(f, opts)
	if err != nil {
		return nil, err
	}
	ch := make(chan struct{})
	s.updated.Store(&ch)

	for attempt := 1; ; attempt++ {
		st, err := s.attempt(ctx, nil)
		if err == nil {
			s.state.Store(st)
			s.log.Info("certs: X509-SVID obtained", s.idAttr,
				slog.Time("not_after", st.notAfter), slog.Int("attempt", attempt))
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("certs: first X509-SVID for %s: %w (last attempt: %w)", s.id, ctx.Err(), err)
		}
		delay := s.backoff(attempt)
		s.log.Warn("certs: fetching first X509-SVID failed", s.idAttr,
			slog.Int("attempt", attempt), slog.Duration("retry_in", delay), slog.Any("error", err))
		if !sleep(ctx, delay, nil) {
			return nil, fmt.Errorf("certs: first X509-SVID for %s: %w (last attempt: %w)", s.id, ctx.Err(), err)
		}
	}

	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.run(rctx)
	return s, nil
}

func newSource(f Fetcher, opts SourceOptions) (*Source, error) {
	ident := opts.Identity
	if ident.TrustDomain.IsZero() {
		return nil, errors.New("certs: source: identity has no trust domain")
	}
	if err := ValidateNamespace(ident.Namespace); err != nil {
		return nil, fmt.Errorf("certs: source: %w", err)
	}
	if err := ValidateAppID(ident.AppID); err != nil {
		return nil, fmt.Errorf("certs: source: %w", err)
	}
	s := &Source{
		fetcher:      f,
		ident:        ident,
		id:           ident.ID(),
		log:          opts.Logger,
		now:          opts.Now,
		renewAt:      opts.RenewAt,
		jitter:       opts.Jitter,
		minBackoff:   opts.MinBackoff,
		maxBackoff:   opts.MaxBackoff,
		fetchTimeout: opts.FetchTimeout,
		kick:         make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.renewAt == 0 {
		s.renewAt = DefaultRenewAt
	}
	if s.jitter == 0 {
		s.jitter = DefaultJitter
	}
	if s.minBackoff == 0 {
		s.minBackoff = DefaultMinBackoff
	}
	if s.maxBackoff == 0 {
		s.maxBackoff = DefaultMaxBackoff
	}
	if s.fetchTimeout == 0 {
		s.fetchTimeout = DefaultFetchTimeout
	}
	switch {
	case !(s.renewAt > 0 && s.renewAt < 1):
		return nil, fmt.Errorf("certs: source: RenewAt %v is not in (0, 1)", opts.RenewAt)
	case !(s.jitter > 0) || !(s.renewAt-s.jitter > 0) || !(s.renewAt+s.jitter < 1):
		return nil, fmt.Errorf("certs: source: Jitter %v must be positive and keep RenewAt %v +- Jitter inside (0, 1)", s.jitter, s.renewAt)
	case s.minBackoff < 0 || s.maxBackoff < 0 || s.fetchTimeout < 0:
		return nil, errors.New("certs: source: negative MinBackoff, MaxBackoff or FetchTimeout")
	case s.minBackoff > s.maxBackoff:
		return nil, fmt.Errorf("certs: source: MinBackoff %v is above MaxBackoff %v", s.minBackoff, s.maxBackoff)
	}
	s.idAttr = slog.String("identity", s.id.String())
	return s, nil
}

// GetX509SVID returns the current X509-SVID. It fails once the Source is
// closed or the SVID has expired without a successful renewal. It implements
// x509svid.Source.
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	st := s.state.Load()
	if st.closed {
		return nil, ErrSourceClosed
	}
	if s.now().After(st.notAfter) {
		return nil, fmt.Errorf("%w: %s expired at %s", ErrSVIDExpired, s.id, st.notAfter.Format(time.RFC3339))
	}
	return st.svid, nil
}

// GetX509BundleForTrustDomain returns the trust bundle of the Source's trust
// domain; any other trust domain is an error. It implements x509bundle.Source.
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	st := s.state.Load()
	if st.closed {
		return nil, ErrSourceClosed
	}
	if td != s.ident.TrustDomain {
		return nil, fmt.Errorf("certs: no X.509 bundle for trust domain %q (this source serves %q)", td, s.ident.TrustDomain)
	}
	return st.bundle, nil
}

// SetRoots replaces the trust bundle, typically from sentry's bundle stream.
// An unchanged set of roots (in any order) is ignored and notifies nobody.
// Every root must be a CA certificate. If the current SVID does not chain to
// the new roots (a root rotation has finished), a renewal starts at once.
func (s *Source) SetRoots(roots []*x509.Certificate) error {
	if err := checkRoots(roots); err != nil {
		return err
	}
	s.mu.Lock()
	cur := s.state.Load()
	if cur.closed {
		s.mu.Unlock()
		return ErrSourceClosed
	}
	if SameRoots(cur.roots, roots) {
		s.mu.Unlock()
		return nil
	}
	next := *cur
	next.roots = slices.Clone(roots)
	next.bundle = x509bundle.FromX509Authorities(s.ident.TrustDomain, next.roots)
	s.state.Store(&next)
	s.notifyLocked()
	s.mu.Unlock()

	s.log.Info("certs: trust bundle updated", s.idAttr, slog.Int("roots", len(roots)))
	if !s.chainsToBundle(&next) {
		s.log.Warn("certs: current X509-SVID does not chain to the new trust bundle; renewing now",
			s.idAttr, slog.Time("not_after", next.notAfter))
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Updated returns a channel that is closed on the next change of the SVID or
// the trust bundle, and is then replaced by a fresh one. Take the channel
// before reading the state so no change is missed:
//
//	for {
//		ch := src.Updated()
//		svid, err := src.GetX509SVID()
//		// use svid ...
//		<-ch
//	}
//
// After Close the returned channel is closed for good.
func (s *Source) Updated() <-chan struct{} {
	return *s.updated.Load()
}

// NotAfter returns the expiry of the current SVID.
func (s *Source) NotAfter() time.Time {
	return s.state.Load().notAfter
}

// Rotations returns the number of successful renewals after the first fetch.
func (s *Source) Rotations() uint64 {
	return s.rotations.Load()
}

// Close stops renewal, waits for the renewal goroutine to return (cancelling
// a fetch in flight) and makes the getters fail with ErrSourceClosed. It is
// safe to call more than once.
func (s *Source) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		cur := s.state.Load()
		s.state.Store(&sourceState{notAfter: cur.notAfter, closed: true})
		close(*s.updated.Load()) // never replaced again: writers see closed
		s.mu.Unlock()
		s.cancel()
		<-s.done
		s.log.Info("certs: identity source closed", s.idAttr)
	})
	return nil
}

// run is the renewal goroutine.
func (s *Source) run(ctx context.Context) {
	defer close(s.done)
	for {
		st := s.state.Load()
		if st.closed {
			return
		}
		t := time.NewTimer(s.renewDelay(st.svid.Certificates[0]))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.kick:
			t.Stop()
			// SetRoots found the SVID outside the new bundle. Skip a stale
			// request: a renewal in flight at the time may have fixed it.
			if cur := s.state.Load(); !cur.closed && s.chainsToBundle(cur) {
				continue
			}
		}
		s.renew(ctx)
	}
}

// chainsToBundle reports whether st's SVID verifies against st's bundle.
func (s *Source) chainsToBundle(st *sourceState) bool {
	_, _, err := x509svid.Verify(st.svid.Certificates, st.bundle, x509svid.WithTime(s.now()))
	return err == nil
}

// renew obtains and installs a new SVID, retrying with backoff until it
// succeeds or ctx ends. The current SVID keeps being served meanwhile.
func (s *Source) renew(ctx context.Context) {
	for attempt := 1; ; attempt++ {
		st, err := s.attempt(ctx, s.state.Load())
		if err == nil {
			if !s.install(st) {
				return // closed meanwhile
			}
			n := s.rotations.Add(1)
			s.log.Info("certs: X509-SVID rotated", s.idAttr,
				slog.Time("not_after", st.notAfter), slog.Int("attempt", attempt),
				slog.Uint64("rotations", n), slog.String("serial", st.svid.Certificates[0].SerialNumber.String()))
			return
		}
		if ctx.Err() != nil {
			return
		}
		delay := s.backoff(attempt)
		notAfter := s.state.Load().notAfter
		attrs := []any{s.idAttr, slog.Time("not_after", notAfter), slog.Int("attempt", attempt),
			slog.Duration("retry_in", delay), slog.Any("error", err)}
		if s.now().After(notAfter) {
			s.log.Error("certs: X509-SVID renewal failed and the SVID has expired; serving none", attrs...)
		} else {
			s.log.Warn("certs: X509-SVID renewal failed; keeping the current SVID", attrs...)
		}
		if !sleep(ctx, delay, nil) {
			return
		}
	}
}

// install publishes st, reusing the current bundle if the roots are the same.
// It reports false if the Source is closed.
func (s *Source) install(st *sourceState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.state.Load()
	if cur.closed {
		return false
	}
	if SameRoots(cur.roots, st.roots) {
		st.roots, st.bundle = cur.roots, cur.bundle
	}
	s.state.Store(st)
	s.notifyLocked()
	return true
}

// notifyLocked wakes everyone waiting on Updated. s.mu must be held.
func (s *Source) notifyLocked() {
	ch := make(chan struct{})
	close(*s.updated.Swap(&ch))
}

// attempt makes one fetch with a fresh key and validates the answer. While
// cur holds an SVID that has not expired and the Fetcher is a Renewer, the
// SVID is the credential; only if the CA refuses it (or there is none) does
// attempt bootstrap again with Fetch (the token, read afresh).
func (s *Source) attempt(ctx context.Context, cur *sourceState) (*sourceState, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(key)
	if err != nil {
		return nil, err
	}
	if r, ok := s.fetcher.(Renewer); ok && cur != nil && !cur.closed && cur.svid != nil && s.now().Before(cur.notAfter) {
		fctx, cancel := context.WithTimeout(ctx, s.fetchTimeout)
		iss, err := r.Renew(fctx, csr, cur.svid)
		cancel()
		if err == nil {
			return s.validate(iss, key)
		}
		if !errors.Is(err, ErrRenewalRefused) {
			return nil, fmt.Errorf("certs: renew X509-SVID: %w", err)
		}
		s.log.Warn("certs: renewal with the current X509-SVID refused; bootstrapping again with the token",
			s.idAttr, slog.Time("not_after", cur.notAfter), slog.Any("error", err))
	}
	fctx, cancel := context.WithTimeout(ctx, s.fetchTimeout)
	iss, err := s.fetcher.Fetch(fctx, csr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("certs: fetch X509-SVID: %w", err)
	}
	return s.validate(iss, key)
}

// validate checks a Fetcher's answer for key and builds the state to serve.
// It fails closed: anything unexpected rejects the answer.
func (s *Source) validate(iss *Issued, key *ecdsa.PrivateKey) (*sourceState, error) {
	switch {
	case iss == nil:
		return nil, errors.New("certs: rejected X509-SVID: fetcher returned nothing")
	case len(iss.Chain) == 0:
		return nil, errors.New("certs: rejected X509-SVID: empty certificate chain")
	case slices.Contains(iss.Chain, nil):
		return nil, errors.New("certs: rejected X509-SVID: nil certificate in chain")
	}
	if err := checkRoots(iss.Roots); err != nil {
		return nil, fmt.Errorf("certs: rejected X509-SVID: %w", err)
	}
	leaf := iss.Chain[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("certs: rejected X509-SVID: certificate is not for the requested key")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("certs: rejected X509-SVID: %w", err)
	}
	if id != s.id {
		return nil, fmt.Errorf("certs: rejected X509-SVID: certificate is for %q, want %q", id, s.id)
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, errors.New("certs: rejected X509-SVID: leaf lacks the digitalSignature key usage")
	}
	chain := slices.Clone(iss.Chain)
	roots := slices.Clone(iss.Roots)
	bundle := x509bundle.FromX509Authorities(s.ident.TrustDomain, roots)
	if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(s.now())); err != nil {
		return nil, fmt.Errorf("certs: rejected X509-SVID for %s: %w", s.id, err)
	}
	return &sourceState{
		svid:     &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key},
		roots:    roots,
		bundle:   bundle,
		notAfter: leaf.NotAfter,
	}, nil
}

// checkRoots validates a trust bundle's roots: at least one, all CAs.
func checkRoots(roots []*x509.Certificate) error {
	if len(roots) == 0 {
		return errors.New("certs: trust bundle has no roots")
	}
	for i, r := range roots {
		if r == nil {
			return fmt.Errorf("certs: trust bundle: root %d is nil", i)
		}
		if !r.IsCA {
			return fmt.Errorf("certs: trust bundle: root %d (%s) is not a CA", i, r.Subject)
		}
	}
	return nil
}

// renewDelay returns how long to wait before renewing leaf: until RenewAt of
// its lifetime, plus or minus Jitter of it. A certificate that is already past
// that point (backdated, or issued late) is renewed at the same fraction of
// what is left of it, so the Source can never spin.
func (s *Source) renewDelay(leaf *x509.Certificate) time.Duration {
	frac := s.renewAt + (2*rand.Float64()-1)*s.jitter
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := leaf.NotBefore.Add(time.Duration(float64(life) * frac))
	now := s.now()
	if !at.After(now) {
		at = now.Add(time.Duration(float64(leaf.NotAfter.Sub(now)) * frac))
	}
	return at.Sub(now)
}

// backoff returns the delay before retry number attempt (1-based): the
// exponential step min(MinBackoff*2^(attempt-1), MaxBackoff), drawn at random
// from its upper half.
func (s *Source) backoff(attempt int) time.Duration {
	d := s.minBackoff
	for i := 1; i < attempt && d < s.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.maxBackoff)
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits for d, a value on wake, or the end of ctx; it reports whether
// ctx is still live.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-wake:
	case <-ctx.Done():
		return false
	}
	return true
}
