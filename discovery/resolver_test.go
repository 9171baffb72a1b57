package discovery_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/meshd/meshd/discovery"
)

// fixedBuilder pushes one fixed set, or fails.
type fixedBuilder struct {
	name string
	set  map[discovery.Target][]discovery.Endpoint
	err  error
}

type nopResolver struct{}

func (nopResolver) Close() error { return nil }

func (b fixedBuilder) Name() string { return b.name }

func (b fixedBuilder) Build(_ context.Context, _ discovery.BuildOptions, u discovery.Updater) (discovery.Resolver, error) {
	if b.err != nil {
		return nil, b.err
	}
	u.ReplaceAll(b.set)
	return nopResolver{}, nil
}

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	fn()
}

var boom = errors.New("boom")

// Backends register from init(), as the contract says.
func init() {
	discovery.Register(fixedBuilder{name: "test-fixed", set: map[discovery.Target][]discovery.Endpoint{orders: eps("a:1")}})
	discovery.Register(fixedBuilder{name: "test-failing", err: boom})
}

func TestRegistry(t *testing.T) {
	mustPanic(t, "duplicate Register", func() { discovery.Register(fixedBuilder{name: "test-fixed"}) })
	mustPanic(t, "empty-name Register", func() { discovery.Register(fixedBuilder{}) })

	if b := discovery.Get("test-fixed"); b == nil || b.Name() != "test-fixed" {
		t.Fatalf("Get = %v", b)
	}
	if b := discovery.Get("nope"); b != nil {
		t.Fatalf("Get(nope) = %v, want nil", b)
	}
	names := discovery.Names()
	if !slices.IsSorted(names) || !slices.Contains(names, "test-fixed") || !slices.Contains(names, "test-failing") {
		t.Fatalf("Names = %v", names)
	}

	c := newCache(t, discovery.Options{})
	r, err := discovery.Build(context.Background(), "test-fixed", discovery.BuildOptions{}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ep, err := c.Pick(orders); err != nil || ep.Address != "a:1" {
		t.Fatalf("Pick after Build = %v, %v", ep, err)
	}

	_, err = discovery.Build(context.Background(), "nope", discovery.BuildOptions{}, c)
	if err == nil || !strings.Contains(err.Error(), `unknown resolver "nope"`) || !strings.Contains(err.Error(), "test-fixed") {
		t.Fatalf("unknown resolver: err = %v", err)
	}
	_, err = discovery.Build(context.Background(), "test-failing", discovery.BuildOptions{}, c)
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "discovery: ") {
		t.Fatalf("failing build: err = %v", err)
	}
}
