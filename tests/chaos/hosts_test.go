package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

// full reports whether the long suite runs (make chaos: MESHD_CHAOS=full):
// the fault durations, 500 calls/s, and the faults that take
// minutes. The short form (make test) runs the quick faults, shorter.
func full() bool { return os.Getenv("MESHD_CHAOS") == "full" }

// Fixed ports: every host is its own namespace.
const (
	portApp      = 8080
	portHTTP     = 3500
	portGRPC     = 50001
	portInternal = 50002
	portMetrics  = 9090
	portSentry   = 50003
	portHealth   = 8081
	portConsul   = 8500
	// workloadTTL makes sidecars renew about every 10 s (half-life): the
	// issue's "workload rotation every 10 s", under every fault.
	workloadTTL = 20 * time.Second
)

type hostInst struct {
	name    string
	host    *netnstest.Host
	app     *harness.Process
	sidecar *harness.Process
	record  string
	token   string
}

// hostMesh is the mesh across hosts: sentry on its own host, three app
// hosts (an echo app and its sidecar each), and a load host whose sidecar
// ("front", no app) the load calls.
type hostMesh struct {
	t        *testing.T
	b        harness.Binaries
	nt       *netnstest.Net
	dir      string
	sentry   *harness.Process
	sentryNS *netnstest.Host
	static   string
	bundle   string
	inst     []*hostInst
	caller   *harness.Process
	load     *netnstest.Host
	client   *http.Client
	consul   *harness.Process // --resolver consul (TestHostsConsulDown), else nil
	resolver []string         // the sidecars' resolver flags
	note     string           // what the last fault's inject/heal had to say
}

// meshOpts tune startHostMesh.
type meshOpts struct {
	consul bool // resolve through a Consul agent on the sentry host
	tmpfs  bool // sentry's data dir on a small tmpfs (full disk faults)
}

func startHostMesh(t *testing.T, o meshOpts) *hostMesh {
	nt := netnstest.NewNet(t, "sentry", "app1", "app2", "app3", "load")
	m := &hostMesh{t: t, b: binaries(t), nt: nt, dir: t.TempDir(), sentryNS: nt.Hosts["sentry"], load: nt.Hosts["load"]}
	m.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: m.load.DialContext}}
	m.bundle = filepath.Join(m.dir, "sentry", "bundle.pem")
	if o.tmpfs {
		mountTmpfs(t, filepath.Join(m.dir, "sentry"), "4m")
	}
	m.startSentry()
	var addrs []string
	for i := range 3 {
		h := nt.Hosts["app"+strconv.Itoa(i+1)]
		in := &hostInst{name: "echo-" + strconv.Itoa(i+1), host: h, record: filepath.Join(m.dir, "record-"+strconv.Itoa(i+1))}
		in.token = m.tokenFile("echo")
		m.inst = append(m.inst, in)
		addrs = append(addrs, h.Addr+":"+strconv.Itoa(portInternal))
	}
	m.static = filepath.Join(m.dir, "static.yaml")
	harness.WriteStatic(t, m.static, harness.StaticApp{AppID: "echo", Addresses: addrs})
	m.resolver = []string{"--resolver", "static", "--resolver-config", m.static}
	if o.consul {
		m.startConsul()
		cfg := filepath.Join(m.dir, "consul.yaml")
		// One agent for the mesh, on the sentry host: its checks reach
		// each sidecar's internal port across the bridge.
		yaml := "client:\n  address: " + m.sentryNS.Addr + ":" + strconv.Itoa(portConsul) + "\n" +
			"selfRegister: true\nchecks:\n  - name: sidecar\n    tcp: \"${HOST_ADDRESS}:${DAPR_INTERNAL_PORT}\"\n" +
			"    interval: 1s\n    timeout: 1s\n    deregisterCriticalServiceAfter: 1m\n"
		must(t, os.WriteFile(cfg, []byte(yaml), 0o644))
		m.resolver = []string{"--resolver", "consul", "--resolver-config", cfg}
	}
	for _, in := range m.inst {
		m.startApp(in)
		m.startSidecar(in)
	}
	m.caller = harness.Start(t, "meshd-front", m.load.Exec(t, m.b.Meshd), m.sidecarArgs("front", m.load, m.tokenFile("front"), false)...)
	m.waitReady(m.load, "front")
	return m
}

