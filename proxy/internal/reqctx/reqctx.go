package reqctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Ctx is a request's context. The zero Ctx is not ready: Init it.
type Ctx struct {
	parent   context.Context
	canceled atomic.Bool
	err      error // set once, before canceled: the parent's error if it had ended, else context.Canceled
	mu       sync.Mutex
	done     chan struct{} // made by Done; closed on Cancel
	hooks    *hook         // AfterFunc registrations, run on Cancel, then nil
	watchers *Link         // Transport calls watching the context
	stopP    func() bool   // stops the watch of a parent that can end (nil: none)
}

// Aborter is a Transport call on a Ctx's watch: Abort ends it (its
// connection or stream) when the Ctx ends. Abort runs on the goroutine
// that ends the Ctx and must not block on the network.
type Aborter interface {
	Abort()
}

// Link is a call's place in a Ctx's watch list. It lives in the call's own
// state: watching allocates nothing.
type Link struct {
	next *Link
	a    Aborter
}

// hook is one AfterFunc registration.
type hook struct {
	next *hook
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
	context.Context
	AfterFunc(func()) func() bool
} = (*Ctx)(nil)

// Init readies c for a request under parent, whose values and deadline c
// carries. A parent that can end cancels c with it (one context.AfterFunc;
// a parent that cannot costs nothing).
func (c *Ctx) Init(parent context.Context) {
	c.parent = parent
	if parent.Done() != nil {
		// A parent that has already ended runs Cancel at once, on another
		// goroutine, which reads stopP: store it under mu.
		stop := context.AfterFunc(parent, c.Cancel)
		c.mu.Lock()
		c.stopP = stop
		c.mu.Unlock()
	}
}

func (c *Ctx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *Ctx) Value(key any) any { return c.parent.Value(key) }

func (c *Ctx) Done() <-chan struct{} {
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

// Err is nil until c ends, then the parent's error if the parent had
// ended by then, else context.Canceled; it does not change after that.
func (c *Ctx) Err() error {
	if c.canceled.Load() {
		return c.err
	}
	return nil
}

// String names the context as context.WithCancel's String does.
func (c *Ctx) String() string { return "reqctx.Ctx" }

// Cancel ends c: the done channel closes, every watching call is aborted
// (on this goroutine) and every AfterFunc hook starts in its own
// goroutine. Later calls do nothing.
func (c *Ctx) Cancel() {
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.parent != nil { // nil: never Init'ed
		if err := c.parent.Err(); err != nil {
			c.err = err
		}
	}
	c.canceled.Store(true)
	if c.done != nil {
		close(c.done)
	}
	hooks, ws := c.hooks, c.watchers
	c.hooks, c.watchers = nil, nil
	stopP := c.stopP
	c.mu.Unlock()
	if stopP != nil {
		stopP()
	}
	for l := ws; l != nil; {
		next, a := l.next, l.a
		l.next, l.a = nil, nil
		a.Abort()
		l = next
	}
	for h := hooks; h != nil; h = h.next {
		go h.f()
	}
}

// AfterFunc arranges for f to run in its own goroutine once c ends (at
// once if it has); stop reports whether it kept f from running, as
// context.AfterFunc's stop does.
func (c *Ctx) AfterFunc(f func()) (stop func() bool) {
	h := &hook{f: f}
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

// Watch puts a on c's watch, in place at l (the call's own Link): when c
// ends, a is aborted. It returns false, registering nothing, if c has
// ended already; the caller then aborts the call itself.
func (c *Ctx) Watch(l *Link, a Aborter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canceled.Load() {
		return false
	}
	l.a = a
	l.next, c.watchers = c.watchers, l
	return true
}

// Unwatch takes l off c's watch; false if it was not on it (the end of c
// took it and aborted the call, or it was taken off before).
func (c *Ctx) Unwatch(l *Link) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := &c.watchers; *p != nil; p = &(*p).next {
		if *p == l {
			*p = l.next
			l.next, l.a = nil, nil
			return true
		}
	}
	return false
}
