package discovery_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

// followWithin is how soon callers must follow a change of the slices.
const followWithin = time.Second

// addPodIPs gives lo the pod IPs (inside the test's own network
// namespace: the API server refuses loopback addresses in EndpointSlices).
func addPodIPs(t *testing.T, ips ...string) {
	t.Helper()
	for _, ip := range ips {
		if out, err := exec.Command("ip", "addr", "add", ip+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add %s: %v: %s", ip, err, out)
		}
	}
}

// pod is one instance of an app: an echo app and its meshd, whose
// internal port listens on the pod IP.
type pod struct {
	name, ip string
	app      *harness.App
	sc       *harness.Sidecar
}

// mesh is a real control plane, sentry and meshd sidecars in one network
// namespace, all resolving through --resolver kubernetes.
type mesh struct {
	k      *harness.Kube
	bins   harness.Binaries
	sentry *harness.Sentry
	cfg    string
	caller *harness.Sidecar
}

func startMesh(t *testing.T, callerIP string) *mesh {
	t.Helper()
	m := &mesh{k: harness.StartKube(t), bins: harness.Build(t)}
	m.sentry = harness.StartSentry(t, m.bins, "")
	ensureNamespace(t, m.k.Client(), "shop")
	m.cfg = resolverConfig(t, "kubeconfig: "+m.k.Kubeconfig+"\n")
	m.caller = m.sidecar(t, "frontend", callerIP, 0)
	return m
}

func (m *mesh) sidecar(t *testing.T, app, ip string, appPort int) *harness.Sidecar {
	t.Helper()
	ports := harness.NewSidecarPorts(t)
	ports.Internal = internalPort
	return harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: app, Namespace: "shop", AppPort: appPort, Ports: ports,
		Extra: []string{"--listen-address", ip, "--resolver", "kubernetes", "--resolver-config", m.cfg}})
}

func (m *mesh) pod(t *testing.T, app, name, ip string) *pod {
	t.Helper()
	a := harness.StartEcho(t, m.bins, name, 0)
	return &pod{name: name, ip: ip, app: a, sc: m.sidecar(t, app, ip, a.Port)}
}

// call is one GET through the caller sidecar.
type call struct {
	at     time.Time
	name   string // answering instance
	status int
	err    string
}

var client = &http.Client{Timeout: 10 * time.Second}

func doCall(url string) call {
	c := call{at: time.Now()}
	resp, err := client.Get(url)
	if err != nil {
		c.err = err.Error()
		return c
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		c.err = string(body)
		return c
	}
	var echo struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &echo); err != nil {
		c.err = "bad echo body: " + err.Error()
	}
	c.name = echo.Name
	return c
}

// load keeps calling an app through the caller (idempotent GETs).
type load struct {
	mu    sync.Mutex
	calls []call
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startLoad(url string, workers int) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				c := doCall(url)
				l.mu.Lock()
				l.calls = append(l.calls, c)
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

func (l *load) since(t0 time.Time) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []call
	for _, c := range l.calls {
		if !c.at.Before(t0) {
			out = append(out, c)
		}
	}
	return out
}

