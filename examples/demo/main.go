package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

const (
	trustDomain = "cluster.local"
	namespace   = "default"
)

// instance is one sidecar, with the app behind it (if any).
type instance struct {
	name     string // instance name: frontend, orders-1, inventory-2, ...
	appID    string
	appBin   string // "" = sidecar only
	appProto string
	health   bool // --enable-app-health-check

	httpPort, grpcPort, internalPort, metricsPort, appPort int

	app, sidecar *proc
}

func (in *instance) httpURL() string  { return "http://127.0.0.1:" + strconv.Itoa(in.httpPort) }
func (in *instance) grpcAddr() string { return "127.0.0.1:" + strconv.Itoa(in.grpcPort) }
func (in *instance) internalAddr() string {
	return "127.0.0.1:" + strconv.Itoa(in.internalPort)
}
func (in *instance) appURL() string { return "http://127.0.0.1:" + strconv.Itoa(in.appPort) }

type demo struct {
	ctx    context.Context
	bin    string
	dir    string
	ps     *procs
	out    io.Writer
	plain  *http.Client // no proxy, short timeout
	sentry *proc

	sentryAddr, sentryHealth, bundlePath string
	insts                                []*instance
	byName                               map[string]*instance

	src     *certs.Source // the demo's own workload identity
	srcErr  error
	client  *sentryclient.Client
	passed  int
	failed  []string
	badLogs []*proc
}

func main() {
	bin := flag.String("bin", "bin", "directory holding meshd, sentry, echo and grpcecho")
	flag.Parse()
	os.Exit(run(*bin))
}

func run(bin string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	keep := os.Getenv("DEMO_KEEP") != "" && os.Getenv("DEMO_KEEP") != "0"

	abs, err := filepath.Abs(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	for _, b := range []string{"meshd", "sentry", "echo", "grpcecho"} {
		if _, err := os.Stat(filepath.Join(abs, b)); err != nil {
			fmt.Fprintf(os.Stderr, "demo: %s missing in %s (run make demo, which builds it): %v\n", b, abs, err)
			return 2
		}
	}
	dir, err := os.MkdirTemp("", "meshd-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	if err := os.Mkdir(filepath.Join(dir, "logs"), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	d := &demo{ctx: ctx, bin: abs, dir: dir, ps: &procs{dir: dir}, out: os.Stdout,
		plain:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}},
		byName: map[string]*instance{}}
	start := time.Now()
	stopped := 0
	cleanup := func() {
		if d.src != nil {
			d.src.Close()
		}
		if d.client != nil {
			d.client.Close()
		}
		stopped = d.ps.stopAll(3 * time.Second)
	}
	defer func() {
		if r := recover(); r != nil {
			cleanup()
			panic(r)
		}
	}()

	fmt.Fprintf(d.out, "meshd demo: a local mesh on 127.0.0.1; files and logs in %s\n", dir)
	setupOK := d.setup()
	for attempt := 2; !setupOK && attempt <= 3 && ctx.Err() == nil && d.portClash(); attempt++ {
		// Ports are picked before the processes bind them (the resolver
		// file names them), so on a busy machine another program can take
		// one meanwhile. Start again on other ports.
		fmt.Fprintf(d.out, "\n  (a port was taken by another program meanwhile; starting again on other ports, attempt %d)\n", attempt)
		d.ps.stopAll(3 * time.Second)
		os.RemoveAll(filepath.Join(dir, "sentry"))
		d.passed, d.failed, d.badLogs, d.byName = 0, nil, nil, map[string]*instance{}
		setupOK = d.setup()
	}
	if setupOK {
		d.calls()
		d.mtls()
		d.spreadStep()
		d.failover()
	}
	elapsed := time.Since(start).Round(100 * time.Millisecond)

	ok := setupOK && len(d.failed) == 0 && ctx.Err() == nil
	if ok && keep {
		d.printKeep()
		<-ctx.Done()
		fmt.Fprintln(d.out)
	}
	cleanup()

	fmt.Fprintln(d.out, "\n== summary ==")
	total := d.passed + len(d.failed)
	fmt.Fprintf(d.out, "  %d of %d steps gave the expected answer (%s); stopped %d processes\n", d.passed, total, elapsed, stopped)
	if ctx.Err() != nil && !ok {
		fmt.Fprintln(d.out, "  INTERRUPTED")
		os.RemoveAll(dir)
		return 130
	}
	if ok {
		fmt.Fprintln(d.out, "  PASS")
		os.RemoveAll(dir)
		return 0
	}
	for _, f := range d.failed {
		fmt.Fprintln(d.out, "  ✗ "+f)
	}
	seen := map[*proc]bool{}
	for _, p := range d.badLogs {
		if seen[p] {
			continue
		}
		seen[p] = true
		fmt.Fprintf(d.out, "\n---- last lines of %s (%s) ----\n%s\n", p.name, p.logPath, p.tail(15))
	}
	fmt.Fprintf(d.out, "\n  FAIL (logs kept in %s)\n", dir)
	return 1
}

