package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Names inside the data directory.
const (
	stateFile  = "state.json"
	BundleFile = "bundle.pem"
	genDir     = "ca"
	stagedDir  = "staged"
)

// Defaults for Options.
const (
	DefaultWorkloadTTL      = time.Hour
	DefaultCATTL            = 365 * 24 * time.Hour
	DefaultPropagationDelay = 10 * time.Second
	DefaultRetireMargin     = time.Minute
	DefaultPollInterval     = time.Second
	// MinWorkloadTTL is the shortest workload TTL accepted (tests use 10s).
	MinWorkloadTTL = 5 * time.Second
)

// SentryNamespace and SentryAppID name sentry's own identity:
// spiffe://{td}/ns/meshd-system/sentry.
const (
	SentryNamespace = "meshd-system"
	SentryAppID     = "sentry"
)

// SentryID returns the SPIFFE ID sentry serves with in trust domain td.
func SentryID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromSegments(td, "ns", SentryNamespace, SentryAppID)
	return id
}

// Options configure an Authority.
type Options struct {
	DataDir     string
	TrustDomain spiffeid.TrustDomain
	// WorkloadTTL is the lifetime of issued certificates (default 1h).
	WorkloadTTL time.Duration
	// RootCertFile, IssuerCertFile, IssuerKeyFile (and optionally
	// RootKeyFile) import CA material a user brings on first start. On a
	// later start their root must be one the data directory already knows.
	RootCertFile, IssuerCertFile, IssuerKeyFile, RootKeyFile string
	// CATTL is the lifetime of generated roots and issuers (default 365d).
	CATTL time.Duration
	// PropagationDelay is how long a new root is published before anything
	// is signed under it (default 10s).
	PropagationDelay time.Duration
	// RetireMargin is added to the workload TTL before an old root leaves
	// the bundle (default 1m).
	RetireMargin time.Duration
	// AutoRotateBefore starts a rotation when the active root or issuer
	// expires within this duration. 0 disables automatic rotation.
	AutoRotateBefore time.Duration
	// PollInterval is how often the data directory is checked for a staged
	// rotation and the rotation steps are advanced (default 1s).
	PollInterval time.Duration
	// Leading, when set, reports whether this replica may advance rotations
	// (import a staged CA, rotate automatically, switch, retire). A replica
	// that is not leading only renews its serving certificate and takes the
	// leader's state through Restore. nil: always leading (one sentry).
	Leading func() bool
	// ServerNames adds DNS names or IP addresses to the certificates of the
	// listed identities (their SPIFFE ID, as a string), on top of the one
	// URI SAN: for a server whose clients verify a host name rather than a
	// SPIFFE ID, such as the control plane's admission webhook, which the
	// Kubernetes API server calls at {service}.{namespace}.svc. The names
	// come from sentry's own configuration, never from a request.
	ServerNames map[string][]string
	Logger      *slog.Logger
	Now         func() time.Time
}

