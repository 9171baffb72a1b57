package discovery

import (
	"context"
	"time"
)

// Picker is the proxy's side of discovery, its one contract with it: for
// every attempt of a call the proxy picks an endpoint, and the pick hands
// back its own report (grpc-go's PickResult.Done). The Cache's Picker
// implements it.
//
// Pick must not touch the network. It may wait, bounded by ctx, only for a
// target an on-demand backend (a Watcher) has not resolved yet.
type Picker interface {
	// Pick returns an endpoint of t. Its errors wrap ErrUnknownTarget or
	// ErrNoHealthyEndpoint.
	Pick(ctx context.Context, t Target) (PickResult, error)
}

// PickResult is one pick: the endpoint and the report of the attempt made
// to it.
type PickResult struct {
	Endpoint
	// Done, if not nil, takes the outcome of the attempt made to Endpoint;
	// an attempt that says nothing about the endpoint (the caller went
	// away) does not call it. It must return quickly (no I/O) and is safe
	// for concurrent use.
	Done func(DoneInfo)
}

// DoneInfo is the outcome of one attempt to an endpoint.
type DoneInfo struct {
	// Down says the endpoint is bad beyond doubt: it refused the
	// connection, or its sidecar short-circuited with "app unhealthy". It
	// is ejected at once (within Options.MaxEjectionPercent).
	Down bool
	// Status is the HTTP status of the answer, or 0 when the connection
	// broke after it was made. Status 0 and 5xx count towards
	// Options.ConsecutiveFailures; any other status is a success.
	Status int
}

// Picker returns the Cache's Picker: round-robin picks whose reports feed
// passive outlier detection, and on-demand resolution (WaitTarget) for the
// targets a Watcher backend does not know yet. Neither Pick nor Done locks
// or allocates on the common path.
func (c *Cache) Picker() Picker { return (*cachePicker)(c) }

type cachePicker Cache

var _ Picker = (*cachePicker)(nil)

func (cp *cachePicker) Pick(ctx context.Context, t Target) (PickResult, error) {
	c := (*Cache)(cp)
	e := c.lookup(t)
	if e == nil {
		if c.watcher.Load() == nil || c.WaitTarget(ctx, t) != nil {
			return PickResult{}, ErrUnknownTarget
		}
		if e = c.lookup(t); e == nil {
			return PickResult{}, ErrUnknownTarget
		}
	}
	st, ok := c.pickEntry(e)
	if !ok {
		if st = c.probeEntry(e); st == nil {
			return PickResult{}, ErrNoHealthyEndpoint
		}
		return PickResult{Endpoint: st.ep, Done: st.probe}, nil
	}
	return PickResult{Endpoint: st.ep, Done: st.done}, nil
}

// probeEntry returns an ejected endpoint of e to probe, when e has no ready
// endpoint, some ejected ones, and no probe was let through in the last
// ProbeInterval; nil otherwise. It neither locks nor allocates.
func (c *Cache) probeEntry(e *entry) *endpointState {
	p := e.picker.Load()
	n := uint64(len(p.ejected))
	if n == 0 || len(p.eps) != 0 {
		return nil
	}
	now := int64(time.Since(clockBase))
	at := e.probeAt.Load()
	if now < at || !e.probeAt.CompareAndSwap(at, now+int64(c.opts.ProbeInterval)) {
		return nil
	}
	return p.ejected[(p.next.Add(1)-1)%n]
}

// settleProbe takes the outcome of a probe of st, an ejected endpoint of t.
// Any answer (not Down, a status) shows the endpoint reachable: it is put
// back at once. A failed probe leaves it out until its time is up.
func (c *Cache) settleProbe(t Target, st *endpointState, d DoneInfo) {
	if d.Down || d.Status == 0 {
		c.settle(t, st, d)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.fails.Store(0)
	st.ejections.Store(0)
	if c.closed || !st.ejected.Load() {
		return
	}
	c.returnLocked(t, st, "a probe got an answer")
}

// settle takes the outcome of an attempt to st, an endpoint of t.
func (c *Cache) settle(t Target, st *endpointState, d DoneInfo) {
	switch {
	case d.Down:
		c.reportFailure(t, st)
	case d.Status != 0 && (d.Status < 500 || d.Status > 599):
		c.reportSuccess(st)
	default:
		c.reportFailed(t, st)
	}
}
