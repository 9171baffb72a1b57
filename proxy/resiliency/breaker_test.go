package resiliency

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func mustTrip(t *testing.T, src string) *Trip {
	t.Helper()
	tr, err := CompileTrip(src)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestTripEval(t *testing.T) {
	c := Counts{Requests: 10, TotalSuccesses: 4, TotalFailures: 6, ConsecutiveSuccesses: 0, ConsecutiveFailures: 3}
	for _, tc := range []struct {
		src  string
		want bool
	}{
		{"consecutiveFailures > 5", false},
		{"consecutiveFailures >= 3", true},
		{"totalFailures > 5", true},
		{"requests > 5 && totalFailures * 2 > requests", true},
		{"totalSuccesses == 4 && consecutiveSuccesses == 0", true},
		{"requests > 100 || consecutiveFailures > 10", false},
	} {
		if got := mustTrip(t, tc.src).Eval(c); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.src, got, tc.want)
		}
	}
	// An evaluation error does not trip.
	if mustTrip(t, "requests / (totalFailures - 6) > 0").Eval(c) {
		t.Error("division by zero tripped")
	}
	for _, bad := range []string{"", "consecutiveFailure > 5", "requests", "foo(1)", "requests > '5'"} {
		if _, err := CompileTrip(bad); err == nil {
			t.Errorf("CompileTrip(%q) accepted", bad)
		}
	}
}

func TestBreakerStateMachine(t *testing.T) {
	p := &BreakerPolicy{Name: "cb", MaxRequests: 2, Timeout: 10 * time.Second, Trip: mustTrip(t, "consecutiveFailures >= 3")}
	b := NewBreaker(p)
	var changes []string
	b.OnStateChange = func(from, to State) { changes = append(changes, from.String()+">"+to.String()) }
	now := time.Unix(1000, 0)
	call := func(ok bool) error {
		g, err := b.Allow(now)
		if err != nil {
			return err
		}
		b.Done(g, ok, now)
		return nil
	}
	// Two failures, a success, two failures: never 3 in a row.
	for _, ok := range []bool{false, false, true, false, false} {
		if err := call(ok); err != nil {
			t.Fatal(err)
		}
	}
	if b.State() != StateClosed {
		t.Fatal("tripped early")
	}
	if err := call(false); err != nil || b.State() != StateOpen {
		t.Fatalf("third consecutive failure: %v, state %v", err, b.State())
	}
	if err := call(true); !errors.Is(err, ErrOpen) {
		t.Fatalf("open breaker let a call through: %v", err)
	}
	now = now.Add(9 * time.Second)
	if err := call(true); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened before its timeout: %v", err)
	}
	now = now.Add(2 * time.Second)
	// Half-open: two probes pass, the third waits.
	g1, err1 := b.Allow(now)
	g2, err2 := b.Allow(now)
	_, err3 := b.Allow(now)
	if err1 != nil || err2 != nil || !errors.Is(err3, ErrTooManyRequests) || b.State() != StateHalfOpen {
		t.Fatalf("half-open probes: %v %v %v, state %v", err1, err2, err3, b.State())
	}
	b.Done(g1, true, now)
	if b.State() != StateHalfOpen {
		t.Fatal("closed after 1 of 2 successes")
	}
	b.Done(g2, true, now)
	if b.State() != StateClosed {
		t.Fatalf("not closed after 2 successes: %v", b.State())
	}
	// Trip again; a failed probe re-opens it.
	for range 3 {
		_ = call(false)
	}
	now = now.Add(11 * time.Second)
	if err := call(false); err != nil || b.State() != StateOpen {
		t.Fatalf("failed probe: %v, state %v", err, b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>closed", "closed>open", "open>half-open", "half-open>open"}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", changes, want)
		}
	}
}

func TestBreakerIntervalAndGenerations(t *testing.T) {
	p := &BreakerPolicy{MaxRequests: 1, Interval: 5 * time.Second, Timeout: time.Second, Trip: mustTrip(t, "totalFailures >= 3")}
	b := NewBreaker(p)
	now := time.Unix(0, 0)
	for range 2 {
		g, _ := b.Allow(now)
		b.Done(g, false, now)
	}
	// The interval clears the counts: two more failures do not trip.
	now = now.Add(6 * time.Second)
	for range 2 {
		g, _ := b.Allow(now)
		b.Done(g, false, now)
	}
	if b.State() != StateClosed {
		t.Fatal("counts survived the interval")
	}
	// A result from an old generation is ignored.
	old, _ := b.Allow(now)
	now = now.Add(6 * time.Second)
	g, _ := b.Allow(now)
	b.Done(g, false, now)
	b.Done(old, false, now)
	g, _ = b.Allow(now)
	b.Done(g, false, now)
	if b.State() != StateClosed {
		t.Fatal("a stale result counted")
	}
	g, _ = b.Allow(now)
	b.Done(g, false, now)
	if b.State() != StateOpen {
		t.Fatal("not open after 3 failures in one interval")
	}
}

func TestBreakerConcurrent(t *testing.T) {
	p := &BreakerPolicy{MaxRequests: 3, Timeout: time.Millisecond, Trip: mustTrip(t, "consecutiveFailures > 2")}
	b := NewBreaker(p)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				now := time.Now()
				g, err := b.Allow(now)
				if err == nil {
					b.Done(g, (i+w)%3 != 0, now)
				}
				_ = b.State()
			}
		}()
	}
	wg.Wait()
}

func BenchmarkBreakerClosed(b *testing.B) {
	p := &BreakerPolicy{MaxRequests: 1, Timeout: time.Minute, Trip: mustTrip(&testing.T{}, "consecutiveFailures > 5")}
	br := NewBreaker(p)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			now := time.Now()
			g, err := br.Allow(now)
			if err == nil {
				br.Done(g, true, now)
			}
		}
	})
}

func BenchmarkTripEval(b *testing.B) {
	tr, _ := CompileTrip("consecutiveFailures > 5 && requests > 10")
	c := Counts{Requests: 20, ConsecutiveFailures: 3}
	b.ReportAllocs()
	for b.Loop() {
		tr.Eval(c)
	}
}

func BenchmarkFor(b *testing.B) {
	s, _ := Parse("docs.yaml", []byte(daprDocsExample))
	c := New(s)
	b.ReportAllocs()
	for b.Loop() {
		_ = c.For("appB", "default")
	}
}
