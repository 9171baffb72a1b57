package discovery_test

// End-to-end proof of the consul backend with real processes: a real Consul
// agent (v1.16.3, built once by tests/consul/install.sh), sentry, meshd
// sidecars registering themselves and echo apps. An observer Cache in the
// test process, fed by the same consul backend from the same agent, shows
// what every caller's picker holds and when it changes.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
	_ "github.com/meshd/meshd/discovery/consul"
	"github.com/meshd/meshd/tests/harness"
)

const consulApp = "inventory"

var consulTarget = discovery.Target{AppID: consulApp, Namespace: "default"}

// consulHealthArgs: the app's health is probed every 200ms; one failure
// makes it unhealthy.
var consulHealthArgs = []string{"--enable-app-health-check", "--app-health-probe-interval", "200ms", "--app-health-threshold", "1"}

func consulConfig(t *testing.T, agent *harness.Consul, selfRegister bool) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("consul-%v.yaml", selfRegister))
	doc := fmt.Sprintf("client:\n  address: %s\nselfRegister: %v\ntags: [meshd]\nmeta:\n  app: \"${APP_ID}\"\n", agent.Addr(), selfRegister)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// consulMesh is sentry, a Consul agent, a caller sidecar and instances of
// consulApp behind Consul.
type consulMesh struct {
	bins     harness.Binaries
	sentry   *harness.Sentry
	agent    *harness.Consul
	cfg      string
	caller   *harness.Sidecar
	observer *discovery.Cache
}

type consulInstance struct {
	name string
	app  *harness.App
	sc   *harness.Sidecar
}

func (i *consulInstance) addr() string { return i.sc.Ports.InternalAddr() }

