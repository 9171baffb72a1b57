package static_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/static"
)

var orders = discovery.Target{AppID: "orders", Namespace: "default"}

const waitFor = 10 * time.Second

func doc(addrs ...string) string {
	return fmt.Sprintf("apps:\n  - appId: orders\n    addresses: [%s]\n", strings.Join(addrs, ", "))
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

type fixture struct {
	dir, path string
	cache     *discovery.Cache
	events    chan discovery.Event
	r         discovery.Resolver
}

// start writes content to a config file in a fresh directory and builds a
// static resolver on it with a short debounce.
func start(t testing.TB, content string) *fixture {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return startAt(t, dir, path, 20*time.Millisecond)
}

func startAt(t testing.TB, dir, path string, debounce time.Duration) *fixture {
	t.Helper()
	f := &fixture{dir: dir, path: path, cache: discovery.NewCache(discovery.Options{Logger: quiet()}), events: make(chan discovery.Event, 256)}
	t.Cleanup(func() { f.cache.Close() })
	f.cache.Subscribe(func(ev discovery.Event) { f.events <- ev })
	r, err := static.Builder{Debounce: debounce}.Build(context.Background(),
		discovery.BuildOptions{ConfigFile: path, Logger: quiet()}, f.cache)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	t.Cleanup(func() { r.Close() })
	f.next(t, discovery.EventUpdated) // the initial load
	return f
}

func (f *fixture) next(t testing.TB, k discovery.EventKind) discovery.Event {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case ev := <-f.events:
			if ev.Kind == k {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %v event within %v", k, waitFor)
		}
	}
}

func (f *fixture) addrs() []string {
	var out []string
	for _, ep := range f.cache.Endpoints(orders) {
		out = append(out, ep.Address)
	}
	return out
}

func (f *fixture) want(t testing.TB, addrs ...string) {
	t.Helper()
	if got := f.addrs(); !slices.Equal(got, addrs) {
		t.Fatalf("endpoints = %v, want %v", got, addrs)
	}
}

// renameOver writes content to a temporary file and renames it onto path,
// as most editors and config tools do.
func renameOver(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestBuildLoadsTheFile(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`, `"127.0.0.1:2"`))
	f.want(t, "127.0.0.1:1", "127.0.0.1:2")
	if ep, err := f.cache.Pick(orders); err != nil || ep.Address != "127.0.0.1:1" {
		t.Fatalf("Pick = %v, %v", ep, err)
	}
}

func TestRegisteredAsStatic(t *testing.T) {
	if b := discovery.Get("static"); b == nil || b.Name() != static.Name {
		t.Fatalf("Get(static) = %v", b)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(path, []byte(doc(`"127.0.0.1:7"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := discovery.NewCache(discovery.Options{})
	defer c.Close()
	r, err := discovery.Build(context.Background(), "static", discovery.BuildOptions{ConfigFile: path, Logger: quiet()}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ep, err := c.Pick(orders); err != nil || ep.Address != "127.0.0.1:7" {
		t.Fatalf("Pick = %v, %v", ep, err)
	}
}

func TestBuildFailsClosed(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apps: [{appId: x.y, addresses: ['127.0.0.1:1']}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		file    string
		wantErr string
	}{
		{"no file given", context.Background(), "", "no --resolver-config"},
		{"missing file", context.Background(), filepath.Join(dir, "missing.yaml"), "no such file"},
		{"missing directory", context.Background(), filepath.Join(dir, "nodir", "a.yaml"), "no such file"},
		{"bad file", context.Background(), bad, "must not contain a dot"},
		{"cancelled", cancelled, bad, "context canceled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := discovery.NewCache(discovery.Options{})
			defer c.Close()
			r, err := static.Builder{}.Build(tc.ctx, discovery.BuildOptions{ConfigFile: tc.file, Logger: quiet()}, c)
			if err == nil {
				r.Close()
				t.Fatal("Build succeeded")
			}
			if !strings.HasPrefix(err.Error(), "static: ") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if len(c.Targets()) != 0 {
				t.Fatalf("a failed Build pushed %v", c.Targets())
			}
		})
	}
}

func TestReloadOnEditInPlace(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`))
	if err := os.WriteFile(f.path, []byte(doc(`"127.0.0.1:1"`, `"127.0.0.1:3"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	f.next(t, discovery.EventUpdated)
	f.want(t, "127.0.0.1:1", "127.0.0.1:3")
}

func TestReloadOnRenameOver(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`))
	for i := 2; i < 5; i++ { // the watch survives the inode change, again and again
		renameOver(t, f.path, doc(fmt.Sprintf(`"127.0.0.1:%d"`, i)))
		f.next(t, discovery.EventUpdated)
		f.want(t, fmt.Sprintf("127.0.0.1:%d", i))
	}
}

// vim's default: move the old file away, write a new one.
func TestReloadOnMoveAwayAndRecreate(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`))
	if err := os.Rename(f.path, f.path+"~"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.path, []byte(doc(`"127.0.0.1:9"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	f.next(t, discovery.EventUpdated)
	f.want(t, "127.0.0.1:9")
}

func TestBrokenFileKeepsTheLastGoodSet(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`, `"127.0.0.1:2"`))
	steps := []struct {
		name    string
		write   func()
		wantErr string
	}{
		{"syntax error", func() { renameOver(t, f.path, "apps: [\n") }, "did not find expected"},
		{"unknown field", func() { renameOver(t, f.path, "apps: []\nextra: 1\n") }, "field extra not found"},
		{"bad app ID", func() { renameOver(t, f.path, doc(`"127.0.0.1:5"`)+"  - appId: a.b\n    addresses: ['127.0.0.1:6']\n") }, "must not contain a dot"},
		{"truncated to empty", func() { os.WriteFile(f.path, nil, 0o600) }, "file is empty"},
		{"deleted", func() { os.Remove(f.path) }, "no such file"},
	}
	for _, s := range steps {
		s.write()
		ev := f.next(t, discovery.EventError)
		if ev.Err == nil || !strings.Contains(ev.Err.Error(), s.wantErr) || !strings.Contains(ev.Err.Error(), "keeping the last good set") {
			t.Fatalf("%s: reported error %v, want %q", s.name, ev.Err, s.wantErr)
		}
		f.want(t, "127.0.0.1:1", "127.0.0.1:2")
		if _, err := f.cache.Pick(orders); err != nil {
			t.Fatalf("%s: Pick failed: %v", s.name, err)
		}
	}
	renameOver(t, f.path, doc(`"127.0.0.1:8"`))
	f.next(t, discovery.EventUpdated)
	f.want(t, "127.0.0.1:8")
}

