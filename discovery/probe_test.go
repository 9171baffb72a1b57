package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

// TestAllEjectedProbeBringsBack is the regression test of "one instance, its
// app stopped and restarted: 503 ERR_NO_HEALTHY_ENDPOINT for about 5 s
// after the app is back" (#18): the only endpoint, ejected by a Down
// report, is probed by one call per ProbeInterval; the probe's answer puts
// it back at once, long before its ejection time is up. Between probes the
// calls fail fast (ErrNoHealthyEndpoint).
func TestAllEjectedProbeBringsBack(t *testing.T) {
	const interval = 50 * time.Millisecond
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, ProbeInterval: interval})
	p := c.Picker()
	ctx := context.Background()
	c.UpdateTarget(orders, eps("a:1"))
	pr, err := p.Pick(ctx, orders)
	if err != nil {
		t.Fatal(err)
	}
	pr.Done(discovery.DoneInfo{Down: true}) // the app was stopped: short-circuit
	if got := c.Ready(orders); len(got) != 0 {
		t.Fatalf("Ready after a Down report = %v, want none", got)
	}

	// The first pick after the ejection is a probe; the ones right after
	// it fail fast.
	probe, err := p.Pick(ctx, orders)
	if err != nil || probe.Address != "a:1" {
		t.Fatalf("first pick after the ejection = %v, %v; want a probe of a:1", probe.Address, err)
	}
	for i := range 10 {
		if _, err := p.Pick(ctx, orders); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
			t.Fatalf("pick %d during the probe interval: err = %v, want ErrNoHealthyEndpoint", i, err)
		}
	}
	// The probe failed too (still down): it stays out, and the next probe
	// comes after the interval.
	probe.Done(discovery.DoneInfo{Down: true})
	if got := c.Ready(orders); len(got) != 0 {
		t.Fatalf("Ready after a failed probe = %v, want none", got)
	}
	time.Sleep(interval + 10*time.Millisecond)
	probe, err = p.Pick(ctx, orders)
	if err != nil || probe.Address != "a:1" {
		t.Fatalf("pick after the interval = %v, %v; want a probe of a:1", probe.Address, err)
	}
	// The app is back: the probe's answer puts the endpoint back at once.
	probe.Done(discovery.DoneInfo{Status: 200})
	if got := addrs(c.Ready(orders)); len(got) != 1 || got[0] != "a:1" {
		t.Fatalf("Ready after a successful probe = %v, want [a:1]", got)
	}
	for i := range 5 {
		if pr, err := p.Pick(ctx, orders); err != nil || pr.Address != "a:1" {
			t.Fatalf("pick %d after the return = %v, %v", i, pr.Address, err)
		}
	}
}

// TestProbeAnswers: any answer of a probe (a 5xx included: the callee's
// sidecar and app are reachable) puts the endpoint back; a broken connection
// (status 0) or a Down report does not.
func TestProbeAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    discovery.DoneInfo
		back bool
	}{
		{"200", discovery.DoneInfo{Status: 200}, true},
		{"404", discovery.DoneInfo{Status: 404}, true},
		{"500 from the app", discovery.DoneInfo{Status: 500}, true},
		{"broken connection", discovery.DoneInfo{}, false},
		{"refused", discovery.DoneInfo{Down: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, ProbeInterval: time.Millisecond})
			c.UpdateTarget(orders, eps("a:1"))
			c.ReportFailure(orders, "a:1")
			probe, err := c.Picker().Pick(context.Background(), orders)
			if err != nil {
				t.Fatal(err)
			}
			probe.Done(tc.d)
			if back := len(c.Ready(orders)) == 1; back != tc.back {
				t.Fatalf("back = %v, want %v", back, tc.back)
			}
		})
	}
}

// TestProbeOnlyWhenNoneReady: while one endpoint is ready, an ejected one
// is never picked; endpoints the backend calls unhealthy are never probed.
func TestProbeOnlyWhenNoneReady(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, ProbeInterval: time.Nanosecond})
	p := c.Picker()
	c.UpdateTarget(orders, eps("a:1", "b:2", "c:3"))
	c.ReportFailure(orders, "a:1")
	for range 20 {
		pr, err := p.Pick(context.Background(), orders)
		if err != nil || pr.Address == "a:1" {
			t.Fatalf("pick with b and c ready = %v, %v", pr.Address, err)
		}
	}
	c.SetHealth(orders, "b:2", false)
	c.SetHealth(orders, "c:3", false)
	// Only a:1 is left (ejected, healthy): probed; b and c never.
	for range 20 {
		pr, err := p.Pick(context.Background(), orders)
		if err == nil && pr.Address != "a:1" {
			t.Fatalf("probe of %s, which the backend calls unhealthy", pr.Address)
		}
	}
	c.SetHealth(orders, "a:1", false)
	time.Sleep(time.Millisecond)
	if pr, err := p.Pick(context.Background(), orders); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("all unhealthy: pick = %v, %v; want ErrNoHealthyEndpoint", pr.Address, err)
	}
}

// TestProbeRoundRobin: with every endpoint ejected, the probes go round
// the ejected endpoints.
func TestProbeRoundRobin(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, ProbeInterval: time.Nanosecond})
	c.UpdateTarget(orders, eps("a:1", "b:2"))
	c.ReportFailure(orders, "a:1")
	c.ReportFailure(orders, "b:2")
	seen := map[string]int{}
	for range 40 {
		if pr, err := c.Picker().Pick(context.Background(), orders); err == nil {
			seen[pr.Address]++
		}
		time.Sleep(10 * time.Microsecond)
	}
	if seen["a:1"] == 0 || seen["b:2"] == 0 {
		t.Fatalf("probes = %v, want both endpoints", seen)
	}
}

// TestProbeNoAllocs: a pick that fails fast and a probe allocate nothing.
func TestProbeNoAllocs(t *testing.T) {
	c := newCache(t, discovery.Options{BaseEjectionTime: time.Hour, ProbeInterval: time.Hour})
	c.UpdateTarget(orders, eps("a:1"))
	c.ReportFailure(orders, "a:1")
	p := c.Picker()
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { _, _ = p.Pick(ctx, orders) }); n != 0 {
		t.Fatalf("Pick with every endpoint ejected: %v allocs, want 0", n)
	}
}
