package policy

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
)

func TestLoadErrorsHaveFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		name, file, body string
		want             string
	}{
		{"syntax", "default/bad.rego", "package mesh.authz\n\nallow if {\n  input.x ==\n}\n", "default/bad.rego:"},
		{"package", "default/pkg.rego", "package other\n\nallow := true\n", "default/pkg.rego:1: package other: want package mesh.authz"},
		{"deny not a set", "default/d.rego", "package mesh.authz\n\ndeny if input.x\n", "default/d.rego:3: deny must be a set"},
		{"compile", "default/c.rego", "package mesh.authz\n\nallow if undefined_fn(input.x)\n", "default/c.rego:3: rego_type_error"},
		{"forbidden builtin", "default/h.rego", "package mesh.authz\n\nallow if http.send({\"method\": \"get\", \"url\": \"http://x\"}).status_code == 200\n", "default/h.rego:3:"},
		{"yaml", "default/acl.yaml", "kind: Configuration\nspec:\n  accessControl:\n    defaultAction: sometimes\n", "default/acl.yaml:4: defaultAction"},
		{"root file", "x.rego", "package mesh.authz\n", "x.rego:1: policy files belong in a namespace folder"},
		{"bad namespace", "Bad.NS/x.rego", "package mesh.authz\n", "Bad.NS:1: folder is not a namespace"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{tc.file: tc.body})
		_, err := Load(context.Background(), Source{Dir: dir})
		var le *LoadError
		if !errors.As(err, &le) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a LoadError containing %q", tc.name, err, tc.want)
		}
	}
}

// TestHotReload edits files on disk and watches the decisions change; a
// broken file changes nothing and is counted.
func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"default/p.rego": "package mesh.authz\n\nallow if input.request.path == \"/a\"\n"})
	e := newEngine(t, Options{Source: Source{Dir: dir}, Debounce: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Watch(ctx) }()
	time.Sleep(50 * time.Millisecond) // watcher registered
	req := func(path string) bool {
		return e.Authorize(ctx, authz.Request{Caller: ident(t, "cluster.local", "default", "x"),
			Destination: discovery.Target{AppID: "o", Namespace: "default"}, Protocol: "http", Method: "GET", Path: path}).Allow
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 2s: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !req("/a") || req("/b") {
		t.Fatal("initial policy not in force")
	}
	writeFiles(t, dir, map[string]string{"default/p.rego": "package mesh.authz\n\nallow if input.request.path == \"/b\"\n"})
	waitFor("edit takes effect", func() bool { return req("/b") && !req("/a") })

	writeFiles(t, dir, map[string]string{"default/p.rego": "package mesh.authz\n\nallow if {\n"})
	waitFor("broken file counted", func() bool { return e.ReloadFailures() == 1 })
	if !req("/b") || req("/a") {
		t.Error("a broken file changed decisions")
	}
	if err := e.LastReloadError(); err == nil || !strings.Contains(err.Error(), "default/p.rego:") {
		t.Errorf("LastReloadError = %v", err)
	}

	// A new namespace folder appears.
	writeFiles(t, dir, map[string]string{"default/p.rego": "package mesh.authz\n\nallow if input.request.path == \"/b\"\n"})
	if err := os.MkdirAll(filepath.Join(dir, "prod"), 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	writeFiles(t, dir, map[string]string{"prod/p.rego": "package mesh.authz\n\nallow if input.request.path == \"/prod\"\n"})
	waitFor("new namespace folder", func() bool {
		return e.Authorize(ctx, authz.Request{Caller: ident(t, "cluster.local", "default", "x"),
			Destination: discovery.Target{AppID: "o", Namespace: "prod"}, Protocol: "http", Method: "GET", Path: "/prod"}).Allow
	})
	// The good default/p.rego may be reloaded after prod's folder (each
	// change is debounced on its own): wait for it, then the error is gone.
	waitFor("the good default/p.rego reloaded", func() bool { return req("/b") && e.LastReloadError() == nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestExplain(t *testing.T) {
	e := newEngine(t, Options{Source: Source{Dir: testDir(t)}})
	x := e.Explain(context.Background(), authz.Request{Caller: ident(t, "cluster.local", "default", "frontend"),
		Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http", Method: "GET", Path: "/orders/1"})
	if !x.Allow || len(x.Matched) == 0 || !strings.Contains(strings.Join(x.Matched, "\n"), "default/orders.rego:3: allow if {") {
		t.Errorf("explain allow: %+v", x)
	}
	x = e.Explain(context.Background(), authz.Request{Caller: ident(t, "cluster.local", "default", "frontend"),
		Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http", Method: "DELETE", Path: "/admin"})
	all := strings.Join(x.Matched, "\n")
	if x.Allow || !strings.Contains(x.Reason, "admin routes are closed mesh-wide; DELETE is forbidden") ||
		!strings.Contains(all, "_mesh/base.rego:4: deny contains") || !strings.Contains(all, "default/orders.rego:") {
		t.Errorf("explain deny: %+v", x)
	}
}

func TestDefaultAllowAndConfigFile(t *testing.T) {
	e := newEngine(t, Options{Default: DefaultAllow})
	r := authz.Request{Caller: ident(t, "cluster.local", "default", "x"), Destination: discovery.Target{AppID: "o", Namespace: "default"}, Protocol: "http", Method: "GET", Path: "/"}
	if !e.Authorize(context.Background(), r).Allow {
		t.Error("no policy, default allow: denied")
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	writeFiles(t, filepath.Dir(cfg), map[string]string{"config.yaml": "kind: Configuration\nspec:\n  accessControl:\n    defaultAction: deny\n    policies:\n    - {appId: x, namespace: default, trustDomain: cluster.local, defaultAction: allow}\n"})
	e = newEngine(t, Options{Default: DefaultAllow, Source: Source{ConfigFile: cfg}})
	if !e.Authorize(context.Background(), r).Allow {
		t.Error("--config allows x: denied")
	}
	r.Caller = ident(t, "cluster.local", "default", "y")
	if d := e.Authorize(context.Background(), r); d.Allow || !strings.Contains(d.Reason, "global defaultAction") {
		t.Errorf("--config denies y: %+v", d)
	}
}
