package resiliency

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"
)

// Breaker errors: both mean the call was not attempted.
var (
	ErrOpen            = errors.New("resiliency: circuit breaker is open")
	ErrTooManyRequests = errors.New("resiliency: circuit breaker is half-open and its probes are in flight")
)

// State of a circuit breaker.
type State int32

// States, as sony/gobreaker (which Dapr uses) names them.
const (
	StateClosed State = iota
	StateHalfOpen
	StateOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return "unknown"
}

// Counts are the counters a trip expression sees, under Dapr's names.
type Counts struct {
	Requests             uint32
	TotalSuccesses       uint32
	TotalFailures        uint32
	ConsecutiveSuccesses uint32
	ConsecutiveFailures  uint32
}

// Trip is a compiled trip expression: CEL over the five int variables
// requests, totalSuccesses, totalFailures, consecutiveSuccesses and
// consecutiveFailures, of type bool.
type Trip struct {
	src string
	prg cel.Program
}

// tripEnv is made the first time a trip expression is compiled (a CEL
// environment is ~100 µs and 120 allocations: not in package init).
var tripEnv = sync.OnceValue(func() *cel.Env {
	env, err := cel.NewEnv(
		cel.Variable("requests", cel.IntType),
		cel.Variable("totalSuccesses", cel.IntType),
		cel.Variable("totalFailures", cel.IntType),
		cel.Variable("consecutiveSuccesses", cel.IntType),
		cel.Variable("consecutiveFailures", cel.IntType),
	)
	if err != nil {
		panic(err)
	}
	return env
})

// CompileTrip compiles a trip expression. Unlike Dapr, an unknown variable
// (a typo) or a non-bool expression is an error, not a breaker that never
// trips.
func CompileTrip(src string) (*Trip, error) {
	ast, iss := tripEnv().Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("resiliency: trip %q: %w", src, iss.Err())
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("resiliency: trip %q is of type %s, want bool", src, ast.OutputType())
	}
	prg, err := tripEnv().Program(ast)
	if err != nil {
		return nil, fmt.Errorf("resiliency: trip %q: %w", src, err)
	}
	return &Trip{src: src, prg: prg}, nil
}

// String returns the expression's source.
func (t *Trip) String() string { return t.src }

// countsActivation feeds Counts to CEL without building a map.
type countsActivation struct{ c Counts }

func (a *countsActivation) ResolveName(name string) (any, bool) {
	switch name {
	case "requests":
		return types.Int(a.c.Requests), true
	case "totalSuccesses":
		return types.Int(a.c.TotalSuccesses), true
	case "totalFailures":
		return types.Int(a.c.TotalFailures), true
	case "consecutiveSuccesses":
		return types.Int(a.c.ConsecutiveSuccesses), true
	case "consecutiveFailures":
		return types.Int(a.c.ConsecutiveFailures), true
	}
	return nil, false
}

func (a *countsActivation) Parent() interpreter.Activation { return nil }

// Eval evaluates the expression over c. An evaluation error (overflow, say)
// does not trip, as in Dapr.
func (t *Trip) Eval(c Counts) bool {
	act := countsActivation{c: c}
	out, _, err := t.prg.Eval(&act)
	if err != nil {
		return false
	}
	b, ok := out.(types.Bool)
	return ok && bool(b)
}

// BreakerPolicy is a circuitBreakers entry.
type BreakerPolicy struct {
	Name string
	// MaxRequests is the number of probes let through while half-open, and
	// the consecutive successes that close the breaker again (default 1).
	MaxRequests uint32
	// Interval clears the counts periodically while closed (0: never).
	Interval time.Duration
	// Timeout is how long the breaker stays open before going half-open
	// (default 60s).
	Timeout time.Duration
	// Trip decides, after each failure while closed, whether to open
	// (default consecutiveFailures > 5).
	Trip *Trip
}

// Breaker is one circuit breaker, with sony/gobreaker's semantics: while
// closed, every failure evaluates Trip and may open it; while open, calls
// fail at once until Timeout has passed; then half-open lets MaxRequests
// calls through: any failure opens it again, MaxRequests consecutive
// successes close it. Results of calls made in an earlier generation (before
// a state change) are ignored.
//
// Lock-light: while open, Allow rejects with one atomic load; otherwise a
// short critical section (no allocation, CEL runs only on failures while
// closed).
type Breaker struct {
	pol *BreakerPolicy

	openUntil atomic.Int64 // unix nanos; a fast reject while open
	state     atomic.Int32 // State, for readers (metrics)

	mu     sync.Mutex
	gen    uint64
	counts Counts
	expiry time.Time // closed: end of the interval (zero: none); open: end of the timeout

	// OnStateChange, if set before use, is called (outside the lock) on
	// every transition.
	OnStateChange func(from, to State)
}

