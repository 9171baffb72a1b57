package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

// TestConsecutiveFailuresEject: N results of 0 or 5xx in a row eject an
// endpoint; anything else in between starts the count again.
func TestConsecutiveFailuresEject(t *testing.T) {
	type step struct {
		status int
		n      int
	}
	tests := []struct {
		name      string
		threshold int // Options.ConsecutiveFailures (0: default 5)
		steps     []step
		ejected   bool
	}{
		{"default: four 503s keep it", 0, []step{{503, 4}}, false},
		{"default: five 503s eject", 0, []step{{503, 5}}, true},
		{"default: five broken connections eject", 0, []step{{0, 5}}, true},
		{"mixed 5xx and broken connections count together", 0, []step{{500, 2}, {0, 1}, {502, 1}, {504, 1}}, true},
		{"a 200 in between resets the count", 0, []step{{503, 4}, {200, 1}, {503, 4}}, false},
		{"a 404 is a success", 0, []step{{503, 4}, {404, 1}, {503, 4}}, false},
		{"a 499 is a success", 0, []step{{503, 4}, {499, 1}, {503, 4}}, false},
		{"600 is no 5xx", 0, []step{{600, 10}}, false},
		{"threshold 1", 1, []step{{500, 1}}, true},
		{"threshold 3: two keep it", 3, []step{{500, 2}}, false},
		{"threshold 3: three eject", 3, []step{{500, 3}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, ConsecutiveFailures: tc.threshold})
			c.UpdateTarget(orders, eps("a:1", "b:2"))
			for _, s := range tc.steps {
				for range s.n {
					c.ReportResult(orders, "a:1", s.status)
				}
			}
			ready := addrs(c.Ready(orders))
			gotEjected := len(ready) == 1
			if gotEjected != tc.ejected {
				t.Fatalf("ejected = %v, want %v (ready %v)", gotEjected, tc.ejected, ready)
			}
			if gotEjected && ready[0] != "b:2" {
				t.Fatalf("wrong endpoint ejected: ready %v", ready)
			}
		})
	}
}

// TestShortCircuitStillEjectsAtOnce: ReportFailure (refused connection,
// "app unhealthy" mark) does not wait for the count.
func TestShortCircuitStillEjectsAtOnce(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour})
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	c.ReportResult(orders, "a:1", 503) // one counted failure first
	c.ReportFailure(orders, "a:1")
	if got := addrs(c.Ready(orders)); len(got) != 1 || got[0] != "b:2" {
		t.Fatalf("Ready = %v, want [b:2]", got)
	}
}

// TestOutlierEjectionGrowsAndReturns: an endpoint failing again after its
// return is ejected for twice as long; it comes back when the time is up;
// a success after the return resets the doubling, and its count of
// failures starts from zero after each return.
func TestOutlierEjectionGrowsAndReturns(t *testing.T) {
	const base = 80 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: base, MaxEjectionTime: time.Second, ConsecutiveFailures: 3})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	fail := func(n int) {
		for range n {
			c.ReportResult(orders, "a:1", 500)
		}
	}

	fail(3)
	if ev := rec.next(t, discovery.EventEjected, time.Second); ev.EjectedFor != base {
		t.Fatalf("first ejection for %v, want %v", ev.EjectedFor, base)
	}
	rec.next(t, discovery.EventReturned, 2*time.Second)
	fail(2) // the count started again at the return: not yet
	if n := len(c.Ready(orders)); n != 2 {
		t.Fatalf("ejected after 2 failures following a return: ready %d", n)
	}
	fail(1)
	if ev := rec.next(t, discovery.EventEjected, time.Second); ev.EjectedFor != 2*base {
		t.Fatalf("second ejection for %v, want %v", ev.EjectedFor, 2*base)
	}
	start := time.Now()
	rec.next(t, discovery.EventReturned, 2*time.Second)
	if d := time.Since(start); d < 2*base-20*time.Millisecond {
		t.Fatalf("returned after %v, want about %v", d, 2*base)
	}
	c.ReportResult(orders, "a:1", 200) // back and answering: doubling reset
	fail(3)
	if ev := rec.next(t, discovery.EventEjected, time.Second); ev.EjectedFor != base {
		t.Fatalf("ejection after a success for %v, want the base %v", ev.EjectedFor, base)
	}
}

