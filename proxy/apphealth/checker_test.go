package apphealth

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshd/meshd/proxy/appchannel"
)

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestHTTPProbe(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	var paths sync.Map
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths.Store(r.URL.Path, true)
		w.WriteHeader(int(code.Load()))
	}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	ch, _ := appchannel.New(appchannel.Config{Port: portOf(t, u.Host)})
	c, err := New(Config{Channel: ch, Path: "/ready", Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	var changes []bool
	c.OnChange(func(h bool) { changes = append(changes, h) })
	ctx := context.Background()
	if c.Healthy() {
		t.Fatal("healthy before the first probe")
	}
	steps := []struct {
		code int
		want bool
	}{
		{200, true},  // one success
		{500, true},  // 1 failure < threshold 2
		{200, true},  // success resets the count
		{503, true},  // 1
		{404, false}, // 2: unhealthy
		{500, false},
		{204, true}, // one success restores
	}
	for i, s := range steps {
		code.Store(int32(s.code))
		c.ProbeOnce(ctx)
		if c.Healthy() != s.want {
			t.Fatalf("step %d (status %d): healthy=%v, want %v", i, s.code, c.Healthy(), s.want)
		}
	}
	if want := []bool{true, false, true}; len(changes) != 3 || changes[0] != want[0] || changes[1] != want[1] || changes[2] != want[2] {
		t.Errorf("OnChange calls %v, want %v", changes, want)
	}
	if _, ok := paths.Load("/ready"); !ok {
		t.Error("probe did not use the configured path")
	}
}

func TestHTTPProbeTimeoutAndDown(t *testing.T) {
	block := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	u, _ := url.Parse(app.URL)
	ch, _ := appchannel.New(appchannel.Config{Port: portOf(t, u.Host)})
	c, _ := New(Config{Channel: ch, Timeout: 50 * time.Millisecond, Threshold: 1})
	c.healthy.Store(true)
	start := time.Now()
	c.ProbeOnce(context.Background())
	if c.Healthy() || time.Since(start) > time.Second {
		t.Fatalf("slow app: healthy=%v after %v", c.Healthy(), time.Since(start))
	}
	close(block)
	app.Close()
	c.healthy.Store(true)
	c.ProbeOnce(context.Background())
	if c.Healthy() {
		t.Fatal("app down but healthy")
	}
}

func TestGRPCProbe(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(l) }()
	defer gs.Stop()
	ch, _ := appchannel.New(appchannel.Config{Protocol: appchannel.GRPC, Port: portOf(t, l.Addr().String())})
	c, err := New(Config{Channel: ch, Threshold: 1, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.ProbeOnce(ctx)
	if !c.Healthy() {
		t.Fatal("SERVING app is unhealthy")
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	c.ProbeOnce(ctx)
	if c.Healthy() {
		t.Fatal("NOT_SERVING app is healthy")
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	c.ProbeOnce(ctx)
	if !c.Healthy() {
		t.Fatal("not restored")
	}
}

func TestGRPCProbeWithoutHealthService(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	go func() { _ = gs.Serve(l) }()
	ch, _ := appchannel.New(appchannel.Config{Protocol: appchannel.GRPC, Port: portOf(t, l.Addr().String())})
	c, _ := New(Config{Channel: ch, Threshold: 1, Timeout: time.Second})
	c.ProbeOnce(context.Background())
	if !c.Healthy() {
		t.Fatal("reachable app without health service should count as healthy")
	}
	gs.Stop()
	c.ProbeOnce(context.Background())
	if c.Healthy() {
		t.Fatal("stopped app is healthy")
	}
}

func TestRunAndConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no channel accepted")
	}
	ch, _ := appchannel.New(appchannel.Config{Port: 1})
	if _, err := New(Config{Channel: ch, Path: "healthz"}); err == nil {
		t.Error("relative path accepted")
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer app.Close()
	u, _ := url.Parse(app.URL)
	ch, _ = appchannel.New(appchannel.Config{Port: portOf(t, u.Host)})
	c, _ := New(Config{Channel: ch, Interval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	deadline := time.Now().Add(2 * time.Second)
	for !c.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if !c.Healthy() {
		t.Fatal("Run never made the app healthy")
	}
}

// TestRunStartupProbing: an app that starts after its sidecar is healthy
// within a few StartupIntervals, not a full Interval later; once it has
// been healthy, probes go back to Interval.
func TestRunStartupProbing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portOf(t, l.Addr().String())
	l.Close() // nothing listens yet: the app has not started
	ch, _ := appchannel.New(appchannel.Config{Port: port})
	c, err := New(Config{Channel: ch, Interval: 5 * time.Second, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	time.Sleep(3 * StartupInterval) // a few failed probes
	var probes atomic.Int32
	l, err = net.Listen("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("app cannot bind its port again: %v", err)
	}
	app := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
	})}}
	app.Start()
	defer app.Close()
	started := time.Now()
	for !c.Healthy() && time.Since(started) < 4*time.Second {
		time.Sleep(5 * time.Millisecond)
	}
	if !c.Healthy() {
		t.Fatalf("app not healthy %v after it started (Interval 5s, StartupInterval %v)", time.Since(started), StartupInterval)
	}
	if d := time.Since(started); d > 2*time.Second {
		t.Fatalf("app healthy only after %v: startup probing did not run", d)
	}
	n := probes.Load()
	time.Sleep(4 * StartupInterval)
	if got := probes.Load(); got != n {
		t.Errorf("%d probes in %v after the app became healthy, want none before Interval (5s)", got-n, 4*StartupInterval)
	}
}
