package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/internal/cli"
	"github.com/meshd/meshd/sentry"
)

// runRecord is run/APP-PID.json: one `meshctl run` in progress.
type runRecord struct {
	AppID        string    `json:"appId"`
	Namespace    string    `json:"namespace"`
	PID          int       `json:"pid"` // meshctl's
	MeshdPID     int       `json:"meshdPid"`
	AppPID       int       `json:"appPid,omitempty"`
	HTTPPort     int       `json:"httpPort"`
	GRPCPort     int       `json:"grpcPort"`
	InternalPort int       `json:"internalPort"`
	MetricsPort  int       `json:"metricsPort"`
	AppPort      int       `json:"appPort,omitempty"`
	Command      []string  `json:"command,omitempty"`
	Started      time.Time `json:"started"`
}

type runOptions struct {
	appID, namespace, appProtocol, resolver, resolverConfig string
	policyDir, config, logDir                               string
	appPort, httpPort, grpcPort, internalPort, metricsPort  int
	transparent                                             bool
	wait, grace                                             time.Duration
	meshdArgs                                               []string
}

func newRunCommand() *cobra.Command {
	var o runOptions
	c := &cobra.Command{
		Use:   "run --app-id APP [--app-port PORT] [flags] [-- COMMAND ARGS...]",
		Short: "run an app with its sidecar on this machine, mTLS on (like `dapr run`)",
		Long: "run starts meshd for the app, with an identity from the local sentry of `meshctl init` (a join\n" +
			"token is minted for it), waits until the sidecar is ready, then starts COMMAND with\n" +
			"DAPR_HTTP_PORT, DAPR_GRPC_PORT and APP_ID (and APP_PORT with --app-port; HTTP_PROXY and\n" +
			"http_proxy with --transparent) in its environment. Ports not given are free ones. Other\n" +
			"sidecars are found by mDNS on this host's network (--resolver). Logs of both are printed\n" +
			"with a prefix, or written to --log-dir. Ctrl-C (SIGINT) or SIGTERM stops the app, then the\n" +
			"sidecar; when the app exits by itself the sidecar is stopped. meshctl exits with the app's\n" +
			"exit code (128+N when a signal N ended it). Without COMMAND only the sidecar runs.",
		Example: `  meshctl run --app-id orders --app-port 3000 -- python3 -m http.server 3000
  meshctl run --app-id frontend -- sh -c 'curl http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/orders/method/'
  meshctl run --app-id web --transparent -- curl -s http://orders/   # curl reads http_proxy`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() > 0 {
				return fmt.Errorf("unexpected arguments before --: %q (the app's command goes after --)", args[:cmd.ArgsLenAtDash()])
			}
			return runApp(cmd.Context(), o, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := c.Flags()
	f.StringVarP(&o.appID, "app-id", "a", "", "ID of the app (required)")
	f.StringVar(&o.namespace, "namespace", "default", "namespace of the app")
	f.IntVarP(&o.appPort, "app-port", "p", 0, "port the app listens on (0: the app only calls out)")
	f.StringVar(&o.appProtocol, "app-protocol", "http", "protocol of the app: http, https, grpc, grpcs or h2c")
	f.IntVar(&o.httpPort, "dapr-http-port", 0, "sidecar's HTTP API port (0: a free one)")
	f.IntVar(&o.grpcPort, "dapr-grpc-port", 0, "sidecar's gRPC API port (0: a free one)")
	f.IntVar(&o.internalPort, "internal-port", 0, "sidecar-to-sidecar mTLS port (0: a free one)")
	f.IntVar(&o.metricsPort, "metrics-port", 0, "sidecar's Prometheus metrics port (0: a free one)")
	f.StringVar(&o.resolver, "resolver", "mdns", "how sidecars find each other: mdns (this host's network), consul, kubernetes or static")
	f.StringVar(&o.resolverConfig, "resolver-config", "", "configuration file of the resolver")
	f.StringVar(&o.policyDir, "policy-dir", "", "policy directory (meshd --policy-dir)")
	f.StringVar(&o.config, "config", "", "Dapr Configuration YAML (meshd --config)")
	f.BoolVar(&o.transparent, "transparent", false, "give the app HTTP_PROXY and http_proxy pointing at its sidecar, so http://APP-ID/... reaches the app APP-ID")
	f.StringVar(&o.logDir, "log-dir", "", "write the logs to DIR/APP.meshd.log and DIR/APP.app.log instead of the terminal")
	f.DurationVar(&o.wait, "wait", time.Minute, "how long to wait for the sidecar to become ready")
	f.DurationVar(&o.grace, "grace", 10*time.Second, "how long the app, then the sidecar, may take to stop before SIGKILL")
	f.StringArrayVar(&o.meshdArgs, "meshd-arg", nil, "extra meshd flag, e.g. --meshd-arg=--log-level=debug (repeatable)")
	_ = c.MarkFlagRequired("app-id")
	return c
}

func runApp(ctx context.Context, o runOptions, command []string, stdout, stderr io.Writer) error {
	h, err := home()
	if err != nil {
		return err
	}
	l, err := readLocal(h)
	if errors.Is(err, os.ErrNotExist) || err == nil && !l.running(h) {
		return errors.New("no local sentry is running: start it with `meshctl init`")
	}
	if err != nil {
		return err
	}
	meshdBin, err := binary("meshd")
	if err != nil {
		return err
	}
	for _, p := range []*int{&o.httpPort, &o.grpcPort, &o.internalPort, &o.metricsPort} {
		if *p == 0 {
			a, err := freeAddr()
			if err != nil {
				return err
			}
			_, ps, _ := net.SplitHostPort(a)
			*p, _ = strconv.Atoi(ps)
		}
	}
	runDir := filepath.Join(h, "run")
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	base := filepath.Join(runDir, o.appID+"-"+strconv.Itoa(os.Getpid()))
	tok, _, err := sentry.CreateJoinToken(filepath.Join(h, "sentry"), "", o.namespace, o.appID, 24*time.Hour, false, time.Now())
	if err != nil {
		return fmt.Errorf("join token: %w", err)
	}
	tokenFile := base + ".token"
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(tokenFile)

	args := []string{"--app-id", o.appID, "--namespace", o.namespace, "--app-protocol", o.appProtocol,
		"--http-port", strconv.Itoa(o.httpPort), "--grpc-port", strconv.Itoa(o.grpcPort),
		"--internal-port", strconv.Itoa(o.internalPort), "--metrics-port", strconv.Itoa(o.metricsPort),
		"--sentry-address", l.SentryAddress, "--trust-anchors-file", filepath.Join(h, "sentry", "bundle.pem"),
		"--token-file", tokenFile, "--resolver", o.resolver}
	if o.appPort > 0 {
		args = append(args, "--app-port", strconv.Itoa(o.appPort))
	}
	for _, kv := range [][2]string{{"--resolver-config", o.resolverConfig}, {"--policy-dir", o.policyDir}, {"--config", o.config}} {
		if kv[1] != "" {
			args = append(args, kv[0], kv[1])
		}
	}
	args = append(args, o.meshdArgs...)

	meshdOut, meshdErr, closeMeshdLogs, err := logSinks(o, "meshd", stdout, stderr)
	if err != nil {
		return err
	}
	defer closeMeshdLogs()
	// meshd's log is also kept beside the run record while it runs: `meshctl
	// policy preview` replays the decisions in it.
	teeLog, err := os.OpenFile(base+".meshd.log", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(teeLog.Name())
	defer teeLog.Close()
	meshd := exec.Command(meshdBin, args...)
	meshd.Stdout, meshd.Stderr = io.MultiWriter(meshdOut, teeLog), io.MultiWriter(meshdErr, teeLog)
	meshd.SysProcAttr = childAttr()
	meshd.WaitDelay = time.Second
	// Signals from now on are ours to forward: a Ctrl-C reaches the whole
	// foreground group, but the children have groups of their own.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := meshd.Start(); err != nil {
		return fmt.Errorf("start meshd: %w", err)
	}
	meshdDone := make(chan error, 1)
	go func() { meshdDone <- meshd.Wait() }()
	stopMeshd := func() {
		stopGroup(meshd.Process.Pid, meshdDone, o.grace)
	}
	rec := runRecord{AppID: o.appID, Namespace: o.namespace, PID: os.Getpid(), MeshdPID: meshd.Process.Pid,
		HTTPPort: o.httpPort, GRPCPort: o.grpcPort, InternalPort: o.internalPort, MetricsPort: o.metricsPort,
		AppPort: o.appPort, Command: command, Started: time.Now().UTC()}
	recFile := base + ".json"
	writeRecord := func() {
		b, _ := json.MarshalIndent(rec, "", "  ")
		_ = os.WriteFile(recFile, append(b, '\n'), 0o600)
	}
	writeRecord()
	defer os.Remove(recFile)

	fmt.Fprintf(stderr, "meshctl: starting meshd for %s (pid %d; HTTP 127.0.0.1:%d, gRPC 127.0.0.1:%d) ",
		o.appID, meshd.Process.Pid, o.httpPort, o.grpcPort)
	readyCtx, cancelReady := context.WithCancel(ctx)
	go func() {
		select {
		case <-sigs:
			cancelReady()
		case <-readyCtx.Done():
		}
	}()
	healthURL := "http://127.0.0.1:" + strconv.Itoa(o.httpPort) + "/v1.0/healthz/outbound"
	err = waitReady(readyCtx, stderr, o.wait, meshdDone, func(ctx context.Context) error { return sidecarReady(ctx, healthURL) })
	interrupted := readyCtx.Err() != nil && ctx.Err() == nil
	cancelReady()
	if err != nil {
		stopMeshd()
		if interrupted {
			return &cli.ExitError{Code: 130, Err: errors.New("interrupted while waiting for the sidecar")}
		}
		return fmt.Errorf("meshd for %s did not become ready: %w", o.appID, err)
	}
	if len(command) == 0 {
		fmt.Fprintf(stderr, "meshctl: sidecar of %s ready; no app command given: Ctrl-C stops it\n", o.appID)
		select {
		case <-sigs:
			stopMeshd()
			return nil
		case err := <-meshdDone:
			return fmt.Errorf("meshd exited: %v", err)
		}
	}

	appOut, appErr, closeAppLogs, err := logSinks(o, "app", stdout, stderr)
	if err != nil {
		stopMeshd()
		return err
	}
	defer closeAppLogs()
	app := exec.Command(command[0], command[1:]...)
	app.Stdin = os.Stdin
	app.Stdout, app.Stderr = appOut, appErr
	app.SysProcAttr = childAttr()
	app.WaitDelay = time.Second
	app.Env = append(os.Environ(), "APP_ID="+o.appID,
		"DAPR_HTTP_PORT="+strconv.Itoa(o.httpPort), "DAPR_GRPC_PORT="+strconv.Itoa(o.grpcPort))
	if o.appPort > 0 {
		app.Env = append(app.Env, "APP_PORT="+strconv.Itoa(o.appPort))
	}
	if o.transparent {
		proxy := "http://127.0.0.1:" + strconv.Itoa(o.httpPort)
		app.Env = append(app.Env, "HTTP_PROXY="+proxy, "http_proxy="+proxy)
	}
	if err := app.Start(); err != nil {
		stopMeshd()
		return fmt.Errorf("start %s: %w", command[0], err)
	}
	fmt.Fprintf(stderr, "meshctl: started %s (pid %d) as app %s\n", command[0], app.Process.Pid, o.appID)
	rec.AppPID = app.Process.Pid
	writeRecord()
	appDone := make(chan error, 1)
	go func() { appDone <- app.Wait() }()

	var appErrRes error
	select {
	case appErrRes = <-appDone:
		killGroup(app.Process.Pid) // whatever the app left behind
		stopMeshd()
	case sig := <-sigs:
		fmt.Fprintf(stderr, "meshctl: %s: stopping %s, then its sidecar\n", sig, o.appID)
		go func() { // a second Ctrl-C: no more waiting
			<-sigs
			killGroup(app.Process.Pid)
			killGroup(meshd.Process.Pid)
		}()
		appErrRes = stopGroup(app.Process.Pid, appDone, o.grace)
		stopMeshd()
	case err := <-meshdDone:
		meshdDone <- err
		stopGroup(app.Process.Pid, appDone, o.grace)
		killGroup(meshd.Process.Pid)
		return fmt.Errorf("meshd exited (%v) while the app ran; its log says why", err)
	}
	code := exitCode(app.ProcessState, appErrRes)
	if code != 0 {
		fmt.Fprintf(stderr, "meshctl: app %s exited with code %d\n", o.appID, code)
		return &cli.ExitError{Code: code}
	}
	fmt.Fprintf(stderr, "meshctl: app %s exited with code 0\n", o.appID)
	return nil
}

// exitCode is the shell's view of how a child ended: its code, or 128+N
// when signal N ended it.
func exitCode(st *os.ProcessState, err error) int {
	if st == nil {
		if err != nil {
			return 1
		}
		return 0
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return st.ExitCode()
}

// stopGroup sends SIGTERM to the process group pgid, waits for its leader
// (done) up to grace, then kills the whole group. It returns the leader's
// Wait error.
func stopGroup(pgid int, done chan error, grace time.Duration) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	var err error
	select {
	case err = <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		err = <-done
	}
	killGroup(pgid)
	done <- err
	return err
}

// killGroup ends whatever is left of the process group pgid.
func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

// sidecarReady asks the sidecar's outbound health; not ready, it returns
// the sidecar's own reason.
func sidecarReady(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		return errors.New(e.Message)
	}
	return fmt.Errorf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(body))
}

// logSinks are where a child's stdout and stderr go: the terminal with a
// prefix per line, or the file DIR/APP.WHAT.log.
func logSinks(o runOptions, what string, stdout, stderr io.Writer) (out, errw io.Writer, closeFn func(), err error) {
	if o.logDir != "" {
		if err := os.MkdirAll(o.logDir, 0o755); err != nil {
			return nil, nil, nil, err
		}
		f, err := os.OpenFile(filepath.Join(o.logDir, o.appID+"."+what+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, nil, err
		}
		return f, f, func() { f.Close() }, nil
	}
	prefix := fmt.Sprintf("%s %-5s | ", o.appID, what)
	po, pe := &prefixWriter{w: stdout, prefix: prefix}, &prefixWriter{w: stderr, prefix: prefix}
	return po, pe, func() { po.flush(); pe.flush() }, nil
}

// prefixWriter writes every line it is given with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := io.WriteString(p.w, p.prefix+string(p.buf[:i+1])); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		_, _ = io.WriteString(p.w, p.prefix+strings.TrimRight(string(p.buf), "\n")+"\n")
		p.buf = nil
	}
}