// TestOutlierMaxEjectionShare: counted failures eject at most
// min(MaxEjectionPercent, MaxOutlierEjectionPercent) of the endpoints;
// refused connections and short-circuits only MaxEjectionPercent.
func TestOutlierMaxEjectionShare(t *testing.T) {
	tests := []struct {
		name            string
		opts            discovery.Options
		endpoints       int
		wantOut5xx      int // after every endpoint answered 5 5xx
		wantOutRefusals int // after every endpoint then refused
	}{
		{"defaults, 1 endpoint: no 5xx ejection", discovery.Options{}, 1, 0, 1},
		{"defaults, 2 endpoints", discovery.Options{}, 2, 1, 2},
		{"defaults, 3 endpoints", discovery.Options{}, 3, 1, 3},
		{"defaults, 4 endpoints", discovery.Options{}, 4, 2, 4},
		{"outlier 100", discovery.Options{MaxOutlierEjectionPercent: 100}, 3, 3, 3},
		{"outlier out of range means 50", discovery.Options{MaxOutlierEjectionPercent: 101}, 4, 2, 4},
		{"max 25 caps both", discovery.Options{MaxEjectionPercent: 25}, 4, 1, 1},
		{"outlier 75 of 4", discovery.Options{MaxOutlierEjectionPercent: 75}, 4, 3, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.BaseEjectionTime = time.Hour
			c := newCache(t, tc.opts)
			var list []string
			for i := range tc.endpoints {
				list = append(list, fmt.Sprintf("10.0.0.%d:80", i+1))
			}
			c.UpdateTarget(orders, eps(list...))
			for _, a := range list {
				for range 5 {
					c.ReportResult(orders, a, 503)
				}
			}
			if out := tc.endpoints - len(c.Ready(orders)); out != tc.wantOut5xx {
				t.Fatalf("5xx ejected %d, want %d", out, tc.wantOut5xx)
			}
			for _, a := range list {
				c.ReportFailure(orders, a)
			}
			if out := tc.endpoints - len(c.Ready(orders)); out != tc.wantOutRefusals {
				t.Fatalf("after refusals %d out, want %d", out, tc.wantOutRefusals)
			}
		})
	}
}

// TestOutlierConcurrentResults: concurrent failures eject exactly once.
func TestOutlierConcurrentResults(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { c.ReportResult(orders, "a:1", 502) })
	}
	wg.Wait()
	n := 0
	for _, ev := range rec.drain() {
		if ev.Kind == discovery.EventEjected {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d ejections, want 1", n)
	}
}

// fakeWatcher records Watch calls and answers through the Cache.
type fakeWatcher struct {
	mu    sync.Mutex
	calls map[discovery.Target]int
	c     *discovery.Cache
	delay time.Duration
	eps   map[discovery.Target][]discovery.Endpoint
}

func (w *fakeWatcher) Watch(t discovery.Target) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls[t]++
	if w.calls[t] > 1 {
		return
	}
	eps, ok := w.eps[t]
	if !ok {
		return // never answers
	}
	time.AfterFunc(w.delay, func() { w.c.UpdateTarget(t, eps) })
}

func (w *fakeWatcher) count(t discovery.Target) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[t]
}

func TestWatcherOnDemand(t *testing.T) {
	c := newCache(t, discovery.Options{FirstResolveTimeout: 300 * time.Millisecond})
	w := &fakeWatcher{calls: map[discovery.Target]int{}, c: c, delay: 50 * time.Millisecond,
		eps: map[discovery.Target][]discovery.Endpoint{orders: eps("a:1")}}

	// Without a watcher: WaitTarget answers at once.
	start := time.Now()
	if err := c.WaitTarget(context.Background(), orders); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("WaitTarget without watcher = %v", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("WaitTarget without watcher waited %v", d)
	}

	c.SetWatcher(w)
	start = time.Now()
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("first Pick = %v, want ErrUnknownTarget", err)
	}
	if d := time.Since(start); d > 20*time.Millisecond {
		t.Fatalf("first Pick took %v: it must not wait", d)
	}
	if n := w.count(orders); n != 1 {
		t.Fatalf("Watch called %d times, want 1", n)
	}
	if err := c.WaitTarget(context.Background(), orders); err != nil {
		t.Fatalf("WaitTarget = %v", err)
	}
	ep, err := c.Pick(orders)
	if err != nil || ep.Address != "a:1" {
		t.Fatalf("Pick after WaitTarget = %v, %v", ep, err)
	}
	before := w.count(orders)
	for range 100 {
		_, _ = c.Pick(orders)
	}
	if n := w.count(orders); n != before {
		t.Fatalf("Pick of a known target called Watch (%d -> %d)", before, n)
	}

	// A target the watcher never answers: bounded by FirstResolveTimeout.
	start = time.Now()
	err = c.WaitTarget(context.Background(), users)
	if !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("WaitTarget of an unanswered target = %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("WaitTarget gave up after %v, want about 300ms", d)
	}
	// ... or by ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := c.WaitTarget(ctx, users); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("WaitTarget with a short ctx = %v", err)
	}

	// Many waiters on one target all wake on its first answer.
	other := discovery.Target{AppID: "pay", Namespace: "default"}
	w.mu.Lock()
	w.eps[other] = eps("p:1")
	w.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() { errs <- c.WaitTarget(context.Background(), other) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := w.count(other); n < 1 {
		t.Fatalf("Watch(%v) never called", other)
	}
}

func BenchmarkReportResultSuccess(b *testing.B) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	var list []string
	for i := range 3 {
		list = append(list, fmt.Sprintf("10.0.0.%d:80", i))
	}
	c.UpdateTarget(orders, eps(list...))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ep, err := c.Pick(orders)
			if err != nil {
				b.Fatal(err)
			}
			c.ReportResult(orders, ep.Address, 200)
		}
	})
}
