// Package harness starts real meshd processes for end-to-end tests: it builds
// the binaries once per test binary, then runs sentry, sidecars and sample apps
// on loopback, captures their logs (printed when a test fails) and stops them
// when the test ends.
package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/internal/freeport"
	"github.com/meshd/meshd/sentry/sentryclient"
)

// Binaries are the paths of the built programs.
type Binaries struct {
	Meshd, Sentry, Echo, GRPCEcho, ControlPlane string
}

var (
	buildOnce sync.Once
	bins      Binaries
	buildErr  error
)

// RepoRoot is the repository root, found from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles meshd, sentry and the sample apps once per test process
// (with the race detector when MESHD_E2E_RACE is set).
func Build(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := BinDir()
		if err != nil {
			buildErr = err
			return
		}
		root := RepoRoot()
		for _, b := range []struct {
			out *string
			pkg string
		}{
			{&bins.Meshd, "./cmd/meshd"},
			{&bins.Sentry, "./cmd/sentry"},
			{&bins.Echo, "./examples/apps/echo"},
			{&bins.GRPCEcho, "./examples/apps/grpcecho"},
			{&bins.ControlPlane, "./cmd/controlplane"},
		} {
			out := filepath.Join(dir, filepath.Base(b.pkg))
			args := []string{"build", "-o", out}
			if os.Getenv("MESHD_E2E_RACE") != "" {
				args = append(args, "-race") // a race makes a process exit 66
			}
			cmd := exec.Command("go", append(args, b.pkg)...)
			cmd.Dir = root
			if msg, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %w\n%s", b.pkg, err, msg)
				return
			}
			*b.out = out
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bins
}

// binDirPrefix names the directory a test process builds its binaries
// into, followed by the process ID.
const binDirPrefix = "meshd-e2e-bin-"

// BinDir is the directory this test process builds binaries into (Build,
// and packages that build tools of their own). It is removed by the first
// Build or BinDir of a later test process, once this one has ended.
func BinDir() (string, error) {
	sweepBinDirs()
	dir := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return dir, nil
}

// sweepBinDirs removes the binary directories of test processes that have
// ended (a test process cannot remove its own: nothing runs after its last
// test). Each holds a few hundred MB; a make test leaves one per package.
func sweepBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), binDirPrefix))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// FreePort returns a loopback TCP port for a child process to bind
// (internal/freeport: below the ephemeral range, never twice).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freeport.Take()
	if err != nil {
		t.Fatal("harness: ", err)
	}
	return p
}

// Process is a running child process with its log captured.
type Process struct {
	Name string
	cmd  *exec.Cmd
	log  *LogBuffer
	done chan struct{}
	err  error
}

// LogBuffer is a goroutine-safe log sink: a bytes.Buffer behind a mutex.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *LogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *LogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs bin with args; the process is stopped (SIGTERM, then SIGKILL)
// when the test ends, and its output is printed if the test failed.
func Start(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, log: &LogBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(os.Environ(), "NO_COLOR=1")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", name, p.Log())
		}
	})
	return p
}

// Log returns everything the process printed so far.
func (p *Process) Log() string { return p.log.String() }

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to grace, then kills.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s: killed after %s", p.Name, grace)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Wait waits for the process to exit on its own.
func (p *Process) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s: still running after %s", p.Name, d)
	}
}

// WaitHTTP polls url until it answers want or d passes.
func WaitHTTP(t testing.TB, url string, want int, d time.Duration) {
	t.Helper()
	if err := PollHTTP(context.Background(), url, want, d); err != nil {
		t.Fatal(err)
	}
}

// PollHTTP polls url until it answers want or d passes.
func PollHTTP(ctx context.Context, url string, want int, d time.Duration) error {
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
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %d within %s (last: %s)", url, want, d, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Sentry is a running sentry.
type Sentry struct {
	*Process
	bin        string
	DataDir    string
	Addr       string
	HealthAddr string
	TrustDom   string
	args       []string
}

// BundleFile is the trust bundle sentry writes.
func (s *Sentry) BundleFile() string { return filepath.Join(s.DataDir, "bundle.pem") }

// StartSentry starts sentry with a fresh data dir (or dataDir if not empty)
// and waits until it is healthy.
func StartSentry(t testing.TB, b Binaries, dataDir string, extra ...string) *Sentry {
	t.Helper()
	if dataDir == "" {
		dataDir = filepath.Join(t.TempDir(), "sentry")
	}
	s := &Sentry{bin: b.Sentry, DataDir: dataDir, TrustDom: "cluster.local",
		Addr:       "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		HealthAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t))}
	s.args = append([]string{"--data-dir", dataDir, "--listen", s.Addr, "--health-listen", s.HealthAddr}, extra...)
	s.Process = Start(t, "sentry", b.Sentry, s.args...)
	WaitHTTP(t, "http://"+s.HealthAddr+"/healthz", http.StatusOK, 30*time.Second)
	return s
}

// Restart starts sentry again, stopped or not, with the same data dir,
// addresses and flags, and waits until it is healthy.
func (s *Sentry) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop sentry: %v", err)
	}
	s.Process = Start(t, "sentry", s.bin, s.args...)
	WaitHTTP(t, "http://"+s.HealthAddr+"/healthz", http.StatusOK, 30*time.Second)
}

