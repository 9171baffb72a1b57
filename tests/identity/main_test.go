// Package identity_test runs the real sentry binary and checks the identity
// path end to end: join tokens, certificates over gRPC, renewal through
// certs.Source under live mTLS traffic, and root rotation.
package identity_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
)

var sentryBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "identity-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sentryBin = filepath.Join(dir, "sentry")
	out, err := exec.Command("go", "build", "-o", sentryBin, "github.com/meshd/meshd/cmd/sentry").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/sentry: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sentryProc is a running sentry binary.
type sentryProc struct {
	cmd        *exec.Cmd
	dataDir    string
	addr       string
	healthAddr string
	logs       *lockedBuf
	done       chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startSentry runs the binary on ephemeral ports and learns them from its
// JSON logs.
func startSentry(t *testing.T, dataDir string, extra ...string) *sentryProc {
	t.Helper()
	args := append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0",
		"--log-format", "json"}, extra...)
	cmd := exec.Command(sentryBin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &sentryProc{cmd: cmd, dataDir: dataDir, logs: &lockedBuf{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(io.TeeReader(stderr, p.logs))
		var once sync.Once
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line.Msg {
			case "sentry: health endpoint":
				p.healthAddr = line.Addr
			case "sentry: serving":
				p.addr = line.Addr
				once.Do(func() { close(found) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("---- sentry log ----\n%s", p.logs.String())
		}
	})
	select {
	case <-found:
	case <-p.done:
		t.Fatalf("sentry exited: %s", p.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("sentry did not start: %s", p.logs.String())
	}
	resp, err := http.Get("http://" + p.healthAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", resp.StatusCode)
	}
	return p
}

func (p *sentryProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			t.Errorf("sentry exited with %v after SIGTERM", p.cmd.ProcessState)
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Error("sentry did not stop within 15s of SIGTERM")
	}
}

func (p *sentryProc) token(t *testing.T, app, ns string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(sentryBin, "token", "create", "--data-dir", p.dataDir, "--app-id", app, "--namespace", ns, "--ttl", "1h")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("token create: %v: %s", err, stderr.String())
	}
	s := string(out)
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") || strings.ContainsAny(strings.TrimSuffix(s, "\n"), " \t\r") {
		t.Fatalf("token create printed more than one token line: %q", s)
	}
	return strings.TrimSuffix(s, "\n")
}

func (p *sentryProc) bundle(t *testing.T) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dataDir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := certs.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rotateRoot(t *testing.T, dataDir string) {
	t.Helper()
	out, err := exec.Command(sentryBin, "rotate-root", "--data-dir", dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("rotate-root: %v: %s", err, out)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
