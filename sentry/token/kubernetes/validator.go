package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/token"
)

const (
	// DefaultAudience is the audience a projected token for sentry carries
	// (serviceAccountToken.audience in the pod spec).
	DefaultAudience = "meshd"
	// AnnotationAppID is meshd's pod annotation naming the app ID.
	AnnotationAppID = "meshd.io/app-id"
	// DaprAnnotationAppID is Dapr's, accepted as well.
	DaprAnnotationAppID = "dapr.io/app-id"
	// ExtraPodName and ExtraPodUID are the TokenReview extra fields of a
	// token bound to a pod.
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
	// MaxTokenLength bounds the token sent to the API server.
	MaxTokenLength = 16 << 10
	// DefaultCacheSize bounds the review cache when Options.CacheSize is 0.
	DefaultCacheSize = 10000
	// MaxCacheTTL is the longest review cache TTL accepted: far under the
	// API server's minimum TokenRequest lifetime (10 minutes), so a deleted
	// pod's token stops working soon.
	MaxCacheTTL = 5 * time.Minute
	// DefaultRequestTimeout bounds one API call when the caller's context
	// has no earlier deadline.
	DefaultRequestTimeout = 10 * time.Second

	// DefaultQPS and DefaultBurst bound sentry's API calls (a review costs
	// two: TokenReview and a pod GET).
	DefaultQPS   = 100
	DefaultBurst = 200

	saPrefix = "system:serviceaccount:"
)

// Options configure a Validator.
type Options struct {
	// Kubeconfig is a kubeconfig file; "" means in-cluster configuration
	// (the pod's service account).
	Kubeconfig string
	// Audience the token must carry ("": DefaultAudience).
	Audience string
	// CacheTTL caches a successful review this long (0: no cache; at most
	// MaxCacheTTL; never beyond the token's expiry).
	CacheTTL time.Duration
	// CacheSize bounds the cache (0: DefaultCacheSize).
	CacheSize int
	// QPS and Burst of the API client (0: DefaultQPS and DefaultBurst;
	// client-go's own defaults of 5 and 10 would throttle bootstrap
	// storms). A negative QPS turns the client-side limit off.
	QPS   float32
	Burst int
	// Logger (nil: discard) and Now (nil: time.Now).
	Logger *slog.Logger
	Now    func() time.Time
}

// Validator validates projected service-account tokens with the API
// server. It implements token.Validator.
type Validator struct {
	client   k8s.Interface
	audience string
	log      *slog.Logger
	now      func() time.Time
	cache    *reviewCache
}

// NewFromOptions builds the API client from o.Kubeconfig (or in-cluster),
// checks with SelfSubjectAccessReviews that sentry may create tokenreviews
// and get pods, and returns the validator. A missing kubeconfig, an
// unreachable API server or a missing permission is an error naming it.
func NewFromOptions(ctx context.Context, o Options) (*Validator, error) {
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = o.QPS, o.Burst
	if cfg.QPS == 0 {
		cfg.QPS = DefaultQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultRequestTimeout
	}
	cfg.UserAgent = "meshd-sentry"
	cs, err := k8s.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	v, err := New(cs, o)
	if err != nil {
		return nil, err
	}
	if err := v.CheckAccess(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// RESTConfig is the client configuration from kubeconfig, or in-cluster if
// it is "".
func RESTConfig(kubeconfig string) (*rest.Config, error) { return restConfig(kubeconfig) }

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes: no kubeconfig given and not in a cluster: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", kubeconfig, err)
	}
	return cfg, nil
}

// New returns a validator using client. It checks nothing with the API
// server (see CheckAccess).
func New(client k8s.Interface, o Options) (*Validator, error) {
	if client == nil {
		return nil, errors.New("kubernetes: a client is required")
	}
	if o.Audience == "" {
		o.Audience = DefaultAudience
	}
	if o.CacheTTL < 0 || o.CacheTTL > MaxCacheTTL {
		return nil, fmt.Errorf("kubernetes: review cache TTL %s must be in [0, %s]", o.CacheTTL, MaxCacheTTL)
	}
	if o.CacheSize < 0 {
		return nil, fmt.Errorf("kubernetes: review cache size %d must not be negative", o.CacheSize)
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	v := &Validator{client: client, audience: o.Audience, log: o.Logger, now: o.Now}
	if o.CacheTTL > 0 {
		v.cache = &reviewCache{ttl: o.CacheTTL, max: o.CacheSize, m: map[[sha256.Size]byte]cacheEntry{}}
	}
	return v, nil
}

// Audience is the audience tokens must carry.
func (v *Validator) Audience() string { return v.audience }

// CheckAccess asks the API server whether sentry may create tokenreviews
// and get pods, and names what is missing.
func (v *Validator) CheckAccess(ctx context.Context) error {
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"},
		{Group: "", Resource: "pods", Verb: "get"},
	} {
		r, err := v.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}},
			metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("kubernetes: cannot check sentry's permissions with the API server: %w", err)
		}
		if !r.Status.Allowed {
			return fmt.Errorf("kubernetes: RBAC: sentry may not %s (%s); grant it %s",
				verbOn(ra), r.Status.Reason, rbacHint)
		}
	}
	return nil
}

