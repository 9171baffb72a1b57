package main

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/meshd/meshd/internal/cli/clitest"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/help")

// TestHelpGolden compares `sentry ... --help` of every command with
// testdata/help/*.txt (go test -run TestHelpGolden -update rewrites them).
func TestHelpGolden(t *testing.T) {
	clitest.HelpGolden(t, newRootCmd, filepath.Join("testdata", "help"), *update)
}
