package reqctx

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

type key struct{}

// call is a Transport call that counts its aborts.
type call struct {
	link    Link
	aborted atomic.Int32
}

func (c *call) Abort() { c.aborted.Add(1) }

// TestCtx: values from the parent; the watch list, AfterFunc registrations
// and Cancel on their own.
func TestCtx(t *testing.T) {
	var c Ctx
	c.Init(context.WithValue(context.Background(), key{}, "v"))
	if c.Value(key{}) != "v" || c.Err() != nil {
		t.Fatalf("fresh context: value %v err %v", c.Value(key{}), c.Err())
	}
	a, b, d := &call{}, &call{}, &call{}
	if !c.Watch(&a.link, a) || !c.Watch(&b.link, b) || !c.Watch(&d.link, d) {
		t.Fatal("Watch refused on a live context")
	}
	if !c.Unwatch(&a.link) || c.Unwatch(&a.link) {
		t.Fatal("Unwatch: the first should find it, the second not")
	}
	ran := make(chan struct{})
	stop := c.AfterFunc(func() { close(ran) })
	stopped := c.AfterFunc(func() { t.Error("a stopped AfterFunc ran") })
	if !stopped() || stopped() {
		t.Fatal("stop: the first should stop it, the second not")
	}
	done := c.Done()
	c.Cancel()
	c.Cancel()
	select {
	case <-done:
	default:
		t.Fatal("Done not closed by Cancel")
	}
	if a.aborted.Load() != 0 || b.aborted.Load() != 1 || d.aborted.Load() != 1 {
		t.Fatalf("aborts: unwatched %d, watching %d and %d", a.aborted.Load(), b.aborted.Load(), d.aborted.Load())
	}
	if c.Unwatch(&b.link) {
		t.Fatal("Unwatch found a call the cancel took")
	}
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc did not run")
	}
	if stop() {
		t.Error("stop after the function ran reported stopping it")
	}
	if !errors.Is(c.Err(), context.Canceled) || context.Cause(&c) == nil || c.Watch(&a.link, a) {
		t.Fatalf("after Cancel: err %v, cause %v, or Watch accepted", c.Err(), context.Cause(&c))
	}
	late := make(chan struct{})
	c.AfterFunc(func() { close(late) })
	select {
	case <-late:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc on an ended context did not run")
	}
	var e Ctx
	e.Init(context.Background())
	e.Cancel()
	select {
	case <-e.Done(): // ended before anyone asked for the channel
	default:
		t.Fatal("Done of an ended context is not closed")
	}
}

// TestCtxParentEnds: a parent that ends ends the context, which aborts its
// watching calls; Err is the parent's.
func TestCtxParentEnds(t *testing.T) {
	parent, cancel := context.WithTimeout(context.WithValue(context.Background(), key{}, "v"), time.Hour)
	var c Ctx
	c.Init(parent)
	a := &call{}
	if !c.Watch(&a.link, a) {
		t.Fatal("Watch refused")
	}
	child, cancelChild := context.WithTimeout(&c, time.Hour) // hooks on through AfterFunc
	defer cancelChild()
	cancel()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not ended 5 s after its parent")
	}
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a WithTimeout child did not end with it")
	}
	if !errors.Is(c.Err(), context.Canceled) || a.aborted.Load() != 1 {
		t.Fatalf("Err %v, aborts %d", c.Err(), a.aborted.Load())
	}
	c.Cancel() // again: nothing
}

// TestCtxAllocs: a context under a parent that cannot end, and a call's
// watch of it, allocate nothing.
func TestCtxAllocs(t *testing.T) {
	parent := context.WithValue(context.Background(), key{}, 1)
	a := &call{}
	c := new(Ctx) // a field of the server's per-request state
	n := testing.AllocsPerRun(100, func() {
		*c = Ctx{}
		c.Init(parent)
		if !c.Watch(&a.link, a) || !c.Unwatch(&a.link) {
			t.Fatal("watch")
		}
		c.Cancel()
	})
	if n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}

// A parent that has already ended (a request read after its connection's
// context ended) ends the Ctx at once, from another goroutine, while Init
// is still storing its watch: run under -race, this caught a data race.
// Err is the parent's error.
func TestCtxParentAlreadyEnded(t *testing.T) {
	parent, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for range 200 {
		var c Ctx
		c.Init(parent)
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("a Ctx under an ended parent did not end")
		}
		if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Err = %v, want the parent's %v", err, context.DeadlineExceeded)
		}
		c.Cancel()
	}
}

// Once ended, Err stays what it was: a request context ended by its
// handler's return reports context.Canceled even after its parent ends
// with another error.
func TestCtxErrStays(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var c Ctx
	c.Init(parent)
	c.Cancel()
	<-parent.Done()
	if err := c.Err(); err != context.Canceled {
		t.Fatalf("Err = %v after the parent ended, want context.Canceled as when it ended", err)
	}
}

// Cancel on a Ctx never Init'ed (an error path that ends a request before
// it had a parent) ends it instead of panicking.
func TestCtxCancelWithoutInit(t *testing.T) {
	var c Ctx
	c.Cancel()
	if err := c.Err(); err != context.Canceled {
		t.Fatalf("Err = %v, want context.Canceled", err)
	}
	<-c.Done()
}
