package discovery

import (
	"context"
	"time"
)

// Defaults of Options.CheckInterval and Options.CheckTimeout.
const (
	DefaultCheckInterval = 500 * time.Millisecond
	DefaultCheckTimeout  = time.Second
)

// Checker checks an ejected endpoint out of band, never with a caller's
// call (the proxy's Checker asks the endpoint's sidecar whether it and its
// app would serve a call). It is what brings an ejected endpoint back
// within about a CheckInterval of its recovery while the target's other
// endpoints serve, instead of when its ejection time is up.
type Checker interface {
	// Check returns nil when ep of t would serve a call now, an error when
	// it is unreachable or says it cannot (its app down). It must return
	// by ctx's deadline (Options.CheckTimeout).
	Check(ctx context.Context, t Target, ep Endpoint) error
}

type checkerRef struct{ c Checker }

// SetChecker makes the Cache check its ejected endpoints with ch: one Check
// per Options.CheckInterval for each endpoint ejected as unreachable (a
// Down report; not one ejected by counted 5xx answers, which a check cannot
// tell gone), from one goroutine
// per ejection (nothing runs while no endpoint is ejected). A passing check
// puts the endpoint back at once. While its checks fail, an endpoint whose
// ejection time is up stays out for another ejection time: no call is sent
// to an endpoint its last check found down. Without a Checker (nil) an
// ejected endpoint returns when its time is up. Endpoints ejected before
// SetChecker are not checked.
func (c *Cache) SetChecker(ch Checker) {
	if ch == nil {
		c.checker.Store(nil)
		return
	}
	c.checker.Store(&checkerRef{ch})
}

// startCheck starts the checks of st, ejected under sequence seq, when a
// Checker is set. Called with c.mu held.
func (c *Cache) startCheck(t Target, st *endpointState, seq uint64) {
	ref := c.checker.Load()
	if ref == nil {
		return
	}
	go c.checkLoop(t, st, seq, ref.c)
}

// checkLoop checks st every CheckInterval until it is back (by a passing
// check, its probe call or its timer), removed, or the Cache is closed.
func (c *Cache) checkLoop(t Target, st *endpointState, seq uint64, ch Checker) {
	tk := time.NewTicker(c.opts.CheckInterval)
	defer tk.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-tk.C:
		}
		if !c.stillEjected(st, seq) {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.CheckTimeout)
		err := ch.Check(ctx, t, st.ep)
		cancel()
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			if !st.checkFailed.Swap(true) {
				c.log.Debug("discovery: check of an ejected endpoint failed", "target", t.String(), "addr", st.ep.Address, "err", err)
			}
			continue
		}
		c.checkPassed(t, st, seq)
		return
	}
}

// stillEjected reports whether st is still out under the ejection seq.
func (c *Cache) stillEjected(st *endpointState, seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && st.ejectSeq == seq && st.ejected.Load()
}

// checkPassed puts st back after a passing check of the ejection seq.
func (c *Cache) checkPassed(t Target, st *endpointState, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || st.ejectSeq != seq || !st.ejected.Load() {
		return
	}
	st.checkFailed.Store(false)
	c.returnLocked(t, st, "a check passed")
}

// returnLocked puts the ejected st back into t's picker now: its ejection
// timer is stopped and any check of it ends. Called with c.mu held.
func (c *Cache) returnLocked(t Target, st *endpointState, why string) {
	st.ejected.Store(false)
	st.fails.Store(0)
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	st.ejectSeq++ // a timer already firing, and the check loop, find a stale sequence
	e := c.lookup(t)
	if e == nil || e.byAddr[st.ep.Address] != st {
		return // removed meanwhile
	}
	ready := c.rebuild(e)
	c.log.Info("discovery: endpoint back in: "+why, "target", t.String(), "addr", st.ep.Address)
	c.emit(Event{Kind: EventReturned, Target: t, Addr: st.ep.Address, Ready: ready, Total: len(e.eps)})
}

// extendLocked keeps st out for another ejection time when its ejection
// time is up but its last check failed; it reports whether it did. Called
// with c.mu held, from the ejection timer.
func (c *Cache) extendLocked(t Target, st *endpointState, seq uint64) bool {
	if c.checker.Load() == nil || !st.checkFailed.Load() {
		return false
	}
	d := c.ejectionTime(st.ejections.Load())
	st.timer = time.AfterFunc(d, func() { c.unEject(t, st, seq) })
	c.log.Debug("discovery: ejected endpoint kept out: its last check failed", "target", t.String(), "addr", st.ep.Address, "for", d)
	return true
}