func (o *Options) setDefaults() error {
	if o.DataDir == "" {
		return errors.New("ca: data dir is required")
	}
	if o.TrustDomain.IsZero() {
		return errors.New("ca: trust domain is required")
	}
	if o.WorkloadTTL == 0 {
		o.WorkloadTTL = DefaultWorkloadTTL
	}
	if o.WorkloadTTL < MinWorkloadTTL {
		return fmt.Errorf("ca: workload TTL %s is shorter than %s", o.WorkloadTTL, MinWorkloadTTL)
	}
	if o.CATTL == 0 {
		o.CATTL = DefaultCATTL
	}
	if o.PropagationDelay < 0 || o.RetireMargin < 0 || o.AutoRotateBefore < 0 {
		return errors.New("ca: durations must not be negative")
	}
	if o.PropagationDelay == 0 {
		o.PropagationDelay = DefaultPropagationDelay
	}
	if o.RetireMargin == 0 {
		o.RetireMargin = DefaultRetireMargin
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.AutoRotateBefore > 0 && o.CATTL <= 2*o.AutoRotateBefore {
		return fmt.Errorf("ca: CA TTL %s must be more than twice the auto-rotation window %s", o.CATTL, o.AutoRotateBefore)
	}
	if o.WorkloadTTL >= o.CATTL {
		return fmt.Errorf("ca: workload TTL %s must be shorter than the CA TTL %s", o.WorkloadTTL, o.CATTL)
	}
	imports := 0
	for _, f := range []string{o.RootCertFile, o.IssuerCertFile, o.IssuerKeyFile} {
		if f != "" {
			imports++
		}
	}
	if imports != 0 && imports != 3 {
		return errors.New("ca: root cert, issuer cert and issuer key files go together")
	}
	if o.RootKeyFile != "" && imports == 0 {
		return errors.New("ca: a root key file needs the root cert, issuer cert and issuer key files")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// generation is the persisted state of one CA generation.
type generation struct {
	Name        string    `json:"name"`
	PublishedAt time.Time `json:"published_at"`
	// ActivateAt is when signing switches to this generation (pending only).
	ActivateAt time.Time `json:"activate_at,omitzero"`
	// RetireAt is when the root leaves the bundle (old generations only).
	RetireAt time.Time `json:"retire_at,omitzero"`

	m *Material
}

type state struct {
	Active        string        `json:"active"`
	BundleVersion uint64        `json:"bundle_version"`
	Generations   []*generation `json:"generations"`
	NextSerial    int           `json:"next_generation"`
}

// Bundle is one published trust bundle. It is immutable.
type Bundle struct {
	Version uint64
	Roots   []*x509.Certificate
	PEM     []byte
	x509    *x509bundle.Bundle
	next    chan struct{}
}

// Changed is closed when a newer bundle has been published.
func (b *Bundle) Changed() <-chan struct{} { return b.next }

// X509Bundle returns the bundle as a go-spiffe bundle.
func (b *Bundle) X509Bundle() *x509bundle.Bundle { return b.x509 }

// Authority is sentry's CA. Sign is safe for concurrent use and lock-free.
type Authority struct {
	opts Options
	log  *slog.Logger

	signer  atomic.Pointer[signer]
	bundle  atomic.Pointer[Bundle]
	serving atomic.Pointer[x509svid.SVID]
	issued  atomic.Uint64

	mu sync.Mutex // guards st and the data directory
	st *state
}

// Open loads the CA from the data directory, creating (or importing) a root
// and issuer on first start, and writes the trust bundle file.
func Open(opts Options) (*Authority, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	a := &Authority{opts: opts, log: opts.Logger}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: data dir: %w", err)
	}
	if err := os.Chmod(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: data dir: %w", err)
	}
	now := opts.Now()
	st, err := loadState(opts.DataDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if st, err = a.initState(now); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		if err := a.loadGenerations(st, now); err != nil {
			return nil, err
		}
	}
	a.st = st
	if p := st.pending(); p != nil {
		// Clients may have missed the stream while sentry was down: give the
		// new root a full (currently configured) propagation delay again,
		// counted from now, before switching.
		p.ActivateAt = now.Add(opts.PropagationDelay).UTC()
		if err := saveState(opts.DataDir, st); err != nil {
			return nil, err
		}
	}
	if err := a.publishLocked(); err != nil {
		return nil, err
	}
	act := st.active()
	a.signer.Store(newSigner(act.Name, act.m))
	if err := a.renewServing(now); err != nil {
		return nil, err
	}
	a.log.Info("ca: loaded", "trust_domain", opts.TrustDomain.String(), "active_generation", act.Name,
		"root_not_after", act.m.Root.NotAfter, "roots", len(st.Generations), "bundle_version", st.BundleVersion)
	return a, nil
}

func (a *Authority) initState(now time.Time) (*state, error) {
	var (
		m   *Material
		err error
	)
	o := a.opts
	if o.RootCertFile != "" {
		if m, err = LoadFiles(o.RootCertFile, o.IssuerCertFile, o.IssuerKeyFile, o.RootKeyFile); err != nil {
			return nil, err
		}
		a.log.Info("ca: importing root and issuer", "root", o.RootCertFile, "issuer", o.IssuerCertFile)
	} else if m, err = Generate(o.TrustDomain, o.CATTL, now); err != nil {
		return nil, err
	} else {
		a.log.Info("ca: created a new root and issuer", "data_dir", o.DataDir, "not_after", m.Root.NotAfter)
	}
	if err := m.Validate(now); err != nil {
		return nil, err
	}
	g := &generation{Name: genName(1), PublishedAt: now.UTC(), m: m}
	if err := m.Write(filepath.Join(o.DataDir, genDir, g.Name)); err != nil {
		return nil, err
	}
	st := &state{Active: g.Name, BundleVersion: 1, Generations: []*generation{g}, NextSerial: 2}
	if err := saveState(o.DataDir, st); err != nil {
		return nil, err
	}
	return st, nil
}

func (a *Authority) loadGenerations(st *state, now time.Time) error {
	for _, g := range st.Generations {
		m, err := LoadDir(filepath.Join(a.opts.DataDir, genDir, g.Name))
		if err != nil {
			return fmt.Errorf("ca: generation %s: %w", g.Name, err)
		}
		g.m = m
	}
	act := st.active()
	if act == nil {
		return fmt.Errorf("ca: state: active generation %q is not in the data dir", st.Active)
	}
	if err := act.m.Validate(now); err != nil {
		return fmt.Errorf("ca: active generation %s: %w", act.Name, err)
	}
	if a.opts.RootCertFile != "" {
		m, err := LoadFiles(a.opts.RootCertFile, a.opts.IssuerCertFile, a.opts.IssuerKeyFile, a.opts.RootKeyFile)
		if err != nil {
			return err
		}
		known := false
		for _, g := range st.Generations {
			known = known || g.m.Root.Equal(m.Root)
		}
		if !known {
			return fmt.Errorf("ca: the data dir %s already holds a CA with another root than %s; stage the new one with `sentry rotate-root`",
				a.opts.DataDir, a.opts.RootCertFile)
		}
	}
	return nil
}

func genName(n int) string { return fmt.Sprintf("%04d", n) }

func (st *state) active() *generation {
	for _, g := range st.Generations {
		if g.Name == st.Active {
			return g
		}
	}
	return nil
}

// pending returns the generation published but not yet signing, if any.
func (st *state) pending() *generation {
	for _, g := range st.Generations {
		if g.Name != st.Active && !g.ActivateAt.IsZero() && g.RetireAt.IsZero() {
			return g
		}
	}
	return nil
}

func loadState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("ca: state: %w", err)
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("ca: state %s: %w", filepath.Join(dir, stateFile), err)
	}
	if len(st.Generations) == 0 || st.Active == "" {
		return nil, fmt.Errorf("ca: state %s: no generations", filepath.Join(dir, stateFile))
	}
	return &st, nil
}

