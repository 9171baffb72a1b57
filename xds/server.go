package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	cplog "github.com/envoyproxy/go-control-plane/pkg/log"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/config/watch"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/xds/policypb"
)

// DefaultDebounce is how long the server waits after a change before it
// pushes, so that a burst of changes (a rollout, a relist) is one push.
const DefaultDebounce = 100 * time.Millisecond

// AllNamespaces in Config.Exports makes a namespace's apps visible to
// every namespace.
const AllNamespaces = "*"

// TypeURLs are the resource types served, in the order a client should
// subscribe to them.
var TypeURLs = []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType,
	resourcev3.RouteType, policypb.TypeURL}

// Config configures a Server.
type Config struct {
	// Resolver and ResolverConfig select the discovery backend
	// (--resolver, --resolver-config), as for a sidecar.
	Resolver       string
	ResolverConfig string
	// PolicyDir is the policy directory served as PolicySets ("": none).
	PolicyDir string
	// Exports makes a namespace's apps visible to other namespaces: the
	// apps of namespace k are served to clients of k and of every
	// namespace in Exports[k] (AllNamespaces: to all).
	Exports map[string][]string
	// SVIDSource and BundleSource are the control plane's own rotating
	// identity and the mesh's trust bundle; TrustDomain is the mesh's.
	SVIDSource   x509svid.Source
	BundleSource x509bundle.Source
	TrustDomain  spiffeid.TrustDomain
	// Hook adds per-app resources (proxyless gRPC); nil serves the plain
	// Cluster and ClusterLoadAssignment.
	Hook AppHook
	// Debounce overrides DefaultDebounce.
	Debounce time.Duration
	// Logger receives the server's logs (slog.Default() if nil).
	Logger *slog.Logger
}

// Server is the control plane: one discovery backend and the policy
// directory in, versioned per-namespace snapshots in go-control-plane's
// snapshot cache, ADS (state of the world and delta) out.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *store
	res   discovery.Resolver
	cache cachev3.SnapshotCache

	closeOnce sync.Once

	// loop state (the push goroutine only)
	apps     map[discovery.Target]*appResources
	policies map[string]versioned
	last     map[string]*snapshot

	policyChanged chan struct{}
	policyMu      sync.Mutex
	pendingPol    map[string]*policypb.PolicySet // read, checked, not yet pushed

	nsMu    sync.Mutex
	nsSeen  map[string]bool // namespaces with a snapshot (tracked)
	nsNew   chan struct{}
	streams sync.Map // stream ID -> namespace (from the certificate)

	stats statsCounters
}

type statsCounters struct {
	pushes, snapshots, invalid, policyRejected atomic.Uint64
	lastPush                                   atomic.Int64 // ns
}

// Stats are counters of a Server.
type Stats struct {
	// Pushes is the number of rebuilds; Snapshots the per-namespace
	// snapshots set (only changed ones are).
	Pushes, Snapshots uint64
	// Invalid counts app resources refused by validation (the last good
	// ones stayed); PolicyRejected policy trees refused.
	Invalid, PolicyRejected uint64
	// LastPush is how long the last rebuild took.
	LastPush time.Duration
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Pushes: s.stats.pushes.Load(), Snapshots: s.stats.snapshots.Load(),
		Invalid: s.stats.invalid.Load(), PolicyRejected: s.stats.policyRejected.Load(),
		LastPush: time.Duration(s.stats.lastPush.Load())}
}

