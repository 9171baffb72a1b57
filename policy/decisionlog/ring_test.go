package decisionlog

import (
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
)

func rec(i int) *Record {
	p := "/p/" + strconv.Itoa(i)
	return &Record{Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http",
		Method: "GET", Path: p, Query: p, Allow: i%2 == 0, Rule: p}
}

func TestRingKeepsTheLastN(t *testing.T) {
	r := NewRing(4)
	if got, last, missed := r.Since(0); len(got) != 0 || last != 0 || missed != 0 {
		t.Fatalf("empty ring: %v %d %d", got, last, missed)
	}
	for i := 1; i <= 3; i++ {
		r.Add(rec(i))
	}
	got, last, missed := r.Since(0)
	if len(got) != 3 || last != 3 || missed != 0 || got[0].Seq != 1 || got[0].Path != "/p/1" || got[2].Path != "/p/3" {
		t.Fatalf("3 of 4: %+v last %d missed %d", got, last, missed)
	}
	for i := 4; i <= 10; i++ {
		r.Add(rec(i))
	}
	got, last, missed = r.Since(0)
	if len(got) != 4 || last != 10 || missed != 6 {
		t.Fatalf("after 10 adds: %d kept, last %d, missed %d; want 4, 10, 6", len(got), last, missed)
	}
	for i, g := range got {
		if want := uint64(7 + i); g.Seq != want || g.Path != "/p/"+strconv.Itoa(int(want)) {
			t.Errorf("record %d: seq %d path %s, want %d", i, g.Seq, g.Path, want)
		}
	}
	// Reading on from a sequence number: only the newer ones.
	if got, _, missed = r.Since(8); len(got) != 2 || got[0].Seq != 9 || missed != 0 {
		t.Fatalf("since 8: %+v missed %d", got, missed)
	}
	if got, _, _ = r.Since(10); len(got) != 0 {
		t.Fatalf("since the last: %+v", got)
	}
	if got, _, _ = r.Since(99); len(got) != 0 {
		t.Fatalf("since a number from the future: %+v", got)
	}
	if NewRing(0).Cap() != 1 || NewRing(-5).Cap() != 1 {
		t.Error("a ring keeps at least one decision")
	}
}

// TestRingConcurrent: writers and readers at once (run with -race); every
// record read is one whole write, never a mix of two.
func TestRingConcurrent(t *testing.T) {
	r := NewRing(64)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				r.Add(rec(w*100000 + i))
			}
		}()
	}
	var rd sync.WaitGroup
	for range 2 {
		rd.Add(1)
		go func() {
			defer rd.Done()
			var after uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, last, _ := r.Since(after)
				for _, g := range got {
					if g.Path != g.Query || g.Path != g.Rule {
						t.Errorf("torn record %+v", g)
						return
					}
					if g.Seq <= after {
						t.Errorf("seq %d not above %d", g.Seq, after)
						return
					}
				}
				after = last
			}
		}()
	}
	wg.Wait()
	close(stop)
	rd.Wait()
	if _, last, _ := r.Since(0); last != 20000 {
		t.Errorf("last %d, want 20000", last)
	}
}

func TestKeepAllocatesNothing(t *testing.T) {
	l := New(slog.New(slog.DiscardHandler), 0, WithRecent(128))
	id, err := certs.NewIdentity("cluster.local", "default", "frontend")
	if err != nil {
		t.Fatal(err)
	}
	r := rec(1)
	r.Caller = id
	if n := testing.AllocsPerRun(1000, func() { l.Keep(r) }); n != 0 {
		t.Errorf("Keep allocates %v times, want 0", n)
	}
	got, _, _ := l.Recent().Since(0)
	if len(got) != 128 || got[0].Time == 0 || got[0].Caller != id {
		t.Fatalf("kept %d, first %+v", len(got), got[0])
	}
	if e := got[0].Entry(); e.Source != "spiffe://cluster.local/ns/default/frontend" || e.Destination != "orders.default" || e.Query != "/p/1" {
		t.Errorf("entry %+v", e)
	}
	// Without WithRecent nothing is kept, and Keep is a no-op.
	l = New(slog.New(slog.DiscardHandler), 0)
	l.Keep(r)
	if l.Recent() != nil {
		t.Error("a ring without WithRecent")
	}
	if New(nil, 0, WithRecent(0)).Recent() != nil || New(nil, 0, WithRecent(-1)).Recent() != nil {
		t.Error("WithRecent(n <= 0) keeps a ring")
	}
}

func BenchmarkKeepParallel(b *testing.B) {
	l := New(slog.New(slog.DiscardHandler), 0, WithRecent(DefaultRecent))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rec(1)
		for pb.Next() {
			l.Keep(r)
		}
	})
}

// TestRingMakesSlotsAsDecisionsComeIn: a fresh Ring of the default size
// holds no slots (a sidecar without policy never pays for them); they are
// made a chunk at a time as decisions reach them, and a Ring whose size is
// not a multiple of the chunk keeps exactly its last n.
func TestRingMakesSlotsAsDecisionsComeIn(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := NewRing(DefaultRecent)
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<10 {
		t.Errorf("NewRing(%d) allocated %d bytes, want the slots made later (< 4 KiB)", DefaultRecent, got)
	}
	made := func() (n int) {
		for i := range r.chunks {
			if p := r.chunks[i].Load(); p != nil {
				n += len(*p)
			}
		}
		return n
	}
	if n := made(); n != 0 {
		t.Fatalf("fresh ring: %d slots made, want 0", n)
	}
	for i := 1; i <= ringChunk+1; i++ {
		r.Add(rec(i))
	}
	if n := made(); n != 2*ringChunk {
		t.Fatalf("after %d decisions: %d slots made, want %d", ringChunk+1, n, 2*ringChunk)
	}

	r = NewRing(100) // one full chunk and one of 36
	for i := 1; i <= 250; i++ {
		r.Add(rec(i))
	}
	if n := made(); n != 100 {
		t.Errorf("ring of 100: %d slots made", n)
	}
	got, last, missed := r.Since(0)
	if len(got) != 100 || last != 250 || missed != 150 || got[0].Seq != 151 || got[99].Path != "/p/250" {
		t.Fatalf("ring of 100 after 250: %d kept (first %d), last %d, missed %d", len(got), got[0].Seq, last, missed)
	}
	// Once every slot exists, keeping a decision allocates nothing.
	one := rec(1)
	if n := testing.AllocsPerRun(1000, func() { r.Add(one) }); n != 0 {
		t.Errorf("Add on a full ring allocates %v times", n)
	}
}
