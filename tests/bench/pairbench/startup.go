package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Start → ready with a certificate: the time from starting a fresh sidecar
// process (with an app behind it) until its /v1.0/healthz answers 204,
// which for both meshd and daprd needs the workload certificate from their
// CA. Polled every millisecond; measured startReps times per sidecar, in
// alternating order, while the rest of the bench mesh idles.

const startReps = 5

type startup struct {
	MeshdMs []float64 `json:"meshd_ms"`
	DaprdMs []float64 `json:"daprd_ms,omitempty"`
	// Medians.
	MeshdMedianMs float64 `json:"meshd_median_ms"`
	DaprdMedianMs float64 `json:"daprd_median_ms,omitempty"`
}

// measureStartups starts the sidecar "r" (meshd) and "dr" (daprd, when it
// is part of the run) startReps times each and reports start → ready.
func (m *mesh) measureStartups(ctx context.Context) (*startup, error) {
	s := &startup{}
	p := m.ports
	meshdArgs := []string{"--app-id", "r", "--namespace", "default",
		"--http-port", strconv.Itoa(p["r-http"]), "--grpc-port", strconv.Itoa(p["r-grpc"]),
		"--internal-port", strconv.Itoa(p["r-int"]), "--metrics-port", strconv.Itoa(p["r-met"]),
		"--listen-address", "127.0.0.1",
		"--sentry-address", fmt.Sprintf("127.0.0.1:%d", p["sentry"]),
		"--trust-anchors-file", filepath.Join(m.dir, "sentry", "bundle.pem"),
		"--token-file", filepath.Join(m.dir, "r.token"), "--resolver", "static",
		"--resolver-config", filepath.Join(m.dir, "static.yaml"),
		"--log-level", "warn", "--app-port", strconv.Itoa(p["app-http"]), "--app-protocol", "http"}
	var env []string
	if len(m.meshdEnv) > 0 {
		env = append(os.Environ(), m.meshdEnv...)
	}
	for i := range max(m.startReps, 1) {
		order := []string{"meshd", "daprd"}
		if i%2 == 1 {
			order = []string{"daprd", "meshd"}
		}
		for _, who := range order {
			switch {
			case who == "meshd":
				d, err := m.timeToReady(ctx, "r", filepath.Join(m.bin, "meshd"), env, meshdArgs, p["r-http"])
				if err != nil {
					return nil, err
				}
				s.MeshdMs = append(s.MeshdMs, d)
			case m.daprd != "":
				denv, err := m.daprEnv()
				if err != nil {
					return nil, err
				}
				config, resources := filepath.Join(m.dir, "dapr", "config.yaml"), filepath.Join(m.dir, "dapr", "resources")
				d, err := m.timeToReady(ctx, "dr", m.daprd, denv, m.daprdArgs("dr", config, resources, p["app-http"]), p["dr-http"])
				if err != nil {
					return nil, err
				}
				s.DaprdMs = append(s.DaprdMs, d)
			}
		}
	}
	s.MeshdMedianMs, s.DaprdMedianMs = median(s.MeshdMs), median(s.DaprdMs)
	return s, nil
}

// timeToReady starts name, polls its healthz every millisecond until 204,
// stops it again, and returns the time from start to the 204 in ms.
func (m *mesh) timeToReady(ctx context.Context, name, bin string, env, args []string, httpPort int) (float64, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", httpPort)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t0 := time.Now()
	if err := m.spawnEnv(name, bin, env, args...); err != nil {
		return 0, err
	}
	defer m.stop(name)
	deadline := t0.Add(30 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return float64(time.Since(t0).Microseconds()) / 1e3, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: not ready in 30 s (last error %v)\n%s", name, err, m.logTail(name))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// stop interrupts one process, waits for it (kills it after 5 s) and
// forgets it.
func (m *mesh) stop(name string) {
	m.mu.Lock()
	cmd := m.procs[name]
	delete(m.procs, name)
	m.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}