func saveState(dir string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: state: %w", err)
	}
	if err := certs.WriteFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("ca: state: %w", err)
	}
	return nil
}

// publishLocked writes bundle.pem from the state and publishes the bundle
// to watchers if its version changed.
func (a *Authority) publishLocked() error {
	roots := make([]*x509.Certificate, 0, len(a.st.Generations))
	for _, g := range a.st.Generations {
		roots = append(roots, g.m.Root)
	}
	pemBytes := certs.EncodeCertsPEM(roots...)
	path := filepath.Join(a.opts.DataDir, BundleFile)
	if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, pemBytes) {
		if err := certs.WriteFileAtomic(path, pemBytes, 0o644); err != nil {
			return fmt.Errorf("ca: bundle: %w", err)
		}
	}
	prev := a.bundle.Load()
	if prev != nil && prev.Version == a.st.BundleVersion {
		return nil
	}
	b := &Bundle{
		Version: a.st.BundleVersion,
		Roots:   roots,
		PEM:     pemBytes,
		x509:    x509bundle.FromX509Authorities(a.opts.TrustDomain, roots),
		next:    make(chan struct{}),
	}
	a.bundle.Store(b)
	if prev != nil {
		close(prev.next)
	}
	a.log.Info("ca: trust bundle published", "version", b.Version, "roots", len(roots), "file", path)
	return nil
}

// Bundle returns the current trust bundle.
func (a *Authority) Bundle() *Bundle { return a.bundle.Load() }

// TrustDomain returns the authority's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.opts.TrustDomain }

// WorkloadTTL returns the lifetime of issued certificates.
func (a *Authority) WorkloadTTL() time.Duration { return a.opts.WorkloadTTL }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (a *Authority) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != a.opts.TrustDomain {
		return nil, fmt.Errorf("ca: no bundle for trust domain %q", td)
	}
	return a.bundle.Load().x509, nil
}

// GetX509SVID implements x509svid.Source: sentry's own serving certificate
// for spiffe://{td}/ns/meshd-system/sentry.
func (a *Authority) GetX509SVID() (*x509svid.SVID, error) {
	return a.serving.Load(), nil
}

