package watch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func start(t *testing.T, add func(w *Watcher) error) <-chan struct{} {
	t.Helper()
	w, err := New(Options{Debounce: 30 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := add(w); err != nil {
		w.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx, func() { changed <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return changed
}

func expect(t *testing.T, changed <-chan struct{}, want bool, what string) {
	t.Helper()
	select {
	case <-changed:
		if !want {
			t.Fatalf("%s: a change was reported", what)
		}
	case <-time.After(map[bool]time.Duration{true: 5 * time.Second, false: 300 * time.Millisecond}[want]):
		if want {
			t.Fatalf("%s: no change reported", what)
		}
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileWriteRenameAndDebounce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.yaml")
	write(t, path, "1")
	changed := start(t, func(w *Watcher) error { return w.File(path) })

	for i := range 5 { // a burst: one callback
		write(t, path, strconv.Itoa(i))
	}
	expect(t, changed, true, "writes")
	expect(t, changed, false, "after the burst")

	write(t, path+".tmp", "2") // an editor's rename-over
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	expect(t, changed, true, "rename over the file")

	write(t, filepath.Join(dir, "other.yaml"), "x")
	expect(t, changed, false, "another file of the folder")
}

// The kubelet's update of a ConfigMap volume: a new timestamped folder and
// an atomic swap of the ..data symlink; no event names the file.
func TestFileConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	swap := func(n int, content string) {
		ts := "..2026_0" + strconv.Itoa(n)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, ts, "a.yaml"), content)
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap(1, "1")
	path := filepath.Join(dir, "a.yaml")
	if err := os.Symlink("..data/a.yaml", path); err != nil {
		t.Fatal(err)
	}
	changed := start(t, func(w *Watcher) error { return w.File(path) })
	swap(2, "2")
	expect(t, changed, true, "..data swap")
}

func TestTree(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "ns1"), 0o755); err != nil {
		t.Fatal(err)
	}
	skip := func(base string) bool { return base[0] == '.' }
	changed := start(t, func(w *Watcher) error { return w.Tree(dir, skip) })

	write(t, filepath.Join(dir, "ns1", "p.rego"), "x")
	expect(t, changed, true, "a file in a subfolder")
	write(t, filepath.Join(dir, "ns1", ".p.rego.swp"), "x")
	expect(t, changed, false, "a skipped file")

	if err := os.Mkdir(filepath.Join(dir, "ns2"), 0o755); err != nil {
		t.Fatal(err)
	}
	expect(t, changed, true, "a new subfolder")
	time.Sleep(50 * time.Millisecond) // the new folder is watched once its event was handled
	write(t, filepath.Join(dir, "ns2", "p.rego"), "x")
	expect(t, changed, true, "a file in a new subfolder")
}
