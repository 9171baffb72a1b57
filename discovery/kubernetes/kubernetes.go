package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meshd/meshd/discovery"
)

// Name is the --resolver value of this backend.
const Name = "kubernetes"

// Tunables.
const (
	// MaxPlaceholders bounds the targets called that no Service names
	// (each is kept known with no endpoints, so that its calls fail fast
	// instead of waiting for a first answer that never comes).
	MaxPlaceholders = 4096
	minProbe        = 250 * time.Millisecond
	maxProbe        = 2 * time.Second
)

func init() { discovery.Register(Builder{}) }

var klogOnce sync.Once

// Builder builds kubernetes resolvers.
type Builder struct{}

var _ discovery.Builder = Builder{}

// Name implements discovery.Builder.
func (Builder) Name() string { return Name }

// Build implements discovery.Builder: it reads opts.ConfigFile (none: the
// defaults), connects to the API server, checks that it may list and watch
// EndpointSlices in the namespaces it watches from the start (the
// sidecar's own and Config.Namespaces, or all with clusterWide), and
// returns once their first complete state is in u.
func (Builder) Build(ctx context.Context, opts discovery.BuildOptions, u discovery.Updater) (discovery.Resolver, error) {
	cfg := &Config{}
	if opts.ConfigFile != "" {
		var err error
		if cfg, err = Load(opts.ConfigFile); err != nil {
			return nil, err
		}
	} else {
		var err error
		if cfg, err = Parse(nil); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resolver", Name)
	// client-go logs through klog (its reflectors' list and watch errors):
	// into the sidecar's own log, in its format, once per process.
	klogOnce.Do(func() { klog.SetSlogLogger(log.With("component", "client-go")) })
	local := opts.Local.Target.Namespace
	if local == "" {
		local = discovery.DefaultNamespace
	}
	rc, where, err := restConfig(cfg)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &resolver{
		cfg: cfg, log: log, u: u, local: local, server: rc.Host,
		ctx: rctx, cancel: cancel,
		watches: map[string]*nsWatch{}, state: map[discovery.Target]*appState{},
		warned: map[string]bool{},
	}
	rc.UserAgent = "meshd (discovery/kubernetes)"
	rc.QPS, rc.Burst = 50, 100
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return observer{rt: rt, r: r} })
	// A client of the three API groups used, not client-go's clientset nor
	// its informer factory (see client).
	if r.api, err = newClient(rc); err != nil {
		cancel()
		return nil, fmt.Errorf("kubernetes: client for %s: %w", where, err)
	}
	bctx, cancelB := context.WithTimeout(ctx, time.Duration(cfg.StartTimeout))
	defer cancelB()
	scopes := []string{metav1.NamespaceAll}
	if !cfg.ClusterWide {
		scopes = append([]string{local}, slices.DeleteFunc(slices.Clone(cfg.Namespaces), func(ns string) bool { return ns == local })...)
	}
	for _, ns := range scopes {
		if err := r.preflight(bctx, ns); err != nil {
			cancel()
			return nil, err
		}
	}
	var started []*nsWatch
	r.mu.Lock()
	for _, ns := range scopes {
		started = append(started, r.startLocked(ns))
	}
	r.mu.Unlock()
	for _, w := range started {
		if err := w.waitSynced(bctx); err != nil {
			r.Close()
			return nil, fmt.Errorf("kubernetes: first list of endpointslices %s from %s: %w", scopeName(w.ns), r.server, err)
		}
	}
	r.started.Store(true)
	log.Info("kubernetes: resolving from EndpointSlices", "server", r.server, "config", where,
		"watching", scopeNames(scopes), "appIDLabel", cfg.AppIDLabel, "portName", cfg.PortName, "targets", r.targetCount())
	return r, nil
}

