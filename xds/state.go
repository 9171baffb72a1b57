package xds

import (
	"slices"
	"sync"

	"github.com/meshd/meshd/discovery"
)

// Endpoint is one instance of an app as the control plane serves it: the
// address of its sidecar's internal (mTLS) port and the health the backend
// gives it.
type Endpoint struct {
	Address string
	Healthy bool
}

// store is the discovery.Updater the backend pushes into. It keeps every
// app's endpoints and health, remembers which apps changed since the last
// take, and wakes the push loop.
type store struct {
	mu      sync.Mutex
	apps    map[discovery.Target]*appState
	dirty   map[discovery.Target]struct{}
	errs    uint64
	changed chan struct{} // capacity 1: a pending wake-up
}

type appState struct {
	eps       []discovery.Endpoint
	unhealthy map[string]bool
}

var _ discovery.Updater = (*store)(nil)

func newStore() *store {
	return &store{apps: map[discovery.Target]*appState{}, dirty: map[discovery.Target]struct{}{},
		changed: make(chan struct{}, 1)}
}

// markLocked records t as changed and wakes the loop. s.mu is held.
func (s *store) markLocked(t discovery.Target) {
	s.dirty[t] = struct{}{}
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func dedupe(eps []discovery.Endpoint) []discovery.Endpoint {
	out := make([]discovery.Endpoint, 0, len(eps))
	seen := make(map[string]bool, len(eps))
	for _, ep := range eps {
		if ep.Address == "" || seen[ep.Address] {
			continue
		}
		seen[ep.Address] = true
		out = append(out, ep)
	}
	return out
}

func (s *store) updateLocked(t discovery.Target, eps []discovery.Endpoint) {
	eps = dedupe(eps)
	old := s.apps[t]
	if old != nil && slices.Equal(old.eps, eps) {
		return
	}
	st := &appState{eps: eps, unhealthy: map[string]bool{}}
	if old != nil { // health survives an update that keeps the address
		for _, ep := range eps {
			if old.unhealthy[ep.Address] {
				st.unhealthy[ep.Address] = true
			}
		}
	}
	s.apps[t] = st
	s.markLocked(t)
}

// UpdateTarget implements discovery.Updater.
func (s *store) UpdateTarget(t discovery.Target, eps []discovery.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updateLocked(t, eps)
}

// RemoveTarget implements discovery.Updater.
func (s *store) RemoveTarget(t discovery.Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.apps[t]; ok {
		delete(s.apps, t)
		s.markLocked(t)
	}
}

// ReplaceAll implements discovery.Updater.
func (s *store) ReplaceAll(all map[discovery.Target][]discovery.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.apps {
		if _, ok := all[t]; !ok {
			delete(s.apps, t)
			s.markLocked(t)
		}
	}
	for t, eps := range all {
		s.updateLocked(t, eps)
	}
}

// SetHealth implements discovery.Updater.
func (s *store) SetHealth(t discovery.Target, addr string, healthy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.apps[t]
	if st == nil || !slices.ContainsFunc(st.eps, func(ep discovery.Endpoint) bool { return ep.Address == addr }) {
		return
	}
	if st.unhealthy[addr] == !healthy {
		return
	}
	if healthy {
		delete(st.unhealthy, addr)
	} else {
		st.unhealthy[addr] = true
	}
	s.markLocked(t)
}

// ReportError implements discovery.Updater: the backend logs its own
// errors; the control plane keeps serving the last state.
func (s *store) ReportError(error) {
	s.mu.Lock()
	s.errs++
	s.mu.Unlock()
}

// take returns the apps that changed since the last take, with their
// current endpoints (nil for an app that is gone).
func (s *store) take() map[discovery.Target][]Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[discovery.Target][]Endpoint, len(s.dirty))
	for t := range s.dirty {
		st := s.apps[t]
		if st == nil {
			out[t] = nil
			continue
		}
		eps := make([]Endpoint, len(st.eps))
		for i, ep := range st.eps {
			eps[i] = Endpoint{Address: ep.Address, Healthy: !st.unhealthy[ep.Address]}
		}
		out[t] = eps
	}
	clear(s.dirty)
	return out
}

// known reports whether t is an app of the backend (gone apps are not).
func (s *store) known(t discovery.Target) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.apps[t]
	return ok
}
