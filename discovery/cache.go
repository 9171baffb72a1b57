package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultBaseEjectionTime   = 5 * time.Second
	DefaultMaxEjectionTime    = 30 * time.Second
	DefaultMaxEjectionPercent = 100
	// DefaultMaxOutlierEjectionPercent is Options.MaxOutlierEjectionPercent's
	// default.
	DefaultMaxOutlierEjectionPercent = 50
	// DefaultConsecutiveFailures is Options.ConsecutiveFailures' default.
	DefaultConsecutiveFailures = 5
	// DefaultFirstResolveTimeout is Options.FirstResolveTimeout's default.
	DefaultFirstResolveTimeout = 2 * time.Second
	// DefaultProbeInterval is Options.ProbeInterval's default.
	DefaultProbeInterval = 200 * time.Millisecond
)

// clockBase is the origin of the monotonic clock of the probe times: a
// wall-clock step does not move them.
var clockBase = time.Now()

// Options tune a Cache. The zero value gives the defaults.
type Options struct {
	// BaseEjectionTime is how long an endpoint stays out of the picker after
	// its first failure (default 5s). Each further ejection without a
	// successful call in between doubles it.
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps the doubled ejection time (default 30s).
	MaxEjectionTime time.Duration
	// MaxEjectionPercent is the largest share of a target's endpoints that
	// may be ejected at once, 1..100 (default 100; other values mean 100).
	// A failure that would pass the share leaves the endpoint in.
	//
	// The default lets every endpoint be ejected: when all instances of an
	// app are down, Pick answers ErrNoHealthyEndpoint at once (a fast 503)
	// instead of sending each call to a dead address, except for one probe
	// call every ProbeInterval, which goes to an ejected endpoint: an app
	// that comes back is reached again with its first probe, not only when
	// its ejection time is up.
	MaxEjectionPercent int
	// ProbeInterval spaces the probes of a target whose every endpoint
	// (of those the backend calls healthy) is ejected: the Picker lets one
	// call through to an ejected endpoint (round robin) per interval, and a
	// probe that gets an answer (any status) puts its endpoint back at once
	// (default 200ms). The other calls meanwhile fail fast with
	// ErrNoHealthyEndpoint. Endpoints the backend marks unhealthy are never
	// probed.
	ProbeInterval time.Duration
	// ConsecutiveFailures is how many failed exchanges in a row
	// (ReportResult with a 5xx status, or with 0 for a connection that broke
	// after it was made) eject an endpoint (default 5). ReportFailure (a
	// refused connection, an "app unhealthy" short-circuit) ejects at once.
	// The count starts again after every success and every return.
	ConsecutiveFailures int
	// MaxOutlierEjectionPercent further caps the share of endpoints that
	// counted failures (ConsecutiveFailures) may eject, 1..100 (default 50;
	// out of range means 50). A 5xx is often the app's answer to one bad
	// request, which every instance gives alike: without this cap a client
	// repeating it would eject them all. With one endpoint nothing is
	// ejected for 5xx: its 500 is more useful to the caller than a 503.
	MaxOutlierEjectionPercent int
	// CheckInterval spaces the checks of an ejected endpoint by the
	// Checker set with SetChecker (default 500ms): a passing check puts it
	// back at once, within about this interval of its recovery.
	CheckInterval time.Duration
	// CheckTimeout bounds one check (default 1s).
	CheckTimeout time.Duration
	// FirstResolveTimeout bounds WaitTarget: how long the first call to a
	// target an on-demand backend (a Watcher) does not know yet waits for
	// its first answer (default 2s).
	FirstResolveTimeout time.Duration
	// Logger receives ejections and backend errors; nil means slog.Default().
	Logger *slog.Logger
}

