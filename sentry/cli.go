package sentry

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/kubestore"
	"github.com/meshd/meshd/sentry/token"
	"github.com/meshd/meshd/sentry/token/insecure"
	"github.com/meshd/meshd/sentry/token/join"
	kubetoken "github.com/meshd/meshd/sentry/token/kubernetes"
	"github.com/meshd/meshd/telemetry/logging"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
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
	ValidatorJoin       = "join"
	ValidatorKubernetes = "kubernetes"
	ValidatorInsecure   = "insecure"
)

// ValidatorConfig selects and configures a token validator.
type ValidatorConfig struct {
	// Name is ValidatorJoin, ValidatorKubernetes or ValidatorInsecure.
	Name string
	// DataDir holds the join validator's key and ledger.
	DataDir string
	// Kubernetes configures the kubernetes validator (its Logger defaults
	// to the one given to NewValidatorFromConfig).
	Kubernetes kubetoken.Options
}

// NewValidator builds the token validator called name. The join validator's
// key lives in dataDir (created on first use). The kubernetes validator
// takes the defaults of kubetoken.Options (in-cluster, audience meshd); use
// NewValidatorFromConfig to set them.
func NewValidator(name, dataDir string, log *slog.Logger) (token.Validator, error) {
	return NewValidatorFromConfig(context.Background(), ValidatorConfig{Name: name, DataDir: dataDir}, log)
}

// NewValidatorFromConfig builds the token validator cfg names. The
// kubernetes validator checks its RBAC with the API server first (ctx bounds
// that check).
func NewValidatorFromConfig(ctx context.Context, cfg ValidatorConfig, log *slog.Logger) (token.Validator, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch cfg.Name {
	case ValidatorJoin:
		key, err := join.LoadOrCreateKey(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("sentry: %w", err)
		}
		ledger, err := join.OpenLedger(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("sentry: %w", err)
		}
		return join.NewValidator(key.Public().(ed25519.PublicKey), nil).WithLedger(ledger), nil
	case ValidatorKubernetes:
		o := cfg.Kubernetes
		if o.Logger == nil {
			o.Logger = log
		}
		v, err := kubetoken.NewFromOptions(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("sentry: token validator kubernetes: %w", err)
		}
		where := o.Kubeconfig
		if where == "" {
			where = "in-cluster"
		}
		log.Info("sentry: token validator kubernetes: TokenReview with the API server", "kubeconfig", where,
			"audience", v.Audience(), "review_cache_ttl", o.CacheTTL.String())
		return v, nil
	case ValidatorInsecure:
		return insecure.New(log), nil
	}
	return nil, fmt.Errorf("sentry: token validator %q: want %s, %s or %s", cfg.Name, ValidatorJoin, ValidatorKubernetes, ValidatorInsecure)
}

// CreateJoinToken makes a join token for app in namespace ns with the key in
// dataDir, which sentry creates on its first start (a dir without it is
// refused). trustDomain may be "" to use the data dir's trust domain (or the
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
	// Never create a key here: a token signed by a key no sentry holds can
	// never verify (a typo in --data-dir would print one silently).
	key, err := join.LoadKey(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", join.Claims{}, fmt.Errorf("sentry: token: %s has no join key (%s): give the --data-dir of a sentry that has started at least once", dataDir, join.KeyFile)
	}
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

// CA store names for --ca-store.
const (
	CAStoreDir        = "dir"
	CAStoreKubernetes = "kubernetes"
)

// KubeStoreConfig configures --ca-store kubernetes.
type KubeStoreConfig struct {
	Kubeconfig      string // "": in-cluster
	Secret          string // namespace/name
	Identity        string // "": POD_NAME, else the host name, with the process ID
	BundleConfigMap string // "-": do not publish
}

