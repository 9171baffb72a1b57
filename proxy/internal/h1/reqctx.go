package h1

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// reqCtx is the context of one request served by a Server: cancelled when
// the handler returns or when the client goes away while it runs (the
// disconnect watch), as net/http's request contexts are. It lives inside the
// request's response, so serving a request allocates no context, and a
// Transport exchange made under it registers its abort hook in place
// (watchExchange) where context.AfterFunc on a context.WithCancel would
// allocate a context, two closures, the parent's done channel and its
// children map. Its done channel is made only when someone asks for it.
//
// It implements AfterFunc, so contexts derived from it (context.WithTimeout,
// net/http's per-request contexts) hook onto it without a goroutine of their
// own.
type reqCtx struct {
	parent   context.Context
	canceled atomic.Bool
	mu       sync.Mutex
	done     chan struct{} // made by Done; closed on cancel
	hooks    *ctxHook      // run on cancel, then nil
	exs      *exchange     // Transport exchanges watching this context (linked by ex.next)
	stopP    func() bool   // stops the watch of a parent that can end (nil: none)
}

// ctxHook is one AfterFunc registration.
type ctxHook struct {
	next *ctxHook
	f    func()
}

// closedChan is the done channel of a context cancelled before anyone
// asked for its channel.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

var _ interface {
	AfterFunc(func()) func() bool
} = (*reqCtx)(nil)

// init readies c for a request under parent. A parent that can end cancels
// c with it.
func (c *reqCtx) init(parent context.Context) {
	c.parent = parent
	if parent.Done() != nil {
		c.stopP = context.AfterFunc(parent, c.cancel)
	}
}

func (c *reqCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *reqCtx) Value(key any) any { return c.parent.Value(key) }

func (c *reqCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.canceled.Load() {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

func (c *reqCtx) Err() error {
	if c.canceled.Load() {
		if c.stopP != nil && c.parent.Err() != nil {
			return c.parent.Err()
		}
		return context.Canceled
	}
	return nil
}

// String names the context as context.WithCancel's String does.
func (c *reqCtx) String() string { return "h1.requestContext" }

// cancel ends the context: the done channel closes, every watching exchange
// is aborted and every AfterFunc hook starts in its own goroutine. Later
// calls do nothing.
func (c *reqCtx) cancel() {
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		return
	}
	c.canceled.Store(true)
	if c.done != nil {
		close(c.done)
	}
	hooks, exs := c.hooks, c.exs
	c.hooks, c.exs = nil, nil
	stopP := c.stopP
	c.mu.Unlock()
	if stopP != nil {
		stopP()
	}
	for ex := exs; ex != nil; {
		next := ex.next
		ex.next = nil
		ex.done.Store(true)
		ex.c.abort()
		ex = next
	}
	for h := hooks; h != nil; h = h.next {
		go h.f()
	}
}

// AfterFunc arranges for f to run in its own goroutine once c is
// cancelled (at once if it is); stop reports whether it kept f from
// running, as context.AfterFunc's stop does.
func (c *reqCtx) AfterFunc(f func()) (stop func() bool) {
	h := &ctxHook{f: f}
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	h.next, c.hooks = c.hooks, h
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for p := &c.hooks; *p != nil; p = &(*p).next {
			if *p == h {
				*p = h.next
				return true
			}
		}
		return false // run, or stopped before
	}
}

// watchExchange makes cancelling c abort ex (ex.done set, its connection
// closed); false if c is cancelled already, in which case ex is aborted
// now. It allocates nothing.
func (c *reqCtx) watchExchange(ex *exchange) bool {
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		ex.done.Store(true)
		ex.c.abort()
		return false
	}
	ex.next, c.exs = c.exs, ex
	c.mu.Unlock()
	return true
}

// unwatchExchange ends ex's watch; false if the cancel took it (it fired).
func (c *reqCtx) unwatchExchange(ex *exchange) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := &c.exs; *p != nil; p = &(*p).next {
		if *p == ex {
			*p = ex.next
			ex.next = nil
			return true
		}
	}
	return false
}
