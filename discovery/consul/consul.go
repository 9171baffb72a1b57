package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshd/meshd/discovery"
)

// Name is the --resolver value of this backend.
const Name = "consul"

// Tunables of the registered Builder.
const (
	// MaxTargets bounds how many targets one sidecar resolves at once
	// (watched or polled): apps can name any target, and each is a
	// goroutine and queries to the agent. Past it a new target is not
	// resolved until an idle one ends (logged once).
	MaxTargets = 4096
	// PollInterval is how often a target without a blocking query (past
	// maxWatches) is queried.
	PollInterval = 5 * time.Second
	// DefaultRecoveryGrace: after the agent was unreachable, an empty
	// answer for a target that had endpoints is held back this long, so a
	// restarted agent that lost its registrations (-dev) does not empty
	// every picker while the sidecars register again.
	DefaultRecoveryGrace = 5 * time.Second
	// EmptyConfirm: an answer that would empty a picker that has endpoints
	// is applied only when it still holds this long later with the agent
	// reachable. An agent that is being stopped first reports its node's
	// instances critical (it leaves the cluster), then stops answering:
	// without the wait every caller would drop every endpoint at that
	// moment. A truly gone last instance costs callers little meanwhile:
	// its refused connections eject it at once.
	EmptyConfirm = time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 2 * time.Second
)

func init() { discovery.Register(Builder{}) }

// Builder builds consul resolvers. The registered one uses the defaults.
type Builder struct {
	// RecoveryGrace overrides DefaultRecoveryGrace.
	RecoveryGrace time.Duration
}

var _ discovery.Builder = Builder{}

// Name implements discovery.Builder.
func (Builder) Name() string { return Name }

