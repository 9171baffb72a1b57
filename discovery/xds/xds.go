package xds

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/genproto/googleapis/rpc/code"
	status "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/xds/policypb"
)

// Name is the --resolver value of this backend.
const Name = "xds"

// Type URLs the resolver subscribes to.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// subscribed are the types a sidecar asks for: the ClusterLoadAssignments
// of the apps it calls (the Clusters the control plane serves next to
// them are for proxyless gRPC; a sidecar needs none of their fields) and
// the PolicySets.
var subscribed = []string{EndpointType, policypb.TypeURL}

func init() { discovery.Register(Builder{}) }

// Builder builds xds resolvers. The registered one uses the defaults.
type Builder struct {
	// MinBackoff and MaxBackoff bound the wait between reconnections
	// (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
}

var _ discovery.Builder = Builder{}

// Name implements discovery.Builder.
func (Builder) Name() string { return Name }

// Build implements discovery.Builder. It connects to the control plane
// named by opts.ConfigFile with the sidecar's SVID and returns once the
// control plane answered (the policies are in); if it does not within the
// start timeout, Build fails (the sidecar has nothing to serve from) and
// nothing keeps running. Endpoints are subscribed on demand (Watch).
func (b Builder) Build(ctx context.Context, opts discovery.BuildOptions, u discovery.Updater) (discovery.Resolver, error) {
	var (
		cfg *Config
		err error
	)
	switch {
	case opts.ConfigFile != "" && (opts.ControlPlaneAddress != "" || opts.ControlPlaneNamespace != ""):
		return nil, errors.New("xds: both --resolver-config and --control-plane-address/--control-plane-namespace given: give one (the file's address: and controlPlaneID:, or the flags)")
	case opts.ConfigFile != "":
		if cfg, err = Load(opts.ConfigFile); err != nil {
			return nil, err
		}
	case opts.ControlPlaneAddress == "":
		return nil, errors.New("xds: no control plane given (want --control-plane-address host:port, or --resolver-config with address: host:port)")
	}
	if opts.SVIDSource == nil || opts.BundleSource == nil {
		return nil, errors.New("xds: the control plane is reached over mTLS with the sidecar's SVID: not usable with --insecure")
	}
	svid, err := opts.SVIDSource.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("xds: own SVID: %w", err)
	}
	if cfg == nil {
		if cfg, err = FromFlags(opts.ControlPlaneAddress, opts.ControlPlaneNamespace, svid.ID.TrustDomain()); err != nil {
			return nil, fmt.Errorf("xds: %w", err)
		}
	}
	var cpID spiffeid.ID
	if cfg.ControlPlaneID != "" {
		cpID = spiffeid.RequireFromString(cfg.ControlPlaneID)
	} else if cpID, err = spiffeid.FromSegments(svid.ID.TrustDomain(), "ns", DefaultControlPlaneNamespace, DefaultControlPlaneApp); err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resolver", Name, "controlPlane", cfg.Address)
	tlsCfg := tlsconfig.MTLSClientConfig(opts.SVIDSource, opts.BundleSource, certs.RequireServerAuth(tlsconfig.AuthorizeID(cpID)))
	conn, err := grpc.NewClient("passthrough:///"+cfg.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	r := newResolver(u, log, svid.ID.String())
	r.conn = conn
	r.minB, r.maxB = b.MinBackoff, b.MaxBackoff
	if r.minB <= 0 {
		r.minB = 100 * time.Millisecond
	}
	if r.maxB < r.minB {
		r.maxB = max(5*time.Second, r.minB)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go r.run(rctx)
	timeout := time.Duration(cfg.StartTimeout)
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.ready:
		log.Info("xds: first answer from the control plane", "policySets", r.policyCount())
		return r, nil
	case <-t.C:
		err = fmt.Errorf("xds: no complete state from the control plane %s within %s (%v): not starting without endpoints", cfg.Address, timeout, r.lastErr())
	case <-ctx.Done():
		err = fmt.Errorf("xds: %w", ctx.Err())
	}
	r.Close()
	return nil, err
}

type endpoint struct {
	addr    string
	healthy bool
}