// New builds the discovery backend (it returns once the backend pushed its
// first state) and reads the policy directory (a tree that does not load is
// an error: the control plane does not start with a policy it cannot
// serve). Run serves.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.SVIDSource == nil || cfg.BundleSource == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("xds: an identity (SVID and bundle sources, trust domain) is required")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, store: newStore(),
		apps: map[discovery.Target]*appResources{}, policies: map[string]versioned{}, last: map[string]*snapshot{},
		policyChanged: make(chan struct{}, 1), nsSeen: map[string]bool{}, nsNew: make(chan struct{}, 1)}
	for ns, to := range cfg.Exports {
		if err := certs.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("xds: export of %q: %w", ns, err)
		}
		for _, n := range to {
			if n == AllNamespaces {
				continue
			}
			if err := certs.ValidateNamespace(n); err != nil {
				return nil, fmt.Errorf("xds: export of %q to %q: %w", ns, n, err)
			}
		}
	}
	if cfg.PolicyDir != "" {
		sets, err := readPolicies(ctx, cfg.PolicyDir)
		if err != nil {
			return nil, err
		}
		s.pendingPol = sets
	}
	res, err := discovery.Build(ctx, cfg.Resolver, discovery.BuildOptions{ConfigFile: cfg.ResolverConfig, Logger: log}, s.store)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	if aw, ok := res.(discovery.AllWatcher); ok {
		aw.WatchAll()
	} else if _, ok := res.(discovery.Watcher); ok {
		res.Close()
		return nil, fmt.Errorf("xds: resolver %q resolves apps only on demand and cannot list them all", cfg.Resolver)
	}
	s.res = res
	s.cache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, cacheLogger{log})
	return s, nil
}

// Close stops the backend; Run does it when it returns. It is for a
// Server that never runs.
func (s *Server) Close() { s.closeOnce.Do(func() { s.res.Close() }) }

// Run serves ADS on l until ctx is done, pushing every change of the
// backend and of the policy directory. It closes the backend (and l) when
// it returns.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	defer s.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	xs := serverv3.NewServer(ctx, s.cache, &guard{s: s})
	tlsCfg := tlsconfig.MTLSServerConfig(s.cfg.SVIDSource, s.cfg.BundleSource,
		certs.RequireClientAuth(tlsconfig.AuthorizeMemberOf(s.cfg.TrustDomain)))
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(4<<20))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.loop(ctx)
	}()
	if s.cfg.PolicyDir != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.watchPolicies(ctx); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}
	go func() {
		if err := gs.Serve(l); err != nil {
			errc <- fmt.Errorf("xds: serve: %w", err)
		}
	}()
	s.log.Info("xds: serving ADS (state of the world and delta)", "addr", l.Addr().String(),
		"resolver", s.cfg.Resolver, "policyDir", s.cfg.PolicyDir)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		gs.Stop() // ADS streams never end by themselves
		<-stopped
	}
	wg.Wait()
	return err
}

// watchPolicies re-reads the policy directory on every change; a tree
// that does not load is logged and counted, and the last good one stays.
func (s *Server) watchPolicies(ctx context.Context) error {
	w, err := watch.New(watch.Options{Debounce: s.cfg.Debounce, Logger: s.log, Prefix: "xds"})
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	if err := w.Tree(s.cfg.PolicyDir, func(base string) bool {
		return base[0] == '.' || base[len(base)-1] == '~' || len(base) > 4 && base[len(base)-4:] == ".swp"
	}); err != nil {
		w.Close()
		return fmt.Errorf("xds: %w", err)
	}
	return w.Run(ctx, func() {
		sets, err := readPolicies(ctx, s.cfg.PolicyDir)
		if err != nil {
			s.stats.policyRejected.Add(1)
			s.log.Error("xds: policy directory rejected; the last good policies are still served", "err", err)
			return
		}
		s.policyMu.Lock()
		s.pendingPol = sets
		s.policyMu.Unlock()
		select {
		case s.policyChanged <- struct{}{}:
		default:
		}
	})
}

// loop pushes: at once for a namespace seen for the first time, after the
// debounce for changes of apps and policies.
func (s *Server) loop(ctx context.Context) {
	s.push(ctx) // the backend's first state and the first policies
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.nsNew:
			s.push(ctx)
			continue
		case <-s.store.changed:
		case <-s.policyChanged:
		}
		t := time.NewTimer(s.cfg.Debounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		s.push(ctx)
	}
}

// track makes sure namespace ns has a snapshot; called when a client of ns
// opens a stream.
func (s *Server) track(ns string) {
	s.nsMu.Lock()
	seen := s.nsSeen[ns]
	s.nsSeen[ns] = true
	s.nsMu.Unlock()
	if !seen {
		select {
		case s.nsNew <- struct{}{}:
		default:
		}
	}
}