// restConfig loads the kubeconfig the configuration names, or the
// in-cluster configuration. where describes it for messages.
func restConfig(cfg *Config) (rc *rest.Config, where string, err error) {
	if cfg.Kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, "", errors.New("kubernetes: no kubeconfig in --resolver-config and not running in a pod " +
				"(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset): set kubeconfig: /path/to/kubeconfig")
		}
		if err != nil {
			return nil, "", fmt.Errorf("kubernetes: in-cluster configuration: %w", err)
		}
		return rc, "in-cluster", nil
	}
	f, err := os.Open(cfg.Kubeconfig)
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: kubeconfig: %w", err)
	}
	f.Close()
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: cfg.Context})
	rc, err = loader.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: kubeconfig %s: %w", cfg.Kubeconfig, err)
	}
	return rc, cfg.Kubeconfig, nil
}

// preflight checks, before anything is watched, that the API server
// answers and lets us list and watch EndpointSlices in ns ("" = all
// namespaces), so that a sidecar without them fails at start with a
// message that names what is missing.
func (r *resolver) preflight(ctx context.Context, ns string) error {
	var denied []string
	for _, verb := range []string{"list", "watch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: verb, Group: discoveryv1.GroupName, Resource: "endpointslices"},
		}}
		res, err := r.api.accessReview(ctx, review)
		if err != nil {
			if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
				break // may not ask: the list below tells
			}
			return r.startError(ns, "list", err)
		}
		if !res.Status.Allowed {
			denied = append(denied, verb)
		}
	}
	if len(denied) > 0 {
		return fmt.Errorf("kubernetes: the API server %s refuses us%s: RBAC: missing %s on endpointslices (API group %s) %s; "+
			"grant list and watch on endpointslices.discovery.k8s.io with a Role in each namespace called (or a ClusterRole with clusterWide)",
			r.server, r.whoami(ctx), joinVerbs(denied), discoveryv1.GroupName, scopeName(ns))
	}
	_, err := r.api.listSlices(ctx, ns, metav1.ListOptions{Limit: 1, LabelSelector: r.cfg.AppIDLabel})
	if err != nil {
		return r.startError(ns, "list", err)
	}
	return nil
}

// whoami names the identity the API server sees, for RBAC messages (" as
// NAME"; "" when it cannot tell).
func (r *resolver) whoami(ctx context.Context) string {
	res, err := r.api.selfReview(ctx)
	if err != nil || res.Status.UserInfo.Username == "" {
		return ""
	}
	return " as " + strconv.Quote(res.Status.UserInfo.Username)
}

