package discovery_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

var (
	orders = discovery.Target{AppID: "orders", Namespace: "default"}
	users  = discovery.Target{AppID: "users", Namespace: "prod"}
)

func eps(addrs ...string) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = discovery.Endpoint{Address: a}
	}
	return out
}

func addrs(eps []discovery.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Address
	}
	return out
}

// recorder collects the Cache's events on a channel.
type recorder struct{ ch chan discovery.Event }

func record(t *testing.T, c *discovery.Cache) *recorder {
	t.Helper()
	r := &recorder{ch: make(chan discovery.Event, 1024)}
	unsub := c.Subscribe(func(ev discovery.Event) { r.ch <- ev })
	t.Cleanup(unsub)
	return r
}

// next waits for the next event of kind k (others are dropped).
func (r *recorder) next(t *testing.T, k discovery.EventKind, timeout time.Duration) discovery.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-r.ch:
			if ev.Kind == k {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event within %v", k, timeout)
			return discovery.Event{}
		}
	}
}

func (r *recorder) drain() []discovery.Event {
	var out []discovery.Event
	for {
		select {
		case ev := <-r.ch:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func newCache(t *testing.T, o discovery.Options) *discovery.Cache {
	t.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	c := discovery.NewCache(o)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPickErrors(t *testing.T) {
	c := newCache(t, discovery.Options{})
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("unknown target: err = %v, want ErrUnknownTarget", err)
	}
	c.UpdateTarget(orders, nil)
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("empty target: err = %v, want ErrNoHealthyEndpoint", err)
	}
	c.UpdateTarget(orders, eps("127.0.0.1:1"))
	if ep, err := c.Pick(orders); err != nil || ep.Address != "127.0.0.1:1" {
		t.Fatalf("Pick = %v, %v", ep, err)
	}
	// Namespace is part of the key.
	if _, err := c.Pick(discovery.Target{AppID: "orders", Namespace: "prod"}); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("other namespace: err = %v, want ErrUnknownTarget", err)
	}
	c.RemoveTarget(orders)
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("removed target: err = %v, want ErrUnknownTarget", err)
	}
}

func TestUpdateTargetDedupesAndSkipsEmpty(t *testing.T) {
	c := newCache(t, discovery.Options{})
	c.UpdateTarget(orders, eps("a:1", "", "b:2", "a:1"))
	if got, want := addrs(c.Endpoints(orders)), []string{"a:1", "b:2"}; !slices.Equal(got, want) {
		t.Fatalf("Endpoints = %v, want %v", got, want)
	}
	if c.Endpoints(users) != nil {
		t.Fatal("Endpoints of an unknown target is not nil")
	}
}

func TestUpdateCopiesInput(t *testing.T) {
	c := newCache(t, discovery.Options{})
	in := eps("a:1", "b:2")
	c.UpdateTarget(orders, in)
	in[0].Address = "changed:1"
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"a:1", "b:2"}) {
		t.Fatalf("Ready = %v after the caller changed its slice", got)
	}
}

func TestRoundRobinEven(t *testing.T) {
	c := newCache(t, discovery.Options{})
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	const n = 3000
	count := map[string]int{}
	var seq []string
	for range n {
		ep, err := c.Pick(orders)
		if err != nil {
			t.Fatal(err)
		}
		count[ep.Address]++
		if len(seq) < 6 {
			seq = append(seq, ep.Address)
		}
	}
	for _, a := range []string{"a:1", "b:2", "c:3"} {
		if count[a] != n/3 {
			t.Errorf("%s picked %d times, want exactly %d (%v)", a, count[a], n/3, count)
		}
	}
	if want := []string{"a:1", "b:2", "c:3", "a:1", "b:2", "c:3"}; !slices.Equal(seq, want) {
		t.Errorf("order = %v, want %v", seq, want)
	}
}