// Build implements discovery.Builder. It reads opts.ConfigFile (no file: the
// defaults), checks that the agent answers (a sidecar with a wrong address
// fails at start), and with selfRegister registers opts.Local. Targets are
// watched on demand (Watch).
func (b Builder) Build(ctx context.Context, opts discovery.BuildOptions, u discovery.Updater) (discovery.Resolver, error) {
	cfg := &Config{DaprPortMetaKey: DefaultDaprPortMetaKey}
	if opts.ConfigFile != "" {
		var err error
		if cfg, err = Load(opts.ConfigFile); err != nil {
			return nil, err
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resolver", Name)
	ac := cfg.apiConfig()
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul: client: %w", err)
	}
	bctx, cancelB := context.WithTimeout(ctx, 5*time.Second)
	defer cancelB()
	if _, err := client.Status().LeaderWithQueryOptions(new(api.QueryOptions).WithContext(bctx)); err != nil {
		return nil, fmt.Errorf("consul: agent %s does not answer: %w", ac.Address, err)
	}
	q, wait := cfg.queryOptions()
	grace := b.RecoveryGrace
	if grace <= 0 {
		grace = DefaultRecoveryGrace
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &resolver{
		cfg: cfg, client: client, u: u, log: log, q: q, wait: wait, grace: grace, flap: flapWindow,
		ctx: rctx, cancel: cancel, watches: map[discovery.Target]*watchHandle{},
		maxWatches: cfg.maxWatches(), poll: PollInterval,
	}
	if used, ok := u.(discovery.UsageTaker); ok {
		r.wg.Add(1)
		go r.sweepIdle(cfg.watchIdleTimeout(), used)
	}
	if cfg.SelfRegister && !opts.ReadOnly {
		if opts.Local.Target.AppID == "" || opts.Local.Address == "" {
			cancel()
			return nil, errors.New("consul: selfRegister needs the local instance (app ID and internal address)")
		}
		r.local = opts.Local.Target
		r.reg, err = cfg.registration(opts.Local.Target.AppID, opts.Local.Target.Namespace, opts.Local.Address, opts.Local.HealthURL)
		if err == nil {
			err = client.Agent().ServiceRegisterOpts(r.reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(bctx))
		}
		if err != nil {
			cancel()
			return nil, fmt.Errorf("consul: register %s: %w", opts.Local.Target, err)
		}
		r.healthURL = opts.Local.HealthURL
		log.Info("consul: registered", "service", r.reg.Name, "id", r.reg.ID, "address", opts.Local.Address, "checks", len(r.reg.Checks))
		r.wg.Add(1)
		go r.keepRegistered()
	}
	log.Info("consul: resolving through the agent", "address", ac.Address)
	return r, nil
}

type resolver struct {
	cfg    *Config
	client *api.Client
	u      discovery.Updater
	log    *slog.Logger
	q      api.QueryOptions
	wait   time.Duration
	grace  time.Duration
	flap   time.Duration // flapWindow

	local     discovery.Target
	reg       *api.AgentServiceRegistration
	healthURL string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	watching   sync.Map // discovery.Target -> *watchHandle: running, not stopping (lock-free fast path)
	mu         sync.Mutex
	watches    map[discovery.Target]*watchHandle // running or stopping
	slots      int                               // blocking queries allowed now (of maxWatches)
	maxWatches int
	poll       time.Duration // PollInterval
	polling    bool          // maxWatches reached (logged once)
	full       bool          // MaxTargets reached (logged once)
	closed     bool

	all         atomic.Bool  // WatchAll: every app of the catalog is watched
	down        atomic.Bool  // the agent is unreachable (logged once per outage)
	recoveredAt atomic.Int64 // unix nanos of the end of the last outage
	closeOnce   sync.Once
	closeErr    error
}

var _ discovery.Watcher = (*resolver)(nil)

// watchHandle is one target's watch. Its fields are guarded by
// resolver.mu.
type watchHandle struct {
	t        discovery.Target
	cancel   context.CancelFunc
	stopping bool // cancelled: it ends by removing t from the Cache
	rewatch  bool // a call wanted t while it was stopping: start again
	idle     int  // idle sweeps in a row (no call)
}

// Watch implements discovery.Watcher: it starts one watch goroutine for t
// unless one runs. Called on the call path; it never touches the network.
func (r *resolver) Watch(t discovery.Target) {
	if _, ok := r.watching.Load(t); ok {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if h := r.watches[t]; h != nil {
		if h.stopping {
			h.rewatch = true // started again when the old watch is gone
		}
		r.mu.Unlock()
		return
	}
	full := r.startLocked(t)
	r.mu.Unlock()
	if full {
		r.log.Error("consul: too many targets resolved at once; not resolving more until idle ones end",
			"max", MaxTargets, "target", t.String())
	}
}

// startLocked starts the watch of t; full is true the first time
// MaxTargets stops it (to be logged). r.mu is held.
func (r *resolver) startLocked(t discovery.Target) (full bool) {
	if len(r.watches) >= MaxTargets {
		full, r.full = !r.full, true
		return full
	}
	ctx, cancel := context.WithCancel(r.ctx)
	h := &watchHandle{t: t, cancel: cancel}
	r.watches[t] = h
	r.watching.Store(t, h)
	r.wg.Add(1)
	go r.watch(ctx, h)
	return false
}

// stopLocked cancels h's watch; the watch then removes its target from the
// Cache and from r.watches (watchEnded). r.mu is held.
func (r *resolver) stopLocked(h *watchHandle) {
	h.stopping = true
	h.cancel()
	r.watching.Delete(h.t)
}

// takeSlot reserves one of the maxWatches blocking queries; false means
// the watch polls (every PollInterval) until one is free.
func (r *resolver) takeSlot(t discovery.Target) bool {
	r.mu.Lock()
	if r.slots < r.maxWatches {
		r.slots++
		r.mu.Unlock()
		return true
	}
	first := !r.polling
	r.polling = true
	r.mu.Unlock()
	if first {
		r.log.Warn("consul: more targets called than maxWatches; the others are polled every "+r.poll.String()+" until a blocking query is free",
			"maxWatches", r.maxWatches, "target", t.String())
	}
	return false
}

func (r *resolver) releaseSlot() {
	r.mu.Lock()
	r.slots--
	r.mu.Unlock()
}

// watchEnded runs when a watch goroutine returns. A watch stopped for
// idleness removes its target from the Cache, after its last update, so the
// next call resolves the target afresh; on Close the Cache keeps the last
// endpoints.
func (r *resolver) watchEnded(h *watchHandle) {
	if r.ctx.Err() != nil {
		return
	}
	r.u.RemoveTarget(h.t)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.watches, h.t)
	if h.rewatch && !r.closed {
		r.startLocked(h.t) // one fewer than before: never full
	}
}

// sweepIdle ends the watches of targets without calls: every idle/2 it asks
// the Cache which targets were picked, and stops a watch after two idle
// sweeps in a row (between idle and 1.5 × idle without a call).
func (r *resolver) sweepIdle(idle time.Duration, used discovery.UsageTaker) {
	defer r.wg.Done()
	tick := time.NewTicker(idle / 2)
	defer tick.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		if r.down.Load() {
			continue // the cached endpoints are all there is: keep them
		}
		var stopped []string
		r.mu.Lock()
		for _, h := range r.watches {
			if h.stopping {
				continue
			}
			if used.TakeUsed(h.t) {
				h.idle = 0
				continue
			}
			if h.idle++; h.idle >= 2 {
				stopped = append(stopped, h.t.String())
				r.stopLocked(h)
			}
		}
		r.mu.Unlock()
		for _, t := range stopped {
			r.log.Info("consul: no calls to target; watch stopped", "target", t, "idleFor", idle.String())
		}
	}
}

// flapWindow: an error this soon after a recovery (an agent answering
// before it has a leader) belongs to the same outage and is not logged again.
const flapWindow = 10 * time.Second

// agentDown records an error talking to the agent; the first one of an
// outage is logged and reported.
func (r *resolver) agentDown(err error) {
	if !r.down.CompareAndSwap(false, true) {
		return
	}
	err = fmt.Errorf("consul: agent unreachable, serving cached endpoints: %w", err)
	if time.Since(time.Unix(0, r.recoveredAt.Load())) < r.flap {
		r.log.Debug("consul: agent unreachable again (same outage)", "err", err)
		return
	}
	r.log.Warn("consul: agent unreachable; callers keep the endpoints they have, retrying with backoff", "err", err)
	r.u.ReportError(err)
}

func (r *resolver) agentUp() {
	if r.down.CompareAndSwap(true, false) {
		r.recoveredAt.Store(time.Now().UnixNano())
		r.log.Info("consul: agent reachable again; watches resume")
	}
}

// sleep waits d or until ctx is done; false means done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func backoff(n int) time.Duration {
	d := minBackoff << min(n, 5)
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// watch runs blocking queries for h's target until ctx ends (Close, or the
// watch is stopped) and pushes every change.
func (r *resolver) watch(ctx context.Context, h *watchHandle) {
	defer r.wg.Done()
	defer r.watchEnded(h)
	t := h.t
	var (
		index    uint64
		last     []discovery.Endpoint
		pushed   bool
		failures int
		// emptySince is when an answer would first have emptied the picker.
		emptySince time.Time
		slot       bool // this watch holds one of the maxWatches blocking queries
		polled     bool // the last query was a poll: wait before the next
	)
	defer func() {
		if slot {
			r.releaseSlot()
		}
	}()
	for ctx.Err() == nil {
		if !slot {
			slot = r.takeSlot(t)
		}
		if polled && !slot {
			d := r.poll
			if !emptySince.IsZero() {
				d = min(d, max(EmptyConfirm-time.Since(emptySince), 50*time.Millisecond))
			}
			if !sleep(ctx, d) {
				return
			}
		}
		q := r.q
		q.WaitIndex = index
		q.WaitTime = r.wait
		if !emptySince.IsZero() {
			q.WaitTime = max(EmptyConfirm-time.Since(emptySince), 50*time.Millisecond) // confirm then
		} else if since := time.Since(time.Unix(0, r.recoveredAt.Load())); pushed && len(last) > 0 && since < r.grace {
			q.WaitTime = max(r.grace-since, 50*time.Millisecond) // re-check when the grace ends
		}
		if polled = !slot; polled {
			q.WaitIndex = 0 // answers at once: no connection held between polls
		}
		began := time.Now()
		entries, meta, err := r.client.Health().Service(t.AppID, "", true, q.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.agentDown(err)
			index = 0
			emptySince = time.Time{} // the agent went away: keep the last set
			if !pushed {
				// The first call waits for an answer: give it one (none).
				r.u.UpdateTarget(t, nil)
				pushed = true
			}
			if !sleep(ctx, backoff(failures)) {
				return
			}
			failures++
			polled = false // the backoff was the wait
			continue
		}
		failures = 0
		r.agentUp()
		if slot && index != 0 && meta.LastIndex == index && time.Since(began) < 10*time.Millisecond {
			// A blocking query that returns at once without a change (an
			// index that does not move): do not spin.
			if !sleep(ctx, 100*time.Millisecond) {
				return
			}
		}
		if meta.LastIndex < index {
			index = 0 // the index went backwards (a new agent): start over
		} else {
			index = meta.LastIndex
		}
		if r.all.Load() {
			r.watchOtherNamespaces(t, entries)
		}
		eps := r.endpoints(t, entries)
		if len(eps) == 0 && len(last) > 0 {
			if time.Since(time.Unix(0, r.recoveredAt.Load())) < r.grace {
				continue // a restarted agent that does not know the instances yet
			}
			if emptySince.IsZero() {
				emptySince = time.Now()
			}
			if time.Since(emptySince) < EmptyConfirm || r.down.Load() {
				continue
			}
		}
		emptySince = time.Time{}
		if pushed && slices.Equal(eps, last) {
			continue
		}
		r.u.UpdateTarget(t, eps)
		if pushed {
			r.log.Debug("consul: endpoints changed", "target", t.String(), "endpoints", len(eps))
		}
		last, pushed = eps, true
	}
}

// endpoints keeps the entries of t's namespace and returns their internal
// addresses, sorted.
func (r *resolver) endpoints(t discovery.Target, entries []*api.ServiceEntry) []discovery.Endpoint {
	out := make([]discovery.Endpoint, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		ns := e.Service.Meta[NamespaceMetaKey]
		if ns == "" {
			ns = discovery.DefaultNamespace
		}
		if ns != t.Namespace {
			continue
		}
		ps, ok := e.Service.Meta[r.cfg.DaprPortMetaKey]
		port, err := strconv.ParseUint(ps, 10, 16)
		if !ok || err != nil || port == 0 {
			r.log.Debug("consul: instance without a valid internal port in meta; skipped",
				"target", t.String(), "id", e.Service.ID, "key", r.cfg.DaprPortMetaKey, "value", ps)
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			continue
		}
		out = append(out, discovery.Endpoint{Address: net.JoinHostPort(host, ps)})
	}
	slices.SortFunc(out, func(a, b discovery.Endpoint) int {
		switch {
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	return slices.CompactFunc(out, func(a, b discovery.Endpoint) bool { return a == b })
}

// keepRegistered watches the local registration with hash-blocking queries
// and registers again when the agent does not know it (an agent restarted
// without state, or a registration removed by hand).
func (r *resolver) keepRegistered() {
	defer r.wg.Done()
	var (
		hash     string
		failures int
	)
	for r.ctx.Err() == nil {
		q := &api.QueryOptions{WaitHash: hash, WaitTime: r.wait}
		_, meta, err := r.client.Agent().Service(r.reg.ID, q.WithContext(r.ctx))
		if err == nil {
			r.agentUp()
			failures = 0
			hash = meta.LastContentHash
			continue
		}
		if r.ctx.Err() != nil {
			return
		}
		hash = ""
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			r.agentUp()
			if err = r.register(); err == nil {
				r.log.Info("consul: registered again (the agent had lost the registration)", "id", r.reg.ID)
				failures = 0
				continue
			}
			r.log.Warn("consul: register again", "id", r.reg.ID, "err", err)
		} else {
			r.agentDown(err)
		}
		if !sleep(r.ctx, backoff(failures)) {
			return
		}
		failures++
	}
}

// register registers the instance again, with the checks' initial status
// taken from a probe of the health URL, so a healthy instance is passing at
// once instead of critical until the check's first run.
func (r *resolver) register() error {
	reg := *r.reg
	if r.healthURL != "" && len(r.cfg.Checks) == 0 && len(reg.Checks) == 1 {
		c := *reg.Checks[0]
		c.Status = api.HealthCritical
		if r.probe() {
			c.Status = api.HealthPassing
		}
		reg.Checks = api.AgentServiceChecks{&c}
	}
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	return r.client.Agent().ServiceRegisterOpts(&reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx))
}

func (r *resolver) probe() bool {
	ctx, cancel := context.WithTimeout(r.ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.healthURL, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

// Close implements discovery.Resolver: it stops the watches (the Cache
// keeps the last endpoints) and, with selfDeregister, deregisters the local
// instance.
func (r *resolver) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.cancel()
		r.wg.Wait()
		if r.reg != nil && r.cfg.selfDeregister() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if err := r.client.Agent().ServiceDeregisterOpts(r.reg.ID, new(api.QueryOptions).WithContext(ctx)); err != nil {
				r.closeErr = fmt.Errorf("consul: deregister %s: %w", r.reg.ID, err)
				r.log.Warn("consul: deregister failed; the check will take the instance out", "err", err)
			} else {
				r.log.Info("consul: deregistered", "id", r.reg.ID)
			}
		}
	})
	return r.closeErr
}