// NewBreaker makes a closed breaker.
func NewBreaker(p *BreakerPolicy) *Breaker {
	return &Breaker{pol: p}
}

// Policy returns the breaker's policy.
func (b *Breaker) Policy() *BreakerPolicy { return b.pol }

// State returns the current state (an open breaker whose timeout passed
// reports open until the next call moves it to half-open).
func (b *Breaker) State() State { return State(b.state.Load()) }

// Allow asks to make a call. On success it returns the generation to pass
// to Done; otherwise ErrOpen or ErrTooManyRequests.
func (b *Breaker) Allow(now time.Time) (uint64, error) {
	if now.UnixNano() < b.openUntil.Load() {
		return 0, ErrOpen
	}
	b.mu.Lock()
	from, to := b.currentState(now)
	st := State(b.state.Load())
	if st == StateOpen {
		b.mu.Unlock()
		b.notify(from, to)
		return 0, ErrOpen
	}
	if st == StateHalfOpen && b.counts.Requests >= b.pol.MaxRequests {
		b.mu.Unlock()
		b.notify(from, to)
		return 0, ErrTooManyRequests
	}
	b.counts.Requests++
	gen := b.gen
	b.mu.Unlock()
	b.notify(from, to)
	return gen, nil
}

// Done reports the outcome of a call allowed in generation gen.
func (b *Breaker) Done(gen uint64, success bool, now time.Time) {
	b.mu.Lock()
	from, to := b.currentState(now)
	if gen != b.gen {
		b.mu.Unlock()
		b.notify(from, to)
		return
	}
	st := State(b.state.Load())
	c := &b.counts
	if success {
		c.TotalSuccesses++
		c.ConsecutiveSuccesses++
		c.ConsecutiveFailures = 0
		if st == StateHalfOpen && c.ConsecutiveSuccesses >= b.pol.MaxRequests {
			from, to = st, StateClosed
			b.setState(StateClosed, now)
		}
	} else {
		c.TotalFailures++
		c.ConsecutiveFailures++
		c.ConsecutiveSuccesses = 0
		switch st {
		case StateClosed:
			if b.pol.Trip.Eval(*c) {
				from, to = st, StateOpen
				b.setState(StateOpen, now)
			}
		case StateHalfOpen:
			from, to = st, StateOpen
			b.setState(StateOpen, now)
		}
	}
	b.mu.Unlock()
	b.notify(from, to)
}

// currentState advances time-driven transitions (b.mu held) and returns
// the transition made, if any.
func (b *Breaker) currentState(now time.Time) (from, to State) {
	st := State(b.state.Load())
	switch st {
	case StateClosed:
		if b.pol.Interval > 0 {
			if b.expiry.IsZero() {
				b.expiry = now.Add(b.pol.Interval) // a new breaker's first call
			} else if b.expiry.Before(now) {
				b.toNewGeneration(now)
			}
		}
	case StateOpen:
		if b.expiry.Before(now) {
			b.setState(StateHalfOpen, now)
			return StateOpen, StateHalfOpen
		}
	}
	return st, st
}

func (b *Breaker) setState(to State, now time.Time) {
	b.state.Store(int32(to))
	if to == StateOpen {
		b.openUntil.Store(now.Add(b.pol.Timeout).UnixNano())
	} else {
		b.openUntil.Store(0)
	}
	b.toNewGeneration(now)
}

func (b *Breaker) toNewGeneration(now time.Time) {
	b.gen++
	b.counts = Counts{}
	switch State(b.state.Load()) {
	case StateClosed:
		if b.pol.Interval > 0 {
			b.expiry = now.Add(b.pol.Interval)
		} else {
			b.expiry = time.Time{}
		}
	case StateOpen:
		b.expiry = now.Add(b.pol.Timeout)
	default:
		b.expiry = time.Time{}
	}
}

func (b *Breaker) notify(from, to State) {
	if from != to && b.OnStateChange != nil {
		b.OnStateChange(from, to)
	}
}