// Concurrent picks share one atomic counter, so the spread stays exact.
func TestRoundRobinConcurrent(t *testing.T) {
	c := newCache(t, discovery.Options{})
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	const workers, per = 8, 3000
	var counts [workers]map[string]int
	var wg sync.WaitGroup
	for w := range workers {
		counts[w] = map[string]int{}
		wg.Go(func() {
			for range per {
				ep, err := c.Pick(orders)
				if err != nil {
					t.Error(err)
					return
				}
				counts[w][ep.Address]++
			}
		})
	}
	wg.Wait()
	total := map[string]int{}
	for _, m := range counts {
		for a, n := range m {
			total[a] += n
		}
	}
	for _, a := range []string{"a:1", "b:2", "c:3"} {
		if total[a] != workers*per/3 {
			t.Errorf("%s picked %d times, want %d (%v)", a, total[a], workers*per/3, total)
		}
	}
}

func TestEjectionAndReturn(t *testing.T) {
	const base = 300 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: base})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))

	start := time.Now()
	c.ReportFailure(orders, "b:2")
	ev := rec.next(t, discovery.EventEjected, time.Second)
	if ev.Addr != "b:2" || ev.EjectedFor != base || ev.Ready != 2 || ev.Total != 3 || ev.Target != orders {
		t.Fatalf("ejected event = %+v", ev)
	}
	// Out of the picker at once.
	for range 30 {
		ep, err := c.Pick(orders)
		if err != nil {
			t.Fatal(err)
		}
		if ep.Address == "b:2" {
			t.Fatal("picked an ejected endpoint")
		}
	}
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"a:1", "c:3"}) {
		t.Fatalf("Ready = %v", got)
	}
	if got := addrs(c.Endpoints(orders)); len(got) != 3 {
		t.Fatalf("Endpoints = %v, want all three", got)
	}

	ev = rec.next(t, discovery.EventReturned, 10*time.Second)
	if elapsed := time.Since(start); elapsed < base {
		t.Fatalf("returned after %v, before the base ejection time %v", elapsed, base)
	}
	if ev.Addr != "b:2" || ev.Ready != 3 {
		t.Fatalf("returned event = %+v", ev)
	}
	seen := map[string]bool{}
	for range 3 {
		ep, _ := c.Pick(orders)
		seen[ep.Address] = true
	}
	if !seen["b:2"] {
		t.Fatal("endpoint not picked after its return")
	}
}

// Ejections without a success in between double up to the cap; a success
// after the return resets the doubling.
func TestEjectionGrowsAndResets(t *testing.T) {
	const base = 10 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: base, MaxEjectionTime: 50 * time.Millisecond})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2"))

	ejectAndReturn := func() time.Duration {
		t.Helper()
		start := time.Now()
		c.ReportFailure(orders, "a:1")
		ev := rec.next(t, discovery.EventEjected, time.Second)
		rec.next(t, discovery.EventReturned, 10*time.Second)
		if el := time.Since(start); el < ev.EjectedFor {
			t.Fatalf("returned after %v, before its ejection time %v", el, ev.EjectedFor)
		}
		return ev.EjectedFor
	}
	var got []time.Duration
	for range 5 {
		got = append(got, ejectAndReturn())
	}
	want := []time.Duration{10, 20, 40, 50, 50}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ejection times = %v, want %v", got, want)
	}

	c.ReportSuccess(orders, "a:1")
	if d := ejectAndReturn(); d != base {
		t.Fatalf("after a success the ejection time is %v, want %v", d, base)
	}
}

// A success of a call that started before the ejection must not reset the
// doubling while the endpoint is still out.
func TestSuccessWhileEjectedKeepsMultiplier(t *testing.T) {
	const base = 200 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: base})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	c.ReportFailure(orders, "a:1")
	rec.next(t, discovery.EventEjected, time.Second)
	c.ReportSuccess(orders, "a:1")
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"b:2"}) {
		t.Fatalf("a success put the ejected endpoint back: Ready = %v", got)
	}
	rec.next(t, discovery.EventReturned, 10*time.Second)
	c.ReportFailure(orders, "a:1")
	if ev := rec.next(t, discovery.EventEjected, time.Second); ev.EjectedFor != 2*base {
		t.Fatalf("second ejection for %v, want %v", ev.EjectedFor, 2*base)
	}
}