// step runs fn and prints one line: ✓ with what came back, or ✗ with what
// went wrong. logs are the processes whose log tails help on failure.
func (d *demo) step(label string, logs []*proc, fn func() (string, error)) bool {
	if d.ctx.Err() != nil {
		return false
	}
	msg, err := fn()
	if err != nil {
		if d.ctx.Err() != nil {
			fmt.Fprintf(d.out, "  - %-20s interrupted\n", label)
			return false
		}
		msg := strings.ReplaceAll(err.Error(), "\n", "\n"+strings.Repeat(" ", 25))
		fmt.Fprintf(d.out, "  ✗ %-20s %s\n", label, msg)
		d.failed = append(d.failed, label+": "+strings.ReplaceAll(err.Error(), "\n", "; "))
		d.badLogs = append(d.badLogs, logs...)
		return false
	}
	fmt.Fprintf(d.out, "  ✓ %-20s %s\n", label, msg)
	d.passed++
	return true
}

func section(w io.Writer, s string) { fmt.Fprintf(w, "\n== %s ==\n", s) }

// ---------------------------------------------------------------- setup

func (d *demo) setup() bool {
	section(d.out, "1. sentry, the CA")
	d.insts = []*instance{
		{name: "frontend", appID: "frontend"},
		{name: "orders-1", appID: "orders", appBin: "echo"},
		{name: "inventory-1", appID: "inventory", appBin: "echo", health: true},
		{name: "inventory-2", appID: "inventory", appBin: "echo", health: true},
		{name: "inventory-3", appID: "inventory", appBin: "echo", health: true},
		{name: "grpcecho-1", appID: "grpcecho", appBin: "grpcecho", appProto: "grpc"},
	}
	ports, err := freePorts(2 + 5*len(d.insts))
	if err != nil {
		fmt.Fprintln(d.out, "  ✗", err)
		d.failed = append(d.failed, err.Error())
		return false
	}
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	d.sentryAddr = "127.0.0.1:" + strconv.Itoa(next())
	d.sentryHealth = "127.0.0.1:" + strconv.Itoa(next())
	for _, in := range d.insts {
		in.httpPort, in.grpcPort, in.internalPort, in.metricsPort = next(), next(), next(), next()
		if in.appBin != "" {
			in.appPort = next()
		}
		d.byName[in.name] = in
	}
	dataDir := filepath.Join(d.dir, "sentry")
	d.bundlePath = filepath.Join(dataDir, "bundle.pem")

	if !d.step("sentry", nil, func() (string, error) {
		p, err := d.ps.start("sentry", filepath.Join(d.bin, "sentry"), "--data-dir", dataDir,
			"--listen", d.sentryAddr, "--health-listen", d.sentryHealth, "--trust-domain", trustDomain)
		if err != nil {
			return "", err
		}
		d.sentry = p
		d.badLogs = append(d.badLogs, p) // shown only if something fails
		if err := pollHTTP(d.ctx, p, "http://"+d.sentryHealth+"/healthz", http.StatusOK, 20*time.Second); err != nil {
			return "", err
		}
		// The answer must be this sentry's, not another program's that
		// took the port: it logs "serving" only once both are bound.
		if err := p.waitLog(d.ctx, "sentry: serving", 1, 10*time.Second); err != nil {
			return "", err
		}
		b, err := os.ReadFile(d.bundlePath)
		if err != nil {
			return "", err
		}
		roots, err := certs.ParseCertsPEM(b)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("up at %s with a fresh CA; trust bundle %s: %d root %q",
			d.sentryAddr, shortPath(d.dir, d.bundlePath), len(roots), roots[0].Subject.String()), nil
	}) {
		return false
	}
	d.badLogs = d.badLogs[:0]

	tokens := map[string]string{}
	if !d.step("join tokens", []*proc{d.sentry}, func() (string, error) {
		var made []string
		for _, app := range []string{"frontend", "orders", "inventory", "grpcecho", "demo"} {
			out, err := runCmd(d.ctx, filepath.Join(d.bin, "sentry"), "token", "create", "--data-dir", dataDir,
				"--app-id", app, "--namespace", namespace, "--ttl", "1h")
			if err != nil {
				return "", err
			}
			path := filepath.Join(d.dir, app+".token")
			if err := os.WriteFile(path, out, 0o600); err != nil {
				return "", err
			}
			tokens[app] = path
			made = append(made, app)
		}
		return "sentry token create --app-id X --namespace default: " + strings.Join(made, ", "), nil
	}) {
		return false
	}

	section(d.out, "2. apps and sidecars (static resolver)")
	resolverFile := filepath.Join(d.dir, "apps.yaml")
	if !d.step("resolver file", nil, func() (string, error) {
		var b strings.Builder
		b.WriteString("apps:\n")
		var lines []string
		for _, app := range []string{"frontend", "orders", "inventory", "grpcecho"} {
			var addrs []string
			for _, in := range d.insts {
				if in.appID == app {
					addrs = append(addrs, strconv.Quote(in.internalAddr()))
				}
			}
			fmt.Fprintf(&b, "  - appId: %s\n    namespace: %s\n    addresses: [%s]\n", app, namespace, strings.Join(addrs, ", "))
			lines = append(lines, fmt.Sprintf("%s×%d", app, len(addrs)))
		}
		if err := os.WriteFile(resolverFile, []byte(b.String()), 0o644); err != nil {
			return "", err
		}
		return shortPath(d.dir, resolverFile) + ": " + strings.Join(lines, ", "), nil
	}) {
		return false
	}

	// Apps first, so each sidecar's first health probe finds its app.
	var all []*proc
	if !d.step("apps", nil, func() (string, error) {
		var names []string
		for _, in := range d.insts {
			if in.appBin == "" {
				continue
			}
			p, err := d.ps.start(in.name, filepath.Join(d.bin, in.appBin),
				"--port", strconv.Itoa(in.appPort), "--address", "127.0.0.1", "--name", in.name)
			if err != nil {
				return "", err
			}
			in.app = p
			all = append(all, p)
			names = append(names, fmt.Sprintf("%s %s :%d", in.appBin, in.name, in.appPort))
		}
		for _, in := range d.insts {
			if in.app == nil {
				continue
			}
			// Both sample apps log "listening" once they hold their port.
			if err := in.app.waitLog(d.ctx, ": listening", 1, 20*time.Second); err != nil {
				d.badLogs = append(d.badLogs, in.app)
				return "", err
			}
		}
		return strings.Join(names, ", "), nil
	}) {
		return false
	}

	t0 := time.Now()
	for _, in := range d.insts {
		in := in
		label := "sidecar " + in.name
		args := []string{"--app-id", in.appID, "--namespace", namespace,
			"--http-port", strconv.Itoa(in.httpPort), "--grpc-port", strconv.Itoa(in.grpcPort),
			"--internal-port", strconv.Itoa(in.internalPort), "--metrics-port", strconv.Itoa(in.metricsPort),
			"--listen-address", "127.0.0.1",
			"--sentry-address", d.sentryAddr, "--trust-anchors-file", d.bundlePath,
			"--token-file", tokens[in.appID],
			"--resolver", "static", "--resolver-config", resolverFile}
		what := "sidecar only (the demo is its app)"
		if in.appBin != "" {
			proto := in.appProto
			if proto == "" {
				proto = "http"
			}
			args = append(args, "--app-port", strconv.Itoa(in.appPort), "--app-protocol", proto)
			what = fmt.Sprintf("→ %s app %s (--app-protocol %s)", in.appBin, in.name, proto)
		}
		if in.health {
			// Two failed probes 300ms apart: quick to notice, yet one
			// probe slowed by a busy machine does not eject the instance.
			args = append(args, "--enable-app-health-check", "--app-health-probe-interval", "300ms",
				"--app-health-probe-timeout", "1s", "--app-health-threshold", "2")
			what += ", app health probe every 300ms"
		}
		if !d.step(label, nil, func() (string, error) {
			p, err := d.ps.start("meshd-"+in.name, filepath.Join(d.bin, "meshd"), args...)
			if err != nil {
				return "", err
			}
			in.sidecar = p
			all = append(all, p)
			return fmt.Sprintf("app-id %-9s http :%d  grpc :%d  mTLS :%d  %s",
				in.appID, in.httpPort, in.grpcPort, in.internalPort, what), nil
		}) {
			return false
		}
	}
	return d.step("all ready", []*proc{d.sentry}, func() (string, error) {
		var wg sync.WaitGroup
		errs := make([]error, len(d.insts))
		for i, in := range d.insts {
			wg.Go(func() {
				// It logs "started" once all its ports are bound, so the 204
				// below is its own answer.
				if err := in.sidecar.waitLog(d.ctx, "meshd sidecar started", 1, 30*time.Second); err != nil {
					errs[i] = fmt.Errorf("sidecar %s: %w", in.name, err)
					return
				}
				if err := pollHTTP(d.ctx, in.sidecar, in.httpURL()+"/v1.0/healthz", http.StatusNoContent, 30*time.Second); err != nil {
					errs[i] = fmt.Errorf("sidecar %s: %w", in.name, err)
					return
				}
				if in.health {
					// The first probe runs at start; wait for it, so no call
					// meets a sidecar that has not yet seen its app.
					errs[i] = in.sidecar.waitLog(d.ctx, "apphealth: app is healthy", 1, 10*time.Second)
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				d.badLogs = append(d.badLogs, d.insts[i].sidecar)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d sidecars got their certificates from sentry and answer /v1.0/healthz 204 (%s)",
			len(d.insts), time.Since(t0).Round(10*time.Millisecond)), nil
	})
}

// portClash reports whether a process failed to bind its port.
func (d *demo) portClash() bool {
	d.ps.mu.Lock()
	defer d.ps.mu.Unlock()
	for _, p := range d.ps.list {
		if strings.Contains(p.log(), "address already in use") {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- calls

// echoAnswer is the part of the echo app's JSON the demo checks.
type echoAnswer struct {
	Name            string              `json:"name"`
	Method          string              `json:"method"`
	Path            string              `json:"path"`
	RawQuery        string              `json:"rawQuery"`
	Headers         map[string][]string `json:"headers"`
	BodyLength      int64               `json:"bodyLength"`
	BodySHA256      string              `json:"bodySha256"`
	CallerAppID     string              `json:"callerAppId"`
	CallerNamespace string              `json:"callerNamespace"`
	CalleeAppID     string              `json:"calleeAppId"`
}

// do sends req with c and decodes an echo answer; a status other than 200
// is an error that quotes the body.
func do(c *http.Client, req *http.Request) (*echoAnswer, *http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, resp, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, resp, fmt.Errorf("%s %s → %s %.300s", req.Method, req.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	var a echoAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, resp, fmt.Errorf("%s %s → 200 but not echo JSON: %w: %.200s", req.Method, req.URL, err, body)
	}
	return &a, resp, nil
}

// checkIdentity checks the identity headers the app saw: exactly one
// dapr-caller-app-id (the one the callee sidecar stamped from the cert).
func checkIdentity(a *echoAnswer, caller, callee string) error {
	got := a.Headers["Dapr-Caller-App-Id"]
	if len(got) != 1 || got[0] != caller || a.CallerAppID != caller {
		return fmt.Errorf("app saw dapr-caller-app-id %q, want exactly [%s]", got, caller)
	}
	if a.CallerNamespace != namespace {
		return fmt.Errorf("app saw dapr-caller-namespace %q, want %s", a.CallerNamespace, namespace)
	}
	if a.CalleeAppID != callee {
		return fmt.Errorf("app saw dapr-callee-app-id %q, want %s", a.CalleeAppID, callee)
	}
	return nil
}

func (d *demo) calls() {
	section(d.out, "3. calls through frontend's sidecar (the demo is frontend's app)")
	fe, orders := d.byName["frontend"], d.byName["orders-1"]
	logs := []*proc{fe.sidecar, orders.sidecar}
	var first *echoAnswer

	d.step("invoke URL", logs, func() (string, error) {
		u := fe.httpURL() + "/v1.0/invoke/orders/method/orders/42?expand=items"
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, u, nil)
		req.Header.Set("dapr-caller-app-id", "admin") // spoofed: must not reach the app
		req.Header.Set("dapr-caller-namespace", "kube-system")
		a, _, err := do(d.plain, req)
		if err != nil {
			return "", err
		}
		if a.Name != "orders-1" || a.Method != "GET" || a.Path != "/orders/42" || a.RawQuery != "expand=items" {
			return "", fmt.Errorf("app got %s %s?%s at %s, want GET /orders/42?expand=items at orders-1", a.Method, a.Path, a.RawQuery, a.Name)
		}
		first = a
		return fmt.Sprintf("GET /v1.0/invoke/orders/method/orders/42?expand=items → 200 from %s, which got GET %s?%s", a.Name, a.Path, a.RawQuery), nil
	})
	d.step("caller identity", logs, func() (string, error) {
		if first == nil {
			return "", errors.New("no answer from the invoke URL step")
		}
		if err := checkIdentity(first, "frontend", "orders"); err != nil {
			return "", err
		}
		return fmt.Sprintf("orders-1 saw dapr-caller-app-id: %s, dapr-caller-namespace: %s, dapr-callee-app-id: %s (from frontend's certificate)",
			first.CallerAppID, first.CallerNamespace, first.CalleeAppID), nil
	})
	d.step("spoofed header", logs, func() (string, error) {
		if first == nil {
			return "", errors.New("no answer from the invoke URL step")
		}
		for k, v := range first.Headers {
			for _, s := range v {
				if s == "admin" || s == "kube-system" {
					return "", fmt.Errorf("spoofed value reached the app: %s: %s", k, s)
				}
			}
		}
		return fmt.Sprintf("the demo sent dapr-caller-app-id: admin (and namespace kube-system); orders-1 saw only %q", first.Headers["Dapr-Caller-App-Id"]), nil
	})
	d.step("dapr-app-id", logs, func() (string, error) {
		body := `{"item":"book","qty":2}`
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodPost, fe.httpURL()+"/orders", strings.NewReader(body))
		req.Header.Set("dapr-app-id", "orders")
		req.Header.Set("Content-Type", "application/json")
		a, _, err := do(d.plain, req)
		if err != nil {
			return "", err
		}
		if a.Method != "POST" || a.Path != "/orders" || a.BodyLength != int64(len(body)) || a.BodySHA256 != sha256hex(body) {
			return "", fmt.Errorf("app got %s %s with %d bytes (sha256 %.12s), want POST /orders with %d bytes", a.Method, a.Path, a.BodyLength, a.BodySHA256, len(body))
		}
		if err := checkIdentity(a, "frontend", "orders"); err != nil {
			return "", err
		}
		return fmt.Sprintf("POST /orders + header dapr-app-id: orders → 200 from %s, which got POST %s with the same %d-byte body", a.Name, a.Path, a.BodyLength), nil
	})
	d.step("HTTP_PROXY", logs, func() (string, error) {
		proxyURL, _ := url.Parse(fe.httpURL())
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, "http://orders.default/orders/7", nil)
		a, _, err := do(c, req)
		if err != nil {
			return "", err
		}
		if a.Path != "/orders/7" {
			return "", fmt.Errorf("app got path %s, want /orders/7", a.Path)
		}
		if err := checkIdentity(a, "frontend", "orders"); err != nil {
			return "", err
		}
		return fmt.Sprintf("http.Client with Proxy %s, GET http://orders.default/orders/7 → 200 from %s, which got GET %s", fe.httpURL(), a.Name, a.Path), nil
	})
	ge := d.byName["grpcecho-1"]
	glogs := []*proc{fe.sidecar, ge.sidecar, ge.app}
	d.step("gRPC unary", glogs, func() (string, error) { return grpcUnary(d.ctx, fe.grpcAddr()) })
	d.step("gRPC streaming", glogs, func() (string, error) { return grpcStream(d.ctx, fe.grpcAddr()) })
	d.step("unknown app", []*proc{fe.sidecar}, func() (string, error) {
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, fe.httpURL()+"/v1.0/invoke/nosuchapp/method/x", nil)
		resp, err := d.plain.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e struct{ ErrorCode, Message string }
		if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.ErrorCode == "" {
			return "", fmt.Errorf("got %s %s, want 503 with a JSON errorCode", resp.Status, strings.TrimSpace(string(body)))
		}
		return fmt.Sprintf("GET /v1.0/invoke/nosuchapp/method/x → %d %s", resp.StatusCode, strings.TrimSpace(string(body))), nil
	})
}

// ---------------------------------------------------------------- mTLS

// identity starts the demo's own workload identity (app ID "demo"), fetched
// from sentry with a join token like any sidecar's.
func (d *demo) identity() (*certs.Source, error) {
	if d.src != nil || d.srcErr != nil {
		return d.src, d.srcErr
	}
	d.srcErr = func() error {
		id, err := certs.NewIdentity(trustDomain, namespace, "demo")
		if err != nil {
			return err
		}
		b, err := os.ReadFile(d.bundlePath)
		if err != nil {
			return err
		}
		anchors, err := certs.ParseCertsPEM(b)
		if err != nil {
			return err
		}
		tok, err := os.ReadFile(filepath.Join(d.dir, "demo.token"))
		if err != nil {
			return err
		}
		quiet := slog.New(slog.DiscardHandler)
		d.client, err = sentryclient.New(d.ctx, d.sentryAddr, anchors, id, string(tok), sentryclient.WithLogger(quiet))
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		defer cancel()
		d.src, err = certs.NewSource(ctx, d.client, certs.SourceOptions{Identity: id, Logger: quiet})
		return err
	}()
	return d.src, d.srcErr
}

// mtlsClient is an HTTP/2 client with the demo's certificate that accepts
// only a server proving the SPIFFE ID of app.
func (d *demo) mtlsClient(src *certs.Source, app string) (*http.Client, error) {
	id, err := certs.NewIdentity(trustDomain, namespace, app)
	if err != nil {
		return nil, err
	}
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(id.ID()))
	cfg.NextProtos = []string{"h2"}
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, nil
}

func (d *demo) mtls() {
	section(d.out, "mTLS between sidecars: identity from certificates only")
	orders := d.byName["orders-1"]
	logs := []*proc{orders.sidecar, d.sentry}
	d.step("own certificate", []*proc{d.sentry}, func() (string, error) {
		src, err := d.identity()
		if err != nil {
			return "", err
		}
		svid, err := src.GetX509SVID()
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("the demo got %s from sentry with a join token, like a sidecar (expires in %s)",
			svid.ID, time.Until(svid.Certificates[0].NotAfter).Round(time.Minute)), nil
	})
	d.step("direct mTLS call", logs, func() (string, error) {
		src, err := d.identity()
		if err != nil {
			return "", err
		}
		c, err := d.mtlsClient(src, "orders")
		if err != nil {
			return "", err
		}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, "https://"+orders.internalAddr()+"/orders/1", nil)
		req.Header.Set("dapr-caller-app-id", "frontend") // spoofed again
		a, resp, err := do(c, req)
		if err != nil {
			return "", err
		}
		if err := checkIdentity(a, "demo", "orders"); err != nil {
			return "", err
		}
		leaf := resp.TLS.PeerCertificates[0]
		var uri string
		if len(leaf.URIs) == 1 {
			uri = leaf.URIs[0].String()
		}
		return fmt.Sprintf("to orders' mTLS port %s: it presented %s (verified against sentry's bundle, expires in %s); orders-1 saw dapr-caller-app-id: %s, not the spoofed frontend",
			orders.internalAddr(), uri, time.Until(leaf.NotAfter).Round(time.Minute), a.CallerAppID), nil
	})
	d.step("no client cert", logs, func() (string, error) {
		src, err := d.identity()
		if err != nil {
			return "", err
		}
		id, _ := certs.NewIdentity(trustDomain, namespace, "orders")
		cfg := tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(id.ID()))
		cfg.NextProtos = []string{"h2"}
		msg, err := tlsRefused(d.ctx, orders.internalAddr(), cfg)
		if err != nil {
			return "", err
		}
		return "a TLS client without a certificate (it still checks the server's ID): " + msg, nil
	})
	d.step("forged cert", logs, func() (string, error) {
		forged, err := selfSigned("spiffe://" + trustDomain + "/ns/" + namespace + "/frontend")
		if err != nil {
			return "", err
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{forged}, InsecureSkipVerify: true, NextProtos: []string{"h2"}} //nolint:gosec // the demo plays an attacker
		msg, err := tlsRefused(d.ctx, orders.internalAddr(), cfg)
		if err != nil {
			return "", err
		}
		return "a self-signed certificate claiming spiffe://cluster.local/ns/default/frontend: " + msg, nil
	})
	d.step("plain HTTP", logs, func() (string, error) {
		return plainRefused(d.ctx, orders.internalAddr())
	})
}

