package readme

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

// blocks returns the fenced code blocks of markdown whose info string has
// the word tag.
func blocks(markdown, tag string) []string {
	var out []string
	var cur *strings.Builder
	for line := range strings.SplitSeq(markdown, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			if info := strings.Fields(strings.TrimPrefix(trimmed, "```")); len(info) > 1 && slices.Contains(info[1:], tag) {
				cur = &strings.Builder{}
			} else if len(info) > 0 || trimmed == "```" {
				cur = nil
			}
		case cur != nil && trimmed == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return out
}

func TestBlocks(t *testing.T) {
	md := "text\n```sh\nnot this\n```\n```sh readme-test\na\nb\n```\n```go\nx\n```\n```sh readme-test\nc\n```\n"
	got := blocks(md, "readme-test")
	if len(got) != 2 || got[0] != "a\nb\n" || got[1] != "c\n" {
		t.Fatalf("blocks = %q", got)
	}
}

// TestReadmeByHand runs README's "Running it by hand" block, unchanged, and
// checks what a user sees at the end: the echo app's answer, reached through
// the sidecar over mTLS, naming the caller proved from its certificate.
func TestReadmeByHand(t *testing.T) {
	root := harness.RepoRoot()
	if !netnstest.InChild() {
		// Build in the parent (the child's network namespace has no route to
		// the module proxy); the block's own `make build` is then a cache hit.
		if ok, why := netnstest.CanCreate(); ok {
			cmd := exec.Command("make", "build")
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make build: %v\n%s", err, out)
			}
		} else {
			t.Logf("cannot create a network namespace (%s)", why)
		}
	}
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	md, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	bs := blocks(string(md), "readme-test")
	if len(bs) != 1 {
		t.Fatalf("README.md has %d blocks marked readme-test, want 1 (the by-hand path)", len(bs))
	}
	script := bs[0]
	if !strings.Contains(script, "bin/meshd") || !strings.Contains(script, "curl") {
		t.Fatalf("the readme-test block is not the by-hand path:\n%s", script)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-c", script)
	cmd.Dir = root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err = cmd.Run()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything the block left behind
	if err != nil {
		t.Fatalf("the README block failed: %v\n--- script ---\n%s--- output ---\n%s", err, script, out.String())
	}
	for _, want := range []string{`"path":"/orders/42"`, `"callerAppId":"orders"`, `"callerNamespace":"default"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the answer lacks %s:\n%s", want, out.String())
		}
	}
}