type resolver struct {
	u      discovery.Updater
	log    *slog.Logger
	nodeID string
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
	minB   time.Duration
	maxB   time.Duration

	ready     chan struct{}
	readyOnce sync.Once

	// on-demand subscriptions (Watch)
	watching sync.Map // discovery.Target -> true: subscribed (lock-free fast path)
	subMu    sync.Mutex
	subs     map[string]bool // every resource name subscribed
	pending  []string        // subscribed, not yet sent on the stream
	wake     chan struct{}   // capacity 1: pending has names

	// run goroutine only
	versions map[string]map[string]string // type URL -> name -> version
	eps      map[string][]endpoint
	pushed   map[discovery.Target]bool

	mu       sync.Mutex // guards the fields below
	policies map[string]*policypb.PolicySet
	polFS    fs.FS
	apply    func(fs.FS) error
	err      error

	closeOnce sync.Once
}

var (
	_ discovery.PolicyFeed = (*resolver)(nil)
	_ discovery.Watcher    = (*resolver)(nil)
)

func newResolver(u discovery.Updater, log *slog.Logger, nodeID string) *resolver {
	r := &resolver{u: u, log: log, nodeID: nodeID, ready: make(chan struct{}), subs: map[string]bool{}, wake: make(chan struct{}, 1),
		versions: map[string]map[string]string{}, eps: map[string][]endpoint{},
		pushed: map[discovery.Target]bool{}, policies: map[string]*policypb.PolicySet{}}
	for _, tu := range subscribed {
		r.versions[tu] = map[string]string{}
	}
	return r
}

func (r *resolver) policyCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.policies)
}

func (r *resolver) lastErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		return errors.New("no answer yet")
	}
	return r.err
}

// Policies implements discovery.PolicyFeed.
func (r *resolver) Policies(apply func(fs.FS) error) fs.FS {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.apply = apply
	return r.polFS
}

// Close implements discovery.Resolver. The Updater keeps the last state.
func (r *resolver) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
		r.conn.Close()
	})
	return nil
}

// run keeps one delta ADS stream open, reconnecting with backoff; the
// state received stays in the Updater while the control plane is away.
func (r *resolver) run(ctx context.Context) {
	defer r.wg.Done()
	failures := 0
	down := false
	for ctx.Err() == nil {
		got, err := r.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		if got {
			failures = 0
		}
		if !down {
			down = true
			r.log.Warn("xds: control plane stream lost; keeping the last endpoints and policies, reconnecting with backoff", "err", err)
			r.u.ReportError(fmt.Errorf("xds: control plane unreachable, serving the last state: %w", err))
		} else {
			r.log.Debug("xds: reconnect failed", "err", err)
		}
		d := min(r.minB<<min(failures, 10), r.maxB)
		d = d/2 + rand.N(d/2+1)
		failures++
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if got {
			down = false
		}
	}
}

