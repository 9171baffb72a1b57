package h2

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// streamCtx is the context of one request served by a Server: cancelled when
// its handler returns, when the client resets the stream and when the
// connection ends, as net/http's request contexts are. It lives inside its
// serverStream, so a request allocates no context, and a Transport stream
// sent under it registers its cancel watch in place (watch) where
// context.AfterFunc on a context.WithCancel would allocate an afterFunc
// context, two closures, the parent's done channel and its children map.
// Its done channel is made only when someone asks for it.
//
// Its parent is the connection's context (ConnContext's), from which the
// values and the deadline come; it does not hook onto the parent's
// cancellation itself: the connection cancels every stream it still holds
// when it ends (serverConn.serve) and when a parent that can end does
// (serverConn.cancelStreams). As the parent holds no cancelCtx of the
// context package, context.Cause of a cancelled request is its Err.
//
// It implements AfterFunc, so contexts derived from it (context.WithTimeout
// for a grpc-timeout) hook onto it without a goroutine of their own.
type streamCtx struct {
	parent   context.Context
	canceled atomic.Bool
	mu       sync.Mutex
	done     chan struct{}  // made by Done; closed on cancel
	hooks    *streamCtxHook // AfterFunc registrations, run on cancel
	watchers *clientStream  // Transport streams watching this context (linked by nextWatch)
}

// streamCtxHook is one AfterFunc registration.
type streamCtxHook struct {
	next *streamCtxHook
	f    func()
}

// srvClosedChan is the done channel of a context cancelled before anyone
// asked for its channel.
var srvClosedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

var _ interface {
	context.Context
	AfterFunc(func()) func() bool
} = (*streamCtx)(nil)

func (c *streamCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

func (c *streamCtx) Value(key any) any { return c.parent.Value(key) }

func (c *streamCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.canceled.Load() {
			c.done = srvClosedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

func (c *streamCtx) Err() error {
	if c.canceled.Load() {
		return context.Canceled
	}
	return nil
}

// String names the context as context.WithCancel's String does.
func (c *streamCtx) String() string { return "h2.requestContext" }

// cancel ends the context: the done channel closes, and every watching
// Transport stream is reset and every AfterFunc hook started, each in a
// goroutine of its own (cancel runs on the connection's reader, which must
// not wait on another connection's writes). Later calls do nothing.
func (c *streamCtx) cancel() {
	c.mu.Lock()
	if c.canceled.Load() {
		c.mu.Unlock()
		return
	}
	c.canceled.Store(true)
	if c.done != nil {
		close(c.done)
	}
	hooks, ws := c.hooks, c.watchers
	c.hooks, c.watchers = nil, nil
	c.mu.Unlock()
	if ws != nil {
		go func() {
			for cs := ws; cs != nil; {
				next := cs.nextWatch
				cs.nextWatch = nil
				cs.reset(http2.ErrCodeCancel, context.Canceled)
				cs = next
			}
		}()
	}
	for h := hooks; h != nil; h = h.next {
		go h.f()
	}
}

// AfterFunc arranges for f to run in its own goroutine once c is cancelled
// (at once if it is); stop reports whether it kept f from running, as
// context.AfterFunc's stop does.
func (c *streamCtx) AfterFunc(f func()) (stop func() bool) {
	h := &streamCtxHook{f: f}
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

// watch makes cancelling c reset cs (RST_STREAM CANCEL, context.Canceled
// for its caller); false if c is cancelled already, and then nothing is
// registered. It allocates nothing.
func (c *streamCtx) watch(cs *clientStream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.canceled.Load() {
		return false
	}
	cs.nextWatch, c.watchers = c.watchers, cs
	return true
}

// unwatch ends cs's watch; false if the cancel took it (it fired).
func (c *streamCtx) unwatch(cs *clientStream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := &c.watchers; *p != nil; p = &(*p).nextWatch {
		if *p == cs {
			*p = cs.nextWatch
			cs.nextWatch = nil
			return true
		}
	}
	return false
}
