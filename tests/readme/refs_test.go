package readme

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/tests/harness"
)

// TestNoPointersOutsideTheRepo: a clone has only the repository, so no
// document, comment or script may send its reader to notes that live
// outside it.
func TestNoPointersOutsideTheRepo(t *testing.T) {
	root := harness.RepoRoot()
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	forbidden := []string{"shared/DESIGN", "DESIGN.md", "shared/research", "../shared/", "the design notes"}
	checked := 0
	for _, f := range strings.Fields(string(out)) {
		switch filepath.Ext(f) {
		case ".md", ".go", ".sh", ".yaml", ".rego", "":
		default:
			continue
		}
		if f == "tests/readme/refs_test.go" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue // a file deleted in the work tree
		}
		checked++
		for i, line := range strings.Split(string(b), "\n") {
			for _, bad := range forbidden {
				if strings.Contains(line, bad) {
					t.Errorf("%s:%d points outside the repository (%q): %s", f, i+1, bad, strings.TrimSpace(line))
				}
			}
		}
	}
	if checked < 50 {
		t.Fatalf("checked only %d files: is this a checkout?", checked)
	}
}