func (m *hostMesh) startSentry() {
	m.sentry = harness.Start(m.t, "sentry", m.sentryNS.Exec(m.t, m.b.Sentry),
		"--data-dir", filepath.Join(m.dir, "sentry"),
		"--listen", m.sentryNS.Addr+":"+strconv.Itoa(portSentry),
		"--health-listen", m.sentryNS.Addr+":"+strconv.Itoa(portHealth),
		"--workload-ttl", workloadTTL.String(),
		"--rotation-propagation-delay", "3s", "--rotation-retire-margin", "10s")
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: m.sentryNS.DialContext}}
	waitURL(m.t, c, "http://"+m.sentryNS.Addr+":"+strconv.Itoa(portHealth)+"/healthz", http.StatusOK, 30*time.Second)
}

// startConsul starts a Consul dev agent (v1.16.3, tests/consul/install.sh)
// on the sentry host and waits for its leader.
func (m *hostMesh) startConsul() {
	bin := harness.ConsulBinary(m.t)
	a := m.sentryNS.Addr
	m.consul = harness.Start(m.t, "consul", m.sentryNS.Exec(m.t, bin), "agent", "-dev", "-bind", a, "-client", a,
		"-http-port", strconv.Itoa(portConsul), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn", "-node", "meshd-chaos")
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: m.sentryNS.DialContext}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get("http://" + a + ":" + strconv.Itoa(portConsul) + "/v1/status/leader")
		if err == nil {
			var leader string
			_ = json.NewDecoder(resp.Body).Decode(&leader)
			resp.Body.Close()
			if leader != "" {
				return
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("consul has no leader after 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mountTmpfs mounts a tmpfs of size on dir until the test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	must(t, os.MkdirAll(dir, 0o700))
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
}

func (m *hostMesh) tokenFile(app string) string {
	out, err := exec.Command(m.b.Sentry, "token", "create", "--data-dir", filepath.Join(m.dir, "sentry"),
		"--app-id", app, "--namespace", "default", "--ttl", "24h").Output()
	if err != nil {
		m.t.Fatalf("sentry token create: %v", err)
	}
	p := filepath.Join(m.dir, app+"-"+strconv.Itoa(int(time.Now().UnixNano()))+".token")
	if err := os.WriteFile(p, out, 0o600); err != nil {
		m.t.Fatal(err)
	}
	return p
}

func (m *hostMesh) sidecarArgs(app string, h *netnstest.Host, token string, withApp bool) []string {
	a := []string{"--app-id", app, "--namespace", "default",
		"--http-port", strconv.Itoa(portHTTP), "--grpc-port", strconv.Itoa(portGRPC),
		"--internal-port", strconv.Itoa(portInternal), "--metrics-port", strconv.Itoa(portMetrics),
		"--listen-address", h.Addr,
		"--sentry-address", m.sentryNS.Addr + ":" + strconv.Itoa(portSentry), "--trust-anchors-file", m.bundle,
		"--token-file", token}
	a = append(a, m.resolver...)
	if withApp {
		a = append(a, "--app-port", strconv.Itoa(portApp))
	}
	return a
}

func (m *hostMesh) startApp(in *hostInst) {
	in.app = harness.Start(m.t, in.name, in.host.Exec(m.t, m.b.Echo), "--port", strconv.Itoa(portApp), "--name", in.name, "--record", in.record)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: in.host.DialContext}}
	waitURL(m.t, c, "http://127.0.0.1:"+strconv.Itoa(portApp)+"/healthz", http.StatusOK, 30*time.Second)
}

func (m *hostMesh) startSidecar(in *hostInst) {
	in.sidecar = harness.Start(m.t, "meshd-"+in.name, in.host.Exec(m.t, m.b.Meshd), m.sidecarArgs("echo", in.host, in.token, true)...)
	m.waitReady(in.host, "echo")
	m.t.Cleanup(func() { _ = in.sidecar.Signal(syscall.SIGCONT) })
}

func (m *hostMesh) waitReady(h *netnstest.Host, app string) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: h.DialContext}}
	waitURL(m.t, c, "http://127.0.0.1:"+strconv.Itoa(portHTTP)+"/v1.0/healthz", http.StatusNoContent, 30*time.Second)
}