// startError turns a failed start-up request into a message that says
// what to do.
func (r *resolver) startError(ns, verb string, err error) error {
	switch {
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("kubernetes: the API server %s refuses our credentials (401 Unauthorized): check the token or client certificate of the kubeconfig: %w", r.server, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("kubernetes: the API server %s refuses us (403 Forbidden): RBAC: missing %s on endpointslices (API group %s) %s: %w",
			r.server, verb, discoveryv1.GroupName, scopeName(ns), err)
	}
	return fmt.Errorf("kubernetes: the API server %s does not answer: %w", r.server, err)
}

func joinVerbs(v []string) string {
	if len(v) == 2 {
		return "verbs " + v[0] + " and " + v[1]
	}
	return "verb " + v[0]
}

func scopeName(ns string) string {
	if ns == metav1.NamespaceAll {
		return "cluster-wide"
	}
	return "in namespace " + strconv.Quote(ns)
}

func scopeNames(scopes []string) []string {
	out := make([]string, len(scopes))
	for i, s := range scopes {
		out[i] = s
		if s == "" {
			out[i] = "*"
		}
	}
	return out
}

type resolver struct {
	cfg    *Config
	log    *slog.Logger
	u      discovery.Updater
	api    *client
	local  string // the sidecar's namespace
	server string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	watching sync.Map // namespace -> *nsWatch (lock-free fast path of Watch)

	mu           sync.Mutex
	watches      map[string]*nsWatch // by namespace ("" = cluster-wide)
	state        map[discovery.Target]*appState
	placeholders int
	warned       map[string]bool // namespaces logged as refused / over maxWatches
	full         bool            // MaxPlaceholders logged
	closed       bool

	started   atomic.Bool // Build succeeded: from now on outages are served from the cache
	down      atomic.Bool // the API server is unreachable (one probe loop runs)
	closeOnce sync.Once
}

var _ discovery.Watcher = (*resolver)(nil)

// appState is what the Cache holds for one target.
type appState struct {
	eps      []discovery.Endpoint // sorted: ready and draining
	draining map[string]bool      // serving && terminating: kept, not picked
	// placeholder: called, but no EndpointSlice names the app.
	placeholder bool
}

// nsWatch is one namespace's shared informer (or the cluster-wide one).
type nsWatch struct {
	ns      string
	inf     cache.SharedIndexInformer
	stop    chan struct{}
	ran     chan struct{} // closed when the informer's Run returned
	synced  chan struct{} // closed after the first complete push
	retired atomic.Bool   // replaced (after an outage) or closed: ignore its events
	// pending are the targets called before the first push (r.mu).
	pending map[discovery.Target]bool
}

const appIndex = "app"

// startLocked starts an informer for ns and a goroutine that pushes its
// first complete state once it has synced. r.mu is held.
func (r *resolver) startLocked(ns string) *nsWatch {
	label := r.cfg.AppIDLabel
	w := &nsWatch{ns: ns, stop: make(chan struct{}), ran: make(chan struct{}), synced: make(chan struct{}), pending: map[discovery.Target]bool{}}
	// What informers.NewSharedInformerFactory would build for
	// EndpointSlices, with the label selector and our index.
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = label
			return r.api.listSlices(ctx, ns, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = label
			return r.api.watchSlices(ctx, ns, o)
		},
	}
	w.inf = cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, r.api.rest),
		&discoveryv1.EndpointSlice{}, cache.SharedIndexInformerOptions{
			ResyncPeriod: time.Duration(r.cfg.Resync),
			Indexers: cache.Indexers{appIndex: func(obj any) ([]string, error) {
				s, ok := obj.(*discoveryv1.EndpointSlice)
				if !ok || s.Labels[label] == "" {
					return nil, nil
				}
				return []string{s.Namespace + "/" + s.Labels[label]}, nil
			}},
		})
	_ = w.inf.SetTransform(r.trim)
	_ = w.inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) { r.watchError(w, err) })
	_, _ = w.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { r.changed(w, obj) },
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*discoveryv1.EndpointSlice)
			n, ok2 := obj.(*discoveryv1.EndpointSlice)
			if !ok1 || !ok2 || o.Labels[label] != n.Labels[label] {
				r.changed(w, old) // relabelled: its former app loses it
			}
			r.changed(w, obj)
		},
		DeleteFunc: func(obj any) { r.changed(w, obj) },
	})
	if old := r.watches[ns]; old != nil {
		old.retired.Store(true)
		r.wg.Go(func() { old.close() })
	}
	r.watches[ns] = w
	r.watching.Store(ns, w)
	go func() {
		defer close(w.ran)
		w.inf.Run(w.stop)
	}()
	r.wg.Go(func() {
		if !cache.WaitForCacheSync(w.stop, w.inf.HasSynced) {
			return
		}
		r.pushAll(w)
	})
	return w
}

func (w *nsWatch) close() {
	close(w.stop)
	<-w.ran
}

// waitSynced waits for w's first complete push.
func (w *nsWatch) waitSynced(ctx context.Context) error {
	select {
	case <-w.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *nsWatch) isSynced() bool {
	select {
	case <-w.synced:
		return true
	default:
		return false
	}
}

// trim keeps what the resolver reads of an EndpointSlice, so the
// informer's store holds little per endpoint.
func (r *resolver) trim(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	s.ManagedFields = nil
	s.Annotations = nil
	s.OwnerReferences = nil
	if app, ok := s.Labels[r.cfg.AppIDLabel]; ok {
		s.Labels = map[string]string{r.cfg.AppIDLabel: app}
	}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if len(e.Addresses) > 1 {
			e.Addresses = e.Addresses[:1] // consumers use the first (the API's contract)
		}
		e.Hostname, e.TargetRef, e.NodeName, e.Zone, e.Hints, e.DeprecatedTopology = nil, nil, nil, nil, nil, nil
	}
	return s, nil
}

