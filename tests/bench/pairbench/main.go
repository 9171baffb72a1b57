// Command pairbench measures what a meshd sidecar pair adds to a call, side by
// side with a direct call, in one run on one machine.
//
// Load shape (the anchor harness, docs/performance.md "The harness"): fortio
// v1.68.2, 16 connections, 1 KiB POST (HTTP) or 1 KiB ping payload (gRPC),
// a fixed 1000 req/s with -uniform for 30 s, then the maximum rate for 20 s,
// each preceded by a discarded 3 s warm-up.
//
// Variants: direct (fortio → app) and meshd (fortio → sidecar A → mTLS →
// sidecar B → app), for HTTP and for gRPC unary; for HTTP also the anchor's
// nginx mTLS pair (nginx.go), measured here in the same run when nginx is
// installed, so the floor is read on this machine rather than the anchor's.
// For each pair it reads the CPU time (utime+stime) of both proxies before
// and after each window and samples VmRSS/RssAnon of each twice a second.
//
// It writes a Markdown table to stdout and the full results as JSON.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshd/meshd/internal/freeport"
)

type config struct {
	bin, fortio, out  string
	fixedDur, maxDur  time.Duration
	warm              time.Duration
	qps, conns, size  int
	skipGRPC, skipMax bool
	profile, hold     bool
	meshdEnv          string
	bEnv, bBin        string // the meshd-b variant: other env, other binaries
	rounds            int
	reps              int
	nginx             string
	daprd             string
	short             bool
	paths             int
	startup           bool
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin", "directory holding meshd and sentry")
	flag.StringVar(&c.fortio, "fortio", ".cache/bin/fortio", "fortio v1.68.2 binary")
	flag.StringVar(&c.out, "out", "tests/bench/results", "directory for the JSON results")
	flag.DurationVar(&c.fixedDur, "fixed", 30*time.Second, "duration of the fixed-rate window")
	flag.DurationVar(&c.maxDur, "max", 20*time.Second, "duration of the max-rate window")
	flag.DurationVar(&c.warm, "warmup", 3*time.Second, "discarded warm-up before each window")
	flag.IntVar(&c.qps, "qps", 1000, "fixed rate")
	flag.IntVar(&c.conns, "c", 16, "connections")
	flag.IntVar(&c.size, "payload", 1024, "payload bytes")
	flag.BoolVar(&c.skipGRPC, "skip-grpc", false, "HTTP only")
	flag.BoolVar(&c.skipMax, "skip-max", false, "fixed rate only")
	flag.StringVar(&c.meshdEnv, "meshd-env", "", "extra environment of the sidecars, space-separated KEY=VALUE (experiments)")
	flag.StringVar(&c.bEnv, "b-env", "", "adds the variant meshd-b: a second meshd pair (sidecars xa, xb, xbg) whose environment adds these space-separated KEY=VALUE to -meshd-env, measured right beside meshd in every window of HTTP and gRPC (A/B in one run, e.g. \"GOMAXPROCS=2\")")
	flag.StringVar(&c.bBin, "b-bin", "", "adds the variant meshd-b (see -b-env) with meshd from this directory (A/B of two builds in one run)")
	flag.IntVar(&c.rounds, "policy-rounds", 0, "extra fixed-rate HTTP rounds (the path load) of meshd-paths, meshd-policy and meshd-twin (a second callee sidecar identical to meshd's: the A/A control), in rotating order; reports the median per-round p50/p90 difference of policy and of twin against meshd-paths")
	flag.BoolVar(&c.hold, "hold", false, "start the mesh, print its ports and wait for an interrupt (for perf/pprof by hand)")
	flag.BoolVar(&c.profile, "profile", false, "write CPU profiles of both sidecars during each max-rate meshd window to -out")
	flag.StringVar(&c.nginx, "nginx", "", "nginx binary for the nginx mTLS pair variant (default: nginx on PATH or /usr/sbin/nginx; \"off\" to skip)")
	flag.StringVar(&c.daprd, "daprd", "", "daprd binary for the daprd mTLS pair variant, Dapr's sentry beside it as dapr-sentry (default: .cache/bin/daprd, built by tests/bench/daprd.sh; \"off\" to skip)")
	flag.BoolVar(&c.short, "short", false, "a quick check: 5 s windows, 1 s warm-ups, one repetition, no policy rounds, 2 start-up measurements")
	flag.IntVar(&c.paths, "paths", 0, "distinct paths of the meshd-paths/meshd-policy load; 0: no path repeats in the run, so no policy decision comes from the decision cache")
	flag.BoolVar(&c.startup, "startup", true, "measure start → ready (with a certificate) of meshd and daprd")
	flag.IntVar(&c.reps, "reps", 1, "repetitions of every window, the variant order reversed in every second one (as the anchor harness does); tables and added latency use the median over repetitions")
	flag.Parse()
	if c.short {
		c.fixedDur, c.maxDur, c.warm, c.reps, c.rounds = 5*time.Second, 5*time.Second, time.Second, 1, 0
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "pairbench:", err)
		os.Exit(1)
	}
}