// push rebuilds the changed apps and policies and sets the snapshot of
// every namespace whose view changed.
func (s *Server) push(ctx context.Context) {
	start := time.Now()
	for t, eps := range s.store.take() {
		if eps == nil {
			delete(s.apps, t)
			continue
		}
		r, err := buildApp(t, eps, s.cfg.Hook)
		if err != nil {
			s.stats.invalid.Add(1)
			s.log.Error("xds: app resources refused; its last good resources are still served", "app", t.String(), "err", err)
			continue
		}
		s.apps[t] = r
	}
	s.policyMu.Lock()
	pol := s.pendingPol
	s.pendingPol = nil
	s.policyMu.Unlock()
	if pol != nil {
		next := make(map[string]versioned, len(pol))
		ok := true
		for name, ps := range pol {
			if err := Validate(ps); err != nil {
				s.log.Error("xds: policy set refused", "name", name, "err", err)
				ok = false
				break
			}
			v, err := newVersioned(ps)
			if err != nil {
				ok = false
				break
			}
			next[name] = v
		}
		if ok {
			s.policies = next
		} else {
			s.stats.policyRejected.Add(1)
		}
	}
	s.nsMu.Lock()
	nss := make([]string, 0, len(s.nsSeen))
	for ns := range s.nsSeen {
		nss = append(nss, ns)
	}
	s.nsMu.Unlock()
	sort.Strings(nss)
	for _, ns := range nss {
		snap := s.snapshotFor(ns)
		if snap.same(s.last[ns]) {
			continue
		}
		if err := s.cache.SetSnapshot(ctx, ns, snap); err != nil {
			s.log.Error("xds: set snapshot", "namespace", ns, "err", err)
			continue
		}
		s.last[ns] = snap
		s.stats.snapshots.Add(1)
	}
	s.stats.pushes.Add(1)
	d := time.Since(start)
	s.stats.lastPush.Store(int64(d))
	s.log.Debug("xds: pushed", "apps", len(s.apps), "namespaces", len(nss), "took", d)
}

// visible reports whether clients of namespace client see the apps of
// namespace appNS.
func (s *Server) visible(client, appNS string) bool {
	if client == appNS {
		return true
	}
	to := s.cfg.Exports[appNS]
	return slices.Contains(to, client) || slices.Contains(to, AllNamespaces)
}

// snapshotFor is what clients of ns see: the apps of ns and of the
// namespaces that export to ns, and the PolicySets of ns and _mesh.
func (s *Server) snapshotFor(ns string) *snapshot {
	var b snapshotBuilder
	for t, r := range s.apps {
		if !s.visible(ns, t.Namespace) {
			continue
		}
		name := ResourceName(t)
		b.add(resourcev3.ClusterType, name, r.cluster)
		b.add(resourcev3.EndpointType, name, r.cla)
		for _, l := range r.listeners {
			b.add(resourcev3.ListenerType, cachev3.GetResourceName(l.res), l)
		}
		for _, rt := range r.routes {
			b.add(resourcev3.RouteType, cachev3.GetResourceName(rt.res), rt)
		}
	}
	for _, name := range []string{ns, policypb.MeshName} {
		if v, ok := s.policies[name]; ok {
			b.add(policypb.TypeURL, name, v)
		}
	}
	return b.build(TypeURLs)
}

// guard ties every stream to the namespace of the client's certificate:
// whatever Node the client sends, the server replaces it with one whose ID
// is that namespace, so the snapshot cache (keyed by node ID) serves the
// client its own namespace's snapshot and nothing else.
type guard struct{ s *Server }

var _ serverv3.Callbacks = (*guard)(nil)

var errNoIdentity = errors.New("xds: the client shows no mesh SPIFFE ID")