// changed handles one informer event: the app the slice belongs to is
// recomputed from the informer's store and pushed.
func (r *resolver) changed(w *nsWatch, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[r.cfg.AppIDLabel] == "" || w.retired.Load() {
		return
	}
	t := discovery.Target{AppID: s.Labels[r.cfg.AppIDLabel], Namespace: s.Namespace}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Before the first push (under r.mu), pushAll reads the store, which
	// already holds this change.
	if r.closed || w.retired.Load() || !w.isSynced() {
		return
	}
	objs, _ := w.inf.GetIndexer().ByIndex(appIndex, t.Namespace+"/"+t.AppID)
	r.pushLocked(t, r.compute(t, objs))
}

// compute makes a target's state from its slices: ready endpoints, and
// serving && terminating ones the Cache already has (draining).
func (r *resolver) compute(t discovery.Target, objs []any) *appState {
	type cond struct{ ready, draining bool }
	byAddr := map[string]cond{}
	var noPort []string // slices without a usable port of that name
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || (s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6) {
			continue
		}
		port := -1
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == r.cfg.PortName && p.Port != nil && (p.Protocol == nil || *p.Protocol == "TCP") {
				port = int(*p.Port)
				break
			}
		}
		if port <= 0 || port > 65535 {
			noPort = append(noPort, s.Name)
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 || net.ParseIP(e.Addresses[0]) == nil {
				continue
			}
			c := e.Conditions
			terminating := c.Terminating != nil && *c.Terminating
			ready := (c.Ready == nil || *c.Ready) && !terminating
			serving := c.Serving == nil || *c.Serving
			addr := net.JoinHostPort(e.Addresses[0], strconv.Itoa(port))
			prev := byAddr[addr]
			switch {
			case ready:
				byAddr[addr] = cond{ready: true}
			case terminating && serving && !prev.ready:
				byAddr[addr] = cond{draining: true}
			}
		}
	}
	if len(noPort) > 0 && len(byAddr) == 0 && r.warned != nil && !r.warned["port:"+t.String()] {
		r.warned["port:"+t.String()] = true
		r.log.Warn("kubernetes: the EndpointSlices of an app have no TCP port named "+r.cfg.PortName+" (portName); the app has no endpoints",
			"target", t.String(), "slices", noPort)
	}
	known := map[string]bool{}
	if old := r.state[t]; old != nil {
		for _, ep := range old.eps {
			known[ep.Address] = true
		}
	}
	st := &appState{draining: map[string]bool{}}
	for addr, c := range byAddr {
		if c.draining {
			if !known[addr] {
				continue // never picked: no call to finish
			}
			st.draining[addr] = true
		}
		st.eps = append(st.eps, discovery.Endpoint{Address: addr})
	}
	sort.Slice(st.eps, func(i, j int) bool { return st.eps[i].Address < st.eps[j].Address })
	if len(objs) == 0 {
		st.placeholder = true
	}
	return st
}

// pushLocked gives t's new state to the Cache: the set, then the health
// of its draining endpoints. r.mu is held.
func (r *resolver) pushLocked(t discovery.Target, st *appState) {
	old := r.state[t]
	if old != nil && slices.Equal(old.eps, st.eps) && mapsEqual(old.draining, st.draining) {
		if old.placeholder != st.placeholder {
			r.setPlaceholder(old, st.placeholder)
		}
		return
	}
	if old == nil && st.placeholder {
		return // an app that never had slices (a deleted one without calls)
	}
	if old != nil {
		r.setPlaceholder(old, false)
	}
	if st.placeholder {
		r.placeholders++
	}
	r.state[t] = st
	r.u.UpdateTarget(t, st.eps)
	r.health(t, old, st)
	r.log.Debug("kubernetes: endpoints changed", "target", t.String(), "endpoints", len(st.eps), "draining", len(st.draining))
}

func (r *resolver) setPlaceholder(st *appState, p bool) {
	if st.placeholder == p {
		return
	}
	st.placeholder = p
	if p {
		r.placeholders++
	} else {
		r.placeholders--
	}
}