// Many in-flight calls to a dead endpoint all fail: one ejection only.
func TestConcurrentFailuresEjectOnce(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { c.ReportFailure(orders, "a:1") })
	}
	wg.Wait()
	n := 0
	for _, ev := range rec.drain() {
		if ev.Kind == discovery.EventEjected {
			n++
			if ev.EjectedFor != time.Hour {
				t.Errorf("ejected for %v, want the base time", ev.EjectedFor)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d ejection events, want 1", n)
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		name      string
		percent   int
		endpoints int
		wantOut   int // how many of endpoints failures can eject
	}{
		{"default ejects all", 0, 3, 3},
		{"100 ejects all", 100, 3, 3},
		{"out of range means 100", 250, 3, 3},
		{"50 of 3 ejects one", 50, 3, 1},
		{"50 of 4 ejects two", 50, 4, 2},
		{"50 of 1 ejects none", 50, 1, 0},
		{"34 of 3 ejects one", 34, 3, 1},
		{"67 of 3 ejects two", 67, 3, 2},
		{"1 of 100 ejects one", 1, 100, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, MaxEjectionPercent: tc.percent})
			var list []string
			for i := range tc.endpoints {
				list = append(list, fmt.Sprintf("10.0.0.%d:80", i+1))
			}
			c.UpdateTarget(orders, eps(list...))
			for _, a := range list {
				c.ReportFailure(orders, a)
			}
			ready := len(c.Ready(orders))
			if out := tc.endpoints - ready; out != tc.wantOut {
				t.Fatalf("%d ejected, want %d", out, tc.wantOut)
			}
			_, err := c.Pick(orders)
			if ready == 0 {
				if !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
					t.Fatalf("all ejected: Pick err = %v, want ErrNoHealthyEndpoint", err)
				}
			} else if err != nil {
				t.Fatalf("Pick err = %v", err)
			}
		})
	}
}

func TestReportOnUnknownIsIgnored(t *testing.T) {
	c := newCache(t, discovery.Options{})
	rec := record(t, c)
	c.ReportFailure(orders, "a:1")
	c.ReportSuccess(orders, "a:1")
	c.SetHealth(orders, "a:1", false)
	c.UpdateTarget(orders, eps("a:1"))
	c.ReportFailure(orders, "zz:1")
	c.SetHealth(orders, "zz:1", false)
	for _, ev := range rec.drain() {
		if ev.Kind != discovery.EventUpdated {
			t.Errorf("unexpected event %+v", ev)
		}
	}
	if len(c.Ready(orders)) != 1 {
		t.Fatal("an unknown address changed the picker")
	}
}

func TestSetHealth(t *testing.T) {
	c := newCache(t, discovery.Options{})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	c.SetHealth(orders, "a:1", false)
	ev := rec.next(t, discovery.EventHealthChanged, time.Second)
	if ev.Addr != "a:1" || ev.Healthy || ev.Ready != 1 {
		t.Fatalf("event = %+v", ev)
	}
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"b:2"}) {
		t.Fatalf("Ready = %v", got)
	}
	c.SetHealth(orders, "a:1", false) // no change, no event
	c.SetHealth(orders, "b:2", false)
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("all unhealthy: err = %v", err)
	}
	c.SetHealth(orders, "a:1", true)
	if ep, err := c.Pick(orders); err != nil || ep.Address != "a:1" {
		t.Fatalf("Pick = %v, %v", ep, err)
	}
	var kinds []discovery.EventKind
	for _, ev := range rec.drain() {
		kinds = append(kinds, ev.Kind)
	}
	if want := []discovery.EventKind{discovery.EventHealthChanged, discovery.EventHealthChanged}; !slices.Equal(kinds, want) {
		t.Fatalf("events = %v, want %v", kinds, want)
	}
}

// An update that keeps an address keeps its health and ejection; a removed
// address loses them, and its pending return does not fire.
func TestUpdateKeepsEndpointState(t *testing.T) {
	const base = 200 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: base})
	rec := record(t, c)
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	c.ReportFailure(orders, "a:1")
	c.SetHealth(orders, "b:2", false)
	c.ReportFailure(orders, "c:3")

	c.UpdateTarget(orders, eps("d:4", "c:3", "a:1", "b:2")) // reorder + add
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"d:4"}) {
		t.Fatalf("Ready after update = %v, want only the new endpoint", got)
	}
	c.UpdateTarget(orders, eps("a:1", "b:2", "d:4")) // c removed while ejected
	c.UpdateTarget(orders, eps("a:1", "b:2", "d:4", "c:3"))
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"d:4", "c:3"}) {
		t.Fatalf("Ready = %v: a re-added endpoint must start fresh", got)
	}
	ev := rec.next(t, discovery.EventReturned, 10*time.Second)
	if ev.Addr != "a:1" {
		t.Fatalf("returned %q, want a:1", ev.Addr)
	}
	time.Sleep(2 * base) // c:3's old timer would have fired by now
	for _, ev := range rec.drain() {
		if ev.Kind == discovery.EventReturned {
			t.Fatalf("stale return of a removed endpoint: %+v", ev)
		}
	}
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"a:1", "d:4", "c:3"}) {
		t.Fatalf("Ready = %v", got)
	}
}

