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
