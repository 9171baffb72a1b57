// Package demo_test runs the make demo program (examples/demo) against
// freshly built binaries: it must pass on a healthy build, and fail — with
// a non-zero exit and every process it started stopped — when the mesh
// does not behave.
package demo_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

var (
	demoOnce sync.Once
	demoBin  string
	demoErr  error
)

// build builds the binaries and the demo (once per test process) and links
// them into a fresh directory, as make demo puts them into bin/.
func build(t *testing.T) string {
	t.Helper()
	b := harness.Build(t)
	demoOnce.Do(func() {
		demoBin = filepath.Join(filepath.Dir(b.Meshd), "demo")
		cmd := exec.Command("go", "build", "-o", demoBin, "./examples/demo")
		cmd.Dir = harness.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			demoErr = fmt.Errorf("go build ./examples/demo: %w\n%s", err, out)
		}
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	dir := t.TempDir()
	for name, path := range map[string]string{"meshd": b.Meshd, "sentry": b.Sentry, "echo": b.Echo, "grpcecho": b.GRPCEcho, "demo": demoBin} {
		if err := os.Symlink(path, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runDemo runs the demo with --bin dir and returns its output and exit code.
func runDemo(t *testing.T, dir string, env ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "demo"), "--bin", dir)
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("demo ran %s", time.Since(start).Round(100*time.Millisecond))
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("demo: %v\n%s", err, out)
		return "", -1
	}
}

func TestDemoPasses(t *testing.T) {
	dir := build(t)
	out, code := runDemo(t, dir, "DEMO_KEEP=")
	if code != 0 || !strings.Contains(out, "\n  PASS\n") || strings.Contains(out, "✗") {
		t.Fatalf("demo exited %d, want 0 with PASS and no ✗:\n%s", code, out)
	}
	for _, want := range []string{
		"dapr-caller-app-id: frontend",
		"inventory-1: 10  inventory-2: 10  inventory-3: 10",
		"inventory-2: 0",
		"ERR_APP_UNHEALTHY",
		"stopped 12 processes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

// TestDemoFailsAndCleansUp breaks the sidecars' health checking (threshold
// 1000, so inventory-2's failure goes unnoticed): the demo must
// say so, exit non-zero, and leave no process behind.
func TestDemoFailsAndCleansUp(t *testing.T) {
	dir := build(t)
	pids := filepath.Join(t.TempDir(), "pids")
	real, err := os.Readlink(filepath.Join(dir, "meshd"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "meshd")); err != nil {
		t.Fatal(err)
	}
	wrapper := fmt.Sprintf("#!/bin/sh\necho $$ >> %q\nexec %q $(echo \"$@\" | sed 's/--app-health-threshold [0-9]*/--app-health-threshold 1000/')\n", pids, real)
	if err := os.WriteFile(filepath.Join(dir, "meshd"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}

	out, code := runDemo(t, dir, "DEMO_KEEP=")
	if code == 0 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "✗ inventory-2 fails") {
		t.Fatalf("demo exited %d, want non-zero with FAIL at step \"inventory-2 fails\":\n%s", code, out)
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 6 {
		t.Fatalf("%d sidecars started, want 6:\n%s", len(fields), out)
	}
	for _, f := range fields {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("sidecar pid %d still there after the demo exited (kill 0: %v)", pid, err)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !strings.Contains(out, "stopped 12 processes") {
		t.Errorf("demo did not report stopping its 12 processes:\n%s", out)
	}
	// The failed run keeps its logs; remove them.
	if i := strings.Index(out, "logs kept in "); i >= 0 {
		d := strings.TrimSuffix(strings.Fields(out[i+len("logs kept in "):])[0], ")")
		if strings.Contains(d, "meshd-demo-") {
			os.RemoveAll(d)
		}
	}
}
