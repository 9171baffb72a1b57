package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cachedTool is a third-party program the tests run, built from the Go
// module proxy by an install script into .cache/{name}/{version}/ the first
// time it is needed (once per checkout; afterwards a file check).
type cachedTool struct {
	name, version string
	file          string        // the file the script leaves in .cache/{name}/{version}/ (default name)
	envVar        string        // overrides the path when set
	script        string        // relative to the repository root; prints the binary's path
	timeout       time.Duration // bound of a cold build
	once          sync.Once
	bin           string
	err           error
}

// binary returns the tool's path, building it first if needed.
func (c *cachedTool) binary(t testing.TB) string {
	t.Helper()
	c.once.Do(func() {
		if p := os.Getenv(c.envVar); p != "" {
			c.bin = p
			return
		}
		root := RepoRoot()
		file := c.file
		if file == "" {
			file = c.name
		}
		if _, err := os.Stat(filepath.Join(root, ".cache", c.name, c.version, file)); err != nil {
			t.Logf("harness: building %s %s from the Go module proxy (once per checkout; several minutes on 2 cores)", c.name, c.version)
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, c.script))
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			c.err = fmt.Errorf("harness: %s: %w\n%s", c.script, err, stderr.String())
			return
		}
		c.bin = strings.TrimSpace(string(out))
	})
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.bin
}
