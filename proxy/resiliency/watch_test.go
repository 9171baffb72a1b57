package resiliency

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadAndWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "res.yaml")
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	doc := func(d string) string {
		return "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    timeouts: {t: " + d + "}\n  targets:\n    apps:\n      orders: {timeout: t}\n"
	}
	write(doc("1s"))
	c, err := Load(path, "frontend", nil)
	if err != nil || c.For("orders", "default").Timeout != time.Second {
		t.Fatalf("Load: %v", err)
	}
	if c, err := Load(path+".missing", "frontend", nil); err == nil || c != nil {
		t.Fatal("a missing file loaded")
	}
	scoped := filepath.Join(dir, "scoped.yaml")
	if err := os.WriteFile(scoped, []byte("apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nscopes: [other]\nspec: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(scoped, "frontend", nil); err != nil || c != nil {
		t.Fatalf("scoped out: %v, %v", c, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan *Config, 4)
	if err := Watch(ctx, path, "frontend", nil, func(c *Config) { got <- c }); err != nil {
		t.Fatal(err)
	}
	write(doc("2s"))
	select {
	case c := <-got:
		if c.For("orders", "default").Timeout != 2*time.Second {
			t.Fatal("reload did not apply the new timeout")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reload")
	}
	write(strings.Replace(doc("3s"), "timeouts", "timeout", 1)) // bad: rejected, nothing applied
	select {
	case c := <-got:
		t.Fatalf("a bad file was applied: %+v", c)
	case <-time.After(600 * time.Millisecond):
	}
	write(doc("4s"))
	select {
	case c := <-got:
		if c.For("orders", "default").Timeout != 4*time.Second {
			t.Fatalf("after a bad file: timeout %v", c.For("orders", "default").Timeout)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reload after a bad file")
	}
}

// A resiliency file mounted from a Kubernetes ConfigMap is a symlink
// (res.yaml -> ..data/res.yaml) into a timestamped folder; an update writes
// a new folder and swaps the ..data symlink atomically. The file's own name
// sees no event: the watch must react to the swap.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	doc := func(d string) string {
		return "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nspec:\n  policies:\n    timeouts: {t: " + d + "}\n  targets:\n    apps:\n      orders: {timeout: t}\n"
	}
	swap := configMapMount(t, dir, "res.yaml")
	swap(doc("1s"))
	path := filepath.Join(dir, "res.yaml")
	c, err := Load(path, "frontend", nil)
	if err != nil || c.For("orders", "default").Timeout != time.Second {
		t.Fatalf("Load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan *Config, 4)
	if err := Watch(ctx, path, "frontend", nil, func(c *Config) { got <- c }); err != nil {
		t.Fatal(err)
	}
	swap(doc("2s"))
	select {
	case c := <-got:
		if d := c.For("orders", "default").Timeout; d != 2*time.Second {
			t.Fatalf("reload applied timeout %v, want 2s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a ConfigMap update (..data symlink swap) was not reloaded")
	}
}

// configMapMount lays dir out as the kubelet mounts a ConfigMap holding one
// key, name, and returns the function that updates it the kubelet's way: a
// new timestamped folder, a new ..data_tmp symlink renamed over ..data.
func configMapMount(t *testing.T, dir, name string) func(content string) {
	t.Helper()
	n := 0
	return func(content string) {
		t.Helper()
		n++
		ts := filepath.Join(dir, "..2026_01_01_00_00_0"+string(rune('0'+n)))
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
}
