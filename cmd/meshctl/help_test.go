package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/help")

// TestHelpGolden compares `meshctl ... --help` of every command with
// testdata/help/*.txt (go test -run TestHelpGolden -update rewrites them).
func TestHelpGolden(t *testing.T) {
	var paths [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		paths = append(paths, path)
		for _, s := range c.Commands() {
			walk(s, append(append([]string{}, path...), s.Name()))
		}
	}
	walk(newRootCommand(), nil)
	if len(paths) < 10 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	seen := map[string]bool{}
	for _, p := range paths {
		name := "meshctl"
		if len(p) > 0 {
			name += "-" + strings.Join(p, "-")
		}
		file := filepath.Join("testdata", "help", name+".txt")
		seen[filepath.Base(file)] = true
		code, out := meshctl(t, append(p, "--help")...)
		if code != 0 {
			t.Errorf("%s --help: exit %d\n%s", name, code, out)
			continue
		}
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%s: %v (go test -run TestHelpGolden -update writes it)", name, err)
			continue
		}
		if out != string(want) {
			t.Errorf("%s --help differs from %s:\n--- got ---\n%s--- want ---\n%s", name, file, out, want)
		}
	}
	ents, _ := os.ReadDir(filepath.Join("testdata", "help"))
	for _, e := range ents {
		if !seen[e.Name()] && !*update {
			t.Errorf("testdata/help/%s: no such command any more", e.Name())
		}
	}
}

func TestRunErrors(t *testing.T) {
	t.Setenv("MESHD_HOME", filepath.Join(t.TempDir(), "home"))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--", "true"}, `meshctl: required flag(s) "app-id" not set`},
		{[]string{"run", "--app-id", "a", "stray", "--", "true"}, "meshctl: unexpected arguments before --"},
		{[]string{"run", "--app-id", "a", "--", "true"}, "meshctl: no local sentry is running: start it with `meshctl init`"},
		{[]string{"uninstall"}, "nothing to uninstall"},
	} {
		code, out := meshctl(t, tc.args...)
		wantCode := 1
		if tc.args[0] == "uninstall" {
			wantCode = 0
		}
		if code != wantCode || !strings.Contains(out, tc.want) {
			t.Errorf("meshctl %v: exit %d\n%s\nwant %q", tc.args, code, out, tc.want)
		}
	}
}

func TestPrefixWriter(t *testing.T) {
	var b strings.Builder
	p := &prefixWriter{w: &b, prefix: "a | "}
	for _, s := range []string{"one\ntw", "o\n", "three"} {
		if _, err := p.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	p.flush()
	if b.String() != "a | one\na | two\na | three\n" {
		t.Errorf("got %q", b.String())
	}
}