// Watch implements discovery.Watcher: the first Pick of a target the
// Cache does not know subscribes to its ClusterLoadAssignment (on-demand
// EDS, as Envoy's on-demand cluster discovery does): a sidecar keeps, and
// the control plane sends it, only the apps it calls. It returns at once.
func (r *resolver) Watch(t discovery.Target) {
	if _, ok := r.watching.Load(t); ok {
		return
	}
	name := t.String()
	r.subMu.Lock()
	if !r.subs[name] {
		r.subs[name] = true
		r.pending = append(r.pending, name)
	}
	r.subMu.Unlock()
	r.watching.Store(t, true)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// takePending returns the names subscribed since the last take (all of
// them when all is set: a new stream).
func (r *resolver) takePending(all bool) []string {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	var out []string
	if all {
		out = make([]string, 0, len(r.subs))
		for n := range r.subs {
			out = append(out, n)
		}
	} else {
		out = r.pending
	}
	r.pending = nil
	return out
}

// stream runs one ADS stream until it fails; got says whether it
// received anything.
func (r *resolver) stream(ctx context.Context) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(r.conn).DeltaAggregatedResources(ctx, grpc.WaitForReady(false))
	if err != nil {
		return false, fmt.Errorf("xds: open stream: %w", err)
	}
	node := &corev3.Node{Id: r.nodeID, UserAgentName: "meshd"}
	// Policies: every PolicySet the namespace gets (its own and _mesh).
	req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: policypb.TypeURL, ResourceNamesSubscribe: []string{"*"},
		InitialResourceVersions: maps.Clone(r.versions[policypb.TypeURL])}
	if err := st.Send(req); err != nil {
		return false, fmt.Errorf("xds: subscribe: %w", err)
	}
	// Endpoints: the apps called so far (none yet: no request, an empty
	// first request would mean "all").
	claOpen := false
	subscribe := func(names []string) error {
		if len(names) == 0 {
			return nil
		}
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: EndpointType, ResourceNamesSubscribe: names}
		if !claOpen {
			req.InitialResourceVersions = maps.Clone(r.versions[EndpointType])
			claOpen = true
		}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("xds: subscribe: %w", err)
		}
		return nil
	}
	if err := subscribe(r.takePending(true)); err != nil {
		return false, err
	}
	resps := make(chan *discoveryv3.DeltaDiscoveryResponse)
	recvErr := make(chan error, 1)
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case resps <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var resp *discoveryv3.DeltaDiscoveryResponse
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case err := <-recvErr:
			return got, fmt.Errorf("xds: stream: %w", err)
		case <-r.wake:
			if err := subscribe(r.takePending(false)); err != nil {
				return got, err
			}
			continue
		case resp = <-resps:
		}
		if !got {
			got = true
			r.log.Info("xds: connected to the control plane")
		}
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if herr := r.handle(resp); herr != nil {
			r.log.Error("xds: update rejected (NACK); the last good state stays", "type", resp.GetTypeUrl(), "err", herr)
			r.u.ReportError(herr)
			ack.ErrorDetail = &status.Status{Code: int32(code.Code_INVALID_ARGUMENT), Message: herr.Error()}
		}
		if err := st.Send(ack); err != nil {
			return got, fmt.Errorf("xds: ack: %w", err)
		}
	}
}

// Target parses a resource name "{app}.{namespace}".
func Target(name string) (discovery.Target, error) {
	app, ns, ok := strings.Cut(name, ".")
	if !ok {
		return discovery.Target{}, fmt.Errorf("xds: resource name %q: want {app}.{namespace}", name)
	}
	if err := certs.ValidateAppID(app); err != nil {
		return discovery.Target{}, fmt.Errorf("xds: resource name %q: %w", name, err)
	}
	if err := certs.ValidateNamespace(ns); err != nil {
		return discovery.Target{}, fmt.Errorf("xds: resource name %q: %w", name, err)
	}
	return discovery.Target{AppID: app, Namespace: ns}, nil
}

type validator interface{ ValidateAll() error }

// decode unmarshals and validates one resource; all of a response's
// resources are decoded before any is applied (a NACK applies nothing).
func decode(typeURL string, res *discoveryv3.Resource) (proto.Message, error) {
	a := res.GetResource()
	if a == nil {
		return nil, fmt.Errorf("xds: resource %q without a body", res.GetName())
	}
	if a.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("xds: resource %q is a %s in a %s response", res.GetName(), a.GetTypeUrl(), typeURL)
	}
	var m proto.Message
	switch typeURL {
	case ClusterType:
		m = &clusterv3.Cluster{}
	case EndpointType:
		m = &endpointv3.ClusterLoadAssignment{}
	case policypb.TypeURL:
		m = &policypb.PolicySet{}
	default:
		return nil, fmt.Errorf("xds: unexpected type %s", typeURL)
	}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("xds: resource %q: %w", res.GetName(), err)
	}
	if err := m.(validator).ValidateAll(); err != nil {
		return nil, fmt.Errorf("xds: resource %q: %w", res.GetName(), err)
	}
	return m, nil
}

