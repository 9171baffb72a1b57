package resiliency

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reserved policy names for service invocation, in Dapr's resolution order:
// a target without a named entry in targets.apps uses, per kind of policy,
// DefaultApp*Policy, else Default*Policy. A target with a named entry uses
// only the policies its entry names (as in Dapr: no mixing with defaults).
const (
	DefaultRetryPolicy             = "DefaultRetryPolicy"
	DefaultAppRetryPolicy          = "DefaultAppRetryPolicy"
	DefaultTimeoutPolicy           = "DefaultTimeoutPolicy"
	DefaultAppTimeoutPolicy        = "DefaultAppTimeoutPolicy"
	DefaultCircuitBreakerPolicy    = "DefaultCircuitBreakerPolicy"
	DefaultAppCircuitBreakerPolicy = "DefaultAppCircuitBreakerPolicy"
)

// ErrCodeCircuitOpen is the errorCode of the 503 answered while a target's
// circuit breaker is open (or half-open with its probes in flight).
const ErrCodeCircuitOpen = "ERR_CIRCUIT_OPEN"

// maxTargets bounds the per-target sets kept; beyond it, sets of new
// targets are built per call (correct, without shared breaker state).
const maxTargets = 10000

// Set is the resiliency of one target (app, namespace): immutable policies
// plus the target's own breaker and retry budget.
type Set struct {
	App, Namespace string
	// Timeout bounds each attempt (0: none).
	Timeout time.Duration
	// Retry is the retry policy (nil: meshd's safe default, see package
	// proxy).
	Retry *Retry
	// Breaker is the target's circuit breaker (nil: none).
	Breaker *Breaker
	// Budget bounds this target's retries.
	Budget *Budget
}

// Config answers which Set applies to a target.
type Config struct {
	spec    *Spec
	named   map[string]PolicyNames // "app" and "app.ns"
	byNS    bool                   // some named key has a namespace
	deflt   PolicyNames            // the defaults for unnamed targets
	targets atomic.Pointer[map[targetKey]*Set]
	mu      sync.Mutex // serializes copy-on-write of targets

	// OnBreakerChange, if set before use, is called on every breaker
	// transition.
	OnBreakerChange func(app, namespace string, from, to State)
}

type targetKey struct{ app, ns string }

// New prepares a Config from a Spec.
func New(s *Spec) *Config {
	c := &Config{spec: s, named: s.Apps}
	for k := range s.Apps {
		if strings.Contains(k, ".") {
			c.byNS = true
		}
	}
	c.deflt.Timeout = firstExisting(s.Timeouts, DefaultAppTimeoutPolicy, DefaultTimeoutPolicy)
	c.deflt.Retry = firstExisting(s.Retries, DefaultAppRetryPolicy, DefaultRetryPolicy)
	c.deflt.CircuitBreaker = firstExisting(s.CircuitBreakers, DefaultAppCircuitBreakerPolicy, DefaultCircuitBreakerPolicy)
	m := map[targetKey]*Set{}
	c.targets.Store(&m)
	return c
}

func firstExisting[V any](m map[string]V, names ...string) string {
	for _, n := range names {
		if _, ok := m[n]; ok {
			return n
		}
	}
	return ""
}

// Spec returns the parsed documents.
func (c *Config) Spec() *Spec { return c.spec }

// AppliesTo reports whether the documents' scopes include appID (no scopes:
// every app), as Dapr's scopes field.
func (c *Config) AppliesTo(appID string) bool {
	return len(c.spec.Scopes) == 0 || contains(c.spec.Scopes, appID)
}

// For returns the Set for a call to app in namespace ns, or nil when no
// policy applies. The common case is one atomic load and one map lookup,
// without allocation; the first call to a target builds its Set.
func (c *Config) For(app, ns string) *Set {
	if c == nil {
		return nil
	}
	k := targetKey{app, ns}
	if s, ok := (*c.targets.Load())[k]; ok {
		return s
	}
	return c.build(k)
}

func (c *Config) build(k targetKey) *Set {
	names, ok := PolicyNames{}, false
	if c.byNS {
		names, ok = c.named[k.app+"."+k.ns]
	}
	if !ok {
		names, ok = c.named[k.app]
	}
	if !ok {
		names = c.deflt
	}
	var s *Set
	if names != (PolicyNames{}) {
		s = &Set{App: k.app, Namespace: k.ns, Timeout: c.spec.Timeouts[names.Timeout], Budget: NewBudget()}
		if names.Retry != "" {
			s.Retry = c.spec.Retries[names.Retry]
		}
		if names.CircuitBreaker != "" {
			s.Breaker = NewBreaker(c.spec.CircuitBreakers[names.CircuitBreaker])
			if f := c.OnBreakerChange; f != nil {
				app, ns := k.app, k.ns
				s.Breaker.OnStateChange = func(from, to State) { f(app, ns, from, to) }
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.targets.Load()
	if prev, ok := old[k]; ok {
		return prev // built concurrently: one Set (one breaker) per target
	}
	if len(old) >= maxTargets {
		return s
	}
	m := make(map[targetKey]*Set, len(old)+1)
	for kk, v := range old {
		m[kk] = v
	}
	m[k] = s
	c.targets.Store(&m)
	return s
}