func TestIdenticalUpdatesAreNoOps(t *testing.T) {
	c := newCache(t, discovery.Options{})
	rec := record(t, c)
	c.ReplaceAll(map[discovery.Target][]discovery.Endpoint{orders: eps("a:1", "b:2"), users: eps("u:1")})
	c.ReplaceAll(map[discovery.Target][]discovery.Endpoint{orders: eps("a:1", "b:2"), users: eps("u:1")})
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	c.UpdateTarget(orders, eps("a:1", "b:2", "a:1"))
	if evs := rec.drain(); len(evs) != 2 {
		t.Fatalf("events = %+v, want 2 updates", evs)
	}
}

func TestReplaceAll(t *testing.T) {
	c := newCache(t, discovery.Options{})
	rec := record(t, c)
	c.ReplaceAll(map[discovery.Target][]discovery.Endpoint{orders: eps("a:1"), users: eps("u:1")})
	c.ReplaceAll(map[discovery.Target][]discovery.Endpoint{users: eps("u:1", "u:2")})
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("target missing from ReplaceAll: err = %v", err)
	}
	if got := addrs(c.Endpoints(users)); !slices.Equal(got, []string{"u:1", "u:2"}) {
		t.Fatalf("Endpoints = %v", got)
	}
	if tg := c.Targets(); len(tg) != 1 || tg[0] != users {
		t.Fatalf("Targets = %v", tg)
	}
	var got []string
	for _, ev := range rec.drain() {
		got = append(got, ev.Kind.String()+" "+ev.Target.String())
	}
	slices.Sort(got[:2])
	want := []string{"updated orders.default", "updated users.prod", "removed orders.default", "updated users.prod"}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

// Picks running while the set is replaced only ever see endpoints of some
// set that was pushed, and never lose the target.
func TestUpdatesWhilePicking(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Millisecond})
	sets := [][]discovery.Endpoint{eps("a:1", "b:2", "c:3"), eps("c:3", "d:4"), eps("e:5")}
	valid := map[string]bool{}
	for _, s := range sets {
		for _, e := range s {
			valid[e.Address] = true
		}
	}
	c.ReplaceAll(map[discovery.Target][]discovery.Endpoint{orders: sets[0], users: sets[0]})
	stop := make(chan struct{})
	var picks atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, tg := range []discovery.Target{orders, users} {
					ep, err := c.Pick(tg)
					if errors.Is(err, discovery.ErrNoHealthyEndpoint) {
						continue // everything ejected for a moment
					}
					if err != nil {
						t.Errorf("Pick(%v): %v", tg, err)
						return
					}
					if !valid[ep.Address] {
						t.Errorf("picked %q, never pushed", ep.Address)
						return
					}
					picks.Add(1)
					c.ReportSuccess(tg, ep.Address)
					if ep.Address == "c:3" {
						c.ReportFailure(tg, ep.Address)
					}
				}
			}
		})
	}
	for i := range 2000 {
		s := sets[i%len(sets)]
		if i%2 == 0 {
			c.UpdateTarget(orders, s)
		} else {
			c.ReplaceAll(map[discovery.Target][]discovery.Endpoint{orders: s, users: sets[(i+1)%len(sets)]})
		}
		c.SetHealth(users, "c:3", i%3 == 0)
	}
	close(stop)
	wg.Wait()
	if picks.Load() == 0 {
		t.Fatal("no successful pick")
	}
}

