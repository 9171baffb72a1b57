package lifecycle

import (
	"context"
	"sync"
)

// Component is one long-lived part of a process.
type Component interface {
	// Run runs until ctx is done, then stops and returns nil; or it returns
	// an error, which stops the other components. A component with nothing
	// (left) to do may return nil earlier without stopping the others.
	Run(ctx context.Context) error
}

// Func makes a Component of a function.
type Func func(ctx context.Context) error

// Run calls f.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Run runs every component in its own goroutine until ctx is done or one of
// them fails, then cancels the context of the others and waits for all of
// them to return. It returns the first error (the components' errors carry
// their package prefix), or nil. A nil component is skipped.
func Run(ctx context.Context, cs ...Component) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, c := range cs {
		if c == nil {
			continue
		}
		wg.Go(func() {
			if err := c.Run(ctx); err != nil {
				once.Do(func() {
					first = err
					cancel()
				})
			}
		})
	}
	wg.Wait()
	return first
}

// Stack is teardown in the reverse order of construction. The zero value
// is ready; it is not safe for concurrent use.
type Stack struct{ fns []func() }

// Push adds fn, to run before everything pushed earlier.
func (s *Stack) Push(fn func()) { s.fns = append(s.fns, fn) }

// Close runs the pushed functions, last pushed first, and forgets them: a
// second Close does nothing.
func (s *Stack) Close() {
	for i := len(s.fns) - 1; i >= 0; i-- {
		s.fns[i]()
	}
	s.fns = nil
}