// ---------------------------------------------------------------- spread

// spread makes n calls to inventory through frontend and counts the
// instances that answered.
func (d *demo) spread(n int) (map[string]int, []string) {
	fe := d.byName["frontend"]
	counts := map[string]int{}
	var fails []string
	for i := range n {
		req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, fmt.Sprintf("%s/v1.0/invoke/inventory/method/stock/%d", fe.httpURL(), i), nil)
		a, _, err := do(d.plain, req)
		if err != nil {
			fails = append(fails, err.Error())
			continue
		}
		counts[a.Name]++
	}
	return counts, fails
}

func countsLine(c map[string]int) string {
	return fmt.Sprintf("inventory-1: %d  inventory-2: %d  inventory-3: %d", c["inventory-1"], c["inventory-2"], c["inventory-3"])
}

func (d *demo) invLogs() []*proc {
	fe := d.byName["frontend"]
	l := []*proc{fe.sidecar}
	for _, n := range []string{"inventory-1", "inventory-2", "inventory-3"} {
		l = append(l, d.byName[n].sidecar)
	}
	return l
}

// evenly checks that the total calls went to names only, want±tol each.
func evenly(c map[string]int, names []string, total, tol int) error {
	want := total / len(names)
	sum := 0
	for _, n := range names {
		if c[n] < want-tol || c[n] > want+tol {
			return fmt.Errorf("uneven: %s (want %d±%d on each of %s)", countsLine(c), want, tol, strings.Join(names, ", "))
		}
		sum += c[n]
	}
	if sum != total {
		return fmt.Errorf("answers from elsewhere: %v", c)
	}
	return nil
}

