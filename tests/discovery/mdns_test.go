package discovery_test

// End-to-end proof of the mdns backend with real processes (sentry, meshd,
// echo apps). Every test multicasts, so each runs in a child process inside
// a network namespace it creates (tests/netnstest): one namespace with
// multicast on lo, or two namespaces ("hosts") joined by a veth pair.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

const (
	mdnsApp = "inventory"
	mdnsTTL = 3 * time.Second // the config file's ttl
)

// mdnsBins builds the binaries in the parent (the child may have no network
// for the module proxy) and passes them to the child in the environment.
func mdnsBins(t *testing.T) (harness.Binaries, []string) {
	if netnstest.InChild() {
		f := strings.Split(os.Getenv("MESHD_MDNS_BINS"), "\n")
		if len(f) != 4 {
			t.Fatal("child without MESHD_MDNS_BINS")
		}
		return harness.Binaries{Meshd: f[0], Sentry: f[1], Echo: f[2], GRPCEcho: f[3]}, nil
	}
	if ok, why := netnstest.CanCreate(); !ok {
		t.Skipf("mdns end-to-end tests multicast and run only inside network namespaces they create: %s", why)
	}
	b := harness.Build(t)
	return b, []string{"MESHD_MDNS_BINS=" + strings.Join([]string{b.Meshd, b.Sentry, b.Echo, b.GRPCEcho}, "\n")}
}

func mdnsConfig(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "mdns.yaml")
	doc := fmt.Sprintf("ttl: %s\nbrowseWait: 300ms\n", mdnsTTL)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mdnsSidecarArgs(cfg string, extra ...string) []string {
	return append([]string{"--resolver", "mdns", "--resolver-config", cfg, "--log-level", "info"}, extra...)
}

var mdnsHealthArgs = []string{"--enable-app-health-check", "--app-health-probe-interval", "200ms", "--app-health-threshold", "1"}

// mdnsResult is one call through the caller sidecar.
type mdnsResult struct {
	at   time.Time
	name string // answering instance; "" on failure
	err  string
}

var mdnsClient = &http.Client{Timeout: 10 * time.Second}

func mdnsCall(url string) mdnsResult {
	r := mdnsResult{at: time.Now()}
	resp, err := mdnsClient.Get(url)
	if err != nil {
		r.err = err.Error()
		return r
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.err = fmt.Sprintf("%d %s", resp.StatusCode, body)
		return r
	}
	var e struct{ Name string }
	if err := json.Unmarshal(body, &e); err != nil || e.Name == "" {
		r.err = fmt.Sprintf("bad answer %q", body)
		return r
	}
	r.name = e.Name
	return r
}

func mdnsInvokeURL(caller *harness.Sidecar, i int) string {
	return fmt.Sprintf("%s/v1.0/invoke/%s/method/who?i=%d", caller.HTTPURL(), mdnsApp, i)
}

// mdnsSpread makes n calls and counts answers per instance ("" = failed).
func mdnsSpread(caller *harness.Sidecar, n int) map[string]int {
	got := map[string]int{}
	for i := range n {
		r := mdnsCall(mdnsInvokeURL(caller, i))
		got[r.name]++
	}
	return got
}