const rbacHint = `"create" on tokenreviews.authentication.k8s.io (ClusterRole) and "get" on pods (every namespace with meshd pods)`

func verbOn(ra authorizationv1.ResourceAttributes) string {
	res := ra.Resource
	if ra.Group != "" {
		res += "." + ra.Group
	}
	return `"` + ra.Verb + `" ` + res
}

// derived is what the API server proved about a token.
type derived struct {
	namespace, serviceAccount, app, podName, podUID string
	tokenExpiry                                     time.Time // zero: unknown
}

// Validate implements token.Validator.
func (v *Validator) Validate(ctx context.Context, tok string, id certs.Identity) error {
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return token.ErrMissing
	}
	if len(tok) > MaxTokenLength {
		return fmt.Errorf("%w: kubernetes: token longer than %d bytes", token.ErrInvalid, MaxTokenLength)
	}
	key := sha256.Sum256([]byte(tok))
	d, cached := v.cache.get(key, v.now())
	if !cached {
		var err error
		d, err = v.review(ctx, tok)
		if err != nil {
			return err
		}
		v.cache.put(key, d, v.now())
	}
	if d.namespace != id.Namespace || d.app != id.AppID {
		return fmt.Errorf("%w: kubernetes: the token of pod %s/%s (service account %s) is for app %q in namespace %q, not app %q in namespace %q",
			token.ErrDenied, d.namespace, d.podName, d.serviceAccount, d.app, d.namespace, id.AppID, id.Namespace)
	}
	v.log.Debug("kubernetes: token accepted", "pod", d.namespace+"/"+d.podName, "pod_uid", d.podUID,
		"service_account", d.serviceAccount, "app_id", d.app, "cached", cached)
	return nil
}

// ctxTimeout bounds ctx by DefaultRequestTimeout unless it ends earlier.
func ctxTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < DefaultRequestTimeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultRequestTimeout)
}

// review asks the API server about tok and reads its pod.
func (v *Validator) review(ctx context.Context, tok string) (derived, error) {
	ctx, cancel := ctxTimeout(ctx)
	defer cancel()
	tr, err := v.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{v.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return derived{}, apiError(err, `"create" tokenreviews.authentication.k8s.io`, "TokenReview")
	}
	st := tr.Status
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return derived{}, fmt.Errorf("%w: kubernetes: the API server refused the token (audience %q): %s",
			token.ErrInvalid, v.audience, reason)
	}
	// With spec.audiences set, the API server answers the audiences the
	// token is valid for among them; fail closed if ours is not there.
	if !contains(st.Audiences, v.audience) {
		return derived{}, fmt.Errorf("%w: kubernetes: the token is not for audience %q (the API server answered audiences %q)",
			token.ErrInvalid, v.audience, st.Audiences)
	}
	ns, sa, ok := serviceAccount(st.User.Username)
	if !ok {
		return derived{}, fmt.Errorf("%w: kubernetes: the token is user %q, not a service account", token.ErrInvalid, st.User.Username)
	}
	podName, okName := single(st.User.Extra[ExtraPodName])
	podUID, okUID := single(st.User.Extra[ExtraPodUID])
	if !okName || !okUID {
		return derived{}, fmt.Errorf("%w: kubernetes: the token of service account %s/%s is not bound to a pod "+
			"(use a projected service-account token, or a TokenRequest with boundObjectRef kind Pod)", token.ErrInvalid, ns, sa)
	}
	pod, err := v.client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return derived{}, fmt.Errorf("%w: kubernetes: the token is bound to pod %s/%s (uid %s), which no longer exists",
			token.ErrInvalid, ns, podName, podUID)
	case err != nil:
		return derived{}, apiError(err, `"get" pods in namespace `+ns, "reading pod "+ns+"/"+podName)
	}
	if string(pod.UID) != podUID {
		return derived{}, fmt.Errorf("%w: kubernetes: the token is bound to pod %s/%s uid %s, but that pod now has uid %s (deleted and recreated)",
			token.ErrInvalid, ns, podName, podUID, pod.UID)
	}
	if pod.Spec.ServiceAccountName != sa {
		return derived{}, fmt.Errorf("%w: kubernetes: pod %s/%s runs as service account %q, but the token is of %q",
			token.ErrInvalid, ns, podName, pod.Spec.ServiceAccountName, sa)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return derived{}, fmt.Errorf("%w: kubernetes: pod %s/%s has terminated (phase %s)", token.ErrInvalid, ns, podName, pod.Status.Phase)
	}
	app, err := appID(pod)
	if err != nil {
		return derived{}, err
	}
	if _, err := certs.NewIdentity(certs.DefaultTrustDomain, ns, app); err != nil {
		return derived{}, fmt.Errorf("%w: kubernetes: pod %s/%s: app ID %q with namespace %q is not a meshd identity: %w",
			token.ErrDenied, ns, podName, app, ns, err)
	}
	return derived{namespace: ns, serviceAccount: sa, app: app, podName: podName, podUID: podUID,
		tokenExpiry: unverifiedExpiry(tok)}, nil
}

