package discovery_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

// fakeChecker answers checks from a per-address switch and counts them.
type fakeChecker struct {
	mu     sync.Mutex
	up     map[string]bool
	hang   bool // block until ctx ends
	calls  atomic.Int32
	target discovery.Target
}

func (f *fakeChecker) set(addr string, up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.up == nil {
		f.up = map[string]bool{}
	}
	f.up[addr] = up
}

func (f *fakeChecker) Check(ctx context.Context, t discovery.Target, ep discovery.Endpoint) error {
	f.calls.Add(1)
	f.mu.Lock()
	f.target = t
	up, hang := f.up[ep.Address], f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if !up {
		return errors.New("down")
	}
	return nil
}

func waitReady(t *testing.T, c *discovery.Cache, want []string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := addrs(c.Ready(orders))
		slices.Sort(got)
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("Ready = %v after %s, want %v", got, within, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCheckBringsBackEjected (#18): an ejected endpoint, among others that
// serve, is checked every CheckInterval and put back by the first passing
// check, long before its ejection time is up; no call is picked for it
// meanwhile.
func TestCheckBringsBackEjected(t *testing.T) {
	const interval = 30 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, CheckInterval: interval})
	ch := &fakeChecker{}
	c.SetChecker(ch)
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:1"))
	c.ReportFailure(orders, "a:1")
	waitReady(t, c, []string{"b:1"}, time.Second)
	// Down: checked again and again, still out, never picked.
	time.Sleep(5 * interval)
	if n := ch.calls.Load(); n < 2 {
		t.Fatalf("%d checks in %s; want one per %s", n, 5*interval, interval)
	}
	for range 20 {
		if ep, err := c.Pick(orders); err != nil || ep.Address != "b:1" {
			t.Fatalf("Pick while a:1 fails its checks = %v, %v; want b:1", ep.Address, err)
		}
	}
	ch.mu.Lock()
	target := ch.target
	ch.mu.Unlock()
	if target != orders {
		t.Fatalf("checked target %v, want %v", target, orders)
	}
	// Back: the next check returns it.
	ch.set("a:1", true)
	took := waitReady(t, c, []string{"a:1", "b:1"}, 2*time.Second)
	if took > 10*interval {
		t.Fatalf("back %s after its check could pass; want within about %s", took, interval)
	}
	if ev := rec.next(t, discovery.EventReturned, time.Second); ev.Addr != "a:1" {
		t.Fatalf("returned event for %q, want a:1", ev.Addr)
	}
	// The checks stop once it is back.
	n := ch.calls.Load()
	time.Sleep(4 * interval)
	if m := ch.calls.Load(); m != n {
		t.Fatalf("%d checks after the endpoint was back; want none", m-n)
	}
}

// TestCheckFailingKeepsOut: with a Checker, an endpoint whose last check
// failed stays out when its ejection time is up (no call is sent to an
// endpoint found down); without one it returns on time.
func TestCheckFailingKeepsOut(t *testing.T) {
	const base = 100 * time.Millisecond
	t.Run("checker", func(t *testing.T) {
		c := newCache(t, discovery.Options{BaseEjectionTime: base, CheckInterval: 20 * time.Millisecond})
		ch := &fakeChecker{}
		c.SetChecker(ch)
		c.UpdateTarget(orders, eps("a:1", "b:1"))
		c.ReportFailure(orders, "a:1")
		time.Sleep(5 * base)
		if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"b:1"}) {
			t.Fatalf("Ready %s after the ejection, checks failing = %v; want [b:1]", 5*base, got)
		}
		ch.set("a:1", true)
		waitReady(t, c, []string{"a:1", "b:1"}, time.Second)
	})
	t.Run("no checker", func(t *testing.T) {
		c := newCache(t, discovery.Options{BaseEjectionTime: base})
		c.UpdateTarget(orders, eps("a:1", "b:1"))
		c.ReportFailure(orders, "a:1")
		waitReady(t, c, []string{"a:1", "b:1"}, 5*base)
	})
}

// TestCheckEndsOnRemoveAndClose: the checks of an endpoint end when it
// leaves the target's set, and a check in progress is cancelled by Close
// (goleak in TestMain fails the package on a leaked loop).
func TestCheckEndsOnRemoveAndClose(t *testing.T) {
	const interval = 20 * time.Millisecond
	c := discovery.NewCache(discovery.Options{BaseEjectionTime: time.Hour, CheckInterval: interval, CheckTimeout: time.Hour})
	ch := &fakeChecker{}
	c.SetChecker(ch)
	c.UpdateTarget(orders, eps("a:1", "b:1"))
	c.ReportFailure(orders, "a:1")
	time.Sleep(3 * interval)
	c.UpdateTarget(orders, eps("b:1"))
	time.Sleep(2 * interval)
	n := ch.calls.Load()
	time.Sleep(4 * interval)
	if m := ch.calls.Load(); m != n || n == 0 {
		t.Fatalf("checks: %d before the removal settled, %d after; want some, then none", n, m)
	}
	// A check that hangs (CheckTimeout 1h) ends with Close.
	ch.mu.Lock()
	ch.hang = true
	ch.mu.Unlock()
	c.ReportFailure(orders, "b:1")
	deadline := time.Now().Add(time.Second)
	for ch.calls.Load() == n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if ch.calls.Load() == n {
		t.Fatal("the ejected b:1 was never checked")
	}
	c.Close()
}

// TestCheckBoundedByTimeout: a check that does not answer is given up
// after CheckTimeout and counts as failed; the loop goes on.
func TestCheckBoundedByTimeout(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, CheckInterval: 10 * time.Millisecond, CheckTimeout: 30 * time.Millisecond})
	ch := &fakeChecker{hang: true}
	c.SetChecker(ch)
	c.UpdateTarget(orders, eps("a:1", "b:1"))
	c.ReportFailure(orders, "a:1")
	time.Sleep(300 * time.Millisecond)
	if n := ch.calls.Load(); n < 3 {
		t.Fatalf("%d checks in 300ms with a 30ms timeout; want several", n)
	}
	ch.mu.Lock()
	ch.hang = false
	ch.mu.Unlock()
	ch.set("a:1", true)
	waitReady(t, c, []string{"a:1", "b:1"}, time.Second)
}

// TestCheckNotForCountedFailures: an endpoint ejected by 5xx answers in a
// row (its app answers, badly) is not checked: a check, which only sees
// the sidecar and its app reachable, would put it back at once. It
// returns when its ejection time is up.
func TestCheckNotForCountedFailures(t *testing.T) {
	const base = 200 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: base, CheckInterval: 10 * time.Millisecond})
	ch := &fakeChecker{}
	ch.set("a:1", true)
	c.SetChecker(ch)
	c.UpdateTarget(orders, eps("a:1", "b:1"))
	for range discovery.DefaultConsecutiveFailures {
		c.ReportResult(orders, "a:1", 500)
	}
	waitReady(t, c, []string{"b:1"}, time.Second)
	time.Sleep(base / 2)
	if got := addrs(c.Ready(orders)); len(got) != 1 || ch.calls.Load() != 0 {
		t.Fatalf("half the ejection time after 5 500s: Ready %v, %d checks; want [b:1] and no check", got, ch.calls.Load())
	}
	waitReady(t, c, []string{"a:1", "b:1"}, 2*base)
}
