package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/freeport"
)

// proc is one child process; its output goes to a log file in the temp dir.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// procs are the children of the demo, in start order.
type procs struct {
	dir  string
	mu   sync.Mutex
	list []*proc
}

// start runs bin with args in its own process group, output to
// {dir}/logs/{name}.log.
func (ps *procs) start(name, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("demo: log file: %w", err)
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	isolate(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("demo: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// log returns the whole log file.
func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// tail returns the last n lines of the log.
func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// count returns how often s occurs in the log.
func (p *proc) count(s string) int { return strings.Count(p.log(), s) }

// waitLog waits until s occurs at least n times in the log.
func (p *proc) waitLog(ctx context.Context, s string, n int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for p.count(s) < n {
		if p.exited() {
			return fmt.Errorf("%s exited (%v) before logging %q", p.name, p.err, s)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not log %q within %s", p.name, s, d)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// stopAll stops every child, last started first: SIGTERM to its process
// group, SIGKILL after grace. It returns how many it stopped.
func (ps *procs) stopAll(grace time.Duration) int {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	n := 0
	for _, p := range list {
		if !p.exited() {
			n++
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		select {
		case <-p.done:
		case <-deadline:
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		// Anything the child left in its group goes too.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	return n
}

// freePorts returns n distinct loopback ports that were free a moment ago
// (internal/freeport: below the ephemeral range, never twice).
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := freeport.Take()
		if err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
		ports[i] = p
	}
	return ports, nil
}

// pollHTTP polls url until it answers want, the process p exits, or d passes.
func pollHTTP(ctx context.Context, p *proc, url string, want int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited (%v)", p.name, p.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %d within %s (last: %s)", url, want, d, last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// runCmd runs a short command and returns its stdout.
func runCmd(ctx context.Context, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return nil, fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	return out, nil
}