// result is one measured window.
type result struct {
	Protocol    string  `json:"protocol"`
	Variant     string  `json:"variant"`
	Mode        string  `json:"mode"`
	Rep         int     `json:"rep"` // repetition; -1 in medians
	QPS         float64 `json:"qps"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	P999ms      float64 `json:"p99_9_ms"`
	MaxMs       float64 `json:"max_ms"`
	PairCPUSec  float64 `json:"pair_cpu_seconds,omitempty"`
	PairCPUUsRq float64 `json:"pair_cpu_us_per_request,omitempty"`
	// MachineBusy is the share of all CPUs' time not idle during the
	// window (from /proc/stat): near 100 means the load is CPU-bound.
	MachineBusy float64 `json:"machine_busy_pct,omitempty"`
}

type memory struct {
	VmRSSMB   float64 `json:"vmrss_mb"`
	RssAnonMB float64 `json:"rssanon_mb"`
}

type report struct {
	Date    string            `json:"date"`
	Host    string            `json:"host"`
	CPUs    int               `json:"cpus"`
	Shape   string            `json:"load_shape"`
	Results []result          `json:"results"`
	Medians []result          `json:"medians_over_reps"`
	Added   []added           `json:"added_vs_direct"`
	Memory  map[string]memory `json:"sidecar_memory_max"`
	Policy  *policyRounds     `json:"policy_rounds,omitempty"`
	Startup *startup          `json:"start_to_ready,omitempty"`
	// TraceExports counts the OTLP export requests the sidecars with
	// tracing (ap, bp) sent to the bench's collector: proof that tracing
	// was on in the meshd-policy rows.
	TraceExports int64 `json:"trace_exports"`
	// Paths is the number of distinct paths of the path load; 0: every
	// call's path was new in the run.
	Paths int `json:"path_load_paths"`
	// BVariant says what meshd-b is (-b-bin, -b-env); "" without it.
	BVariant string            `json:"meshd_b,omitempty"`
	Summary  *summary          `json:"summary"`
	Versions map[string]string `json:"versions"`
}

type added struct {
	Protocol string  `json:"protocol"`
	P50ms    float64 `json:"added_p50_ms"`
	P90ms    float64 `json:"added_p90_ms"`
	P99ms    float64 `json:"added_p99_ms"`
	P999ms   float64 `json:"added_p99_9_ms"`
}

func run(c config) error {
	// An interrupt stops the load and still tears the mesh down (deferred
	// stopAll), so no sidecar outlives the bench.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	for _, p := range []string{filepath.Join(c.bin, "meshd"), filepath.Join(c.bin, "sentry"), c.fortio} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("missing %s (run make build; tests/bench/run.sh installs fortio): %w", p, err)
		}
	}
	dir, err := os.MkdirTemp("", "pairbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	m := &mesh{dir: dir, bin: c.bin, fortio: c.fortio, meshdEnv: strings.Fields(c.meshdEnv), nginx: findNginx(c.nginx),
		profiling: c.profile || c.hold}
	if c.bEnv != "" || c.bBin != "" {
		m.bBin = c.bBin
		if m.bBin == "" {
			m.bBin = c.bin
		}
		if _, err := os.Stat(filepath.Join(m.bBin, "meshd")); err != nil {
			return fmt.Errorf("-b-bin: %w", err)
		}
		m.bEnv = append(append([]string{}, m.meshdEnv...), strings.Fields(c.bEnv)...)
	}
	if m.nginx == "" {
		fmt.Fprintln(os.Stderr, "pairbench: no nginx (install Debian's nginx-light, or pass -nginx PATH): the nginx pair is not measured in this run")
	}
	m.daprd, m.daprSentry = findDaprd(c.daprd)
	if m.daprd == "" && c.daprd != "off" {
		fmt.Fprintln(os.Stderr, "pairbench: no daprd and dapr-sentry (run tests/bench/daprd.sh, or pass -daprd PATH): the daprd pair is not measured in this run")
	}
	m.traces = newTraceSink()
	defer m.traces.close()
	defer m.stopAll()
	if err := m.start(ctx); err != nil {
		return err
	}

	if c.hold {
		fmt.Printf("mesh up in %s; pids a=%d b=%d bg=%d bp=%d\nports %v\n", dir, m.pid("a"), m.pid("b"), m.pid("bg"), m.pid("bp"), m.ports)
		fmt.Printf("HTTP through the pair: http://127.0.0.1:%d/v1.0/invoke/b/method/echo\n", m.ports["a-http"])
		<-ctx.Done()
		return nil
	}
	rep := report{
		Date: time.Now().UTC().Format(time.RFC3339), CPUs: numCPU(),
		Shape: fmt.Sprintf("fortio, %d connections, %d B payload, fixed %d req/s -uniform for %s, max rate for %s, %s warm-up discarded",
			c.conns, c.size, c.qps, c.fixedDur, c.maxDur, c.warm),
		Memory:   map[string]memory{},
		Versions: map[string]string{"fortio": "1.68.2"},
	}
	rep.Host, _ = os.Hostname()
	pids := map[string]int{"sidecar-a": m.pid("a"), "sidecar-b": m.pid("b"),
		"sidecar-bg": m.pid("bg"), "sidecar-bp (policy)": m.pid("bp"), "sidecar-b2 (twin)": m.pid("b2")}
	if m.nginx != "" {
		pids[nginxA], pids[nginxB] = m.pid("ngx-a"), m.pid("ngx-b")
	}
	pids["sidecar-ap (tracing)"] = m.pid("ap")
	if m.bBin != "" {
		pids["sidecar-xa (B)"], pids["sidecar-xb (B)"] = m.pid("xa"), m.pid("xb")
	}
	if m.daprd != "" {
		pids[daprdA], pids[daprdB] = m.pid("da"), m.pid("db")
	}
	sampler := newMemSampler(pids)
	go sampler.run(ctx)

	protos := []string{"http"}
	if !c.skipGRPC {
		protos = append(protos, "grpc")
	}
	modes := []string{"fixed"}
	if !c.skipMax {
		modes = append(modes, "max")
	}
	for i := range max(c.reps, 1) {
		for _, proto := range protos {
			for _, mode := range modes {
				variants := []string{"direct", "meshd"}
				if m.bBin != "" {
					variants = append(variants, "meshd-b")
				}
				if proto == "http" {
					variants = append(variants, "meshd-paths", "meshd-policy")
					if m.nginx != "" {
						variants = append(variants, "nginx")
					}
					if m.daprd != "" {
						variants = append(variants, "daprd")
					}
				}
				if i%2 == 1 {
					slices.Reverse(variants)
				}
				for _, variant := range variants {
					r, err := m.load(ctx, c, proto, mode, variant)
					if err != nil {
						return err
					}
					r.Rep = i
					fmt.Fprintf(os.Stderr, "rep %d %-4s %-5s %-12s qps=%.0f p50=%.3fms p99=%.3fms cpu=%.0fµs errors=%d\n",
						i, proto, mode, variant, r.QPS, r.P50ms, r.P99ms, r.PairCPUUsRq, r.Errors)
					rep.Results = append(rep.Results, r)
				}
			}
		}
	}
	rep.Medians = medians(rep.Results)
	if c.rounds > 0 {
		pr, err := m.policyRounds(ctx, c)
		if err != nil {
			return err
		}
		rep.Policy = pr
	}
	rep.Memory = sampler.max()
	rep.TraceExports = m.traces.count.Load()
	rep.Paths = c.paths
	if m.bBin != "" {
		rep.BVariant = strings.TrimSpace(fmt.Sprintf("meshd from %s, env %s", m.bBin, strings.Join(m.bEnv, " ")))
	}
	if c.startup {
		m.startReps = startReps
		if c.short {
			m.startReps = 2
		}
		st, err := m.measureStartups(ctx)
		if err != nil {
			return err
		}
		rep.Startup = st
	}
	for _, proto := range protos {
		var d, s *result
		for i := range rep.Medians {
			r := &rep.Medians[i]
			if r.Protocol == proto && r.Mode == "fixed" {
				switch r.Variant {
				case "direct":
					d = r
				case "meshd":
					s = r
				}
			}
		}
		if d != nil && s != nil {
			rep.Added = append(rep.Added, added{"meshd " + proto, s.P50ms - d.P50ms, s.P90ms - d.P90ms, s.P99ms - d.P99ms, s.P999ms - d.P999ms})
		}
		for i := range rep.Medians {
			r := &rep.Medians[i]
			if d != nil && r.Protocol == proto && r.Mode == "fixed" && r.Variant == "nginx" {
				rep.Added = append(rep.Added, added{"nginx mTLS pair, this run", r.P50ms - d.P50ms, r.P90ms - d.P90ms, r.P99ms - d.P99ms, r.P999ms - d.P999ms})
			}
			if d != nil && r.Protocol == proto && r.Mode == "fixed" && r.Variant == "daprd" {
				rep.Added = append(rep.Added, added{"daprd mTLS pair, this run", r.P50ms - d.P50ms, r.P90ms - d.P90ms, r.P99ms - d.P99ms, r.P999ms - d.P999ms})
			}
		}
	}
	rep.Summary = summarize(rep)
	printTable(rep)
	md := summaryMarkdown(rep)
	fmt.Print("\n" + md)
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	stamp := "pairbench-" + time.Now().UTC().Format("20060102-150405")
	if c.short {
		stamp += "-short"
	}
	path := filepath.Join(c.out, stamp+".json")
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.out, stamp+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\nMarkdown: %s\n", path, filepath.Join(c.out, stamp+".md"))
	if rep.TraceExports == 0 && slices.ContainsFunc(rep.Results, func(r result) bool { return r.Variant == "meshd-policy" }) {
		return errors.New("the tracing sidecars exported no spans: the meshd-policy rows ran without tracing")
	}
	for _, r := range rep.Results {
		if r.Errors > 0 {
			return fmt.Errorf("%s %s %s: %d failed requests", r.Protocol, r.Mode, r.Variant, r.Errors)
		}
	}
	return nil
}

// window names one measured window: its repetitions share it.
type window struct{ p, m, v string }

// byWindow groups results by window, the windows in the order of their
// first result.
func byWindow(rs []result) (order []window, groups map[window][]result) {
	groups = map[window][]result{}
	for _, r := range rs {
		k := window{r.Protocol, r.Mode, r.Variant}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	return order, groups
}

// medians is the median of every metric over the repetitions of each
// (protocol, mode, variant), in the order of their first window.
func medians(rs []result) []result {
	order, groups := byWindow(rs)
	out := make([]result, 0, len(order))
	for _, k := range order {
		g := groups[k]
		med := func(f func(r result) float64) float64 {
			xs := make([]float64, len(g))
			for i, r := range g {
				xs[i] = f(r)
			}
			return median(xs)
		}
		var reqs, errs int64
		for _, r := range g {
			reqs += r.Requests
			errs += r.Errors
		}
		out = append(out, result{Protocol: k.p, Mode: k.m, Variant: k.v, Rep: -1, Requests: reqs, Errors: errs,
			QPS:         med(func(r result) float64 { return r.QPS }),
			P50ms:       med(func(r result) float64 { return r.P50ms }),
			P90ms:       med(func(r result) float64 { return r.P90ms }),
			P99ms:       med(func(r result) float64 { return r.P99ms }),
			P999ms:      med(func(r result) float64 { return r.P999ms }),
			MaxMs:       med(func(r result) float64 { return r.MaxMs }),
			PairCPUSec:  med(func(r result) float64 { return r.PairCPUSec }),
			PairCPUUsRq: med(func(r result) float64 { return r.PairCPUUsRq }),
			MachineBusy: med(func(r result) float64 { return r.MachineBusy }),
		})
	}
	return out
}

func printTable(rep report) {
	fmt.Printf("\n## meshd pair vs direct (%s; %d CPUs)\n", rep.Shape, rep.CPUs)
	if len(rep.Medians) < len(rep.Results) {
		fmt.Println("\nEvery window:")
		printResults(rep.Results)
		fmt.Println("\nMedian over the repetitions (errors: the sum):")
	}
	fmt.Println()
	printResults(rep.Medians)
	printRest(rep)
}

func printResults(rs []result) {
	fmt.Println("| protocol | mode | variant | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | pair CPU µs/req | machine busy % |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		cpu := "–"
		if r.PairCPUUsRq > 0 {
			cpu = fmt.Sprintf("%.0f", r.PairCPUUsRq)
		}
		fmt.Printf("| %s | %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %d | %s | %.0f |\n",
			r.Protocol, r.Mode, r.Variant, r.QPS, r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.Errors, cpu, r.MachineBusy)
	}
}

func printRest(rep report) {
	fmt.Println("\n| added by the pair at the fixed rate | p50 ms | p90 ms | p99 ms | p99.9 ms |")
	fmt.Println("|---|---|---|---|---|")
	for _, a := range rep.Added {
		fmt.Printf("| %s | %+.3f | %+.3f | %+.3f | %+.3f |\n", a.Protocol, a.P50ms, a.P90ms, a.P99ms, a.P999ms)
	}
	if pr := rep.Policy; pr != nil {
		fmt.Printf("\n50-rule policy vs none, %d rounds of fixed-rate windows: median p50 %+.3f ms, median p90 %+.3f ms (per round p50: %s)\n",
			len(pr.DiffP50ms), pr.MedianDiffP50ms, pr.MedianDiffP90ms, fmtDiffs(pr.DiffP50ms))
		fmt.Printf("control, an identical twin sidecar vs none: median p50 %+.3f ms (per round: %s)\n",
			pr.TwinMedianP50ms, fmtDiffs(pr.TwinDiffP50ms))
		fmt.Printf("policy vs the twin: median p50 %+.3f ms (per round: %s)\n", pr.VsTwinMedianP50ms, fmtDiffs(pr.VsTwinP50ms))
	}
	fmt.Println("\n| sidecar | max VmRSS MB | max RssAnon MB |")
	fmt.Println("|---|---|---|")
	for _, k := range []string{"sidecar-a", "sidecar-b", "sidecar-bg", "sidecar-ap (tracing)", "sidecar-bp (policy)", "sidecar-b2 (twin)", "sidecar-xa (B)", "sidecar-xb (B)", nginxA, nginxB, daprdA, daprdB} {
		if mem, ok := rep.Memory[k]; ok {
			fmt.Printf("| %s | %.1f | %.1f |\n", k, mem.VmRSSMB, mem.RssAnonMB)
		}
	}
}

// mesh is sentry, three sidecars and a fortio app, all on loopback.
type mesh struct {
	dir, bin, fortio  string
	meshdEnv          []string
	bBin              string   // meshd-b's binaries; "" when the variant is off
	bEnv              []string // meshd-b's extra environment
	nginx             string   // nginx binary; "" when the nginx variant is off
	daprd, daprSentry string   // Dapr's binaries; "" when the daprd variant is off
	traces            *traceSink
	pathSeq           atomic.Uint64 // the ids of the path load, one sequence per run
	startReps         int
	profiling         bool // sidecars serve Go profiles (-profile, -hold); off, they run with meshd's defaults
	mu                sync.Mutex
	procs             map[string]*exec.Cmd
	ports             map[string]int
}

func (m *mesh) pid(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.procs[name]; ok && p.Process != nil {
		return p.Process.Pid
	}
	return 0
}

func (m *mesh) allocPorts(names ...string) error {
	for _, n := range names {
		p, err := freeport.Take()
		if err != nil {
			return err
		}
		m.ports[n] = p
	}
	return nil
}

func (m *mesh) spawn(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(m.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	switch {
	case filepath.Base(bin) == "meshd" && isB(name):
		cmd.Env = append(os.Environ(), m.bEnv...)
	case filepath.Base(bin) == "meshd" && len(m.meshdEnv) > 0:
		cmd.Env = append(os.Environ(), m.meshdEnv...)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	m.mu.Lock()
	m.procs[name] = cmd
	m.mu.Unlock()
	return nil
}

func (m *mesh) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.procs {
		if p.Process != nil {
			_ = p.Process.Signal(os.Interrupt)
		}
	}
	for _, p := range m.procs {
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.Process.Kill()
		}
	}
}

func (m *mesh) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(m.dir, name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func waitHTTP(ctx context.Context, url string, want int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer %d in %s (last error %v)", url, want, d, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *mesh) start(ctx context.Context) error {
	m.procs, m.ports = map[string]*exec.Cmd{}, map[string]int{}
	if err := m.allocPorts("sentry", "sentry-health", "app-http", "app-grpc",
		"a-http", "a-grpc", "a-int", "a-met", "b-http", "b-grpc", "b-int", "b-met",
		"bg-http", "bg-grpc", "bg-int", "bg-met", "bp-http", "bp-grpc", "bp-int", "bp-met",
		"a-prof", "b-prof", "bg-prof", "bp-prof", "b2-http", "b2-grpc", "b2-int", "b2-met", "b2-prof",
		"ap-http", "ap-grpc", "ap-int", "ap-met", "ap-prof", "r-http", "r-grpc", "r-int", "r-met",
		"ngx-a", "ngx-b", "dapr-sentry", "dapr-sentry-health", "dapr-sentry-met",
		"da-http", "da-grpc", "da-int", "da-met", "da-prof", "db-http", "db-grpc", "db-int", "db-met", "db-prof",
		"dr-http", "dr-grpc", "dr-int", "dr-met", "dr-prof",
		"xa-http", "xa-grpc", "xa-int", "xa-met", "xa-prof", "xb-http", "xb-grpc", "xb-int", "xb-met", "xb-prof",
		"xbg-http", "xbg-grpc", "xbg-int", "xbg-met", "xbg-prof"); err != nil {
		return err
	}
	p := m.ports
	sentryDir := filepath.Join(m.dir, "sentry")
	sentry := filepath.Join(m.bin, "sentry")
	if err := m.spawn("sentry", sentry, "--data-dir", sentryDir,
		"--listen", fmt.Sprintf("127.0.0.1:%d", p["sentry"]),
		"--health-listen", fmt.Sprintf("127.0.0.1:%d", p["sentry-health"])); err != nil {
		return err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", p["sentry-health"]), 200, 20*time.Second); err != nil {
		return fmt.Errorf("sentry: %w\n%s", err, m.logTail("sentry"))
	}
	if err := m.spawn("app", m.fortio, "server", "-http-port", fmt.Sprintf("127.0.0.1:%d", p["app-http"]),
		"-grpc-port", fmt.Sprintf("127.0.0.1:%d", p["app-grpc"]), "-redirect-port", "disabled", "-loglevel", "Warning"); err != nil {
		return err
	}
	static := fmt.Sprintf("apps:\n  - appId: a\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: b\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: bg\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: bp\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: b2\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: ap\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: xa\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: xb\n    addresses: [\"127.0.0.1:%d\"]\n  - appId: xbg\n    addresses: [\"127.0.0.1:%d\"]\n",
		p["a-int"], p["b-int"], p["bg-int"], p["bp-int"], p["b2-int"], p["ap-int"], p["xa-int"], p["xb-int"], p["xbg-int"])
	staticFile := filepath.Join(m.dir, "static.yaml")
	if err := os.WriteFile(staticFile, []byte(static), 0o644); err != nil {
		return err
	}
	tracingConfig, err := m.writeTracingConfig()
	if err != nil {
		return err
	}
	if err := m.token(ctx, "r"); err != nil { // the sidecar of the start-up measurement
		return err
	}
	sidecars := []struct{ id, proto, appPort string }{
		{"a", "", ""}, {"b", "http", strconv.Itoa(p["app-http"])}, {"bg", "grpc", strconv.Itoa(p["app-grpc"])},
		{"bp", "http", strconv.Itoa(p["app-http"])},
		{"b2", "http", strconv.Itoa(p["app-http"])}, // b's twin: the A/A control of -policy-rounds
		{"ap", "", ""}, // the caller of meshd-policy, with tracing
	}
	ready := []string{"a", "b", "bg", "bp", "b2", "ap"}
	if m.bBin != "" { // meshd-b: a, b and bg again, from -b-bin with -b-env
		sidecars = append(sidecars, struct{ id, proto, appPort string }{"xa", "", ""},
			struct{ id, proto, appPort string }{"xb", "http", strconv.Itoa(p["app-http"])},
			struct{ id, proto, appPort string }{"xbg", "grpc", strconv.Itoa(p["app-grpc"])})
		ready = append(ready, "xa", "xb", "xbg")
	}
	for _, sc := range sidecars {
		if err := m.token(ctx, sc.id); err != nil {
			return err
		}
		tokFile := filepath.Join(m.dir, sc.id+".token")
		args := []string{"--app-id", sc.id, "--namespace", "default",
			"--http-port", strconv.Itoa(p[sc.id+"-http"]), "--grpc-port", strconv.Itoa(p[sc.id+"-grpc"]),
			"--internal-port", strconv.Itoa(p[sc.id+"-int"]), "--metrics-port", strconv.Itoa(p[sc.id+"-met"]),
			"--listen-address", "127.0.0.1",
			"--sentry-address", fmt.Sprintf("127.0.0.1:%d", p["sentry"]),
			"--trust-anchors-file", filepath.Join(sentryDir, "bundle.pem"),
			"--token-file", tokFile, "--resolver", "static", "--resolver-config", staticFile,
			"--log-level", "warn"}
		if m.profiling {
			args = append(args, "--enable-profiling", "--profile-port", strconv.Itoa(p[sc.id+"-prof"]))
		}
		if sc.appPort != "" {
			args = append(args, "--app-port", sc.appPort, "--app-protocol", sc.proto)
		}
		if sc.id == "bp" {
			dir, err := writePolicy(m.dir)
			if err != nil {
				return err
			}
			args = append(args, "--policy-dir", dir, "--policy-default", "deny")
		}
		if sc.id == "bp" || sc.id == "ap" {
			args = append(args, "--config", tracingConfig)
		}
		bin := m.bin
		if isB(sc.id) {
			bin = m.bBin
		}
		if err := m.spawn(sc.id, filepath.Join(bin, "meshd"), args...); err != nil {
			return err
		}
	}
	for _, id := range ready {
		if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", p[id+"-http"]), 204, 20*time.Second); err != nil {
			return fmt.Errorf("sidecar %s: %w\n%s", id, err, m.logTail(id))
		}
	}
	if m.nginx != "" {
		if err := m.startNginx(m.nginx); err != nil {
			return err
		}
		if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/echo", p["ngx-a"]), 200, 20*time.Second); err != nil {
			return fmt.Errorf("nginx pair: %w\n%s\n%s", err, m.logTail("ngx-a"), m.logTail("ngx-b"))
		}
	}
	if m.daprd != "" {
		if err := m.startDaprd(ctx); err != nil {
			return err
		}
	}
	// One call through the pair proves the path before measuring.
	url := fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/b/method/echo", p["a-http"])
	if err := waitHTTP(ctx, url, 200, 10*time.Second); err != nil {
		return fmt.Errorf("first call through the pair: %w\n%s\n%s", err, m.logTail("a"), m.logTail("b"))
	}
	// And through the policy pair, on the paths of its load.
	url = fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/bp/method/items/1", p["ap-http"])
	if err := waitHTTP(ctx, url, 200, 10*time.Second); err != nil {
		return fmt.Errorf("first call through the policy pair: %w\n%s\n%s", err, m.logTail("ap"), m.logTail("bp"))
	}
	return nil
}

type fortioJSON struct {
	ActualQPS         float64
	DurationHistogram struct {
		Count       int64
		Max         float64
		Percentiles []struct{ Percentile, Value float64 }
	}
	ErrorsDurationHistogram struct{ Count int64 }
	RetCodes                map[string]int64
}

func (m *mesh) load(ctx context.Context, c config, proto, mode, variant string) (result, error) {
	p := m.ports
	if proto == "http" && isPathVariant(variant) {
		return m.loadPaths(ctx, c, mode, variant)
	}
	var target []string
	switch {
	case proto == "http" && variant == "direct":
		target = []string{fmt.Sprintf("http://127.0.0.1:%d/echo", p["app-http"])}
	case proto == "http" && variant == "nginx":
		target = []string{fmt.Sprintf("http://127.0.0.1:%d/echo", p["ngx-a"])}
	case proto == "http" && variant == "daprd":
		target = []string{fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/db/method/echo", p["da-http"])}
	case proto == "http" && variant == "meshd-b":
		target = []string{fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/xb/method/echo", p["xa-http"])}
	case proto == "grpc" && variant == "meshd-b":
		target = []string{"-grpc", "-ping", "-H", "dapr-app-id:xbg", fmt.Sprintf("127.0.0.1:%d", p["xa-grpc"])}
	case proto == "http":
		target = []string{fmt.Sprintf("http://127.0.0.1:%d/v1.0/invoke/b/method/echo", p["a-http"])}
	case proto == "grpc" && variant == "direct":
		target = []string{"-grpc", "-ping", fmt.Sprintf("127.0.0.1:%d", p["app-grpc"])}
	default:
		target = []string{"-grpc", "-ping", "-H", "dapr-app-id:bg", fmt.Sprintf("127.0.0.1:%d", p["a-grpc"])}
	}
	qps, dur := strconv.Itoa(c.qps), c.fixedDur
	if mode == "max" {
		qps, dur = "0", c.maxDur
	}
	base := []string{"load", "-c", strconv.Itoa(c.conns), "-qps", qps, "-payload-size", strconv.Itoa(c.size),
		"-p", "50,90,99,99.9", "-r", "0.00001", "-loglevel", "Error"}
	if mode == "fixed" {
		base = append(base, "-uniform")
	}
	// Warm-up, discarded.
	warm := append(append([]string{}, base...), "-t", c.warm.String())
	if out, err := exec.CommandContext(ctx, m.fortio, append(warm, target...)...).CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("warm-up %s %s: %w\n%s", proto, variant, err, out)
	}
	jsonPath := filepath.Join(m.dir, fmt.Sprintf("%s-%s-%s.json", proto, mode, variant))
	args := append(append([]string{}, base...), "-t", dur.String(), "-json", jsonPath)
	cpuBefore := m.pairCPU(proto, variant)
	busyBefore, totalBefore := machineCPU()
	var profiles sync.WaitGroup
	if c.profile && mode == "max" && strings.HasPrefix(variant, "meshd") {
		secs := int(dur.Seconds()) - 2
		for _, sc := range []string{m.caller(variant), m.callee(proto, variant)} {
			profiles.Go(func() {
				url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", p[sc+"-prof"], secs)
				file := filepath.Join(c.out, fmt.Sprintf("cpu-%s-%s-%s.pprof", proto, variant, sc))
				if err := fetch(url, file); err != nil {
					fmt.Fprintln(os.Stderr, "pairbench: profile:", err)
				}
			})
		}
	}
	if out, err := exec.CommandContext(ctx, m.fortio, append(args, target...)...).CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("load %s %s %s: %w\n%s", proto, mode, variant, err, out)
	}
	cpuAfter := m.pairCPU(proto, variant)
	busyAfter, totalAfter := machineCPU()
	profiles.Wait()
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return result{}, err
	}
	var fj fortioJSON
	if err := json.Unmarshal(b, &fj); err != nil {
		return result{}, fmt.Errorf("fortio JSON: %w", err)
	}
	r := result{Protocol: proto, Variant: variant, Mode: mode, QPS: fj.ActualQPS,
		Requests: fj.DurationHistogram.Count, Errors: fj.ErrorsDurationHistogram.Count, MaxMs: fj.DurationHistogram.Max * 1e3}
	if proto == "http" {
		// fortio counts non-2xx as successes in the histogram; take them from RetCodes.
		var ok int64
		for code, n := range fj.RetCodes {
			if code == "200" {
				ok += n
			}
		}
		r.Errors = r.Requests - ok
	}
	for _, pc := range fj.DurationHistogram.Percentiles {
		switch pc.Percentile {
		case 50:
			r.P50ms = pc.Value * 1e3
		case 90:
			r.P90ms = pc.Value * 1e3
		case 99:
			r.P99ms = pc.Value * 1e3
		case 99.9:
			r.P999ms = pc.Value * 1e3
		}
	}
	if totalAfter > totalBefore {
		r.MachineBusy = 100 * float64(busyAfter-busyBefore) / float64(totalAfter-totalBefore)
	}
	if variant != "direct" {
		r.PairCPUSec = cpuAfter - cpuBefore
		if r.Requests > 0 {
			r.PairCPUUsRq = r.PairCPUSec / float64(r.Requests) * 1e6
		}
	}
	return r, nil
}

// machineCPU returns the busy and total jiffies of all CPUs (/proc/stat):
// idle and iowait are not busy.
func machineCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 7 { // guest time is already in user
			break
		}
		total += n
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, total
}

// pairCPU is utime+stime in seconds of the two sidecars on the path.
func (m *mesh) pairCPU(proto, variant string) float64 {
	switch variant {
	case "nginx":
		return treeCPU(m.pid("ngx-a")) + treeCPU(m.pid("ngx-b"))
	case "daprd":
		return cpuSeconds(m.pid("da")) + cpuSeconds(m.pid("db"))
	}
	return cpuSeconds(m.pid(m.caller(variant))) + cpuSeconds(m.pid(m.callee(proto, variant)))
}

// caller is the name of the caller sidecar of a meshd variant: "ap" (with
// tracing) for meshd-policy, else "a".
func (m *mesh) caller(variant string) string {
	switch variant {
	case "meshd-policy":
		return "ap"
	case "meshd-b":
		return "xa"
	}
	return "a"
}

// isB reports whether a sidecar belongs to the meshd-b variant.
func isB(name string) bool { return name == "xa" || name == "xb" || name == "xbg" }

// callee is the name of the callee sidecar of a variant.
func (m *mesh) callee(proto, variant string) string {
	switch {
	case proto == "grpc" && variant == "meshd-b":
		return "xbg"
	case variant == "meshd-b":
		return "xb"
	case proto == "grpc":
		return "bg"
	case variant == "meshd-policy":
		return "bp"
	case variant == "meshd-twin":
		return "b2"
	}
	return "b"
}

// fetch writes the body of a GET of url to file.
func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// statFields returns the fields of /proc/PID/stat after the ")" that ends
// the command name: f[0] is the state (field 3), f[1] the parent PID, f[11]
// and f[12] utime and stime (fields 14 and 15); nil if unreadable.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

func cpuSeconds(pid int) float64 {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

type memSampler struct {
	pids map[string]int
	mu   sync.Mutex
	peak map[string]memory
}

func newMemSampler(pids map[string]int) *memSampler {
	return &memSampler{pids: pids, peak: map[string]memory{}}
}

func (s *memSampler) run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		for name, pid := range s.pids {
			read := readStatus
			if name == nginxA || name == nginxB {
				read = treeStatus // master and workers
			}
			rss, anon, err := read(pid)
			if err != nil {
				continue
			}
			s.mu.Lock()
			p := s.peak[name]
			p.VmRSSMB = max(p.VmRSSMB, rss)
			p.RssAnonMB = max(p.RssAnonMB, anon)
			s.peak[name] = p
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *memSampler) max() map[string]memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]memory, len(s.peak))
	for k, v := range s.peak {
		out[k] = v
	}
	return out
}

func readStatus(pid int) (rssMB, anonMB float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		line := sc.Text()
		for _, k := range []string{"VmRSS:", "RssAnon:"} {
			if rest, ok := strings.CutPrefix(line, k); ok {
				fs := strings.Fields(rest)
				if len(fs) > 0 {
					kb, _ := strconv.ParseFloat(fs[0], 64)
					if k == "VmRSS:" {
						rssMB = kb / 1024
					} else {
						anonMB = kb / 1024
					}
					found++
				}
			}
		}
	}
	if found < 2 {
		return 0, 0, errors.New("status fields not found")
	}
	return rssMB, anonMB, nil
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

// writePolicy writes a realistic namespace policy for the "bp" callee: 50
// allow rules (one matches the benchmark's caller) and mesh-wide deny rules.
func writePolicy(dir string) (string, error) {
	root := filepath.Join(dir, "policy")
	if err := os.MkdirAll(filepath.Join(root, "default"), 0o755); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(root, "_mesh"), 0o755); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("package mesh.authz\n\n")
	for i := range 49 {
		fmt.Fprintf(&b, "allow if {\n\tinput.source.app_id == \"svc%d\"\n\tinput.request.method in {\"GET\", \"POST\"}\n\tstartswith(input.request.path, \"/api/v%d/\")\n}\n\n", i, i)
	}
	b.WriteString("allow if {\n\tinput.source.app_id == \"ap\"\n\tinput.source.namespace == \"default\"\n\tinput.request.method in {\"GET\", \"POST\"}\n\tstartswith(input.request.path, \"/items/\")\n}\n")
	if err := os.WriteFile(filepath.Join(root, "default", "bench.rego"), []byte(b.String()), 0o644); err != nil {
		return "", err
	}
	mesh := "package mesh.authz\n\ndeny contains \"admin paths are internal\" if startswith(input.request.path, \"/admin\")\n\ndeny contains \"foreign trust domain\" if input.source.trust_domain != \"cluster.local\"\n"
	if err := os.WriteFile(filepath.Join(root, "_mesh", "base.rego"), []byte(mesh), 0o644); err != nil {
		return "", err
	}
	return root, nil
}

// policyRounds is the policy variant against the same path without policy,
// and, as the control that shows the noise floor, an identical second
// callee sidecar (twin) against the first: two sidecars that differ in
// nothing differ by about as much, run to run.
type policyRounds struct {
	DiffP50ms       []float64 `json:"policy_diff_p50_ms"`
	DiffP90ms       []float64 `json:"policy_diff_p90_ms"`
	MedianDiffP50ms float64   `json:"policy_median_diff_p50_ms"`
	MedianDiffP90ms float64   `json:"policy_median_diff_p90_ms"`
	TwinDiffP50ms   []float64 `json:"twin_diff_p50_ms"`
	TwinMedianP50ms float64   `json:"twin_median_diff_p50_ms"`
	// Policy against the twin: both are the "other" sidecar of their round.
	VsTwinP50ms       []float64 `json:"policy_vs_twin_diff_p50_ms"`
	VsTwinMedianP50ms float64   `json:"policy_vs_twin_median_diff_p50_ms"`
}

func (m *mesh) policyRounds(ctx context.Context, c config) (*policyRounds, error) {
	pr := &policyRounds{}
	variants := []string{"meshd-paths", "meshd-policy", "meshd-twin"}
	for i := range c.rounds {
		got := map[string]result{}
		for j := range variants { // rotate: no variant always goes first
			v := variants[(i+j)%len(variants)]
			r, err := m.load(ctx, c, "http", "fixed", v)
			if err != nil {
				return nil, err
			}
			if r.Errors > 0 {
				return nil, fmt.Errorf("policy round %d %s: %d failed requests", i, v, r.Errors)
			}
			got[v] = r
		}
		base := got["meshd-paths"]
		d50 := got["meshd-policy"].P50ms - base.P50ms
		d90 := got["meshd-policy"].P90ms - base.P90ms
		t50 := got["meshd-twin"].P50ms - base.P50ms
		fmt.Fprintf(os.Stderr, "policy round %d: p50 meshd %.3f, policy %.3f (%+.3f), twin %.3f (%+.3f) ms\n",
			i, base.P50ms, got["meshd-policy"].P50ms, d50, got["meshd-twin"].P50ms, t50)
		pr.DiffP50ms = append(pr.DiffP50ms, d50)
		pr.DiffP90ms = append(pr.DiffP90ms, d90)
		pr.TwinDiffP50ms = append(pr.TwinDiffP50ms, t50)
		pr.VsTwinP50ms = append(pr.VsTwinP50ms, d50-t50)
	}
	pr.MedianDiffP50ms, pr.MedianDiffP90ms = median(pr.DiffP50ms), median(pr.DiffP90ms)
	pr.TwinMedianP50ms = median(pr.TwinDiffP50ms)
	pr.VsTwinMedianP50ms = median(pr.VsTwinP50ms)
	return pr, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtDiffs(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%+.3f", x)
	}
	return strings.Join(parts, " ")
}