// handle applies one response, or rejects it whole (the returned error is
// the NACK's reason).
func (r *resolver) handle(resp *discoveryv3.DeltaDiscoveryResponse) error {
	tu := resp.GetTypeUrl()
	vs, ok := r.versions[tu]
	if !ok {
		return fmt.Errorf("xds: unexpected type %s", tu)
	}
	msgs := make(map[string]proto.Message, len(resp.GetResources()))
	for _, res := range resp.GetResources() {
		m, err := decode(tu, res)
		if err != nil {
			return err
		}
		var name string
		switch m := m.(type) {
		case *clusterv3.Cluster:
			name = m.GetName()
		case *endpointv3.ClusterLoadAssignment:
			name = m.GetClusterName()
		case *policypb.PolicySet:
			name = m.GetName()
		}
		if name != res.GetName() {
			return fmt.Errorf("xds: resource %q carries the name %q", res.GetName(), name)
		}
		if tu != policypb.TypeURL {
			if _, err := Target(name); err != nil {
				return err
			}
		}
		msgs[name] = m
	}
	var changed []string
	switch tu {
	case EndpointType:
		next := make(map[string][]endpoint, len(msgs))
		for name, m := range msgs {
			eps, err := endpoints(m.(*endpointv3.ClusterLoadAssignment))
			if err != nil {
				return err
			}
			next[name] = eps
		}
		for name, eps := range next {
			r.eps[name] = eps
			changed = append(changed, name)
		}
		for _, name := range resp.GetRemovedResources() {
			delete(r.eps, name)
			changed = append(changed, name)
		}
	case policypb.TypeURL:
		if err := r.updatePolicies(msgs, resp.GetRemovedResources()); err != nil {
			return err
		}
	}
	for _, res := range resp.GetResources() {
		vs[res.GetName()] = res.GetVersion()
	}
	for _, name := range resp.GetRemovedResources() {
		delete(vs, name)
	}
	r.push(changed)
	if tu == policypb.TypeURL { // the first answer: the stream works, the policies are in
		r.readyOnce.Do(func() { close(r.ready) })
	}
	return nil
}

// endpoints reads a ClusterLoadAssignment: socket addresses with their
// health (HEALTHY and UNKNOWN are healthy).
func endpoints(cla *endpointv3.ClusterLoadAssignment) ([]endpoint, error) {
	var out []endpoint
	for _, l := range cla.GetEndpoints() {
		for _, lb := range l.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil || sa.GetPortValue() == 0 || sa.GetAddress() == "" {
				return nil, fmt.Errorf("xds: %s: an endpoint without a socket address and port", cla.GetClusterName())
			}
			h := lb.GetHealthStatus()
			out = append(out, endpoint{
				addr:    joinHostPort(sa.GetAddress(), sa.GetPortValue()),
				healthy: h == corev3.HealthStatus_HEALTHY || h == corev3.HealthStatus_UNKNOWN,
			})
		}
	}
	return out, nil
}

// push tells the Updater about the targets named in changed: a target is
// known while it has a ClusterLoadAssignment.
func (r *resolver) push(changed []string) {
	for _, name := range changed {
		t, err := Target(name)
		if err != nil {
			continue
		}
		eps, hasEps := r.eps[name]
		if !hasEps {
			if r.pushed[t] {
				r.u.RemoveTarget(t)
				delete(r.pushed, t)
			}
			continue
		}
		list := make([]discovery.Endpoint, len(eps))
		for i, ep := range eps {
			list[i] = discovery.Endpoint{Address: ep.addr}
		}
		r.u.UpdateTarget(t, list)
		for _, ep := range eps {
			r.u.SetHealth(t, ep.addr, ep.healthy)
		}
		r.pushed[t] = true
	}
}

// updatePolicies applies a PolicySet change: the whole tree goes to the
// policy engine (apply), which may reject it.
func (r *resolver) updatePolicies(msgs map[string]proto.Message, removed []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make(map[string]*policypb.PolicySet, len(r.policies)+len(msgs))
	for n, ps := range r.policies {
		next[n] = ps
	}
	for n, m := range msgs {
		next[n] = m.(*policypb.PolicySet)
	}
	for _, n := range removed {
		delete(next, n)
	}
	list := make([]*policypb.PolicySet, 0, len(next))
	for _, ps := range next {
		list = append(list, ps)
	}
	fsys, err := policypb.FS(list)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	if r.apply != nil {
		if err := r.apply(fsys); err != nil {
			return err
		}
	}
	r.policies, r.polFS = next, fsys
	return nil
}