// Token runs `sentry token create` for app in ns with extra flags (e.g.
// "--ttl", "10s", "--once") and returns the token and the ID it printed on
// stderr (jti=...).
func (s *Sentry) Token(t testing.TB, app, ns string, extra ...string) (tok, jti string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(s.bin, append([]string{"token", "create", "--data-dir", s.DataDir,
		"--app-id", app, "--namespace", ns}, extra...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sentry token create: %v: %s", err, stderr.String())
	}
	for _, f := range strings.Fields(stderr.String()) {
		if v, ok := strings.CutPrefix(f, "jti="); ok {
			jti = v
		}
	}
	return strings.TrimSpace(string(out)), jti
}

// WriteToken writes tok to path atomically (by rename), as an operator
// replacing a token file would.
func WriteToken(t testing.TB, path, tok string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TokenFile creates a join token for app in ns and writes it to a file.
func (s *Sentry) TokenFile(t testing.TB, app, ns string) string {
	t.Helper()
	out, err := exec.Command(s.bin, "token", "create", "--data-dir", s.DataDir,
		"--app-id", app, "--namespace", ns, "--ttl", "1h").Output()
	if err != nil {
		t.Fatalf("sentry token create: %v", err)
	}
	path := filepath.Join(t.TempDir(), app+"."+ns+".token")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Source returns a sentry-issued, rotating X509-SVID source for app in
// namespace ns (bootstrapped with a join token), as a sidecar holds one:
// for tests that speak to a sidecar's internal port as a genuine peer.
func (s *Sentry) Source(t testing.TB, app, ns string) *certs.Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := certs.NewIdentity(s.TrustDom, ns, app)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(s.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := certs.ParseCertsPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(s.TokenFile(t, app, ns))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := sentryclient.New(context.Background(), s.Addr, anchors, id, string(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	src, err := certs.NewSource(ctx, cl, certs.SourceOptions{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// SidecarPorts are a sidecar's listening ports, chosen before it starts so
// that a static resolver file can name them.
type SidecarPorts struct {
	HTTP, GRPC, Internal, Metrics int
}

// NewSidecarPorts picks free ports.
func NewSidecarPorts(t testing.TB) SidecarPorts {
	return SidecarPorts{FreePort(t), FreePort(t), FreePort(t), FreePort(t)}
}

// InternalAddr is the sidecar's mTLS address.
func (p SidecarPorts) InternalAddr() string { return "127.0.0.1:" + strconv.Itoa(p.Internal) }

// Sidecar is a running meshd.
type Sidecar struct {
	*Process
	AppID, Namespace string
	Ports            SidecarPorts
}

// HTTPURL is the base URL of the app-facing HTTP API.
func (s *Sidecar) HTTPURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.Ports.HTTP) }

// GRPCAddr is the app-facing gRPC address.
func (s *Sidecar) GRPCAddr() string { return "127.0.0.1:" + strconv.Itoa(s.Ports.GRPC) }

// SidecarConfig describes one meshd.
type SidecarConfig struct {
	AppID, Namespace string
	AppPort          int    // 0: no app
	AppProtocol      string // default http
	Ports            SidecarPorts
	ResolverFile     string // static resolver YAML
	TokenFile        string // "": a fresh 1h join token for the app
	Extra            []string
	NoWait           bool // do not wait for readiness
}

// StartSidecar starts meshd against sentry s and waits until it is ready.
func StartSidecar(t testing.TB, b Binaries, s *Sentry, c SidecarConfig) *Sidecar {
	t.Helper()
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if c.Ports == (SidecarPorts{}) {
		c.Ports = NewSidecarPorts(t)
	}
	if c.TokenFile == "" {
		c.TokenFile = s.TokenFile(t, c.AppID, c.Namespace)
	}
	args := []string{"--app-id", c.AppID, "--namespace", c.Namespace,
		"--http-port", strconv.Itoa(c.Ports.HTTP), "--grpc-port", strconv.Itoa(c.Ports.GRPC),
		"--internal-port", strconv.Itoa(c.Ports.Internal), "--metrics-port", strconv.Itoa(c.Ports.Metrics),
		"--listen-address", "127.0.0.1",
		"--sentry-address", s.Addr, "--trust-anchors-file", s.BundleFile(),
		"--token-file", c.TokenFile}
	switch {
	case c.ResolverFile != "":
		args = append(args, "--resolver", "static", "--resolver-config", c.ResolverFile)
	case !slices.Contains(c.Extra, "--resolver"):
		// meshd's default resolver is mDNS, which must never multicast in
		// the machine's root network namespace: a sidecar that names no
		// resolver gets an empty static one.
		empty := filepath.Join(t.TempDir(), "no-apps.yaml")
		if err := os.WriteFile(empty, []byte("apps: []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--resolver", "static", "--resolver-config", empty)
	}
	if c.AppPort != 0 {
		proto := c.AppProtocol
		if proto == "" {
			proto = "http"
		}
		args = append(args, "--app-port", strconv.Itoa(c.AppPort), "--app-protocol", proto)
	}
	args = append(args, c.Extra...)
	sc := &Sidecar{AppID: c.AppID, Namespace: c.Namespace, Ports: c.Ports}
	sc.Process = Start(t, "meshd-"+c.AppID+"."+c.Namespace+"@"+strconv.Itoa(c.Ports.Internal), b.Meshd, args...)
	if !c.NoWait {
		WaitHTTP(t, sc.HTTPURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
	}
	return sc
}

// StaticApp is one entry of a static resolver file.
type StaticApp struct {
	AppID, Namespace string
	Addresses        []string
}

// WriteStatic writes a static resolver file (atomically, by rename).
func WriteStatic(t testing.TB, path string, apps ...StaticApp) {
	t.Helper()
	var b strings.Builder
	b.WriteString("apps:\n")
	for _, a := range apps {
		fmt.Fprintf(&b, "  - appId: %s\n", a.AppID)
		if a.Namespace != "" {
			fmt.Fprintf(&b, "    namespace: %s\n", a.Namespace)
		}
		b.WriteString("    addresses: [")
		for i, addr := range a.Addresses {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", addr)
		}
		b.WriteString("]\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Signal sends sig to the process (e.g. syscall.SIGTERM to watch a graceful
// shutdown without waiting for it).
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s: already exited", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// ExitCode is the exit code of an ended process (-1 if it was killed by a
// signal or is still running).
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// App is a running sample app.
type App struct {
	*Process
	Port int
}

// Addr is the app's host:port.
func (a *App) Addr() string { return "127.0.0.1:" + strconv.Itoa(a.Port) }

// StartEcho starts the echo sample app on port (0: a free one) with the
// instance name name and waits until /healthz answers 200.
func StartEcho(t testing.TB, b Binaries, name string, port int) *App {
	t.Helper()
	if port == 0 {
		port = FreePort(t)
	}
	a := &App{Port: port}
	a.Process = Start(t, "echo-"+name, b.Echo, "--port", strconv.Itoa(port), "--name", name)
	WaitHTTP(t, "http://"+a.Addr()+"/healthz", http.StatusOK, 30*time.Second)
	return a
}

// StartGRPCEcho starts the grpcecho sample app on port (0: a free one) with
// the instance name name and waits until it accepts connections.
func StartGRPCEcho(t testing.TB, b Binaries, name string, port int) *App {
	t.Helper()
	if port == 0 {
		port = FreePort(t)
	}
	a := &App{Port: port}
	a.Process = Start(t, "grpcecho-"+name, b.GRPCEcho, "--port", strconv.Itoa(port), "--name", name)
	WaitTCP(t, a.Addr(), 30*time.Second)
	return a
}

// WaitServing waits until a sidecar's internal (mTLS) port at addr serves
// with its identity: a TLS handshake completes. Until its first certificate
// arrives a sidecar accepts connections there and closes them at once, so
// an open port alone does not mean it is ready.
func WaitServing(t testing.TB, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr,
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) // only: is a certificate presented?
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not complete a TLS handshake after %s: %v", addr, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitTCP waits until addr accepts TCP connections.
func WaitTCP(t testing.TB, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections after %s: %v", addr, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
