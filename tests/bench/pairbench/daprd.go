package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The daprd variant is Dapr's own sidecar pair, measured in the same run:
// fortio → daprd A /v1.0/invoke/b/method/echo → (gRPC over HTTP/2, mTLS
// with certificates from Dapr's sentry) → daprd B → the app. daprd and
// Dapr's sentry v1.18.0 are built from source by tests/bench/daprd.sh into
// .cache/bin/ (daprd needs -tags stablecomponents).
//
// Set-up as in the anchor harness: a self-hosted sentry (trust domain
// cluster.local, its insecure validator) that writes its own root and
// issuer; each daprd gets DAPR_TRUST_ANCHORS and NAMESPACE=default,
// --enable-mtls, --sentry-address and --control-plane-trust-domain, and a
// Configuration with spec.mtls.enabled. Name resolution is the kubernetes
// resolver with a Go template that maps the app IDs to the loopback ports
// (the stable build has no other resolver that works on one machine):
// static, cached by daprd, no cost per call. Everything else is at daprd's
// defaults (metrics on, sampling 1e-4, built-in retries, no ACL).

// Names of the daprd processes in the memory table.
const (
	daprdA = "daprd A, this run"
	daprdB = "daprd B, this run"
)

// findDaprd returns the daprd binary and Dapr's sentry beside it: the
// flag's value, or .cache/bin/daprd; "" when there is none or the flag
// says "off".
func findDaprd(flagValue string) (daprd, sentry string) {
	if flagValue == "off" {
		return "", ""
	}
	if flagValue == "" {
		flagValue = filepath.Join(".cache", "bin", "daprd")
	}
	sentry = filepath.Join(filepath.Dir(flagValue), "dapr-sentry")
	for _, p := range []string{flagValue, sentry} {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return "", ""
		}
	}
	return flagValue, sentry
}

// daprEnv is the environment of a daprd: the trust anchors of Dapr's
// sentry and the namespace.
func (m *mesh) daprEnv() ([]string, error) {
	ca, err := os.ReadFile(filepath.Join(m.dir, "dapr-sentry", "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("dapr sentry's trust anchors: %w", err)
	}
	env := []string{"DAPR_TRUST_ANCHORS=" + string(ca), "NAMESPACE=default"}
	return append(os.Environ(), env...), nil
}

// startDaprSentry starts Dapr's sentry and waits until it has written its
// CA and stopped reloading it (it watches its own credentials directory
// and restarts its CA after each of its own writes, ~2 s apart).
func (m *mesh) startDaprSentry(ctx context.Context) error {
	p := m.ports
	dir := filepath.Join(m.dir, "dapr-sentry")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// Its Configuration (without one it looks for "daprsystem" and exits).
	config := filepath.Join(m.dir, "dapr-sentry.yaml")
	if err := os.WriteFile(config, []byte(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
    workloadCertTTL: 24h
    allowedClockSkew: 15m
`), 0o644); err != nil {
		return err
	}
	if err := m.spawn("dapr-sentry", m.daprSentry, "--config", config, "--issuer-credentials", dir, "--trust-domain", "cluster.local",
		"--port", strconv.Itoa(p["dapr-sentry"]), "--listen-address", "127.0.0.1",
		"--healthz-port", strconv.Itoa(p["dapr-sentry-health"]), "--healthz-listen-address", "127.0.0.1",
		"--metrics-port", strconv.Itoa(p["dapr-sentry-met"]), "--metrics-listen-address", "127.0.0.1",
		"--log-level", "warn"); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "issuer.key")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dapr sentry wrote no CA in 30 s\n%s", m.logTail("dapr-sentry"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	select { // its reloads after its own writes (3 × ~2 s)
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(7 * time.Second):
	}
	return waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", p["dapr-sentry-health"]), 200, 20*time.Second)
}

// writeDaprConfig writes the Configuration (mTLS on, the template
// resolver) and an empty resources directory.
func (m *mesh) writeDaprConfig() (config, resources string, err error) {
	p := m.ports
	dir := filepath.Join(m.dir, "dapr")
	resources = filepath.Join(dir, "resources")
	if err := os.MkdirAll(resources, 0o755); err != nil {
		return "", "", err
	}
	config = filepath.Join(dir, "config.yaml")
	doc := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: pairbench
spec:
  mtls:
    enabled: true
  nameResolution:
    component: kubernetes
    configuration:
      template: '127.0.0.1:{{if eq .ID "db"}}%d{{else if eq .ID "dr"}}%d{{else}}%d{{end}}'
`, p["db-int"], p["dr-int"], p["da-int"])
	return config, resources, os.WriteFile(config, []byte(doc), 0o644)
}

// daprdArgs are the flags of daprd "id" (da, db or dr) on its own ports.
func (m *mesh) daprdArgs(id, config, resources string, appPort int) []string {
	p := m.ports
	args := []string{"--app-id", id, "--mode", "standalone",
		"--dapr-http-port", strconv.Itoa(p[id+"-http"]), "--dapr-grpc-port", strconv.Itoa(p[id+"-grpc"]),
		"--dapr-internal-grpc-port", strconv.Itoa(p[id+"-int"]), "--metrics-port", strconv.Itoa(p[id+"-met"]),
		"--profile-port", strconv.Itoa(p[id+"-prof"]),
		"--dapr-listen-addresses", "127.0.0.1", "--metrics-listen-address", "127.0.0.1",
		"--resources-path", resources, "--config", config,
		"--enable-mtls", "--sentry-address", fmt.Sprintf("127.0.0.1:%d", p["dapr-sentry"]),
		"--control-plane-trust-domain", "cluster.local", "--log-level", "warn"}
	if appPort > 0 {
		args = append(args, "--app-port", strconv.Itoa(appPort), "--app-channel-address", "127.0.0.1")
	}
	return args
}

// startDaprd starts Dapr's sentry and the daprd pair: A (da, the caller's
// sidecar, no app) and B (db, in front of the app); the app ID the caller
// invokes is "db".
func (m *mesh) startDaprd(ctx context.Context) error {
	if err := m.startDaprSentry(ctx); err != nil {
		return err
	}
	config, resources, err := m.writeDaprConfig()
	if err != nil {
		return err
	}
	env, err := m.daprEnv()
	if err != nil {
		return err
	}
	p := m.ports
	for _, sc := range []struct {
		id      string
		appPort int
	}{{"da", 0}, {"db", p["app-http"]}} {
		if err := m.spawnEnv(sc.id, m.daprd, env, m.daprdArgs(sc.id, config, resources, sc.appPort)...); err != nil {
			return err
		}
	}
	for _, id := range []string{"da", "db"} {
		if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", p[id+"-http"]), 204, 30*time.Second); err != nil {
			return fmt.Errorf("daprd %s: %w\n%s", id, err, m.logTail(id))
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/db/method/echo", p["da-http"])
	if err := waitHTTP(ctx, url, 200, 20*time.Second); err != nil {
		return fmt.Errorf("first call through the daprd pair: %w\n%s\n%s", err, m.logTail("da"), m.logTail("db"))
	}
	return nil
}

// spawnEnv is spawn with the environment env.
func (m *mesh) spawnEnv(name, bin string, env []string, args ...string) error {
	logf, err := os.Create(filepath.Join(m.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	m.mu.Lock()
	m.procs[name] = cmd
	m.mu.Unlock()
	return nil
}