func TestSubscribeUnsubscribe(t *testing.T) {
	c := newCache(t, discovery.Options{})
	var n atomic.Int32
	unsub := c.Subscribe(func(ev discovery.Event) {
		// Reads from inside a callback must not deadlock.
		c.Pick(ev.Target)
		c.Endpoints(ev.Target)
		n.Add(1)
	})
	c.UpdateTarget(orders, eps("a:1"))
	c.ReportError(errors.New("boom"))
	unsub()
	c.UpdateTarget(orders, eps("b:1"))
	if n.Load() != 2 {
		t.Fatalf("%d events delivered, want 2", n.Load())
	}
}

func TestClosedCacheIgnoresUpdates(t *testing.T) {
	c := discovery.NewCache(discovery.Options{BaseEjectionTime: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	c.ReportFailure(orders, "a:1")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.UpdateTarget(orders, eps("z:1"))
	time.Sleep(300 * time.Millisecond) // the stopped timer must not bring a:1 back
	if got := addrs(c.Ready(orders)); !slices.Equal(got, []string{"b:2"}) {
		t.Fatalf("Ready after Close = %v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[discovery.EventKind]string{
		discovery.EventUpdated: "updated", discovery.EventRemoved: "removed",
		discovery.EventEjected: "ejected", discovery.EventReturned: "returned",
		discovery.EventHealthChanged: "health", discovery.EventError: "error",
		0: "unknown", 200: "unknown",
	} {
		if got := k.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", k, got, want)
		}
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	c := newCache(t, discovery.Options{})
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	c.UpdateTarget(users, nil)
	unknown := discovery.Target{AppID: "nobody", Namespace: "default"}
	for name, fn := range map[string]func(){
		"Pick":              func() { c.Pick(orders) },
		"Pick unknown":      func() { c.Pick(unknown) },
		"Pick none healthy": func() { c.Pick(users) },
		"ReportSuccess":     func() { c.ReportSuccess(orders, "b:2") },
		"TakeUsed":          func() { c.TakeUsed(orders) },
	} {
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s: %v allocs per call, want 0", name, n)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	for i := range 100 {
		c.UpdateTarget(discovery.Target{AppID: fmt.Sprintf("app%d", i), Namespace: "default"}, eps("a:1", "b:2", "c:3"))
	}
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Pick(orders); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPickSerial(b *testing.B) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Pick(orders); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPickAndReportSuccess(b *testing.B) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ep, err := c.Pick(orders)
			if err != nil {
				b.Fatal(err)
			}
			c.ReportSuccess(orders, ep.Address)
		}
	})
}

// Picks while another goroutine keeps replacing the set.
func BenchmarkPickDuringUpdates(b *testing.B) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sets := [][]discovery.Endpoint{eps("a:1", "b:2"), eps("a:1", "b:2", "c:3")}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				c.UpdateTarget(orders, sets[i%2])
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Pick(orders); err != nil {
				b.Fatal(err)
			}
		}
	})
	close(stop)
	<-done
}

// TestTakeUsed: Pick marks its target used; TakeUsed reports and resets the
// mark, which survives endpoint updates and is gone with the target.
func TestTakeUsed(t *testing.T) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	if c.TakeUsed(orders) {
		t.Fatal("unknown target reported used")
	}
	c.UpdateTarget(orders, eps("10.0.0.1:1"))
	if c.TakeUsed(orders) {
		t.Fatal("target never picked reported used")
	}
	if _, err := c.Pick(orders); err != nil {
		t.Fatal(err)
	}
	c.UpdateTarget(orders, eps("10.0.0.1:1", "10.0.0.2:1")) // a new entry keeps the mark
	if !c.TakeUsed(orders) {
		t.Fatal("picked target not reported used")
	}
	if c.TakeUsed(orders) {
		t.Fatal("mark not reset by TakeUsed")
	}
	c.UpdateTarget(orders, nil) // no endpoint: Pick fails, the call still counts
	if _, err := c.Pick(orders); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("Pick = %v", err)
	}
	if !c.TakeUsed(orders) {
		t.Fatal("failed Pick not reported as a use")
	}
	_, _ = c.Pick(orders)
	c.RemoveTarget(orders)
	if c.TakeUsed(orders) {
		t.Fatal("removed target reported used")
	}
	c.UpdateTarget(orders, eps("10.0.0.1:1"))
	if c.TakeUsed(orders) {
		t.Fatal("target added again inherited the old mark")
	}
}
