package lifecycle

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestRunStopsAllOnFirstError(t *testing.T) {
	boom := errors.New("boom")
	stopped := make(chan string, 3)
	wait := func(name string) Component {
		return Func(func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- name
			return nil
		})
	}
	err := Run(context.Background(), wait("a"), nil, Func(func(context.Context) error { return boom }), wait("b"))
	if err != boom {
		t.Fatalf("Run = %v", err)
	}
	got := []string{<-stopped, <-stopped}
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("stopped %v", got)
	}
}

func TestRunUntilContextDone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := Func(func(context.Context) error { return nil }) // does not stop the others
	if err := Run(ctx, done, Func(func(ctx context.Context) error { <-ctx.Done(); return nil })); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if ctx.Err() == nil {
		t.Error("Run returned before its context was done")
	}
}

func TestStackReverseOrder(t *testing.T) {
	var s Stack
	var got []int
	for i := range 3 {
		s.Push(func() { got = append(got, i) })
	}
	s.Close()
	s.Close()
	if !slices.Equal(got, []int{2, 1, 0}) {
		t.Errorf("Close ran %v", got)
	}
}
