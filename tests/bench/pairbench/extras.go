package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// token writes a join token for app id into DIR/id.token.
func (m *mesh) token(ctx context.Context, id string) error {
	tok, err := exec.CommandContext(ctx, filepath.Join(m.bin, "sentry"), "token", "create",
		"--data-dir", filepath.Join(m.dir, "sentry"),
		"--app-id", id, "--namespace", "default", "--ttl", "1h").Output()
	if err != nil {
		return fmt.Errorf("token for %s: %w", id, err)
	}
	return os.WriteFile(filepath.Join(m.dir, id+".token"), tok, 0o600)
}

// traceSink is an OTLP/HTTP trace receiver on loopback that counts the
// export requests and answers each with an empty ExportTraceServiceResponse.
type traceSink struct {
	ln    net.Listener
	srv   *http.Server
	count atomic.Int64
}

func newTraceSink() *traceSink {
	s := &traceSink{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pairbench: trace sink:", err)
		return s
	}
	s.ln = ln
	s.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/v1/traces" {
			s.count.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = s.srv.Serve(ln) }()
	return s
}

func (s *traceSink) addr() string {
	if s.ln == nil {
		return "127.0.0.1:1"
	}
	return s.ln.Addr().String()
}

func (s *traceSink) close() {
	if s.srv != nil {
		_ = s.srv.Close()
	}
}

// writeTracingConfig writes the Dapr Configuration of the sidecars of the
// meshd-policy rows: spans sampled at 1 %, exported over OTLP/HTTP to the
// bench's trace sink.
func (m *mesh) writeTracingConfig() (string, error) {
	doc := fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: pairbench-tracing
spec:
  tracing:
    samplingRate: "0.01"
    otel:
      endpointAddress: "http://%s"
      protocol: http
      isSecure: false
`, m.traces.addr())
	path := filepath.Join(m.dir, "tracing.yaml")
	return path, os.WriteFile(path, []byte(doc), 0o644)
}

// isPathVariant: the rows loaded by pathLoad (a new path every call).
func isPathVariant(variant string) bool {
	switch variant {
	case "meshd-paths", "meshd-policy", "meshd-twin":
		return true
	}
	return false
}

// loadPaths is load for the path variants: meshd-paths (a → b),
// meshd-policy (ap → bp: 50-rule policy at the callee, tracing at 1 % on
// both) and meshd-twin (a → b2).
func (m *mesh) loadPaths(ctx context.Context, c config, mode, variant string) (result, error) {
	p := m.ports
	callee := m.callee("http", variant)
	base := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/%s/method", p[m.caller(variant)+"-http"], callee)
	qps, dur := c.qps, c.maxDur
	if mode == "fixed" {
		dur = c.fixedDur
	} else {
		qps = 0
	}
	if _, err := pathLoad(ctx, base, &m.pathSeq, c.paths, c.conns, qps, c.size, c.warm); err != nil {
		return result{}, fmt.Errorf("warm-up %s: %w", variant, err)
	}
	cpuBefore := m.pairCPU("http", variant)
	busyBefore, totalBefore := machineCPU()
	var profiles sync.WaitGroup
	if c.profile && mode == "max" {
		for _, sc := range []string{m.caller(variant), callee} {
			profiles.Go(func() {
				url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", p[sc+"-prof"], max(int(dur.Seconds())-2, 1))
				if err := fetch(url, filepath.Join(c.out, fmt.Sprintf("cpu-http-%s-%s.pprof", variant, sc))); err != nil {
					fmt.Fprintln(os.Stderr, "pairbench: profile:", err)
				}
			})
		}
	}
	st, err := pathLoad(ctx, base, &m.pathSeq, c.paths, c.conns, qps, c.size, dur)
	profiles.Wait()
	if err != nil {
		return result{}, fmt.Errorf("load http %s %s: %w", mode, variant, err)
	}
	cpuAfter := m.pairCPU("http", variant)
	busyAfter, totalAfter := machineCPU()
	r := result{Protocol: "http", Variant: variant, Mode: mode, Requests: st.requests, Errors: st.errors,
		QPS: float64(st.requests) / st.elapsed.Seconds(), P50ms: st.pct(50), P90ms: st.pct(90), P99ms: st.pct(99),
		P999ms: st.pct(99.9)}
	if n := len(st.latencies); n > 0 {
		r.MaxMs = float64(st.latencies[n-1].Microseconds()) / 1e3
	}
	if totalAfter > totalBefore {
		r.MachineBusy = 100 * float64(busyAfter-busyBefore) / float64(totalAfter-totalBefore)
	}
	r.PairCPUSec = cpuAfter - cpuBefore
	if r.Requests > 0 {
		r.PairCPUUsRq = r.PairCPUSec / float64(r.Requests) * 1e6
	}
	return r, nil
}