// appID reads the pod's app ID annotation.
func appID(pod *corev1.Pod) (string, error) {
	own, hasOwn := pod.Annotations[AnnotationAppID]
	dapr, hasDapr := pod.Annotations[DaprAnnotationAppID]
	switch {
	case hasOwn && hasDapr && own != dapr:
		return "", fmt.Errorf("%w: kubernetes: pod %s/%s has annotations %s=%q and %s=%q that disagree",
			token.ErrDenied, pod.Namespace, pod.Name, AnnotationAppID, own, DaprAnnotationAppID, dapr)
	case hasOwn && own != "":
		return own, nil
	case hasDapr && dapr != "":
		return dapr, nil
	}
	return "", fmt.Errorf("%w: kubernetes: pod %s/%s has no app ID: annotate it %s (or %s)",
		token.ErrDenied, pod.Namespace, pod.Name, AnnotationAppID, DaprAnnotationAppID)
}

// apiError classifies an API error of sentry's own request: a refusal of
// sentry (RBAC) or an unreachable server is token.ErrUnavailable, with the
// missing verb named.
func apiError(err error, need, what string) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: kubernetes: RBAC: the API server refused sentry %s: sentry needs %s: %w", token.ErrUnavailable, what, need, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: kubernetes: the API server does not accept sentry's own credentials (%s): %w", token.ErrUnavailable, what, err)
	}
	return fmt.Errorf("%w: kubernetes: %s: %w", token.ErrUnavailable, what, err)
}

// serviceAccount splits system:serviceaccount:{ns}:{name}.
func serviceAccount(user string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, saPrefix)
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return ns, name, true
}

func single(vals authenticationv1.ExtraValue) (string, bool) {
	if len(vals) != 1 || vals[0] == "" {
		return "", false
	}
	return vals[0], true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// unverifiedExpiry reads the exp claim of a JWT the API server has just
// authenticated (only to bound the cache; zero if unreadable).
func unverifiedExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &c); err != nil || c.Exp == nil {
		return time.Time{}
	}
	n, err := c.Exp.Int64()
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// reviewCache holds successful reviews by token hash. A nil cache caches
// nothing.
type reviewCache struct {
	ttl time.Duration
	max int
	mu  sync.Mutex
	m   map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	d       derived
	expires time.Time
}

func (c *reviewCache) get(key [sha256.Size]byte, now time.Time) (derived, bool) {
	if c == nil {
		return derived{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return derived{}, false
	}
	if !now.Before(e.expires) {
		delete(c.m, key)
		return derived{}, false
	}
	return e.d, true
}

// put caches d until now+ttl, but not beyond the token's expiry; a token
// whose expiry is unknown is not cached.
func (c *reviewCache) put(key [sha256.Size]byte, d derived, now time.Time) {
	if c == nil || d.tokenExpiry.IsZero() {
		return
	}
	exp := now.Add(c.ttl)
	if d.tokenExpiry.Before(exp) {
		exp = d.tokenExpiry
	}
	if !now.Before(exp) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		for k := range c.m { // still full: drop an arbitrary entry
			if len(c.m) < c.max {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = cacheEntry{d: d, expires: exp}
}

// Len is the number of cached reviews (for tests and metrics).
func (v *Validator) Len() int {
	if v.cache == nil {
		return 0
	}
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	return len(v.cache.m)
}