// Removing an app from the file removes it from the cache.
func TestReloadRemovesApps(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`)+"  - appId: users\n    addresses: ['127.0.0.1:2']\n")
	users := discovery.Target{AppID: "users", Namespace: "default"}
	if _, err := f.cache.Pick(users); err != nil {
		t.Fatal(err)
	}
	renameOver(t, f.path, doc(`"127.0.0.1:1"`))
	f.next(t, discovery.EventRemoved)
	if _, err := f.cache.Pick(users); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("Pick(users) err = %v, want ErrUnknownTarget", err)
	}
}

// A Kubernetes ConfigMap volume: apps.yaml -> ..data/apps.yaml, and an
// update swaps the ..data symlink to a new timestamped directory.
func TestReloadOnConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	writeVersion := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "apps.yaml"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeVersion("..v1", doc(`"127.0.0.1:1"`))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "apps.yaml")
	if err := os.Symlink(filepath.Join("..data", "apps.yaml"), path); err != nil {
		t.Fatal(err)
	}
	f := startAt(t, dir, path, 20*time.Millisecond)
	f.want(t, "127.0.0.1:1")

	writeVersion("..v2", doc(`"127.0.0.1:2"`))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	f.next(t, discovery.EventUpdated)
	f.want(t, "127.0.0.1:2")
}

// Many quick writes within the debounce give one reload of the final file.
func TestDebounceCoalesces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	if err := os.WriteFile(path, []byte(doc(`"127.0.0.1:1"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startAt(t, dir, path, time.Second)
	for i := 2; i <= 20; i++ {
		renameOver(t, path, doc(fmt.Sprintf(`"127.0.0.1:%d"`, i)))
	}
	f.next(t, discovery.EventUpdated)
	f.want(t, "127.0.0.1:20")
	select {
	case ev := <-f.events:
		t.Fatalf("a second event after a burst of writes: %+v", ev)
	case <-time.After(1200 * time.Millisecond):
	}
}

func TestCloseStopsWatching(t *testing.T) {
	f := start(t, doc(`"127.0.0.1:1"`))
	if err := f.r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	renameOver(t, f.path, doc(`"127.0.0.1:2"`))
	select {
	case ev := <-f.events:
		t.Fatalf("event after Close: %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	f.want(t, "127.0.0.1:1")
}

// BenchmarkReload measures the time from a file change (rename-over) to the
// new picker being visible to Pick, with the default debounce and a 1ms one.
func BenchmarkReload(b *testing.B) {
	for _, debounce := range []time.Duration{static.DefaultDebounce, time.Millisecond} {
		b.Run("debounce="+debounce.String(), func(b *testing.B) {
			dir := b.TempDir()
			path := filepath.Join(dir, "apps.yaml")
			if err := os.WriteFile(path, []byte(doc(`"127.0.0.1:1"`)), 0o600); err != nil {
				b.Fatal(err)
			}
			f := startAt(b, dir, path, debounce)
			i := 0
			for b.Loop() {
				i++
				addr := fmt.Sprintf("127.0.0.1:%d", 1000+i%50000)
				renameOver(b, path, doc(`"`+addr+`"`))
				f.next(b, discovery.EventUpdated)
				if ep, err := f.cache.Pick(orders); err != nil || ep.Address != addr {
					b.Fatalf("Pick = %v, %v, want %s", ep, err, addr)
				}
			}
		})
	}
}