func (d *demo) spreadStep() {
	section(d.out, "4. load spread: inventory has three instances")
	all := []string{"inventory-1", "inventory-2", "inventory-3"}
	d.step("round robin", d.invLogs(), func() (string, error) {
		c, fails := d.spread(30)
		if len(fails) > 0 {
			return "", fmt.Errorf("%d of 30 calls failed, first: %s", len(fails), fails[0])
		}
		if err := evenly(c, all, 30, 1); err != nil {
			return "", err
		}
		return "30 calls to inventory → " + countsLine(c), nil
	})
}

// ---------------------------------------------------------------- failover

func (d *demo) failover() {
	section(d.out, "5. an instance fails and recovers")
	inv2 := d.byName["inventory-2"]
	logs := d.invLogs()
	if !d.step("inventory-2 fails", []*proc{inv2.app, inv2.sidecar}, func() (string, error) {
		seen := inv2.sidecar.count("apphealth: app is unhealthy")
		if err := d.admin(inv2, "fail"); err != nil {
			return "", err
		}
		t0 := time.Now()
		if err := inv2.sidecar.waitLog(d.ctx, "apphealth: app is unhealthy", seen+1, 5*time.Second); err != nil {
			return "", err
		}
		return fmt.Sprintf("GET %s/admin/fail on the app itself; its /healthz now answers 503, and its sidecar noticed within %s",
			inv2.appURL(), time.Since(t0).Round(10*time.Millisecond)), nil
	}) {
		_ = d.admin(inv2, "recover")
		return // the rest of this part needs a failed instance
	}
	d.step("short-circuit", []*proc{inv2.sidecar}, func() (string, error) {
		src, err := d.identity()
		if err != nil {
			return "", err
		}
		c, err := d.mtlsClient(src, "inventory")
		if err != nil {
			return "", err
		}
		defer c.CloseIdleConnections()
		// Twice: the second call runs on the open connection, so its time
		// is the sidecar's answer alone, not the TLS handshake.
		var (
			took time.Duration
			body []byte
			code int
		)
		for range 2 {
			req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, "https://"+inv2.internalAddr()+"/stock/1", nil)
			t0 := time.Now()
			resp, err := c.Do(req)
			if err != nil {
				return "", err
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			took, code = time.Since(t0), resp.StatusCode
			if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "ERR_APP_UNHEALTHY") ||
				resp.Header.Get("Meshd-Short-Circuit") == "" {
				return "", fmt.Errorf("direct call to inventory-2's sidecar: %s %.200s, want 503 ERR_APP_UNHEALTHY with a Meshd-Short-Circuit header", resp.Status, strings.TrimSpace(string(body)))
			}
		}
		return fmt.Sprintf("a direct mTLS call (as demo) to inventory-2's sidecar → %d %s in %s, answered by the sidecar itself (Meshd-Short-Circuit: app-unhealthy)",
			code, strings.TrimSpace(string(body)), took.Round(10*time.Microsecond)), nil
	})
	var ejectedFor string
	ejectLine := func() (string, int) {
		last, n := "", 0
		for _, l := range strings.Split(d.byName["frontend"].sidecar.log(), "\n") {
			if strings.Contains(l, "endpoint ejected") && strings.Contains(l, "addr="+inv2.internalAddr()+" ") {
				last, n = l, n+1
			}
		}
		return last, n
	}
	_, ejectionsBefore := ejectLine()
	d.step("route around", logs, func() (string, error) {
		c, fails := d.spread(30)
		if len(fails) > 0 {
			return "", fmt.Errorf("%d of 30 calls failed, first: %s", len(fails), fails[0])
		}
		if c["inventory-2"] != 0 {
			return "", fmt.Errorf("the failed instance still got calls: %s", countsLine(c))
		}
		if err := evenly(c, []string{"inventory-1", "inventory-3"}, 30, 2); err != nil {
			return "", err
		}
		return "30 calls to inventory → 30 OK, 0 failed: " + countsLine(c), nil
	})
	d.step("ejected", []*proc{d.byName["frontend"].sidecar}, func() (string, error) {
		line, n := ejectLine()
		if n <= ejectionsBefore {
			return "", fmt.Errorf("frontend's sidecar logged no ejection of %s", inv2.internalAddr())
		}
		ejectedFor = field(line, "for")
		return fmt.Sprintf("frontend's sidecar got the 503 short-circuit, retried elsewhere and ejected %s (inventory-2) for %s", inv2.internalAddr(), ejectedFor), nil
	})
	d.step("inventory-2 recovers", []*proc{inv2.app, inv2.sidecar}, func() (string, error) {
		seen := inv2.sidecar.count("apphealth: app is healthy")
		if err := d.admin(inv2, "recover"); err != nil {
			return "", err
		}
		t0 := time.Now()
		if err := inv2.sidecar.waitLog(d.ctx, "apphealth: app is healthy", seen+1, 5*time.Second); err != nil {
			return "", err
		}
		return fmt.Sprintf("GET %s/admin/recover; its sidecar saw the app healthy again within %s",
			inv2.appURL(), time.Since(t0).Round(10*time.Millisecond)), nil
	})
	d.step("traffic returns", logs, func() (string, error) {
		t0 := time.Now()
		calls := 0
		var fails []string
		for time.Since(t0) < 35*time.Second && d.ctx.Err() == nil {
			c, f := d.spread(3)
			calls += 3
			fails = append(fails, f...)
			if c["inventory-2"] > 0 {
				if len(fails) > 0 {
					return "", fmt.Errorf("%d of %d calls failed meanwhile, first: %s", len(fails), calls, fails[0])
				}
				return fmt.Sprintf("inventory-2 answered again %s after recovering (its ejection for %s ran out); %d calls meanwhile, 0 failed",
					time.Since(t0).Round(100*time.Millisecond), ejectedFor, calls), nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return "", fmt.Errorf("inventory-2 got no call within %s", time.Since(t0).Round(time.Second))
	})
	d.step("spread again", logs, func() (string, error) {
		c, fails := d.spread(30)
		if len(fails) > 0 {
			return "", fmt.Errorf("%d of 30 calls failed, first: %s", len(fails), fails[0])
		}
		if err := evenly(c, []string{"inventory-1", "inventory-2", "inventory-3"}, 30, 1); err != nil {
			return "", err
		}
		return "30 calls to inventory → " + countsLine(c), nil
	})
}

// admin calls /admin/{what} on in's app directly (not through the mesh).
func (d *demo) admin(in *instance, what string) error {
	req, _ := http.NewRequestWithContext(d.ctx, http.MethodGet, in.appURL()+"/admin/"+what, nil)
	resp, err := d.plain.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/admin/%s: %s", in.appURL(), what, resp.Status)
	}
	return nil
}

