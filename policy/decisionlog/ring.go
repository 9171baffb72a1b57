package decisionlog

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
)

// DefaultRecent is the number of recent decisions a sidecar keeps in
// memory (meshd --policy-recent-decisions).
const DefaultRecent = 1024

// Record is one decision as the Ring keeps it: the request's own values,
// copied without building a string, so that keeping every decision costs
// the call no allocation.
type Record struct {
	// Time is when the decision was made (Unix nanoseconds).
	Time        int64
	Caller      certs.Identity // zero without mTLS
	Destination discovery.Target
	Protocol    string
	Method      string
	Path        string
	Query       string // the raw query string
	Allow       bool
	// Audit marks an allow that enforcing would have denied.
	Audit bool
	// Reason is the policy's reason (denials and audits), Rule the
	// deciding rule.
	Reason, Rule string
}

// Entry returns the record as a log Entry (Source and Destination as
// strings).
func (r *Record) Entry() Entry {
	src := ""
	if !r.Caller.TrustDomain.IsZero() {
		src = r.Caller.String()
	}
	return Entry{Source: src, Destination: r.Destination.String(), Protocol: r.Protocol, Method: r.Method,
		Path: r.Path, Query: r.Query, Allow: r.Allow, Audit: r.Audit, Reason: r.Reason, Rule: r.Rule}
}

// Ring keeps the last N decisions, every one of them. Add takes one atomic
// increment and the lock of one slot of its own (a reader copying that very
// slot is the only other party that ever takes it), and allocates nothing
// once the slots it writes exist. The slots are made in chunks of
// ringChunk as decisions first reach them: a sidecar that makes no
// decisions (no policy) keeps no slots, and the default 1,024 slots
// (~600 KB) are all there only after 1,024 decisions.
// The zero value is unusable; use NewRing.
type Ring struct {
	next   atomic.Uint64 // sequence number of the last record added (1-based)
	n      uint64        // slots
	chunks []atomic.Pointer[[]slot]
}

// ringChunk is the number of slots made at once (~38 KB).
const ringChunk = 64

type slot struct {
	mu  sync.Mutex
	seq uint64 // of the record held; 0: empty
	rec Record
}

// NewRing returns a Ring that keeps the last n decisions (n >= 1).
func NewRing(n int) *Ring {
	if n < 1 {
		n = 1
	}
	return &Ring{n: uint64(n), chunks: make([]atomic.Pointer[[]slot], (n+ringChunk-1)/ringChunk)}
}

// Cap is the number of decisions the Ring keeps.
func (r *Ring) Cap() int { return int(r.n) }

// slot returns the slot of sequence number seq, made if create is set and it
// does not exist yet (nil otherwise).
func (r *Ring) slot(seq uint64, create bool) *slot {
	i := (seq - 1) % r.n
	c := &r.chunks[i/ringChunk]
	p := c.Load()
	if p == nil {
		if !create {
			return nil
		}
		size := min(uint64(ringChunk), r.n-i/ringChunk*ringChunk)
		fresh := newSlots(size)
		if !c.CompareAndSwap(nil, fresh) {
			p = c.Load() // another writer made it first
		} else {
			p = fresh
		}
	}
	return &(*p)[i%ringChunk]
}

func newSlots(n uint64) *[]slot {
	s := make([]slot, n)
	return &s
}

// Add keeps rec, replacing the oldest decision once the Ring is full.
func (r *Ring) Add(rec *Record) {
	n := r.next.Add(1)
	s := r.slot(n, true)
	s.mu.Lock()
	if n > s.seq { // a writer that lapped a slower one keeps its newer record
		s.seq, s.rec = n, *rec
	}
	s.mu.Unlock()
}

// Seq is a Record with its sequence number (1 for the first decision the
// sidecar made).
type Seq struct {
	Seq uint64
	Record
}

// Since returns the decisions kept with a sequence number above after,
// oldest first, and the number of the last decision made (the after of the
// next call). missed counts the decisions above after that are no longer
// kept (overwritten before they were read).
func (r *Ring) Since(after uint64) (recs []Seq, last, missed uint64) {
	last = r.next.Load()
	if after >= last {
		return nil, last, 0
	}
	lo := after + 1
	if n := r.n; last > n && lo < last-n+1 {
		missed = last - n + 1 - lo
		lo = last - n + 1
	}
	recs = make([]Seq, 0, last-lo+1)
	for seq := lo; seq <= last; seq++ {
		s := r.slot(seq, false)
		if s == nil { // its writer has not made the slot yet
			missed++
			continue
		}
		s.mu.Lock()
		if s.seq == seq {
			recs = append(recs, Seq{Seq: seq, Record: s.rec})
		} else {
			missed++ // overwritten meanwhile, or its writer not done yet
		}
		s.mu.Unlock()
	}
	return recs, last, missed
}

// now is the Record time: the wall clock at start plus the monotonic time
// since, which reads one clock instead of time.Now's two.
func now() int64 { return startWall + int64(time.Since(start)) }

var (
	start     = time.Now()
	startWall = start.UnixNano()
)
