package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

func TestPickerRoundRobinAndErrors(t *testing.T) {
	c := newCache(t, discovery.Options{})
	p := c.Picker()
	ctx := context.Background()
	if _, err := p.Pick(ctx, orders); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("unknown target: %v", err)
	}
	c.UpdateTarget(users, nil)
	if _, err := p.Pick(ctx, users); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("no endpoint: %v", err)
	}
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	seen := map[string]int{}
	for range 4 {
		pr, err := p.Pick(ctx, orders)
		if err != nil || pr.Done == nil {
			t.Fatalf("Pick = %+v, %v", pr, err)
		}
		seen[pr.Address]++
	}
	if seen["a:1"] != 2 || seen["b:2"] != 2 {
		t.Errorf("round robin: %v", seen)
	}
	if !c.TakeUsed(orders) {
		t.Error("a Picker pick does not mark the target used")
	}
}

// The pick's own report feeds outlier detection exactly as the
// address-keyed reports do.
func TestPickDoneReports(t *testing.T) {
	c := newCache(t, discovery.Options{ConsecutiveFailures: 2, MaxOutlierEjectionPercent: 100})
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	p := c.Picker()
	pickAddr := func(addr string) discovery.PickResult {
		t.Helper()
		for range 10 {
			pr, err := p.Pick(context.Background(), orders)
			if err != nil {
				t.Fatal(err)
			}
			if pr.Address == addr {
				return pr
			}
		}
		t.Fatalf("%s never picked", addr)
		return discovery.PickResult{}
	}

	pickAddr("a:1").Done(discovery.DoneInfo{Down: true})
	if got := addrs(c.Ready(orders)); len(got) != 2 || got[0] != "b:2" {
		t.Fatalf("after Down: ready %v", got)
	}
	pickAddr("b:2").Done(discovery.DoneInfo{Status: 503})
	pickAddr("b:2").Done(discovery.DoneInfo{Status: 200}) // a success resets the count
	pickAddr("b:2").Done(discovery.DoneInfo{Status: 0})
	if got := addrs(c.Ready(orders)); len(got) != 2 {
		t.Fatalf("one failure in a row ejected: ready %v", got)
	}
	pickAddr("b:2").Done(discovery.DoneInfo{Status: 500})
	if got := addrs(c.Ready(orders)); len(got) != 1 || got[0] != "c:3" {
		t.Fatalf("two failures in a row: ready %v", got)
	}

	// A report of an endpoint removed meanwhile is ignored.
	pr := pickAddr("c:3")
	c.UpdateTarget(orders, eps("d:4"))
	pr.Done(discovery.DoneInfo{Down: true})
	if got := addrs(c.Ready(orders)); len(got) != 1 || got[0] != "d:4" {
		t.Fatalf("stale report: ready %v", got)
	}
}

// The Picker's Pick of a target an on-demand backend does not know yet
// waits for its first answer, bounded by ctx.
func TestPickerWaitsForOnDemandTarget(t *testing.T) {
	c := newCache(t, discovery.Options{FirstResolveTimeout: 2 * time.Second})
	w := &fakeWatcher{calls: map[discovery.Target]int{}, c: c, delay: 50 * time.Millisecond,
		eps: map[discovery.Target][]discovery.Endpoint{orders: eps("a:1")}}
	c.SetWatcher(w)
	pr, err := c.Picker().Pick(context.Background(), orders)
	if err != nil || pr.Address != "a:1" {
		t.Fatalf("Pick = %+v, %v", pr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Picker().Pick(ctx, users); !errors.Is(err, discovery.ErrUnknownTarget) { // never answers
		t.Fatalf("Pick of a target never resolved = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Pick waited %v past its context", d)
	}
}

func TestPickerHotPathDoesNotAllocate(t *testing.T) {
	c := newCache(t, discovery.Options{})
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	p := c.Picker()
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		pr, _ := p.Pick(ctx, orders)
		pr.Done(discovery.DoneInfo{Status: 200})
	}); n != 0 {
		t.Errorf("Pick and Done: %v allocs per call, want 0", n)
	}
}

func BenchmarkPickerPickAndDone(b *testing.B) {
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	p := c.Picker()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			pr, err := p.Pick(ctx, orders)
			if err != nil {
				b.Fatal(err)
			}
			pr.Done(discovery.DoneInfo{Status: 200})
		}
	})
}
