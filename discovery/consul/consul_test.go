package consul

// Unit tests of the watch logic against a small fake of the agent's HTTP
// API (one package, fast). The proof with a real agent and real sidecars is
// tests/discovery/consul_test.go.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

type fakeInstance struct {
	id, addr, ns, port string
}

// fakeAgent serves /v1/status/leader and blocking /v1/health/service/{app}.
type fakeAgent struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
	svcs    map[string][]fakeInstance
	down    bool
	queries int
	open    map[string]int // blocking queries (with an index) in flight per app
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{index: 10, changed: make(chan struct{}), svcs: map[string][]fakeInstance{}, open: map[string]int{}}
}

func (f *fakeAgent) set(app string, is ...fakeInstance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svcs[app] = is
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeAgent) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	close(f.changed) // wake blocked queries
	f.changed = make(chan struct{})
}

func (f *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.queries++
	down := f.down
	f.mu.Unlock()
	if down {
		http.Error(w, "agent down", http.StatusInternalServerError)
		return
	}
	switch {
	case r.URL.Path == "/v1/status/leader":
		fmt.Fprint(w, `"127.0.0.1:8300"`)
	case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
		app := strings.TrimPrefix(r.URL.Path, "/v1/health/service/")
		if _, ok := r.URL.Query()["passing"]; !ok {
			http.Error(w, "want ?passing", http.StatusBadRequest)
			return
		}
		idx, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		f.mu.Lock()
		if idx != 0 {
			f.open[app]++
			defer func() {
				f.mu.Lock()
				f.open[app]--
				f.mu.Unlock()
			}()
		}
		if idx != 0 && idx >= f.index {
			ch := f.changed
			f.mu.Unlock()
			select {
			case <-ch:
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
			f.mu.Lock()
		}
		if f.down {
			f.mu.Unlock()
			http.Error(w, "agent down", http.StatusInternalServerError)
			return
		}
		var out []map[string]any
		for _, in := range f.svcs[app] {
			meta := map[string]string{DefaultDaprPortMetaKey: in.port}
			if in.ns != "" {
				meta[NamespaceMetaKey] = in.ns
			}
			out = append(out, map[string]any{
				"Node":    map[string]any{"Node": "n1", "Address": "10.9.9.9"},
				"Service": map[string]any{"ID": in.id, "Service": app, "Address": in.addr, "Meta": meta},
			})
		}
		w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(out)
	default:
		http.NotFound(w, r)
	}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitReady(t *testing.T, c *discovery.Cache, tg discovery.Target, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	var got []string
	for time.Now().Before(deadline) {
		got = got[:0]
		for _, ep := range c.Ready(tg) {
			got = append(got, ep.Address)
		}
		if strings.Join(got, ",") == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("Ready(%s) = %v, want %s", tg, got, want)
}

func TestWatchAgainstFakeAgent(t *testing.T) {
	agent := newFakeAgent()
	srv := httptest.NewServer(agent)
	defer srv.Close()
	cfgPath := filepath.Join(t.TempDir(), "consul.yaml")
	if err := os.WriteFile(cfgPath, []byte("client:\n  address: "+strings.TrimPrefix(srv.URL, "http://")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	cache := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	defer cache.Close()
	res, err := cache.Build(context.Background(), Name, discovery.BuildOptions{ConfigFile: cfgPath, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	// The grace of the registered builder is long; use a short one.
	res.(*resolver).grace = 400 * time.Millisecond
	res.(*resolver).flap = 200 * time.Millisecond

	inv := discovery.Target{AppID: "inventory", Namespace: "default"}
	agent.set("inventory",
		fakeInstance{id: "a", addr: "127.0.0.1", port: "5001"},                // no namespace meta: default
		fakeInstance{id: "b", addr: "127.0.0.2", ns: "default", port: "5002"}, // explicit default
		fakeInstance{id: "c", addr: "127.0.0.3", ns: "prod", port: "5003"},    // other namespace
		fakeInstance{id: "d", addr: "127.0.0.4", ns: "default", port: "x"},    // bad port: skipped
		fakeInstance{id: "e", addr: "", ns: "default", port: "5005"},          // node address
	)

	// First Pick: no round trip, ErrUnknownTarget; WaitTarget then resolves.
	start := time.Now()
	if _, err := cache.Pick(inv); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("first Pick = %v", err)
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Fatalf("first Pick took %v", d)
	}
	if err := cache.WaitTarget(context.Background(), inv); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cache, inv, "10.9.9.9:5005,127.0.0.1:5001,127.0.0.2:5002", time.Second)
	prod := discovery.Target{AppID: "inventory", Namespace: "prod"}
	if err := cache.WaitTarget(context.Background(), prod); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cache, prod, "127.0.0.3:5003", time.Second)

	// Picks never query the agent (once the watches sit in their blocking
	// queries).
	time.Sleep(100 * time.Millisecond)
	agent.mu.Lock()
	before := agent.queries
	agent.mu.Unlock()
	for range 1000 {
		if _, err := cache.Pick(inv); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	agent.mu.Lock()
	after := agent.queries
	agent.mu.Unlock()
	if after != before {
		t.Fatalf("1000 Picks made %d agent queries", after-before)
	}

	// A change arrives through the blocking query.
	changed := time.Now()
	agent.set("inventory", fakeInstance{id: "a", addr: "127.0.0.1", port: "5001"})
	waitReady(t, cache, inv, "127.0.0.1:5001", time.Second)
	t.Logf("change -> picker in %s", time.Since(changed).Round(time.Microsecond))

	// An agent being stopped reports every instance critical, then stops
	// answering: the picker keeps its endpoints.
	agent.set("inventory")
	time.Sleep(EmptyConfirm / 4)
	agent.setDown(true)
	time.Sleep(EmptyConfirm)
	waitReady(t, cache, inv, "127.0.0.1:5001", 10*time.Millisecond)
	agent.setDown(false)
	agent.set("inventory", fakeInstance{id: "a", addr: "127.0.0.1", port: "5001"})
	// The watches may sit in a backoff of up to 800ms by now: wait until one
	// has seen the agent again, or the next outage would be part of this one.
	waitLog(t, logs, "reachable again", 3*time.Second)
	logs.mu.Lock()
	logs.b.Reset() // the outage above counted; the next one is counted alone
	logs.mu.Unlock()
	time.Sleep(250 * time.Millisecond) // past the flap window

	// Agent down: the cache keeps serving, the outage is logged once.
	agent.setDown(true)
	time.Sleep(800 * time.Millisecond) // several retries
	waitReady(t, cache, inv, "127.0.0.1:5001", 10*time.Millisecond)
	if n := strings.Count(logs.String(), "msg=\"consul: agent unreachable"); n != 1 {
		t.Fatalf("outage logged %d times, want once:\n%s", n, logs.String())
	}

	// Agent back without the instances: the picker is held for the grace...
	agent.set("inventory")
	agent.setDown(false)
	waitLog(t, logs, "reachable again", 3*time.Second)
	waitReady(t, cache, inv, "127.0.0.1:5001", 10*time.Millisecond)
	// ... and a registration arriving meanwhile is applied at once.
	agent.set("inventory", fakeInstance{id: "z", addr: "127.0.0.9", port: "5009"})
	// Alone this takes milliseconds; 3s leaves room for a CI machine running
	// the whole suite with -race on 2 cores (a 1s bound flaked there once).
	waitReady(t, cache, inv, "127.0.0.9:5009", 3*time.Second)
	// After the grace an empty answer empties the picker.
	time.Sleep(500 * time.Millisecond)
	emptied := time.Now()
	agent.set("inventory")
	time.Sleep(EmptyConfirm / 2)
	waitReady(t, cache, inv, "127.0.0.9:5009", 10*time.Millisecond) // not yet confirmed
	waitReady(t, cache, inv, "", 2*EmptyConfirm)
	if d := time.Since(emptied); d < EmptyConfirm {
		t.Fatalf("picker emptied after %v, before the %v confirmation", d, EmptyConfirm)
	}
	if _, err := cache.Pick(inv); !errors.Is(err, discovery.ErrNoHealthyEndpoint) {
		t.Fatalf("Pick with no passing instance = %v", err)
	}
}

func TestBuildFailsWhenAgentDoesNotAnswer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // nothing listens there now
	cfgPath := filepath.Join(t.TempDir(), "consul.yaml")
	if err := os.WriteFile(cfgPath, []byte("client:\n  address: "+addr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := discovery.Build(context.Background(), Name, discovery.BuildOptions{ConfigFile: cfgPath,
		Logger: slog.New(slog.DiscardHandler)}, discovery.NewCache(discovery.Options{}))
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("Build against a dead agent = %v", err)
	}
	// A bad file fails too, naming the file.
	if err := os.WriteFile(cfgPath, []byte("bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = discovery.Build(context.Background(), Name, discovery.BuildOptions{ConfigFile: cfgPath}, discovery.NewCache(discovery.Options{}))
	if err == nil || !strings.Contains(err.Error(), cfgPath) || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("Build with a bad file = %v", err)
	}
}

// waitLog waits until the log holds substr.
func waitLog(t *testing.T, logs *logBuffer, substr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(logs.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged within %v:\n%s", substr, within, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openQueries is the number of blocking queries in flight per app (a
// first query or a poll, without an index, answers at once: not counted).
func (f *fakeAgent) openQueries() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for app, n := range f.open {
		if n != 0 {
			out[app] = n
		}
	}
	return out
}

func startFake(t *testing.T, cfg string) (*fakeAgent, *discovery.Cache, *resolver, *logBuffer) {
	t.Helper()
	agent := newFakeAgent()
	srv := httptest.NewServer(agent)
	t.Cleanup(srv.Close)
	cfgPath := filepath.Join(t.TempDir(), "consul.yaml")
	cfg = "client:\n  address: " + strings.TrimPrefix(srv.URL, "http://") + "\n" + cfg
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	cache := discovery.NewCache(discovery.Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { cache.Close() })
	res, err := cache.Build(context.Background(), Name, discovery.BuildOptions{ConfigFile: cfgPath,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return agent, cache, res.(*resolver), logs
}

// waitFor polls cond every 10ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdleWatchStops: a target without calls loses its watch (its blocking
// query ends and it leaves the Cache) after watchIdleTimeout; a target
// called meanwhile keeps its own; the next call to the idle one resolves it
// again. While the agent is unreachable nothing is dropped.
func TestIdleWatchStops(t *testing.T) {
	agent, cache, _, logs := startFake(t, "watchIdleTimeout: 1s\n")
	busy := discovery.Target{AppID: "busy", Namespace: "default"}
	quiet := discovery.Target{AppID: "quiet", Namespace: "default"}
	agent.set("busy", fakeInstance{id: "b", addr: "127.0.0.1", port: "5001"})
	agent.set("quiet", fakeInstance{id: "q", addr: "127.0.0.2", port: "5002"})
	for _, tg := range []discovery.Target{busy, quiet} {
		if err := cache.WaitTarget(context.Background(), tg); err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Pick(tg); err != nil {
			t.Fatal(err)
		}
	}
	stopBusy := make(chan struct{})
	done := make(chan struct{})
	go func() { // busy is called every 100ms
		defer close(done)
		for {
			select {
			case <-stopBusy:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := cache.Pick(busy); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	start := time.Now()
	waitFor(t, 3*time.Second, "quiet leaves the cache", func() bool { return cache.Endpoints(quiet) == nil })
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("quiet dropped after %v, before the 1s idle timeout", d)
	}
	waitFor(t, time.Second, "quiet's blocking query ends", func() bool { return agent.openQueries()["quiet"] == 0 })
	if got := agent.openQueries(); got["busy"] != 1 {
		t.Fatalf("open queries %v, want busy's only", got)
	}
	if cache.Endpoints(busy) == nil {
		t.Fatal("busy target dropped while called")
	}
	if !strings.Contains(logs.String(), "target=quiet.default") {
		t.Fatalf("stop not logged:\n%s", logs.String())
	}
	// The next call resolves it again.
	if _, err := cache.Pick(quiet); !errors.Is(err, discovery.ErrUnknownTarget) {
		t.Fatalf("Pick after the stop = %v", err)
	}
	if err := cache.WaitTarget(context.Background(), quiet); err != nil {
		t.Fatal(err)
	}
	waitReady(t, cache, quiet, "127.0.0.2:5002", time.Second)
	if _, err := cache.Pick(quiet); err != nil {
		t.Fatal(err)
	}

	// Agent unreachable: the cached endpoints stay, called or not.
	agent.setDown(true)
	close(stopBusy)
	<-done
	time.Sleep(2 * time.Second)
	for _, tg := range []discovery.Target{busy, quiet} {
		if cache.Endpoints(tg) == nil {
			t.Fatalf("%s dropped while the agent was unreachable", tg)
		}
	}
}

// TestMaxWatchesPolls: past maxWatches the targets called beyond it are
// polled instead of watched. Three targets called at once from three
// goroutines with maxWatches 2: no call fails, no more than two blocking
// queries are ever open, and a change of the polled target reaches the
// cache within the poll interval.
func TestMaxWatchesPolls(t *testing.T) {
	agent, cache, res, logs := startFake(t, "maxWatches: 2\n")
	res.poll = 200 * time.Millisecond
	var tgs []discovery.Target
	for i := range 3 {
		app := fmt.Sprintf("app%d", i)
		agent.set(app, fakeInstance{id: app, addr: "127.0.0.1", port: strconv.Itoa(6000 + i)})
		tgs = append(tgs, discovery.Target{AppID: app, Namespace: "default"})
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
		calls    int
		stop     = make(chan struct{})
	)
	for _, tg := range tgs {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				// A call, as the proxy makes it: a Pick, and after a
				// miss the first-call wait and another Pick.
				_, err := cache.Pick(tg)
				if errors.Is(err, discovery.ErrUnknownTarget) {
					if err = cache.WaitTarget(context.Background(), tg); err == nil {
						_, err = cache.Pick(tg)
					}
				}
				mu.Lock()
				calls++
				if err != nil {
					failures = append(failures, tg.String()+": "+err.Error())
				}
				mu.Unlock()
			}
		})
	}
	maxOpen := 0
	for range 100 { // 1s
		n := 0
		for _, c := range agent.openQueries() {
			n += c
		}
		maxOpen = max(maxOpen, n)
		time.Sleep(10 * time.Millisecond)
	}
	// The target being polled follows a change within the interval.
	var polled discovery.Target
	open := agent.openQueries()
	for _, tg := range tgs {
		if open[tg.AppID] == 0 {
			polled = tg
		}
	}
	if polled.AppID == "" {
		t.Fatalf("no target is polled: open queries %v", open)
	}
	agent.set(polled.AppID, fakeInstance{id: "new", addr: "127.0.0.9", port: "7000"})
	waitReady(t, cache, polled, "127.0.0.9:7000", 2*res.poll+time.Second)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d calls failed: %v", len(failures), calls, failures[:min(len(failures), 5)])
	}
	if maxOpen > 2 {
		t.Fatalf("%d blocking queries open at once, want at most maxWatches (2)", maxOpen)
	}
	if n := strings.Count(logs.String(), "more targets called than maxWatches"); n != 1 {
		t.Fatalf("polling logged %d times, want once:\n%s", n, logs.String())
	}
	t.Logf("%d calls, at most %d blocking queries open; %s polled", calls, maxOpen, polled)
}