// namespaceOf is the namespace of the SPIFFE ID in the client's verified
// certificate.
func namespaceOf(ctx context.Context) (string, certs.Identity, error) {
	id, err := peerID(ctx)
	if err != nil {
		return "", certs.Identity{}, err
	}
	ident, err := certs.IdentityFromID(id)
	if err != nil {
		return "", certs.Identity{}, fmt.Errorf("%w: %w", errNoIdentity, err)
	}
	return ident.Namespace, ident, nil
}

func (g *guard) open(ctx context.Context, id int64) error {
	ns, ident, err := namespaceOf(ctx)
	if err != nil {
		g.s.log.Warn("xds: stream refused", "err", err)
		return err
	}
	g.s.streams.Store(id, ns)
	g.s.track(ns)
	g.s.log.Debug("xds: stream opened", "stream", id, "client", ident.String())
	return nil
}

func (g *guard) node(id int64, claimed *corev3.Node) (*corev3.Node, error) {
	v, ok := g.s.streams.Load(id)
	if !ok {
		return nil, errNoIdentity
	}
	ns := v.(string)
	if claimed != nil && claimed.GetId() == ns {
		return claimed, nil
	}
	if claimed.GetId() != "" {
		g.s.log.Debug("xds: client's node ID replaced by its certificate's namespace", "stream", id,
			"claimed", claimed.GetId(), "namespace", ns)
	}
	return &corev3.Node{Id: ns, Cluster: ns, UserAgentName: claimed.GetUserAgentName()}, nil
}

// OnStreamOpen implements serverv3.Callbacks.
func (g *guard) OnStreamOpen(ctx context.Context, id int64, _ string) error { return g.open(ctx, id) }

// OnStreamClosed implements serverv3.Callbacks.
func (g *guard) OnStreamClosed(id int64, _ *corev3.Node) { g.s.streams.Delete(id) }

// OnDeltaStreamOpen implements serverv3.Callbacks.
func (g *guard) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return g.open(ctx, id)
}

// OnDeltaStreamClosed implements serverv3.Callbacks.
func (g *guard) OnDeltaStreamClosed(id int64, _ *corev3.Node) { g.s.streams.Delete(id) }

// OnStreamRequest implements serverv3.Callbacks.
func (g *guard) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	n, err := g.node(id, req.GetNode())
	if err != nil {
		return err
	}
	req.Node = n
	if e := req.GetErrorDetail(); e != nil {
		g.s.log.Warn("xds: client rejected an update", "stream", id, "namespace", n.GetId(),
			"type", req.GetTypeUrl(), "reason", e.GetMessage())
	}
	return nil
}

// OnStreamDeltaRequest implements serverv3.Callbacks.
func (g *guard) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	n, err := g.node(id, req.GetNode())
	if err != nil {
		return err
	}
	req.Node = n
	if e := req.GetErrorDetail(); e != nil {
		g.s.log.Warn("xds: client rejected an update", "stream", id, "namespace", n.GetId(),
			"type", req.GetTypeUrl(), "reason", e.GetMessage())
	}
	return nil
}

// OnStreamResponse implements serverv3.Callbacks.
func (g *guard) OnStreamResponse(context.Context, int64, *discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {
}

// OnStreamDeltaResponse implements serverv3.Callbacks.
func (g *guard) OnStreamDeltaResponse(int64, *discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse) {
}

// OnFetchRequest implements serverv3.Callbacks: REST fetches are not
// served.
func (g *guard) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return errors.New("xds: REST fetch is not served")
}

// OnFetchResponse implements serverv3.Callbacks.
func (g *guard) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// cacheLogger sends go-control-plane's logs to slog, one level down (its
// Info is per watch).
type cacheLogger struct{ log *slog.Logger }

var _ cplog.Logger = cacheLogger{}

func (l cacheLogger) Debugf(string, ...any) {}
func (l cacheLogger) Infof(f string, a ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug-4) {
		l.log.Debug("xds cache: " + fmt.Sprintf(f, a...))
	}
}
func (l cacheLogger) Warnf(f string, a ...any)  { l.log.Debug("xds cache: " + fmt.Sprintf(f, a...)) }
func (l cacheLogger) Errorf(f string, a ...any) { l.log.Warn("xds cache: " + fmt.Sprintf(f, a...)) }