// NewKubeStore builds the Kubernetes Secret CA store and checks its RBAC
// (ctx bounds that check).
func NewKubeStore(ctx context.Context, c KubeStoreConfig, log *slog.Logger) (*kubestore.Store, error) {
	ns, name, ok := strings.Cut(c.Secret, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("sentry: --ca-secret %q: want namespace/name", c.Secret)
	}
	cfg, err := kubetoken.RESTConfig(c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("sentry: ca store: %w", err)
	}
	cfg.UserAgent = "meshd-sentry"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("sentry: ca store: %w", err)
	}
	id := c.Identity
	if id == "" {
		id = os.Getenv("POD_NAME")
		if id == "" {
			id, _ = os.Hostname()
		}
		id = fmt.Sprintf("%s-%d", id, os.Getpid())
	}
	st, err := kubestore.New(kubestore.Options{Client: cs, Namespace: ns, Secret: name, Identity: id,
		BundleConfigMap: c.BundleConfigMap, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("sentry: %w", err)
	}
	if err := st.CheckAccess(ctx); err != nil {
		return nil, fmt.Errorf("sentry: ca store: %w", err)
	}
	log.Info("sentry: CA shared through a Kubernetes Secret", "secret", c.Secret, "replica", id)
	return st, nil
}

// RotateRootInSecret stages a new root and issuer (generated, or from
// files) in the CA Secret namespace/name of --ca-store kubernetes; the
// leading replica takes it and rotates. kubeconfig "" is in-cluster.
func RotateRootInSecret(ctx context.Context, kubeconfig, secret string, files RotateFiles, caTTL time.Duration, now time.Time) (*ca.Material, error) {
	ns, name, ok := strings.Cut(secret, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("sentry: rotate-root: --ca-secret %q: want namespace/name", secret)
	}
	cfg, err := kubetoken.RESTConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	snap, err := kubestore.ReadSnapshot(ctx, cs, ns, name)
	if err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	td, err := ca.TrustDomainOfSnapshot(snap)
	if err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	var m *ca.Material
	if files.RootCert != "" || files.IssuerCert != "" || files.IssuerKey != "" {
		if files.RootCert == "" || files.IssuerCert == "" || files.IssuerKey == "" {
			return nil, fmt.Errorf("sentry: rotate-root: --root-cert, --issuer-cert and --issuer-key go together")
		}
		m, err = ca.LoadFiles(files.RootCert, files.IssuerCert, files.IssuerKey, files.RootKey)
	} else {
		m, err = ca.Generate(td, caTTL, now)
	}
	if err == nil {
		err = m.Validate(now)
	}
	if err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	if err := kubestore.StageRotation(ctx, cs, ns, name, m); err != nil {
		return nil, fmt.Errorf("sentry: rotate-root: %w", err)
	}
	return m, nil
}

// ParseServerNames reads the --server-name flags: each is
// "ns/app=name[,name...]", the identity spiffe://{td}/ns/{ns}/{app} and the
// DNS names or IP addresses its certificates carry besides the SPIFFE ID
// (ca.Options.ServerNames). A name is a lower-case DNS name without a
// wildcard, or an IP address.
func ParseServerNames(vals []string, td spiffeid.TrustDomain) (map[string][]string, error) {
	out := map[string][]string{}
	for _, v := range vals {
		who, names, ok := strings.Cut(v, "=")
		ns, app, ok2 := strings.Cut(who, "/")
		if !ok || !ok2 {
			return nil, fmt.Errorf("sentry: --server-name %q: want NAMESPACE/APP-ID=NAME[,NAME...]", v)
		}
		id, err := certs.NewIdentity(td.String(), ns, app)
		if err != nil {
			return nil, fmt.Errorf("sentry: --server-name %q: %w", v, err)
		}
		for n := range strings.SplitSeq(names, ",") {
			n = strings.TrimSpace(n)
			if net.ParseIP(n) == nil && !isDNSName(n) {
				return nil, fmt.Errorf("sentry: --server-name %q: %q is neither a DNS name nor an IP address", v, n)
			}
			out[id.String()] = append(out[id.String()], n)
		}
	}
	return out, nil
}

// isDNSName reports whether s is a lower-case DNS name (RFC 1123 labels).
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
