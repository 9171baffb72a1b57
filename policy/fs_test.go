package policy

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// TestLoadFS: a tree in an fs.FS loads as the same directory on disk does.
func TestLoadFS(t *testing.T) {
	dir := testDir(t)
	fromDir, err := Load(context.Background(), Source{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fromFS, err := Load(context.Background(), Source{FS: os.DirFS(dir)})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(fromDir.Files, ",") != strings.Join(fromFS.Files, ",") ||
		strings.Join(fromDir.Namespaces(), ",") != strings.Join(fromFS.Namespaces(), ",") {
		t.Errorf("dir %v %v; fs %v %v", fromDir.Files, fromDir.Namespaces(), fromFS.Files, fromFS.Namespaces())
	}
	mem := fstest.MapFS{"default/bad.rego": {Data: []byte("package mesh.authz\n\nallow if {\n")}}
	var le *LoadError
	if _, err := Load(context.Background(), Source{FS: mem}); !errors.As(err, &le) || !strings.Contains(err.Error(), "default/bad.rego:") {
		t.Errorf("bad tree in memory: %v", err)
	}
}

// TestReloadFS: a new tree replaces the old one; a bad one is refused,
// counted, and the last good set stays.
func TestReloadFS(t *testing.T) {
	good := fstest.MapFS{"default/a.rego": {Data: []byte(ordersRego)}}
	e := newEngine(t, Options{Source: Source{FS: good}})
	next := fstest.MapFS{"default/a.rego": {Data: []byte(ordersRego)}, "shop/acl.yaml": {Data: []byte(shopYAML)}}
	if err := e.ReloadFS(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(e.Snapshot().Namespaces(), ","); got != "default,shop" {
		t.Errorf("after the new tree: %s", got)
	}
	bad := fstest.MapFS{"default/a.rego": {Data: []byte("package mesh.authz\nallow if {\n")}}
	if err := e.ReloadFS(context.Background(), bad); err == nil {
		t.Fatal("a bad tree was accepted")
	}
	if got := strings.Join(e.Snapshot().Namespaces(), ","); got != "default,shop" || e.ReloadFailures() != 1 || e.LastReloadError() == nil {
		t.Errorf("after the bad tree: %s, failures %d, last %v", got, e.ReloadFailures(), e.LastReloadError())
	}
	// Reload reads the last good tree again, not the refused one.
	if err := e.Reload(context.Background()); err != nil {
		t.Errorf("Reload after a refused tree: %v", err)
	}
}