// field returns the value of key=value in a slog text line.
func field(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return "?"
}

// ---------------------------------------------------------------- keep

func (d *demo) printKeep() {
	fe := d.byName["frontend"]
	section(d.out, "the mesh keeps running (DEMO_KEEP=1); Ctrl-C stops it")
	fmt.Fprintf(d.out, "  curl %s/v1.0/invoke/orders/method/orders/42\n", fe.httpURL())
	fmt.Fprintf(d.out, "  curl -H 'dapr-app-id: inventory' %s/stock/1\n", fe.httpURL())
	fmt.Fprintf(d.out, "  curl -x %s http://orders/orders/7\n", fe.httpURL())
	fmt.Fprintf(d.out, "  curl %s/v1.0/invoke/nosuchapp/method/x\n", fe.httpURL())
	fmt.Fprintf(d.out, "  curl %s/admin/fail    # inventory-2's app; /admin/recover brings it back\n", d.byName["inventory-2"].appURL())
	fmt.Fprintf(d.out, "  gRPC: frontend's sidecar at %s, metadata dapr-app-id: grpcecho (grpc.testing.TestService)\n", fe.grpcAddr())
	fmt.Fprintf(d.out, "  logs: %s\n", filepath.Join(d.dir, "logs"))
}

// ---------------------------------------------------------------- helpers

func shortPath(dir, p string) string {
	if r, err := filepath.Rel(dir, p); err == nil {
		return "$TMP/" + r
	}
	return p
}
