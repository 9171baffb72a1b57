package main

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/cli/clitest"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/help")

// TestHelpGolden compares `meshctl ... --help` of every command with
// testdata/help/*.txt (go test -run TestHelpGolden -update rewrites them).
func TestHelpGolden(t *testing.T) {
	clitest.HelpGolden(t, newRootCommand, filepath.Join("testdata", "help"), *update)
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