// firstAnswer waits until a call begun after t0 is answered by name and
// returns how long after t0 that call began.
func (l *load) firstAnswer(t *testing.T, name string, t0 time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for time.Since(t0) < limit+time.Second {
		for _, c := range l.since(t0) {
			if c.name == name {
				return c.at.Sub(t0)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no call begun within %s of the change was answered by %s", limit+time.Second, name)
	return 0
}

// noneAfter checks that no call begun after t0+followWithin was answered
// by the names, and that calls did flow meanwhile.
func (l *load) noneAfter(t *testing.T, what string, t0 time.Time, names ...string) {
	t.Helper()
	calls := l.since(t0.Add(followWithin))
	if len(calls) < 20 {
		t.Fatalf("%s: only %d calls in the window", what, len(calls))
	}
	last := map[string]time.Time{}
	for _, c := range l.since(t0) {
		for _, n := range names {
			if c.name == n {
				last[n] = c.at
			}
		}
	}
	for n, at := range last {
		if d := at.Sub(t0); d > followWithin {
			t.Errorf("%s: %s still got a call begun %s after the change", what, n, d)
		} else {
			t.Logf("%s: last call to %s began %s after the change", what, n, d.Round(time.Millisecond))
		}
	}
}

// failures reports the failed calls begun at or after t0.
func (l *load) failures(t *testing.T, what string, t0 time.Time) {
	t.Helper()
	failed, total := 0, 0
	for _, c := range l.since(t0) {
		total++
		if c.err != "" {
			failed++
			if failed <= 3 {
				t.Errorf("%s: call at %s failed: %d %s", what, c.at.Format("15:04:05.000"), c.status, c.err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%s: %d of %d calls failed", what, failed, total)
	}
	t.Logf("%s: %d calls, %d failed", what, total, failed)
}

// wait sleeps until the load has run d past t0.
func waitUntil(t0 time.Time, d time.Duration) { time.Sleep(time.Until(t0.Add(d))) }

// stream is an SSE call in flight through the caller.
type stream struct {
	name   string // the instance answering
	events int
	err    error
	done   chan struct{}
}

// startStream begins /sse?n=n&interval=100ms and returns once the first
// event names the answering instance.
func startStream(t *testing.T, url string, n int) *stream {
	t.Helper()
	s := &stream{done: make(chan struct{})}
	first := make(chan struct{})
	go func() {
		defer close(s.done)
		once := sync.OnceFunc(func() { close(first) })
		defer once()
		resp, err := http.Get(url + "?n=" + strconv.Itoa(n) + "&interval=100ms")
		if err != nil {
			s.err = err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			s.err = fmt.Errorf("status %d", resp.StatusCode)
			return
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ev struct {
				Name string `json:"name"`
			}
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				s.err = err
				return
			}
			s.name = ev.Name
			s.events++
			once()
		}
		s.err = sc.Err()
	}()
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("no first SSE event in 10s")
	}
	return s
}

// TestMeshFollowsSlices: meshd sidecars whose endpoints live in
// EndpointSlices the test writes call each other (mTLS, pod IPs in the
// test's network namespace). Under a steady load of idempotent calls:
// scaled 3 -> 5 -> 2 by editing the slice, the caller follows within 1 s
// and no call fails (the removed pods are then stopped); a not-ready
// endpoint gets no new calls and finishes the ones it has, and so does a
// terminating one; with the API server stopped for 30 s calls
// keep flowing from the cache, and a change made after it returns
// arrives.
func TestMeshFollowsSlices(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	ips := []string{"10.244.0.11", "10.244.0.12", "10.244.0.13", "10.244.0.14", "10.244.0.15"}
	addPodIPs(t, append([]string{"10.244.0.2"}, ips...)...)
	m := startMesh(t, "10.244.0.2")
	cs := m.k.Client()
	var pods []*pod
	for i, ip := range ips {
		pods = append(pods, m.pod(t, "orders", fmt.Sprintf("orders-%d", i+1), ip))
	}
	slice := func(eps ...ep) { applySlice(t, cs, sliceFor("shop", "orders-abc12", "orders", eps...)) }
	readyPods := func(ps ...*pod) []ep {
		var out []ep
		for _, p := range ps {
			out = append(out, readyEP(p.ip))
		}
		return out
	}
	p1, p2, p3, p4, p5 := pods[0], pods[1], pods[2], pods[3], pods[4]
	// An observer in the test process, fed like the caller: its Cache's
	// error events are what a metrics hook sees (Updater.ReportError).
	obs, _ := observer(t, m.k, "shop", "")
	obsErrs := &errorLog{}
	obs.Subscribe(func(ev discovery.Event) {
		if ev.Kind == discovery.EventError {
			obsErrs.add(ev.Err)
		}
	})
	orders := discovery.Target{AppID: "orders", Namespace: "shop"}

	// 3 pods.
	slice(readyPods(p1, p2, p3)...)
	url := m.caller.HTTPURL() + "/v1.0/invoke/orders/method/who"
	// The slice was just written: until the caller's watch delivers it,
	// orders is an app without endpoints there (503 at once).
	harness.WaitFor(t, 5*time.Second, func(context.Context) error {
		if c := doCall(url); c.err != "" {
			return fmt.Errorf("first call: %d %s", c.status, c.err)
		}
		return nil
	})
	l := startLoad(url, 4)
	defer l.end()
	start := time.Now()
	time.Sleep(500 * time.Millisecond)
	for _, p := range []*pod{p1, p2, p3} {
		l.firstAnswer(t, p.name, start, followWithin)
	}

	// 3 -> 5.
	t0 := time.Now()
	slice(readyPods(p1, p2, p3, p4, p5)...)
	for _, p := range []*pod{p4, p5} {
		d := l.firstAnswer(t, p.name, t0, followWithin)
		if d > followWithin {
			t.Errorf("scale 3->5: first call to %s began %s after the change", p.name, d)
		}
		t.Logf("scale 3->5: first call to %s began %s after the change", p.name, d.Round(time.Millisecond))
	}

	// 5 -> 2; then the removed pods stop, as they would.
	t0 = time.Now()
	slice(readyPods(p1, p2)...)
	waitUntil(t0, followWithin+500*time.Millisecond)
	l.noneAfter(t, "scale 5->2", t0, p3.name, p4.name, p5.name)
	for _, p := range []*pod{p4, p5} {
		p.sc.Stop(10 * time.Second)
		p.app.Stop(5 * time.Second)
	}
	time.Sleep(time.Second)
	l.failures(t, "scaling 3->5->2 (and the removed pods stopped)", start)

	// streamsOn starts 2-second SSE calls until 3 are answered by p.
	sse := m.caller.HTTPURL() + "/v1.0/invoke/orders/method/sse"
	streamsOn := func(p *pod) []*stream {
		var on []*stream
		for i := 0; len(on) < 3 && i < 40; i++ {
			s := startStream(t, sse, 20) // 2 s each
			if s.name == p.name {
				on = append(on, s)
			}
		}
		if len(on) < 3 {
			t.Fatalf("only %d streams landed on %s", len(on), p.name)
		}
		return on
	}
	finished := func(what string, on []*stream) {
		for _, s := range on {
			<-s.done
			if s.err != nil || s.events != 20 {
				t.Errorf("stream on %s %s: %d of 20 events, err %v", what, p2.name, s.events, s.err)
			}
		}
	}

	// Not ready: in-flight calls finish, no new ones; ready again: calls
	// again.
	onP2 := streamsOn(p2)
	t0 = time.Now()
	slice(readyPods(p1)[0], ep{ip: p2.ip, serving: false})
	finished("not ready", onP2)
	waitUntil(t0, followWithin+500*time.Millisecond)
	l.noneAfter(t, "p2 not ready", t0, p2.name)
	t0 = time.Now()
	slice(readyPods(p1, p2)...)
	l.firstAnswer(t, p2.name, t0, followWithin)

	// Terminating (serving): in-flight calls finish, no new ones.
	onP2 = streamsOn(p2)
	t0 = time.Now()
	slice(readyPods(p1)[0], ep{ip: p2.ip, serving: true, terminating: true})
	finished("terminating", onP2)
	waitUntil(t0, followWithin+500*time.Millisecond)
	l.noneAfter(t, "p2 terminating", t0, p2.name)
	l.failures(t, "not ready / terminating", start)

	// The API server stopped for 30 s: calls keep flowing from the cache.
	down := time.Now()
	m.k.StopAPIServer()
	time.Sleep(30 * time.Second)
	m.k.StartAPIServer()
	up := time.Now()
	t.Logf("API server down for %s", up.Sub(down).Round(time.Millisecond))
	var during int
	for _, c := range l.since(down) {
		if c.at.Before(up) {
			during++
		}
	}
	if during < 100 {
		t.Errorf("only %d calls while the API server was down", during)
	}
	l.failures(t, "API server down 30s", down)
	if !strings.Contains(obsErrs.String(), "unreachable, serving the last known endpoints") {
		t.Errorf("no discovery error event for the outage: %q", obsErrs.String())
	}
	// The observer kept its last state through the outage: p1 picked, p2
	// draining (terminating).
	waitSets(t, obs, orders, hostPorts(p1.ip), hostPorts(p1.ip, p2.ip), time.Millisecond)

	// A change after it returns arrives: p3 is back, p1 leaves.
	t0 = time.Now()
	slice(readyPods(p2, p3)...)
	d := l.firstAnswer(t, p3.name, t0, 10*time.Second)
	if d > 10*time.Second {
		t.Errorf("after the API server returned, the change took %s to reach the caller", d)
	}
	t.Logf("after the API server returned: the change reached the caller in %s", d.Round(time.Millisecond))
	waitSets(t, obs, orders, hostPorts(p2.ip, p3.ip), hostPorts(p2.ip, p3.ip), 10*time.Second)
	waitUntil(t0, d+followWithin+500*time.Millisecond)
	l.noneAfter(t, "p1 removed after the outage", t0.Add(d), p1.name)
	l.end()
	l.failures(t, "whole run", start)
	for line := range strings.Lines(m.caller.Log()) {
		if strings.Contains(line, "resolver=kubernetes") || strings.Contains(line, "client-go") {
			t.Logf("caller: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(m.caller.Log(), "kubernetes: API server unreachable") || !strings.Contains(m.caller.Log(), "API server reachable again") {
		t.Errorf("the caller did not log the outage and the recovery:\n%s", m.caller.Log())
	}
	// ... and counted it in its metrics.
	if n := harness.ScrapeCounter(t, "http://127.0.0.1:"+strconv.Itoa(m.caller.Ports.Metrics)+"/metrics", "meshd_discovery_errors_total"); n < 1 {
		t.Errorf("meshd_discovery_errors_total = %v after the outage, want at least 1", n)
	}
}