// health sets the health of st's endpoints that changed from old.
func (r *resolver) health(t discovery.Target, old, st *appState) {
	for _, ep := range st.eps {
		was := old != nil && old.draining[ep.Address]
		if st.draining[ep.Address] != was || st.draining[ep.Address] {
			r.u.SetHealth(t, ep.Address, !st.draining[ep.Address])
		}
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// pushAll pushes the complete state of w's scope after a (re)list: one
// ReplaceAll of every target the resolver knows, those of w's scope
// recomputed, so callers see the old state or the new one, never a mix.
func (r *resolver) pushAll(w *nsWatch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || w.retired.Load() {
		return
	}
	defer close(w.synced) // under r.mu: see changed
	inScope := func(t discovery.Target) bool { return w.ns == metav1.NamespaceAll || t.Namespace == w.ns }
	next := map[discovery.Target]*appState{}
	for t, st := range r.state {
		if !inScope(t) {
			next[t] = st
		}
	}
	keys := w.inf.GetIndexer().ListIndexFuncValues(appIndex)
	for _, k := range keys {
		objs, _ := w.inf.GetIndexer().ByIndex(appIndex, k)
		if len(objs) == 0 {
			continue
		}
		s := objs[0].(*discoveryv1.EndpointSlice)
		t := discovery.Target{AppID: s.Labels[r.cfg.AppIDLabel], Namespace: s.Namespace}
		next[t] = r.compute(t, objs)
	}
	// Targets that were known (called, or had slices) or called while the
	// watch started, and have none now, are known with no endpoints.
	for t := range r.state {
		if _, ok := next[t]; !ok && inScope(t) {
			next[t] = &appState{draining: map[string]bool{}, placeholder: true}
		}
	}
	for t := range w.pending {
		if _, ok := next[t]; !ok {
			next[t] = &appState{draining: map[string]bool{}, placeholder: true}
		}
	}
	w.pending = nil
	all := make(map[discovery.Target][]discovery.Endpoint, len(next))
	r.placeholders = 0
	for t, st := range next {
		all[t] = st.eps
		if st.placeholder {
			r.placeholders++
		}
	}
	old := r.state
	r.state = next
	r.u.ReplaceAll(all)
	for t, st := range next {
		if inScope(t) {
			r.health(t, old[t], st)
		}
	}
	r.log.Debug("kubernetes: complete state pushed", "scope", scopeName(w.ns), "targets", len(next))
}

// Watch implements discovery.Watcher: a call to a target the Cache does
// not know starts the watch of its namespace (at most maxWatches), or,
// when that namespace is watched already and no slice names the app,
// makes the target known with no endpoints so its calls fail fast. It
// never touches the network.
func (r *resolver) Watch(t discovery.Target) {
	ns := t.Namespace
	if r.cfg.ClusterWide {
		ns = metav1.NamespaceAll
	}
	if v, ok := r.watching.Load(ns); ok && v.(*nsWatch).isSynced() {
		r.placeholder(t)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if w := r.watches[ns]; w != nil {
		if !w.isSynced() && len(w.pending) < MaxPlaceholders {
			w.pending[t] = true // answered by its first push
		}
		return
	}
	if len(r.watches) >= r.cfg.MaxWatches {
		if !r.warned[ns] {
			r.warned[ns] = true
			r.log.Error("kubernetes: too many namespaces called; not watching this one (raise maxWatches or use clusterWide)",
				"namespace", ns, "maxWatches", r.cfg.MaxWatches, "target", t.String())
		}
		return
	}
	r.log.Info("kubernetes: watching a further namespace (first call into it)", "namespace", ns, "target", t.String())
	r.startLocked(ns).pending[t] = true
}

// placeholder makes t known with no endpoints, when its namespace is
// watched and synced and no slice names it.
func (r *resolver) placeholder(t discovery.Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.state[t] != nil {
		return
	}
	if r.placeholders >= MaxPlaceholders {
		if !r.full {
			r.full = true
			r.log.Error("kubernetes: too many called apps without endpoints; not remembering more", "max", MaxPlaceholders, "target", t.String())
		}
		return
	}
	r.placeholders++
	r.state[t] = &appState{draining: map[string]bool{}, placeholder: true}
	r.u.UpdateTarget(t, nil)
}

// watchError is the informers' list/watch error handler (the reflector
// retries with backoff by itself).
func (r *resolver) watchError(w *nsWatch, err error) {
	if r.ctx.Err() != nil || w.retired.Load() {
		return
	}
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		r.mu.Lock()
		first := !r.warned[w.ns]
		r.warned[w.ns] = true
		r.mu.Unlock()
		if first {
			err = fmt.Errorf("kubernetes: the API server refuses to list/watch endpointslices %s (RBAC: grant list and watch on endpointslices.discovery.k8s.io): %w", scopeName(w.ns), err)
			r.log.Error("kubernetes: namespace not watched; its apps stay unresolved until RBAC allows it", "namespace", w.ns, "err", err)
			r.u.ReportError(err)
		}
		return
	}
	r.log.Debug("kubernetes: watch error; the informer retries", "scope", scopeName(w.ns), "err", err)
}

// observer sees every request to the API server: a failed round trip
// means the server is unreachable.
type observer struct {
	rt http.RoundTripper
	r  *resolver
}

func (o observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.rt.RoundTrip(req)
	if err != nil && req.Context().Err() == nil && o.r.ctx.Err() == nil {
		o.r.apiDown(err)
	}
	return resp, err
}

// apiDown starts, once per outage, a probe loop that waits (with backoff)
// for the API server to answer again, then restarts the watches: the
// informers' own backoff grows to 30-60 s, and a sidecar should not stay
// that long on endpoints that may have changed. Meanwhile the Cache keeps
// serving the last known endpoints.
func (r *resolver) apiDown(err error) {
	if r.down.Load() || !r.started.Load() {
		return // at start, Build reports the error itself
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || !r.down.CompareAndSwap(false, true) {
		return
	}
	err = fmt.Errorf("kubernetes: API server %s unreachable, serving the last known endpoints: %w", r.server, err)
	r.log.Warn("kubernetes: API server unreachable; callers keep the endpoints they have while the watches reconnect with backoff", "err", err)
	r.u.ReportError(err)
	r.wg.Go(r.probe)
}

func (r *resolver) probe() {
	began := time.Now()
	d := minProbe
	for {
		t := time.NewTimer(d/2 + rand.N(d/2+1))
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d = min(2*d, maxProbe)
		ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
		err := r.api.version(ctx)
		cancel()
		if err != nil && !apierrors.IsForbidden(err) && !apierrors.IsUnauthorized(err) {
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		r.down.Store(false)
		ws := make([]string, 0, len(r.watches))
		for ns := range r.watches {
			ws = append(ws, ns)
		}
		for _, ns := range ws {
			r.startLocked(ns) // relists; the old informer stops
		}
		r.mu.Unlock()
		r.log.Info("kubernetes: API server reachable again; watches restarted (relist)", "after", time.Since(began).Round(time.Millisecond).String(), "watches", len(ws))
		return
	}
}

func (r *resolver) targetCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.state)
}

// Close implements discovery.Resolver: it stops the informers; the Cache
// keeps the last endpoints.
func (r *resolver) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		ws := make([]*nsWatch, 0, len(r.watches))
		for _, w := range r.watches {
			w.retired.Store(true)
			ws = append(ws, w)
		}
		r.mu.Unlock()
		r.cancel()
		for _, w := range ws {
			w.close()
		}
		r.wg.Wait()
	})
	return nil
}

var _ discovery.AllWatcher = (*resolver)(nil)

// WatchAll implements discovery.AllWatcher, for the control plane: every
// app of the namespaces watched from the start is pushed already (the
// "default" namespace, as the control plane has no local instance, and
// Config.Namespaces; every namespace with Config.ClusterWide), so there is
// nothing more to start. Namespaces outside those are not served.
func (r *resolver) WatchAll() {}