// Cache is the watch-fed endpoint store of the data plane. Backends push
// into it (it implements Updater); the proxy reads it with Pick.
//
// Reads take no lock: the targets are an immutable map behind an atomic
// pointer, replaced copy-on-write on every update, and each target has an
// immutable round-robin picker behind an atomic pointer, rebuilt on every
// change (update, health, ejection, return). Writers serialize on one mutex.
//
// A Cache must be made with NewCache and should be closed with Close, which
// stops the ejection timers.
type Cache struct {
	targets atomic.Pointer[map[Target]*entry]

	opts Options
	log  *slog.Logger

	mu      sync.Mutex // serializes writers; guards the fields below and endpointState
	subs    map[int]func(Event)
	nextSub int
	closed  bool
	waiters map[Target]chan struct{} // WaitTarget: closed when the target appears

	watcher atomic.Pointer[watcherRef]
	checker atomic.Pointer[checkerRef]

	// ctx ends with Close: it stops the checks of ejected endpoints.
	ctx    context.Context
	cancel context.CancelFunc
}

type watcherRef struct{ w Watcher }

var _ Updater = (*Cache)(nil)

// entry is one target. Its endpoint list and index are immutable once
// published; a change of the set makes a new entry. Only the picker moves.
type entry struct {
	eps    []*endpointState // backend order
	byAddr map[string]*endpointState
	picker atomic.Pointer[picker]
	// used is set by Pick and taken by TakeUsed; shared by the entries
	// that follow each other for one target.
	used *atomic.Bool
	// probeAt is the earliest time (nanoseconds since clockBase) of the
	// next probe of an ejected endpoint while none is ready.
	probeAt atomic.Int64
}

// endpointState is one endpoint's health and ejection state. It survives
// updates that keep its address.
type endpointState struct {
	ep    Endpoint
	done  func(DoneInfo) // PickResult.Done: c.settle(target, this)
	probe func(DoneInfo) // PickResult.Done of a probe: c.settleProbe(target, this)

	// ejected and ejections are written under Cache.mu and read without it
	// by ReportFailure and ReportSuccess to skip the lock on the common path.
	ejected   atomic.Bool
	ejections atomic.Int32 // ejections since the last success
	fails     atomic.Int32 // failed exchanges in a row (ReportResult)
	// checkFailed: the last check of the current ejection failed (the
	// ejection timer then keeps the endpoint out).
	checkFailed atomic.Bool

	unhealthy bool        // Cache.mu
	ejectSeq  uint64      // Cache.mu: identifies the current ejection timer
	timer     *time.Timer // Cache.mu
}

// picker is an immutable set of ready endpoints plus a round-robin counter.
type picker struct {
	next atomic.Uint64
	_    [56]byte // keep the contended counter off the line of eps
	eps  []*endpointState
	// ejected are the endpoints out only by ejection (the backend calls
	// them healthy): the candidates of a probe when eps is empty.
	ejected []*endpointState
}

func (p *picker) pick() (*endpointState, bool) {
	n := uint64(len(p.eps))
	if n == 0 {
		return nil, false
	}
	return p.eps[(p.next.Add(1)-1)%n], true
}

