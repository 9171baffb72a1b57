package harness

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// JaegerVersion is the Jaeger release the tests run (Jaeger v2, an
// OpenTelemetry Collector distribution; Apache-2.0).
const JaegerVersion = "v1.76.0"

var jaegerTool = &cachedTool{name: "jaeger", version: JaegerVersion, envVar: "MESHD_JAEGER_BIN",
	script: "tests/telemetry/install-jaeger.sh", timeout: 30 * time.Minute}

// JaegerBinary returns the path of the Jaeger binary, building it with
// tests/telemetry/install-jaeger.sh into .cache/jaeger/{version}/ the first
// time (several minutes on 2 cores; logged). MESHD_JAEGER_BIN overrides the
// path.
func JaegerBinary(t testing.TB) string { return jaegerTool.binary(t) }

// Jaeger is a running Jaeger v2 with an in-memory store, its OTLP
// receivers and its query API on free loopback ports.
type Jaeger struct {
	*Process
	OTLPGRPCPort, OTLPHTTPPort, QueryHTTPPort, QueryGRPCPort int
}

// OTLPGRPCAddr is the OTLP/gRPC receiver (host:port).
func (j *Jaeger) OTLPGRPCAddr() string { return "127.0.0.1:" + strconv.Itoa(j.OTLPGRPCPort) }

// OTLPHTTPAddr is the OTLP/HTTP receiver (host:port; path /v1/traces).
func (j *Jaeger) OTLPHTTPAddr() string { return "127.0.0.1:" + strconv.Itoa(j.OTLPHTTPPort) }

// QueryURL is the base URL of the query API (/api/traces/{id}, /api/v3/...).
func (j *Jaeger) QueryURL() string { return "http://127.0.0.1:" + strconv.Itoa(j.QueryHTTPPort) }

const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: []
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
    traces:
      level: none
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// StartJaeger builds Jaeger if needed, writes its config, starts it and
// waits until its receivers and query API answer. It is stopped when the
// test ends.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := JaegerBinary(t)
	j := &Jaeger{OTLPGRPCPort: FreePort(t), OTLPHTTPPort: FreePort(t), QueryHTTPPort: FreePort(t), QueryGRPCPort: FreePort(t)}
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, j.QueryHTTPPort, j.QueryGRPCPort, j.OTLPGRPCPort, j.OTLPHTTPPort), 0o600); err != nil {
		t.Fatal(err)
	}
	// Jaeger's own tracing would export to localhost:4317: turned off.
	j.Process = startEnv(t, "jaeger@"+strconv.Itoa(j.QueryHTTPPort), []string{"OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none"},
		bin, "--config", cfg)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if j.Exited() {
			t.Fatalf("jaeger exited: %v\n%s", j.Wait(0), j.Log())
		}
		resp, err := http.Get(j.QueryURL() + "/api/services")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && dialOK(j.OTLPGRPCAddr()) && dialOK(j.OTLPHTTPAddr()) {
				return j
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger not ready after 60s (last: %v)\n%s", err, j.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startEnv is Start with extra environment variables for the child only.
func startEnv(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, log: &LogBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(append(os.Environ(), "NO_COLOR=1"), env...)
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