func startConsulMesh(t *testing.T) *consulMesh {
	t.Helper()
	m := &consulMesh{bins: harness.Build(t)}
	m.agent = harness.StartConsul(t)
	m.sentry = harness.StartSentry(t, m.bins, t.TempDir())
	m.cfg = consulConfig(t, m.agent, true)
	m.caller = harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: "frontend",
		Extra: []string{"--resolver", "consul", "--resolver-config", m.cfg}})

	m.observer = discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { m.observer.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := m.observer.Build(ctx, "consul", discovery.BuildOptions{ConfigFile: consulConfig(t, m.agent, false),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	if err := m.observer.WaitTarget(ctx, consulTarget); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *consulMesh) start(t *testing.T, name string) *consulInstance {
	t.Helper()
	app := harness.StartEcho(t, m.bins, name, 0)
	sc := harness.StartSidecar(t, m.bins, m.sentry, harness.SidecarConfig{AppID: consulApp, AppPort: app.Port,
		Extra: append([]string{"--resolver", "consul", "--resolver-config", m.cfg}, consulHealthArgs...)})
	return &consulInstance{name: name, app: app, sc: sc}
}

// waitPicker waits until the observer's picker holds exactly want and
// returns how long that took.
func (m *consulMesh) waitPicker(t *testing.T, what string, want []string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	want = slices.Clone(want)
	sort.Strings(want)
	var got []string
	for time.Since(start) < limit {
		got = got[:0]
		for _, ep := range m.observer.Ready(consulTarget) {
			got = append(got, ep.Address)
		}
		sort.Strings(got)
		if slices.Equal(got, want) {
			d := time.Since(start)
			t.Logf("%s: picker = %v after %s", what, want, d.Round(time.Millisecond))
			return d
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: picker = %v after %s, want %v", what, got, limit, want)
	return 0
}

func addrsOf(is ...*consulInstance) []string {
	out := make([]string, len(is))
	for i, in := range is {
		out[i] = in.addr()
	}
	return out
}

// consulCall is one GET through the caller sidecar.
type consulCall struct {
	at     time.Time
	name   string // answering instance
	status int
	err    string
}

// consulLoad keeps calling consulApp through the caller while it runs.
type consulLoad struct {
	mu    sync.Mutex
	calls []consulCall
	stop  chan struct{}
	wg    sync.WaitGroup
}

var consulClient = &http.Client{Timeout: 10 * time.Second}

func callConsulApp(url string) consulCall {
	c := consulCall{at: time.Now()}
	resp, err := consulClient.Get(url)
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

func (m *consulMesh) load(workers int) *consulLoad {
	l := &consulLoad{stop: make(chan struct{})}
	url := m.caller.HTTPURL() + "/v1.0/invoke/" + consulApp + "/method/who"
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				c := callConsulApp(url)
				l.mu.Lock()
				l.calls = append(l.calls, c)
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *consulLoad) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// since returns the calls begun at or after t0.
func (l *consulLoad) since(t0 time.Time) []consulCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []consulCall
	for _, c := range l.calls {
		if !c.at.Before(t0) {
			out = append(out, c)
		}
	}
	return out
}

// check fails the test on any failed call begun after t0 and returns how
// many calls each instance answered.
func (l *consulLoad) check(t *testing.T, what string, t0 time.Time) map[string]int {
	t.Helper()
	byName := map[string]int{}
	failed := 0
	for _, c := range l.since(t0) {
		if c.err != "" {
			failed++
			if failed <= 3 {
				t.Errorf("%s: call at %s failed: %d %s", what, c.at.Format("15:04:05.000"), c.status, c.err)
			}
			continue
		}
		byName[c.name]++
	}
	if failed > 0 {
		t.Errorf("%s: %d failed calls", what, failed)
	}
	return byName
}

// failuresBetween counts failed calls begun in [t0, t1).
func (l *consulLoad) failuresBetween(t0, t1 time.Time) int {
	n := 0
	for _, c := range l.since(t0) {
		if c.at.Before(t1) && c.err != "" {
			n++
		}
	}
	return n
}

// detectionWindow is how long a change may take to reach the callers: the
// check interval (1s) plus a check timeout (1s) plus slack.
const detectionWindow = 3 * time.Second

func TestConsulInstancesComeAndGo(t *testing.T) {
	m := startConsulMesh(t)
	i1, i2, i3 := m.start(t, "i1"), m.start(t, "i2"), m.start(t, "i3")
	m.waitPicker(t, "three instances registered", addrsOf(i1, i2, i3), 10*time.Second)

	load := m.load(2)
	defer load.end()

	t0 := time.Now()
	time.Sleep(1500 * time.Millisecond)
	got := load.check(t, "three instances", t0)
	for _, n := range []string{"i1", "i2", "i3"} {
		if got[n] < 10 {
			t.Errorf("three instances: %s answered %d calls (%v): traffic not spread", n, got[n], got)
		}
	}

	t.Run("graceful stop deregisters", func(t *testing.T) {
		stop := time.Now()
		if err := i2.sc.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		d := m.waitPicker(t, "i2 stopped gracefully", addrsOf(i1, i3), detectionWindow)
		t.Logf("graceful stop -> picker: %s after SIGTERM", d.Round(time.Millisecond))
		if err := i2.sc.Wait(10 * time.Second); err != nil {
			t.Fatalf("sidecar exit: %v", err)
		}
		t.Logf("failed calls during the window: %d", load.failuresBetween(stop, stop.Add(detectionWindow)))
		time.Sleep(time.Until(stop.Add(detectionWindow)))
		after := time.Now()
		time.Sleep(time.Second)
		got := load.check(t, "after i2 stopped", after)
		if got["i2"] != 0 || got["i1"] == 0 || got["i3"] == 0 {
			t.Errorf("after i2 stopped: answers %v", got)
		}
	})

	t.Run("kill -9 is caught by the check", func(t *testing.T) {
		kill := time.Now()
		i3.sc.Kill()
		d := m.waitPicker(t, "i3 killed", addrsOf(i1), 4*time.Second)
		t.Logf("kill -9 -> picker: %s", d.Round(time.Millisecond))
		t.Logf("failed calls during the window: %d", load.failuresBetween(kill, kill.Add(detectionWindow)))
		time.Sleep(time.Until(kill.Add(detectionWindow)))
		after := time.Now()
		time.Sleep(time.Second)
		got := load.check(t, "after i3 killed", after)
		if got["i3"] != 0 || got["i1"] == 0 {
			t.Errorf("after i3 killed: answers %v", got)
		}
	})

	var i4 *consulInstance
	outer := t // processes started in a subtest would stop when it ends
	t.Run("a fourth instance is added", func(t *testing.T) {
		begin := time.Now()
		i4 = m.start(outer, "i4")
		ready := time.Since(begin)
		d := m.waitPicker(t, "i4 started", addrsOf(i1, i4), 3*time.Second)
		t.Logf("i4: sidecar ready after %s, in the picker %s later", ready.Round(time.Millisecond), d.Round(time.Millisecond))
		after := time.Now().Add(200 * time.Millisecond) // the caller's watch, not the observer's
		time.Sleep(1200 * time.Millisecond)
		got := load.check(t, "after i4 started", after)
		if got["i4"] == 0 || got["i1"] == 0 {
			t.Errorf("after i4 started: answers %v", got)
		}
	})

	t.Run("unhealthy app is taken out through Consul", func(t *testing.T) {
		if i4 == nil {
			t.Skip("needs i4")
		}
		fail := time.Now()
		resp, err := http.Get("http://" + i1.app.Addr() + "/admin/fail")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		d := m.waitPicker(t, "i1's app unhealthy", addrsOf(i4), detectionWindow)
		t.Logf("app unhealthy -> picker (through the Consul check): %s", d.Round(time.Millisecond))
		// The callers' own ejection (after i1's sidecar short-circuits) lasts
		// 5s; past it, i1 stays out only because Consul says so.
		time.Sleep(time.Until(fail.Add(6 * time.Second)))
		after := time.Now()
		time.Sleep(time.Second)
		got := load.check(t, "while i1 is unhealthy", after)
		if got["i1"] != 0 || got["i4"] == 0 {
			t.Errorf("while i1 is unhealthy: answers %v", got)
		}
		if len(m.observer.Ready(consulTarget)) != 1 {
			t.Errorf("picker = %v", m.observer.Ready(consulTarget))
		}

		heal := time.Now()
		resp, err = http.Get("http://" + i1.app.Addr() + "/admin/recover")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		d = m.waitPicker(t, "i1's app healthy again", addrsOf(i1, i4), detectionWindow)
		t.Logf("app healthy again -> picker: %s", d.Round(time.Millisecond))
		time.Sleep(time.Until(heal.Add(detectionWindow)))
		after = time.Now()
		time.Sleep(time.Second)
		got = load.check(t, "after i1 recovered", after)
		if got["i1"] == 0 || got["i4"] == 0 {
			t.Errorf("after i1 recovered: answers %v", got)
		}
	})
	load.end()

	t.Run("app 5xx answers eject at most half", func(t *testing.T) {
		if i4 == nil {
			t.Skip("needs i4")
		}
		// Now i1 and i4 serve. Every instance answers 500 on /status/500:
		// after 5 in a row one of them is ejected, never both (the outlier
		// cap is 50%), and the app's 500 passes through.
		base := m.caller.HTTPURL() + "/v1.0/invoke/" + consulApp + "/method/"
		for i := range 20 {
			c := callConsulApp(base + "status/500")
			if c.status != http.StatusInternalServerError || !strings.Contains(c.err, `"status":500`) {
				t.Fatalf("call %d: %d %s, want the app's 500", i, c.status, c.err)
			}
		}
		ejectedAt := time.Now()
		byName := map[string]int{}
		for range 20 {
			c := callConsulApp(base + "who")
			if c.err != "" {
				t.Fatalf("after the 500s: %d %s", c.status, c.err)
			}
			byName[c.name]++
		}
		if len(byName) != 1 || (byName["i1"] != 20 && byName["i4"] != 20) {
			t.Fatalf("after 10 500s each, answers %v: want exactly one instance ejected", byName)
		}
		// Back after the base ejection time (5s).
		time.Sleep(time.Until(ejectedAt.Add(5500 * time.Millisecond)))
		byName = map[string]int{}
		for range 20 {
			c := callConsulApp(base + "who")
			if c.err != "" {
				t.Fatalf("after the ejection: %d %s", c.status, c.err)
			}
			byName[c.name]++
		}
		if byName["i1"] == 0 || byName["i4"] == 0 {
			t.Fatalf("after the ejection time, answers %v: want both back", byName)
		}
	})

	all := load.since(time.Time{})
	failed := 0
	for _, c := range all {
		if c.err != "" {
			failed++
		}
	}
	t.Logf("%d calls in all, %d failed (inside detection windows)", len(all), failed)
}

func TestConsulAgentDown(t *testing.T) {
	m := startConsulMesh(t)
	i1, i2, i3 := m.start(t, "i1"), m.start(t, "i2"), m.start(t, "i3")
	m.waitPicker(t, "three instances registered", addrsOf(i1, i2, i3), 10*time.Second)
	load := m.load(2)
	defer load.end()
	// The caller resolves inventory and spreads calls before the outage.
	warm := time.Now()
	time.Sleep(1500 * time.Millisecond)
	got := load.check(t, "before the outage", warm)
	for _, n := range []string{"i1", "i2", "i3"} {
		if got[n] == 0 {
			t.Fatalf("before the outage: %s got no calls (%v)", n, got)
		}
	}

	down := time.Now()
	m.agent.Stop(5 * time.Second)
	time.Sleep(3 * time.Second)
	got = load.check(t, "agent down", down)
	for _, n := range []string{"i1", "i2", "i3"} {
		if got[n] == 0 {
			t.Errorf("agent down: %s got no calls (%v): the cache must keep serving", n, got)
		}
	}
	if n := len(m.observer.Ready(consulTarget)); n != 3 {
		t.Errorf("agent down: picker has %d endpoints, want the 3 it had", n)
	}

	// A -dev agent comes back empty: the sidecars register again and the
	// callers keep their endpoints meanwhile.
	back := time.Now()
	m.agent.Restart(0)
	up := time.Since(back)
	reg := consulWaitRegistered(t, m.agent, 3, 10*time.Second)
	t.Logf("agent back (leader %s after the restart began): all 3 instances registered again and passing %s later",
		up.Round(time.Millisecond), reg.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	got = load.check(t, "agent restarted", back)
	for _, n := range []string{"i1", "i2", "i3"} {
		if got[n] == 0 {
			t.Errorf("agent restarted: %s got no calls (%v)", n, got)
		}
	}

	// Updates resume: a stopped instance leaves, a new one arrives.
	if err := i2.sc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d := m.waitPicker(t, "i2 stopped after the restart", addrsOf(i1, i3), detectionWindow)
	t.Logf("after the restart, graceful stop -> picker: %s", d.Round(time.Millisecond))
	i4 := m.start(t, "i4")
	d = m.waitPicker(t, "i4 started after the restart", addrsOf(i1, i3, i4), 3*time.Second)
	t.Logf("after the restart, new instance -> picker: %s after it was ready", d.Round(time.Millisecond))
	time.Sleep(time.Second)
	got = load.check(t, "after the restart", back)
	if got["i4"] == 0 {
		t.Errorf("after the restart: i4 got no calls (%v)", got)
	}
	if !strings.Contains(m.caller.Log(), "agent unreachable") || !strings.Contains(m.caller.Log(), "reachable again") {
		t.Errorf("the caller did not log the outage and its end")
	}
	n := 0
	for _, line := range strings.Split(m.caller.Log(), "\n") {
		if strings.Contains(line, "agent unreachable") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the caller logged the outage %d times, want once", n)
	}
}

// consulWaitRegistered waits until n instances of consulApp pass their
// checks in the agent.
func consulWaitRegistered(t *testing.T, agent *harness.Consul, n int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < limit {
		resp, err := http.Get("http://" + agent.Addr() + "/v1/health/service/" + consulApp + "?passing")
		if err == nil {
			var entries []json.RawMessage
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if json.Unmarshal(b, &entries) == nil && len(entries) == n {
				return time.Since(start)
			}
			last = fmt.Sprintf("%d entries", len(entries))
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d instances not registered and passing after %s (last: %s)", n, limit, last)
	return 0
}