// mdnsWait waits until a batch of calls is answered by exactly want,
// without failures, and returns how long it took.
func mdnsWait(t *testing.T, caller *harness.Sidecar, d time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := mdnsSpread(caller, 10*len(want))
		ok := got[""] == 0 && len(got) == len(want)
		for _, w := range want {
			ok = ok && got[w] > 0
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("after %s the caller reaches %v, want exactly %v", d, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mdnsLoad calls in a loop from two workers until stopped.
type mdnsLoad struct {
	mu   sync.Mutex
	res  []mdnsResult
	stop chan struct{}
	wg   sync.WaitGroup
}

func mdnsStartLoad(caller *harness.Sidecar) *mdnsLoad {
	l := &mdnsLoad{stop: make(chan struct{})}
	for w := range 2 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				r := mdnsCall(mdnsInvokeURL(caller, w*1_000_000+i))
				l.mu.Lock()
				l.res = append(l.res, r)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *mdnsLoad) finish() []mdnsResult {
	close(l.stop)
	l.wg.Wait()
	return l.res
}

// summary counts results from `from` on: per instance, failures (with the
// first error), and the last answer of instance `last`.
func mdnsSummary(rs []mdnsResult, from time.Time, last string) (count map[string]int, firstErr string, lastAt time.Time) {
	count = map[string]int{}
	for _, r := range rs {
		if r.at.Before(from) {
			continue
		}
		count[r.name]++
		if r.err != "" && firstErr == "" {
			firstErr = r.err
		}
		if r.name == last && r.at.After(lastAt) {
			lastAt = r.at
		}
	}
	return count, firstErr, lastAt
}

func mdnsCheckSpread(t *testing.T, got map[string]int, n int, names ...string) {
	t.Helper()
	each := n / len(names)
	for _, name := range names {
		if c := got[name]; c < each*9/10 || c > each*11/10 {
			t.Errorf("%s answered %d of %d calls, want %d±10%% (all: %v)", name, c, n, each, got)
		}
	}
	if len(got) != len(names) {
		t.Errorf("answers from %v, want only %v", got, names)
	}
}

// TestMDNSOneHost: sentry, a caller sidecar and three (then four) instances
// of an app, all with --resolver mdns, in one network namespace with
// multicast on lo.
func TestMDNSOneHost(t *testing.T) {
	bins, env := mdnsBins(t)
	if !netnstest.Run(t, netnstest.Opts{Env: env}) {
		return
	}
	netnstest.Guard(t)
	cfg := mdnsConfig(t)
	s := harness.StartSentry(t, bins, "")
	type inst struct {
		app *harness.App
		sc  *harness.Sidecar
	}
	start := func(name string) inst {
		app := harness.StartEcho(t, bins, name, 0)
		sc := harness.StartSidecar(t, bins, s, harness.SidecarConfig{AppID: mdnsApp, AppPort: app.Port,
			Extra: mdnsSidecarArgs(cfg, mdnsHealthArgs...)})
		return inst{app, sc}
	}
	insts := map[string]inst{}
	for _, n := range []string{"i1", "i2", "i3"} {
		insts[n] = start(n)
	}
	caller := harness.StartSidecar(t, bins, s, harness.SidecarConfig{AppID: "frontend", Extra: mdnsSidecarArgs(cfg)})
	d := mdnsWait(t, caller, 2*time.Second, "i1", "i2", "i3")
	t.Logf("the caller reached all three instances %s after it was ready", d)

	t.Run("Spread", func(t *testing.T) {
		mdnsCheckSpread(t, mdnsSpread(caller, 300), 300, "i1", "i2", "i3")
	})

	t.Run("GracefulStop", func(t *testing.T) {
		l := mdnsStartLoad(caller)
		time.Sleep(300 * time.Millisecond)
		stopAt := time.Now()
		if err := insts["i3"].sc.Stop(10 * time.Second); err != nil {
			t.Fatalf("i3's sidecar did not stop cleanly: %v", err)
		}
		stopped := time.Now()
		time.Sleep(500 * time.Millisecond)
		rs := l.finish()
		count, firstErr, lastI3 := mdnsSummary(rs, time.Time{}, "i3")
		if count[""] != 0 {
			t.Errorf("%d of %d calls failed across the graceful stop (first: %s)", count[""], len(rs), firstErr)
		}
		if lastI3.After(stopped) {
			t.Errorf("i3 answered at %s, after its sidecar had exited", lastI3.Sub(stopAt))
		}
		after, _, _ := mdnsSummary(rs, stopped, "")
		if after["i3"] != 0 || after["i1"] == 0 || after["i2"] == 0 {
			t.Errorf("after the stop: %v", after)
		}
		if !strings.Contains(caller.Log(), "mdns: goodbye") && !strings.Contains(insts["i3"].sc.Log(), "mdns: goodbye sent") {
			t.Errorf("no goodbye in i3's log")
		}
		t.Logf("graceful stop: %d calls, none failed; i3's sidecar took %s to exit; counts %v", len(rs), stopped.Sub(stopAt), count)
	})

	t.Run("Kill9", func(t *testing.T) {
		addr := insts["i2"].sc.Ports.InternalAddr()
		l := mdnsStartLoad(caller)
		time.Sleep(300 * time.Millisecond)
		killAt := time.Now()
		insts["i2"].sc.Kill()
		// The record expires within its TTL (plus the 100ms maintenance tick).
		deadline := killAt.Add(mdnsTTL + 500*time.Millisecond)
		for !strings.Contains(caller.Log(), "mdns: instance expired") {
			if time.Now().After(deadline) {
				t.Fatalf("the caller did not expire i2 (%s) within its TTL %s", addr, mdnsTTL)
			}
			time.Sleep(20 * time.Millisecond)
		}
		expired := time.Since(killAt)
		time.Sleep(300 * time.Millisecond)
		window := time.Now()
		time.Sleep(time.Second)
		rs := l.finish()
		all, firstAll, _ := mdnsSummary(rs, time.Time{}, "")
		after, firstErr, _ := mdnsSummary(rs, window, "")
		if after[""] != 0 || after["i2"] != 0 || after["i1"] == 0 {
			t.Errorf("after the detection window: %v (first error %s)", after, firstErr)
		}
		if !strings.Contains(caller.Log(), addr) {
			t.Errorf("caller's log does not name i2's address %s", addr)
		}
		t.Logf("kill -9: caller expired i2 %s after the kill (TTL %s); whole run %v (first error: %q)", expired, mdnsTTL, all, firstAll)
	})

	t.Run("FourthAppears", func(t *testing.T) {
		insts["i4"] = start("i4")
		d := mdnsWait(t, caller, 2*time.Second, "i1", "i4")
		t.Logf("i4 reached %s after its sidecar was ready", d)
		mdnsCheckSpread(t, mdnsSpread(caller, 200), 200, "i1", "i4")
	})

	t.Run("AppUnhealthy", func(t *testing.T) {
		app := insts["i1"].app
		if r := mdnsCall("http://" + app.Addr() + "/admin/fail"); r.err != "" {
			t.Fatal(r.err)
		}
		failAt := time.Now()
		marker := fmt.Sprintf(`addr=%s healthy=false`, insts["i1"].sc.Ports.InternalAddr())
		for !strings.Contains(caller.Log(), marker) {
			if time.Since(failAt) > 2*time.Second {
				t.Fatalf("the caller did not hear that i1 is unhealthy (%q) within 2s", marker)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("the caller heard i1 turn unhealthy %s after /admin/fail (probe 200ms)", time.Since(failAt))
		got := mdnsSpread(caller, 200)
		if got["i1"] != 0 || got[""] != 0 || got["i4"] != 200 {
			t.Errorf("with i1 unhealthy: %v; want all 200 on i4", got)
		}
		if r := mdnsCall("http://" + app.Addr() + "/admin/recover"); r.err != "" {
			t.Fatal(r.err)
		}
		d := mdnsWait(t, caller, 2*time.Second, "i1", "i4")
		t.Logf("i1 back in the caller's picker %s after /admin/recover", d)
	})
}

// TestMDNSTwoHosts: two network namespaces joined by a veth pair. Host A
// runs sentry and the caller sidecar; host B runs the app's instances and
// their sidecars. Announcements and calls cross the veth.
func TestMDNSTwoHosts(t *testing.T) {
	bins, env := mdnsBins(t)
	if !netnstest.InChild() {
		h := netnstest.NewHosts(t)
		netnstest.Run(t, netnstest.Opts{Netns: h.A, Env: append(env, h.Env())})
		return
	}
	h := netnstest.HostsFromEnv()
	if h == nil {
		t.Fatal("child without MESHD_NETNS_HOSTS")
	}
	if !netnstest.Run(t, netnstest.Opts{}) {
		t.Fatal("unreachable")
	}
	cfg := mdnsConfig(t)
	sentryAddr := h.AddrA + ":" + strconv.Itoa(harness.FreePort(t))
	s := harness.StartSentry(t, bins, "", "--listen", sentryAddr)
	s.Addr = sentryAddr // sidecars on host B reach sentry across the veth
	binsB := harness.Binaries{Meshd: netnstest.Exec(t, h.B, bins.Meshd), Sentry: bins.Sentry}
	echoB := netnstest.Exec(t, h.B, bins.Echo)
	startB := func(name string) *harness.Sidecar {
		port := harness.FreePort(t)
		harness.Start(t, "echo-"+name+"@B", echoB, "--port", strconv.Itoa(port), "--name", name)
		sc := harness.StartSidecar(t, binsB, s, harness.SidecarConfig{AppID: mdnsApp, AppPort: port, NoWait: true,
			Extra: mdnsSidecarArgs(cfg, "--listen-address", h.AddrB)})
		harness.WaitServing(t, h.AddrB+":"+strconv.Itoa(sc.Ports.Internal), 30*time.Second)
		return sc
	}
	startB("b1")
	b2 := startB("b2")
	caller := harness.StartSidecar(t, bins, s, harness.SidecarConfig{AppID: "frontend", Extra: mdnsSidecarArgs(cfg)})
	d := mdnsWait(t, caller, 5*time.Second, "b1", "b2")
	t.Logf("host A's caller reached both instances on host B %s after it was ready", d)
	mdnsCheckSpread(t, mdnsSpread(caller, 200), 200, "b1", "b2")
	if !strings.Contains(caller.Log(), h.AddrB) {
		t.Errorf("caller log does not mention host B's address %s", h.AddrB)
	}

	// Graceful stop on B: no failed call, traffic moves to b1.
	l := mdnsStartLoad(caller)
	time.Sleep(200 * time.Millisecond)
	if err := b2.Stop(10 * time.Second); err != nil {
		t.Fatalf("b2's sidecar: %v", err)
	}
	stopped := time.Now()
	time.Sleep(300 * time.Millisecond)
	rs := l.finish()
	all, firstErr, lastB2 := mdnsSummary(rs, time.Time{}, "b2")
	if all[""] != 0 || lastB2.After(stopped) {
		t.Errorf("graceful stop across hosts: %v (first error %q)", all, firstErr)
	}

	// A new instance on B appears within 2s of being ready.
	b3 := startB("b3")
	d = mdnsWait(t, caller, 2*time.Second, "b1", "b3")
	t.Logf("b3 on host B reached %s after its internal port served TLS", d)

	// kill -9 on B: dropped within the TTL.
	b3.Kill()
	killAt := time.Now()
	for !strings.Contains(caller.Log(), "mdns: instance expired") {
		if time.Since(killAt) > mdnsTTL+500*time.Millisecond {
			t.Fatalf("b3 not expired within the TTL %s", mdnsTTL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mdnsWait(t, caller, time.Second, "b1")
	if got := mdnsSpread(caller, 50); got["b1"] != 50 {
		t.Errorf("after b3 expired: %v, want all on b1", got)
	}
}