// Sign issues a workload certificate for id with public key pub. id must be
// validated by the caller and belong to the authority's trust domain.
func (a *Authority) Sign(id certs.Identity, pub *ecdsa.PublicKey) (*Signed, error) {
	if id.TrustDomain != a.opts.TrustDomain {
		return nil, fmt.Errorf("ca: trust domain %q is not %q", id.TrustDomain, a.opts.TrustDomain)
	}
	signed, err := a.signer.Load().sign(id, pub, a.opts.Now(), a.opts.WorkloadTTL, a.opts.ServerNames[id.String()]...)
	if err == nil {
		a.issued.Add(1)
	}
	return signed, err
}

// Issued returns how many workload certificates Sign has issued since Open.
func (a *Authority) Issued() uint64 { return a.issued.Load() }

// ActiveRoot returns the root of the generation that signs now.
func (a *Authority) ActiveRoot() *x509.Certificate {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.active().m.Root
}

func (a *Authority) renewServing(now time.Time) error {
	s := a.signer.Load()
	if cur := a.serving.Load(); cur != nil {
		half := cur.Certificates[0].NotBefore.Add(Backdate).Add(cur.Certificates[0].NotAfter.Sub(cur.Certificates[0].NotBefore.Add(Backdate)) / 2)
		if cur.Certificates[1].Equal(s.issuer) && now.Before(half) {
			return nil
		}
	}
	key, err := certs.GenerateKey()
	if err != nil {
		return err
	}
	id := certs.Identity{TrustDomain: a.opts.TrustDomain, Namespace: SentryNamespace, AppID: SentryAppID}
	signed, err := s.sign(id, &key.PublicKey, now, a.opts.WorkloadTTL)
	if err != nil {
		return fmt.Errorf("ca: serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(signed.DER)
	if err != nil {
		return fmt.Errorf("ca: serving certificate: %w", err)
	}
	a.serving.Store(&x509svid.SVID{
		ID:           SentryID(a.opts.TrustDomain),
		Certificates: append([]*x509.Certificate{leaf}, s.chain...),
		PrivateKey:   key,
	})
	a.log.Debug("ca: serving certificate issued", "generation", s.gen, "not_after", leaf.NotAfter)
	return nil
}

// Run advances rotations and renews the serving certificate every poll
// interval until ctx is done.
func (a *Authority) Run(ctx context.Context) error {
	t := time.NewTicker(a.opts.PollInterval)
	defer t.Stop()
	for {
		if err := a.Tick(); err != nil {
			a.log.Error("ca: rotation step failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick runs one step of the rotation state machine: import a staged
// generation, switch to a pending one whose time has come, retire expired
// ones, start an automatic rotation, renew the serving certificate.
func (a *Authority) Tick() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	if a.opts.Leading != nil && !a.opts.Leading() {
		return a.renewServing(now)
	}
	var errs []error
	if err := a.importStagedLocked(now); err != nil {
		errs = append(errs, err)
	}
	if err := a.autoRotateLocked(now); err != nil {
		errs = append(errs, err)
	}
	if err := a.switchLocked(now); err != nil {
		errs = append(errs, err)
	}
	if err := a.retireLocked(now); err != nil {
		errs = append(errs, err)
	}
	if err := a.renewServing(now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (a *Authority) importStagedLocked(now time.Time) error {
	dir := filepath.Join(a.opts.DataDir, stagedDir)
	if _, err := os.Stat(dir); err != nil {
		return nil
	}
	if a.st.pending() != nil {
		return nil // one rotation at a time; take it after the current switch
	}
	m, err := LoadDir(dir)
	if err == nil {
		err = m.Validate(now)
	}
	if err != nil {
		bad := dir + ".rejected-" + now.UTC().Format("20060102T150405")
		_ = os.Rename(dir, bad)
		return fmt.Errorf("ca: staged rotation rejected (moved to %s): %w", bad, err)
	}
	for _, g := range a.st.Generations {
		if g.m.Root.Equal(m.Root) {
			// Already imported (crash before the staged dir was removed).
			return removeAll(dir)
		}
	}
	return a.addGenerationLocked(m, now, dir)
}

func (a *Authority) addGenerationLocked(m *Material, now time.Time, staged string) error {
	g := &generation{
		Name:        genName(a.st.NextSerial),
		PublishedAt: now.UTC(),
		ActivateAt:  now.Add(a.opts.PropagationDelay).UTC(),
		m:           m,
	}
	if err := m.Write(filepath.Join(a.opts.DataDir, genDir, g.Name)); err != nil {
		return err
	}
	a.st.NextSerial++
	a.st.Generations = append(a.st.Generations, g)
	a.st.BundleVersion++
	if err := saveState(a.opts.DataDir, a.st); err != nil {
		return err
	}
	if err := a.publishLocked(); err != nil {
		return err
	}
	a.log.Info("ca: root rotation started: new root published, signing switches later",
		"generation", g.Name, "activate_at", g.ActivateAt, "root_not_after", m.Root.NotAfter)
	if staged != "" {
		return removeAll(staged)
	}
	return nil
}

func (a *Authority) autoRotateLocked(now time.Time) error {
	if a.opts.AutoRotateBefore <= 0 || a.st.pending() != nil {
		return nil
	}
	act := a.st.active().m
	expiry := act.Root.NotAfter
	if act.Issuer.NotAfter.Before(expiry) {
		expiry = act.Issuer.NotAfter
	}
	if expiry.Sub(now) > a.opts.AutoRotateBefore {
		return nil
	}
	a.log.Info("ca: automatic root rotation: active CA expires soon", "expires", expiry)
	m, err := Generate(a.opts.TrustDomain, a.opts.CATTL, now)
	if err != nil {
		return err
	}
	return a.addGenerationLocked(m, now, "")
}

func (a *Authority) switchLocked(now time.Time) error {
	p := a.st.pending()
	if p == nil || now.Before(p.ActivateAt) {
		return nil
	}
	old := a.st.active()
	old.RetireAt = now.Add(a.opts.WorkloadTTL + a.opts.RetireMargin).UTC()
	p.ActivateAt = time.Time{}
	a.st.Active = p.Name
	if err := saveState(a.opts.DataDir, a.st); err != nil {
		return err
	}
	a.signer.Store(newSigner(p.Name, p.m))
	a.log.Info("ca: root rotation: signing switched to the new issuer",
		"generation", p.Name, "old_generation", old.Name, "old_root_retires_at", old.RetireAt)
	return nil
}

func (a *Authority) retireLocked(now time.Time) error {
	var keep, gone []*generation
	for _, g := range a.st.Generations {
		if g.Name != a.st.Active && !g.RetireAt.IsZero() && !now.Before(g.RetireAt) {
			gone = append(gone, g)
		} else {
			keep = append(keep, g)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	a.st.Generations = keep
	a.st.BundleVersion++
	if err := saveState(a.opts.DataDir, a.st); err != nil {
		return err
	}
	if err := a.publishLocked(); err != nil {
		return err
	}
	for _, g := range gone {
		a.log.Info("ca: root rotation finished: old root removed from the bundle", "generation", g.Name)
		if err := removeAll(filepath.Join(a.opts.DataDir, genDir, g.Name)); err != nil {
			return err
		}
	}
	return nil
}

func removeAll(p string) error {
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// Stage stages new CA material in dataDir for the running sentry to rotate
// to. The data directory must already belong to a sentry; only one rotation
// can be staged at a time.
func Stage(dataDir string, m *Material, now time.Time) error {
	if _, err := loadState(dataDir); err != nil {
		return fmt.Errorf("ca: %s is not an initialized sentry data dir: %w", dataDir, err)
	}
	if err := m.Validate(now); err != nil {
		return err
	}
	dst := filepath.Join(dataDir, stagedDir)
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("ca: a rotation is already staged in %s", dst)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dataDir, stagedDir+".tmp-"+hex.EncodeToString(rnd[:]))
	if err := m.Write(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("ca: stage: %w", err)
	}
	return nil
}

// TrustDomainOf reads the trust domain from the active root of an
// initialized data directory (from the root's SPIFFE URI SAN, if any).
func TrustDomainOf(dataDir string) (spiffeid.TrustDomain, error) {
	st, err := loadState(dataDir)
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	m, err := LoadDir(filepath.Join(dataDir, genDir, st.Active))
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	for _, u := range m.Root.URIs {
		if id, err := spiffeid.FromURI((*url.URL)(u)); err == nil {
			return id.TrustDomain(), nil
		}
	}
	return spiffeid.TrustDomain{}, fmt.Errorf("ca: root of %s names no trust domain", dataDir)
}