// NewCache returns an empty Cache.
func NewCache(opts Options) *Cache {
	if opts.BaseEjectionTime <= 0 {
		opts.BaseEjectionTime = DefaultBaseEjectionTime
	}
	if opts.MaxEjectionTime <= 0 {
		opts.MaxEjectionTime = DefaultMaxEjectionTime
	}
	if opts.MaxEjectionTime < opts.BaseEjectionTime {
		opts.MaxEjectionTime = opts.BaseEjectionTime
	}
	if opts.MaxEjectionPercent < 1 || opts.MaxEjectionPercent > 100 {
		opts.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	if opts.MaxOutlierEjectionPercent < 1 || opts.MaxOutlierEjectionPercent > 100 {
		opts.MaxOutlierEjectionPercent = DefaultMaxOutlierEjectionPercent
	}
	if opts.ConsecutiveFailures <= 0 {
		opts.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if opts.FirstResolveTimeout <= 0 {
		opts.FirstResolveTimeout = DefaultFirstResolveTimeout
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Cache{opts: opts, log: log, subs: map[int]func(Event){}, waiters: map[Target]chan struct{}{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	empty := map[Target]*entry{}
	c.targets.Store(&empty)
	return c
}

// Pick returns the next ready endpoint of t in round-robin order. It returns
// the bare sentinel ErrUnknownTarget when no backend knows t, and
// ErrNoHealthyEndpoint when t is known but every endpoint is unhealthy or
// ejected. It neither locks nor allocates.
//
// When the resolver is a Watcher (it resolves targets on demand), Pick of an
// unknown target tells it to start watching t and still answers
// ErrUnknownTarget at once: it never waits for the network. A caller that
// wants to wait for the first answer calls WaitTarget and picks again.
func (c *Cache) Pick(t Target) (Endpoint, error) {
	e := c.lookup(t)
	if e == nil {
		if w := c.watcher.Load(); w != nil {
			w.w.Watch(t)
		}
		return Endpoint{}, ErrUnknownTarget
	}
	st, ok := c.pickEntry(e)
	if !ok {
		return Endpoint{}, ErrNoHealthyEndpoint
	}
	return st.ep, nil
}

// pickEntry is the round robin of Pick and of the Picker.
func (c *Cache) pickEntry(e *entry) (*endpointState, bool) {
	if !e.used.Load() { // a load, and a store once per TakeUsed
		e.used.Store(true)
	}
	return e.picker.Load().pick()
}

// UsageTaker is implemented by Updaters that see the calls (the Cache): an
// on-demand backend (a Watcher) asks it which of its targets are still
// called, and stops watching the others.
type UsageTaker interface {
	// TakeUsed reports whether Pick was called for t since the last
	// TakeUsed of t (or since t appeared), and starts a new period.
	TakeUsed(t Target) bool
}

var _ UsageTaker = (*Cache)(nil)

// TakeUsed implements UsageTaker. It neither locks nor allocates.
func (c *Cache) TakeUsed(t Target) bool {
	e := c.lookup(t)
	return e != nil && e.used.Swap(false)
}

func (c *Cache) lookup(t Target) *entry {
	m := c.targets.Load()
	if m == nil {
		return nil
	}
	return (*m)[t]
}

func (c *Cache) state(t Target, addr string) *endpointState {
	e := c.lookup(t)
	if e == nil {
		return nil
	}
	return e.byAddr[addr]
}

// ReportFailure says a call to addr failed in a way that shows the endpoint
// is bad (connection refused, or its sidecar short-circuited with "app
// unhealthy"). The endpoint is ejected at once, unless it already is or
// MaxEjectionPercent forbids it. Unknown targets and addresses are ignored.
func (c *Cache) ReportFailure(t Target, addr string) {
	if st := c.state(t, addr); st != nil {
		c.reportFailure(t, st)
	}
}

func (c *Cache) reportFailure(t Target, st *endpointState) {
	if st.ejected.Load() {
		return // concurrent failures of an ejected endpoint: nothing to do
	}
	c.eject(t, st.ep.Address, st, "failure", c.opts.MaxEjectionPercent, true)
}

// ReportResult reports the outcome of one exchange with addr: status is the
// HTTP status of the answer, or 0 when the connection broke after it was
// made (reset, stream error). Passive outlier detection: ConsecutiveFailures
// answers of 0 or 5xx in a row eject the endpoint (within
// MaxEjectionPercent and MaxOutlierEjectionPercent); any other status
// counts as ReportSuccess. On the
// common path (a success after a success) it does two map reads and two
// atomic loads, without lock or allocation.
func (c *Cache) ReportResult(t Target, addr string, status int) {
	st := c.state(t, addr)
	switch {
	case st == nil:
	case status != 0 && (status < 500 || status > 599):
		c.reportSuccess(st)
	default:
		c.reportFailed(t, st)
	}
}

// reportFailed counts one failed exchange with st in a row.
func (c *Cache) reportFailed(t Target, st *endpointState) {
	if st.ejected.Load() {
		return
	}
	if st.fails.Add(1) < int32(c.opts.ConsecutiveFailures) {
		return
	}
	c.eject(t, st.ep.Address, st, "consecutive failures", min(c.opts.MaxEjectionPercent, c.opts.MaxOutlierEjectionPercent), false)
}

// eject takes st out of t's picker unless more than maxPercent of t's
// endpoints would then be out. check says whether a Checker may bring it
// back early: for an endpoint found unreachable (a Down report), not for
// one ejected by counted 5xx answers, which a check (the sidecar and its
// app answer) cannot tell gone. It takes c.mu.
func (c *Cache) eject(t Target, addr string, st *endpointState, why string, maxPercent int, check bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	e := c.lookup(t)
	if e == nil || e.byAddr[addr] != st || st.ejected.Load() {
		return
	}
	ejected := 0
	for _, s := range e.eps {
		if s.ejected.Load() {
			ejected++
		}
	}
	if (ejected+1)*100 > maxPercent*len(e.eps) {
		c.log.Debug("discovery: not ejecting endpoint: max ejection share reached",
			"target", t.String(), "addr", addr, "ejected", ejected, "total", len(e.eps))
		return
	}
	n := st.ejections.Add(1)
	d := c.ejectionTime(n)
	st.ejected.Store(true)
	st.fails.Store(0)
	st.ejectSeq++
	seq := st.ejectSeq
	st.timer = time.AfterFunc(d, func() { c.unEject(t, st, seq) })
	st.checkFailed.Store(false)
	if check {
		c.startCheck(t, st, seq)
	}
	ready := c.rebuild(e)
	c.log.Info("discovery: endpoint ejected", "target", t.String(), "addr", addr, "why", why,
		"for", d, "ejections", n, "ready", ready, "total", len(e.eps))
	c.emit(Event{Kind: EventEjected, Target: t, Addr: addr, EjectedFor: d, Ready: ready, Total: len(e.eps)})
}

// ejectionTime is BaseEjectionTime doubled n-1 times, capped.
func (c *Cache) ejectionTime(n int32) time.Duration {
	d := c.opts.BaseEjectionTime
	for i := int32(1); i < n && d < c.opts.MaxEjectionTime; i++ {
		d *= 2
	}
	return min(d, c.opts.MaxEjectionTime)
}

func (c *Cache) unEject(t Target, st *endpointState, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || st.ejectSeq != seq || !st.ejected.Load() {
		return
	}
	if c.extendLocked(t, st, seq) {
		return
	}
	st.ejected.Store(false)
	st.fails.Store(0)
	st.timer = nil
	st.ejectSeq++ // ends the checks of this ejection
	e := c.lookup(t)
	if e == nil || e.byAddr[st.ep.Address] != st {
		return // removed meanwhile
	}
	ready := c.rebuild(e)
	c.log.Debug("discovery: endpoint back in", "target", t.String(), "addr", st.ep.Address)
	c.emit(Event{Kind: EventReturned, Target: t, Addr: st.ep.Address, Ready: ready, Total: len(e.eps)})
}

// ReportSuccess says a call through addr succeeded: its count of failures
// in a row and its ejection multiplier go back to zero and one. On the
// common path (no failure since the last success) it only does two map
// reads and two atomic loads.
func (c *Cache) ReportSuccess(t Target, addr string) {
	if st := c.state(t, addr); st != nil {
		c.reportSuccess(st)
	}
}

func (c *Cache) reportSuccess(st *endpointState) {
	if st.fails.Load() != 0 {
		st.fails.Store(0)
	}
	if st.ejections.Load() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A call that began before the ejection may succeed while the endpoint
	// is out; the multiplier is reset only once the endpoint is back.
	if !st.ejected.Load() {
		st.ejections.Store(0)
	}
}

// SetHealth implements Updater.
func (c *Cache) SetHealth(t Target, addr string, healthy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	e := c.lookup(t)
	if e == nil {
		return
	}
	st := e.byAddr[addr]
	if st == nil || st.unhealthy == !healthy {
		return
	}
	st.unhealthy = !healthy
	ready := c.rebuild(e)
	c.emit(Event{Kind: EventHealthChanged, Target: t, Addr: addr, Healthy: healthy, Ready: ready, Total: len(e.eps)})
}

// UpdateTarget implements Updater.
func (c *Cache) UpdateTarget(t Target, eps []Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	old := *c.targets.Load()
	ne, changed := c.makeEntry(t, old[t], eps)
	if !changed {
		return
	}
	m := make(map[Target]*entry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[t] = ne
	c.targets.Store(&m)
	c.wake(t)
	c.emitUpdated(t, ne)
}

// RemoveTarget implements Updater.
func (c *Cache) RemoveTarget(t Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	old := *c.targets.Load()
	oe, ok := old[t]
	if !ok {
		return
	}
	m := make(map[Target]*entry, len(old))
	for k, v := range old {
		if k != t {
			m[k] = v
		}
	}
	c.targets.Store(&m)
	retire(oe.eps, nil)
	c.emit(Event{Kind: EventRemoved, Target: t})
}

// ReplaceAll implements Updater.
func (c *Cache) ReplaceAll(all map[Target][]Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	old := *c.targets.Load()
	m := make(map[Target]*entry, len(all))
	var updated []Target
	for t, eps := range all {
		ne, changed := c.makeEntry(t, old[t], eps)
		m[t] = ne
		if changed {
			updated = append(updated, t)
		}
	}
	var removed []Target
	for t, oe := range old {
		if _, ok := m[t]; !ok {
			removed = append(removed, t)
			retire(oe.eps, nil)
		}
	}
	if len(updated) == 0 && len(removed) == 0 {
		return
	}
	c.targets.Store(&m)
	for _, t := range updated {
		c.wake(t)
	}
	for _, t := range removed {
		c.emit(Event{Kind: EventRemoved, Target: t})
	}
	for _, t := range updated {
		c.emitUpdated(t, m[t])
	}
}

// wake releases the WaitTarget calls waiting for t. Called with c.mu held,
// after t was published.
func (c *Cache) wake(t Target) {
	if ch, ok := c.waiters[t]; ok {
		close(ch)
		delete(c.waiters, t)
	}
}

// Watcher is implemented by Resolvers that resolve targets on demand
// (consul): rather than watching every app, they watch the targets the
// sidecar calls. Cache.Build hands such a Resolver to the Cache it
// builds into; the Cache then calls Watch on every Pick of a target it does
// not know yet.
//
// Watch must return at once without network I/O (it runs on the call path):
// it starts a watch of t unless one runs already, and the watch pushes t's
// endpoints (UpdateTarget; possibly none) as soon as it has its first answer.
// It is called again and again until that answer arrives, so the
// already-watching case must be cheap.
type Watcher interface {
	Watch(t Target)
}

// SetWatcher makes the Cache ask w to watch the targets Pick does not know.
// Cache.Build calls it for Resolvers that implement Watcher; nil stops
// the calls.
func (c *Cache) SetWatcher(w Watcher) {
	if w == nil {
		c.watcher.Store(nil)
		return
	}
	c.watcher.Store(&watcherRef{w})
}

// WaitTarget waits until t is known, for the first call to a target an
// on-demand backend (a Watcher) has not resolved yet: it asks the watcher to
// watch t and waits for its first answer, at most FirstResolveTimeout or
// until ctx is done. Without a watcher it answers at once: nil if t is
// known, ErrUnknownTarget if not. Errors wrap ErrUnknownTarget.
func (c *Cache) WaitTarget(ctx context.Context, t Target) error {
	if c.lookup(t) != nil {
		return nil
	}
	w := c.watcher.Load()
	if w == nil {
		return ErrUnknownTarget
	}
	c.mu.Lock()
	if c.lookup(t) != nil {
		c.mu.Unlock()
		return nil
	}
	if c.closed {
		c.mu.Unlock()
		return ErrUnknownTarget
	}
	ch, ok := c.waiters[t]
	if !ok {
		ch = make(chan struct{})
		c.waiters[t] = ch
	}
	c.mu.Unlock()
	w.w.Watch(t)
	timer := time.NewTimer(c.opts.FirstResolveTimeout)
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-timer.C:
		return fmt.Errorf("%w: %s not resolved within %s", ErrUnknownTarget, t, c.opts.FirstResolveTimeout)
	case <-ctx.Done():
		return fmt.Errorf("%w: %s: %w", ErrUnknownTarget, t, ctx.Err())
	}
}

// ReportError implements Updater: it tells subscribers (metrics). It does not
// log: the backend logs its own errors, with their context.
func (c *Cache) ReportError(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.emit(Event{Kind: EventError, Err: err})
}

// makeEntry builds the entry for a new endpoint set, keeping the state of
// addresses that stay. It returns old itself (changed false) when the set is
// the same, in the same order. Called with c.mu held.
func (c *Cache) makeEntry(t Target, old *entry, eps []Endpoint) (*entry, bool) {
	ne := &entry{
		eps:    make([]*endpointState, 0, len(eps)),
		byAddr: make(map[string]*endpointState, len(eps)),
	}
	for _, ep := range eps {
		if ep.Address == "" {
			continue
		}
		if _, dup := ne.byAddr[ep.Address]; dup {
			continue
		}
		var st *endpointState
		if old != nil {
			st = old.byAddr[ep.Address]
		}
		if st == nil {
			st = &endpointState{ep: ep}
			st.done = func(d DoneInfo) { c.settle(t, st, d) }
			st.probe = func(d DoneInfo) { c.settleProbe(t, st, d) }
		}
		ne.eps = append(ne.eps, st)
		ne.byAddr[ep.Address] = st
	}
	if old != nil && slices.Equal(old.eps, ne.eps) {
		return old, false
	}
	if old != nil {
		retire(old.eps, ne.byAddr)
	}
	var next uint64
	if old != nil {
		next = old.picker.Load().next.Load() // carry on the rotation
		ne.used = old.used
	} else {
		ne.used = new(atomic.Bool)
	}
	ne.picker.Store(newPicker(ne.eps, next))
	return ne, true
}

// retire stops the timers of the endpoints of eps that are not in keep.
func retire(eps []*endpointState, keep map[string]*endpointState) {
	for _, st := range eps {
		if keep[st.ep.Address] == st {
			continue
		}
		if st.timer != nil {
			st.timer.Stop()
			st.timer = nil
		}
		st.ejectSeq++ // a timer already firing finds a stale sequence
	}
}

// rebuild publishes a new picker for e and returns its size. Called with
// c.mu held.
func (c *Cache) rebuild(e *entry) int {
	p := newPicker(e.eps, e.picker.Load().next.Load())
	e.picker.Store(p)
	return len(p.eps)
}

func newPicker(eps []*endpointState, next uint64) *picker {
	p := &picker{eps: make([]*endpointState, 0, len(eps))}
	for _, st := range eps {
		switch {
		case st.unhealthy:
		case st.ejected.Load():
			p.ejected = append(p.ejected, st)
		default:
			p.eps = append(p.eps, st)
		}
	}
	p.next.Store(next)
	return p
}

func (c *Cache) emitUpdated(t Target, e *entry) {
	c.emit(Event{Kind: EventUpdated, Target: t, Ready: len(e.picker.Load().eps), Total: len(e.eps)})
}

// emit calls the subscribers. Called with c.mu held.
func (c *Cache) emit(ev Event) {
	for _, fn := range c.subs {
		fn(ev)
	}
}

// Subscribe calls fn for every change of the Cache, in the order the changes
// happen, synchronously from the goroutine that made the change, while the
// Cache's write lock is held: fn must return quickly and must not call the
// Cache's writing methods (UpdateTarget, RemoveTarget, ReplaceAll, SetHealth,
// ReportFailure, ReportSuccess, ReportError, Subscribe, Close). Reads (Pick,
// Endpoints, Targets) are fine. When fn runs, the change is already visible
// to Pick. The returned function unsubscribes.
func (c *Cache) Subscribe(fn func(Event)) (unsubscribe func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextSub
	c.nextSub++
	c.subs[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs, id)
	}
}

// Endpoints returns every known endpoint of t, ready or not, in the order
// the backend gave them (nil if t is unknown).
func (c *Cache) Endpoints(t Target) []Endpoint {
	e := c.lookup(t)
	if e == nil {
		return nil
	}
	out := make([]Endpoint, len(e.eps))
	for i, st := range e.eps {
		out[i] = st.ep
	}
	return out
}

// Ready returns the endpoints Pick currently rotates over for t.
func (c *Cache) Ready(t Target) []Endpoint {
	e := c.lookup(t)
	if e == nil {
		return nil
	}
	sts := e.picker.Load().eps
	out := make([]Endpoint, len(sts))
	for i, st := range sts {
		out[i] = st.ep
	}
	return out
}

// Targets returns the known targets, in no particular order.
func (c *Cache) Targets() []Target {
	m := *c.targets.Load()
	out := make([]Target, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	return out
}

// Close stops the ejection timers. Afterwards the Cache still answers Pick
// with its last state but ignores updates.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.cancel()
	for _, e := range *c.targets.Load() {
		retire(e.eps, nil)
	}
	return nil
}