func waitURL(t *testing.T, c *http.Client, url string, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d after %s (last: %v)", url, want, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAllServe waits until every instance answered a call through the
// caller (instances ejected by the previous fault are back).
func (m *hostMesh) waitAllServe(d time.Duration) {
	m.t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(d)
	for len(seen) < len(m.inst) {
		resp, err := m.client.Get("http://127.0.0.1:" + strconv.Itoa(portHTTP) + "/v1.0/invoke/echo/method/ready")
		if err == nil {
			var v struct {
				Name string `json:"name"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				seen[v.Name] = true
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("not every instance serves again after %s: %v", d, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *hostMesh) records() []string {
	var r []string
	for _, in := range m.inst {
		r = append(r, in.record)
	}
	return r
}

// fault is one fault of the suite: inject, hold for d, heal.
type fault struct {
	name     string
	d        time.Duration
	victim   int  // index of the instance hit (-1: none)
	ejects   bool // the caller is expected to eject the victim
	fullOnly bool
	// unavailable, if set, says why the fault cannot be made here ("":
	// it can); the fault's row then carries the reason instead of figures.
	unavailable func(m *hostMesh) string
	inject      func(m *hostMesh, in *hostInst)
	heal        func(m *hostMesh, in *hostInst)
}

func hold(short, long time.Duration) time.Duration {
	if full() {
		return long
	}
	return short
}

func faults() []fault {
	return []fault{
		{name: "kill -9 sidecar", d: hold(3*time.Second, 10*time.Second), victim: 0, ejects: true,
			inject: func(m *hostMesh, in *hostInst) { in.sidecar.Kill() },
			heal:   func(m *hostMesh, in *hostInst) { m.startSidecar(in) }},
		{name: "kill -9 app", d: hold(3*time.Second, 10*time.Second), victim: 1, ejects: true,
			inject: func(m *hostMesh, in *hostInst) { in.app.Kill() },
			heal:   func(m *hostMesh, in *hostInst) { m.startApp(in) }},
		{name: "SIGSTOP sidecar", d: hold(5*time.Second, 10*time.Second), victim: 2, ejects: true,
			inject: func(m *hostMesh, in *hostInst) { must(m.t, in.sidecar.Signal(syscall.SIGSTOP)) },
			heal:   func(m *hostMesh, in *hostInst) { must(m.t, in.sidecar.Signal(syscall.SIGCONT)) }},
		{name: "partition 10s", d: hold(5*time.Second, 10*time.Second), victim: 0, ejects: true,
			inject: func(m *hostMesh, in *hostInst) { must(m.t, in.host.Partition(true)) },
			heal:   func(m *hostMesh, in *hostInst) { must(m.t, in.host.Partition(false)) }},
		{name: "partition 60s", d: 60 * time.Second, victim: 1, ejects: true, fullOnly: true,
			inject: func(m *hostMesh, in *hostInst) { must(m.t, in.host.Partition(true)) },
			heal:   func(m *hostMesh, in *hostInst) { must(m.t, in.host.Partition(false)) }},
		{name: "netem 100ms 5% loss", d: hold(5*time.Second, 60*time.Second), victim: 2,
			unavailable: func(m *hostMesh) string {
				if _, why := m.nt.NetemAvailable(); why != "" {
					return why + "; emulated in the next rows (make chaos): loss with nftables, a slow link with tbf (no qdisc here delays every packet)"
				}
				return ""
			},
			inject: func(m *hostMesh, in *hostInst) { must(m.t, in.host.Netem("delay", "100ms", "loss", "5%")) },
			heal:   func(m *hostMesh, in *hostInst) { must(m.t, in.host.Netem()) }},
		// No netem here: what the kernel has instead (tests/netnstest/shape.go).
		{name: "lossy link 5% (nftables)", d: hold(5*time.Second, 60*time.Second), victim: 2, fullOnly: true,
			unavailable: func(m *hostMesh) string { _, why := m.nt.LossAvailable(); return why },
			inject:      func(m *hostMesh, in *hostInst) { must(m.t, in.host.Loss(5)) },
			heal:        func(m *hostMesh, in *hostInst) { must(m.t, in.host.Loss(0)) }},
		{name: "slow link 1 Mbit/s (tbf)", d: hold(5*time.Second, 60*time.Second), victim: 0, fullOnly: true,
			inject: func(m *hostMesh, in *hostInst) { must(m.t, in.host.Rate("1mbit", "100ms")) },
			heal:   func(m *hostMesh, in *hostInst) { must(m.t, in.host.Rate("", "")) }},
		{name: "slow and lossy link (tbf 1 Mbit/s + 5% loss)", d: hold(5*time.Second, 60*time.Second), victim: 1, fullOnly: true,
			unavailable: func(m *hostMesh) string { _, why := m.nt.LossAvailable(); return why },
			inject: func(m *hostMesh, in *hostInst) {
				must(m.t, in.host.Rate("1mbit", "100ms"))
				must(m.t, in.host.Loss(5))
			},
			heal: func(m *hostMesh, in *hostInst) {
				must(m.t, in.host.Loss(0))
				must(m.t, in.host.Rate("", ""))
			}},
		{name: "clock stepped 5 min on one host", victim: -1,
			unavailable: func(*hostMesh) string {
				return "a network namespace shares the machine's CLOCK_REALTIME (Linux time namespaces offset only the monotonic and boot clocks), Go reads it through the vDSO (no libfaketime-style shim reaches it), go-spiffe's TLS verification takes no clock, and stepping the machine's clock would hit every host and the other engineers' tests; the certificate validity edges are measured by TestClockSkewEdges (sentry/ca)"
			}},
		{name: "sentry down 0.9×TTL", d: workloadTTL * 9 / 10, victim: -1, fullOnly: true,
			inject: func(m *hostMesh, _ *hostInst) { m.sentry.Kill() },
			heal:   func(m *hostMesh, _ *hostInst) { m.startSentry() }},
		{name: "root rotation under load", d: 20 * time.Second, victim: -1, fullOnly: true,
			inject: func(m *hostMesh, _ *hostInst) {
				out, err := exec.Command(m.b.Sentry, "rotate-root", "--data-dir", filepath.Join(m.dir, "sentry")).CombinedOutput()
				if err != nil {
					m.t.Fatalf("sentry rotate-root: %v: %s", err, out)
				}
			},
			heal: func(m *hostMesh, _ *hostInst) {}},
		{name: "full disk during root rotation", d: 10 * time.Second, victim: -1, fullOnly: true,
			unavailable: func(m *hostMesh) string {
				if !m.tmpfs() {
					return "the sentry data dir is not on a tmpfs"
				}
				return ""
			},
			inject: func(m *hostMesh, _ *hostInst) { m.note = m.fullDiskRotation() },
			heal:   func(m *hostMesh, _ *hostInst) { m.note += "; " + m.finishRotation() }},
		// Faults together.
		{name: "partition 10s + sentry down + root rotation staged", d: 10 * time.Second, victim: 0, ejects: true, fullOnly: true,
			inject: func(m *hostMesh, in *hostInst) {
				m.sentry.Kill()
				out, err := exec.Command(m.b.Sentry, "rotate-root", "--data-dir", filepath.Join(m.dir, "sentry")).CombinedOutput()
				if err != nil {
					m.t.Fatalf("sentry rotate-root: %v: %s", err, out)
				}
				must(m.t, in.host.Partition(true))
			},
			heal: func(m *hostMesh, in *hostInst) {
				must(m.t, in.host.Partition(false))
				m.startSentry() // it carries on the staged rotation
			}},
		{name: "kill -9 sidecar during rolling restart", d: 0, victim: 2, ejects: true, fullOnly: true,
			inject: func(m *hostMesh, in *hostInst) {
				for i, x := range m.inst[:2] {
					_ = x.sidecar.Stop(10 * time.Second)
					_ = x.app.Stop(10 * time.Second)
					if i == 0 {
						in.sidecar.Kill() // echo-3, while echo-1 restarts: echo-2 alone serves
					}
					m.startApp(x)
					m.startSidecar(x)
					time.Sleep(2 * time.Second)
				}
			},
			heal: func(m *hostMesh, in *hostInst) { m.startSidecar(in) }},
		{name: "rolling restart", d: 0, victim: -1, fullOnly: true,
			inject: func(m *hostMesh, _ *hostInst) {
				for _, in := range m.inst {
					_ = in.sidecar.Stop(10 * time.Second)
					_ = in.app.Stop(10 * time.Second)
					m.startApp(in)
					m.startSidecar(in)
					time.Sleep(2 * time.Second)
				}
			},
			heal: func(m *hostMesh, _ *hostInst) {}},
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestHostsFaults runs the faults one at a time under load and checks, for
// each: no call lost silently, no POST delivered twice, every failure
// reported, no GET failed once the fault was detected; it logs the figures
// and, with MESHD_CHAOS_OUT, writes them as JSON.
func TestHostsFaults(t *testing.T) {
	m := startHostMesh(t, meshOpts{tmpfs: full()})
	rate := 200
	if full() {
		rate = 500
	}
	var results []Result
	for _, f := range faults() {
		if f.fullOnly && !full() {
			continue
		}
		if f.unavailable != nil {
			if why := f.unavailable(m); why != "" {
				t.Logf("%s: not run: %s", f.name, why)
				results = append(results, Result{Fault: f.name, DetectMs: -1, RecoverMs: -1, Note: "not run: " + why})
				continue
			}
		}
		m.waitAllServe(60 * time.Second)
		r := m.run(f, rate)
		results = append(results, r)
		t.Log(r.String())
		for _, e := range append(r.Examples, r.Slowest...) {
			t.Log("  " + e)
		}
		if r.Lost != 0 || r.Duplicated != 0 || r.Unreported != 0 {
			t.Errorf("%s: lost %d, duplicated %d, unreported %d; want 0 each", f.name, r.Lost, r.Duplicated, r.Unreported)
		}
		if r.GETFailedAfterDetect != 0 {
			t.Errorf("%s: %d GETs failed after the fault was detected", f.name, r.GETFailedAfterDetect)
		}
		if f.ejects && r.DetectMs < 0 {
			t.Errorf("%s: the caller never ejected the instance", f.name)
		}
	}
	if out := os.Getenv("MESHD_CHAOS_OUT"); out != "" {
		writeResults(t, out, rate, results)
	}
}

// TestHostsConsulDown (make chaos): the mesh resolves through a Consul
// agent on the sentry host; the agent is killed for 2 minutes under load
// and started again (a -dev agent: every registration is gone). Callers
// keep the endpoints they had; every call must succeed.
func TestHostsConsulDown(t *testing.T) {
	if !full() {
		t.Skip("make chaos only (MESHD_CHAOS=full): the agent is down for 2 minutes")
	}
	m := startHostMesh(t, meshOpts{consul: true})
	m.waitAllServe(60 * time.Second)
	f := fault{name: "consul agent down 2 min", d: 2 * time.Minute, victim: -1,
		inject: func(m *hostMesh, _ *hostInst) { m.consul.Kill() },
		heal:   func(m *hostMesh, _ *hostInst) { m.startConsul() }}
	r := m.run(f, 500)
	t.Log(r.String())
	for _, e := range r.Examples {
		t.Log("  " + e)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Unreported != 0 || r.GETFailed != 0 || r.POSTFailed != 0 {
		t.Errorf("%s: lost %d, duplicated %d, unreported %d, GET failed %d, POST failed %d; want 0 each",
			f.name, r.Lost, r.Duplicated, r.Unreported, r.GETFailed, r.POSTFailed)
	}
	if out := os.Getenv("MESHD_CHAOS_OUT"); out != "" {
		writeResults(t, strings.TrimSuffix(out, ".json")+"-consul.json", 500, []Result{r})
	}
}

func (m *hostMesh) run(f fault, rate int) Result {
	t := m.t
	var in *hostInst
	if f.victim >= 0 {
		in = m.inst[f.victim]
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prefix := strings.NewReplacer(" ", "", "%", "", "×", "x", "-", "").Replace(f.name) + "-"
	load := &Load{BaseURL: "http://127.0.0.1:" + strconv.Itoa(portHTTP), App: "echo", Rate: rate, Prefix: prefix,
		Dial: m.load.DialContext, H2C: true, Timeout: 90 * time.Second}
	done := make(chan []Call)
	go func() { done <- load.Run(ctx) }()
	time.Sleep(2 * time.Second)
	w := Window{Start: time.Now()}
	var detected func() time.Time
	from := len(m.caller.Log())
	if in != nil {
		w.Instance = in.name
		detected = watchLog(ctx, m.caller, in.host.Addr+":"+strconv.Itoa(portInternal), from)
	}
	f.inject(m, in)
	time.Sleep(f.d)
	f.heal(m, in)
	w.End = time.Now()
	time.Sleep(hold(8*time.Second, 15*time.Second))
	cancel()
	calls := <-done
	if detected != nil {
		w.Detect = detected()
	}
	rec, err := ReadRecord(m.records()...)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(f.name, calls, rec, w)
	r.HoldMs = ms(f.d)
	r.Rate = rate
	r.Note = m.note
	m.note = ""
	if in != nil {
		// Why the caller ejected the instance: its first log line saying so.
		for _, l := range strings.Split(m.caller.Log()[from:], "\n") {
			if strings.Contains(l, "endpoint ejected") && strings.Contains(l, in.host.Addr) {
				if i := strings.Index(l, "why="); i >= 0 {
					r.EjectedWhy = firstLine(l[i:])
				}
				break
			}
		}
	}
	return r
}

// watchLog is watchEjection for a process.
func watchLog(ctx context.Context, p *harness.Process, addr string, from int) func() time.Time {
	return watchEjection(ctx, &harness.Sidecar{Process: p}, addr, from)
}

func writeResults(t *testing.T, path string, rate int, rs []Result) {
	loadavg, _ := os.ReadFile("/proc/loadavg")
	doc := map[string]any{
		"date":    time.Now().UTC().Format(time.RFC3339),
		"commit":  BuiltCommit,
		"loadavg": strings.TrimSpace(string(loadavg)),
		"mode":    map[bool]string{true: "full", false: "short"}[full()],
		"rate":    rate,
		"results": rs,
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	md := fmt.Sprintf("%s, commit %s, load average %s, %s form, %d calls/s\n\n%s", doc["date"], doc["commit"], doc["loadavg"], doc["mode"], rate, Table(rs))
	t.Logf("the table of docs/reliability.md:\n%s", md)
	fmt.Fprintf(os.Stderr, "chaos: figures written to %s\n", path)
}

func (m *hostMesh) tmpfs() bool {
	var st syscall.Statfs_t
	return syscall.Statfs(filepath.Join(m.dir, "sentry"), &st) == nil && st.Type == 0x01021994 // TMPFS_MAGIC
}

// fill writes a file in sentry's data dir until the disk is full.
func (m *hostMesh) fill() string {
	p := filepath.Join(m.dir, "sentry", "filler")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space") {
				m.t.Fatalf("fill the disk: %v", err)
			}
			// The last few bytes too.
			for n := 4096; n > 0; n /= 2 {
				for {
					if _, err := f.Write(buf[:n]); err != nil {
						break
					}
				}
			}
			return p
		}
	}
}

// bundleRoots counts the certificates in sentry's bundle.pem (-1: it does
// not parse: the CA is not whole).
func (m *hostMesh) bundleRoots() int {
	b, err := os.ReadFile(m.bundle)
	if err != nil {
		return -1
	}
	n := strings.Count(string(b), "-----BEGIN CERTIFICATE-----")
	if n == 0 || n != strings.Count(string(b), "-----END CERTIFICATE-----") {
		return -1
	}
	return n
}

func (m *hostMesh) sentryHealthy() bool {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: m.sentryNS.DialContext}}
	resp, err := c.Get("http://" + m.sentryNS.Addr + ":" + strconv.Itoa(portHealth) + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// fullDiskRotation: with the data dir full, `sentry rotate-root` must fail
// cleanly; then a rotation staged just before the disk fills again makes
// the running sentry's import hit the full disk. The CA must stay whole.
func (m *hostMesh) fullDiskRotation() string {
	roots := m.bundleRoots()
	filler := m.fill()
	out, err := exec.Command(m.b.Sentry, "rotate-root", "--data-dir", filepath.Join(m.dir, "sentry")).CombinedOutput()
	if err == nil {
		m.t.Errorf("sentry rotate-root on a full disk succeeded: %s", out)
	}
	note := "rotate-root on the full disk: " + firstLine(string(out))
	if got := m.bundleRoots(); got != roots {
		m.t.Errorf("bundle after the refused rotation: %d roots, want %d", got, roots)
	}
	must(m.t, os.Remove(filler))
	if out, err := exec.Command(m.b.Sentry, "rotate-root", "--data-dir", filepath.Join(m.dir, "sentry")).CombinedOutput(); err != nil {
		m.t.Fatalf("sentry rotate-root with space: %v: %s", err, out)
	}
	m.fill() // the running sentry imports the staged rotation on a full disk
	return note
}

// finishRotation frees the disk and waits for the rotation to publish both
// roots; sentry must have stayed up and its bundle whole throughout.
func (m *hostMesh) finishRotation() string {
	healthy := m.sentryHealthy()
	roots := m.bundleRoots()
	log := m.sentry.Log()
	_ = os.Remove(filepath.Join(m.dir, "sentry", "filler"))
	if !healthy || roots < 0 {
		m.t.Errorf("on the full disk: sentry healthy %v, bundle roots %d (want healthy, a whole bundle)", healthy, roots)
	}
	deadline := time.Now().Add(60 * time.Second)
	for m.bundleRoots() < 2 {
		if time.Now().After(deadline) {
			m.t.Errorf("the rotation did not publish a second root within 60s of the disk being freed")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var errs []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "no space") {
			errs = append(errs, l)
		}
	}
	note := fmt.Sprintf("on the full disk sentry stayed healthy=%v with a whole bundle (%d roots); %d logged ENOSPC errors", healthy, roots, len(errs))
	if len(errs) > 0 {
		note += " (first: " + firstLine(errs[0]) + ")"
	}
	return note + fmt.Sprintf("; after freeing the disk the bundle has %d roots", m.bundleRoots())
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
