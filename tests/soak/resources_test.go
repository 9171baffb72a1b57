//go:build soak

package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/chaos"
	"github.com/meshd/meshd/tests/harness"
)

// sample is one reading of a process.
type sample struct {
	At         float64 `json:"atS"` // seconds since the start
	RSSKiB     int     `json:"rssKiB"`
	FDs        int     `json:"fds"`
	Goroutines int     `json:"goroutines"` // -1: not exposed (sentry: threads instead)
	Threads    int     `json:"threads"`
}

// TestSoakResources (make soak, #18): 1000 calls/s (GETs and POSTs with
// unique ids, half over HTTP/2) through a caller sidecar to two instances
// for SOAK_RES_DURATION (default 30m), workload certificates renewing every
// ~10 s. RSS, open fds and goroutines of every sidecar and sentry are
// sampled every 10 s. Goal: 0 failed calls, nothing lost or duplicated,
// and each figure flat after warm-up: the median of the last fifth within
// 5% (and a small absolute slack) of the median just after warm-up.
// SOAK_RES_OUT writes the samples as JSON.
func TestSoakResources(t *testing.T) {
	dur := 30 * time.Minute
	if v := os.Getenv("SOAK_RES_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_RES_DURATION: %v", err)
		}
		dur = d
	}
	// The commit the binaries are built from (HEAD may move during the run).
	commit, _ := exec.Command("git", "-C", harness.RepoRoot(), "rev-parse", "--short", "HEAD").Output()
	b := chaos.Binaries(t)
	t.Cleanup(chaos.RemoveBinaries)
	s := harness.StartSentry(t, b, "", "--workload-ttl", "20s")
	dir := t.TempDir()
	var addrs, records []string
	var procs []*harness.Process
	names := []string{"sentry"}
	procs = append(procs, s.Process)
	var sidecars []*harness.Sidecar
	for i := 1; i <= 2; i++ {
		port := harness.FreePort(t)
		rec := filepath.Join(dir, "record-"+strconv.Itoa(i))
		records = append(records, rec)
		harness.Start(t, "echo-"+strconv.Itoa(i), b.Echo, "--port", strconv.Itoa(port), "--name", "echo-"+strconv.Itoa(i), "--record", rec)
		harness.WaitHTTP(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz", http.StatusOK, 30*time.Second)
		sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "echo", AppPort: port})
		addrs = append(addrs, sc.Ports.InternalAddr())
		sidecars = append(sidecars, sc)
	}
	static := filepath.Join(dir, "static.yaml")
	harness.WriteStatic(t, static, harness.StaticApp{AppID: "echo", Addresses: addrs})
	caller := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "front", ResolverFile: static})
	sidecars = append(sidecars, caller)
	for i, sc := range sidecars {
		procs = append(procs, sc.Process)
		names = append(names, []string{"sidecar echo-1", "sidecar echo-2", "sidecar front (caller)"}[i])
	}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	load := &chaos.Load{BaseURL: caller.HTTPURL(), App: "echo", Rate: 1000, Prefix: "soak-", H2C: true}
	done := make(chan []chaos.Call)
	go func() { done <- load.Run(ctx) }()
	start := time.Now()
	series := make([][]sample, len(procs))
	tk := time.NewTicker(10 * time.Second)
	defer tk.Stop()
	for loop := true; loop; {
		select {
		case <-ctx.Done():
			loop = false
			continue
		case <-tk.C:
		}
		for i, p := range procs {
			sm := readProc(p.Pid())
			sm.At = time.Since(start).Seconds()
			sm.Goroutines = -1
			if i > 0 {
				sm.Goroutines = goroutines(sidecars[i-1].Ports.Metrics)
			}
			series[i] = append(series[i], sm)
		}
		last := series[len(series)-1]
		t.Logf("%4.0fs caller rss %d KiB fds %d goroutines %d; calls %d", last[len(last)-1].At,
			last[len(last)-1].RSSKiB, last[len(last)-1].FDs, last[len(last)-1].Goroutines, load.Count())
	}
	calls := <-done
	rec, err := chaos.ReadRecord(records...)
	if err != nil {
		t.Fatal(err)
	}
	r := chaos.Check("soak", calls, rec, chaos.Window{})
	t.Log(r.String())
	if r.GETFailed+r.POSTFailed != 0 || r.Lost != 0 || r.Duplicated != 0 || r.Unreported != 0 {
		t.Errorf("soak: %d GET and %d POST failed, lost %d, duplicated %d, unreported %d; want 0 each",
			r.GETFailed, r.POSTFailed, r.Lost, r.Duplicated, r.Unreported)
	}
	type growth struct {
		Name                          string  `json:"name"`
		RSSPct, FDsPct, GoroutinesPct float64 `json:"-"`
		RSSFrom, RSSTo, FDFrom, FDTo  int
		GoroutineFrom, GoroutineTo    int
	}
	var gs []growth
	for i, ser := range series {
		if len(ser) < 10 {
			t.Fatalf("%s: only %d samples; run at least 2 minutes", names[i], len(ser))
		}
		// Warm-up: the first fifth. Compare the median of the second fifth
		// with the median of the last fifth.
		n := len(ser) / 5
		early, late := ser[n:2*n], ser[len(ser)-n:]
		g := growth{Name: names[i]}
		g.RSSFrom, g.RSSTo = median(early, func(s sample) int { return s.RSSKiB }), median(late, func(s sample) int { return s.RSSKiB })
		g.FDFrom, g.FDTo = median(early, func(s sample) int { return s.FDs }), median(late, func(s sample) int { return s.FDs })
		g.GoroutineFrom, g.GoroutineTo = median(early, func(s sample) int { return s.Goroutines }), median(late, func(s sample) int { return s.Goroutines })
		gs = append(gs, g)
		t.Logf("%s: rss %d → %d KiB, fds %d → %d, goroutines %d → %d", g.Name, g.RSSFrom, g.RSSTo, g.FDFrom, g.FDTo, g.GoroutineFrom, g.GoroutineTo)
		check := func(what string, from, to, slack int) {
			if from >= 0 && float64(to) > float64(from)*1.05+float64(slack) {
				t.Errorf("%s: %s grew from %d to %d after warm-up (goal: within 5%%)", g.Name, what, from, to)
			}
		}
		check("RSS (KiB)", g.RSSFrom, g.RSSTo, 2048)
		check("open fds", g.FDFrom, g.FDTo, 8)
		check("goroutines", g.GoroutineFrom, g.GoroutineTo, 16)
	}
	if out := os.Getenv("SOAK_RES_OUT"); out != "" {
		loadavg, _ := os.ReadFile("/proc/loadavg")
		doc := map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "commit": strings.TrimSpace(string(commit)),
			"loadavg": strings.TrimSpace(string(loadavg)), "duration": dur.String(), "rate": 1000,
			"result": r, "growth": gs, "names": names, "samples": series}
		b, _ := json.MarshalIndent(doc, "", " ")
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func median(ss []sample, f func(sample) int) int {
	v := make([]int, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// readProc reads RSS and threads from /proc/PID/status and counts open fds.
func readProc(pid int) sample {
	var s sample
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			fs := strings.Fields(v)
			if len(fs) == 0 {
				continue
			}
			switch k {
			case "VmRSS":
				s.RSSKiB, _ = strconv.Atoi(fs[0])
			case "Threads":
				s.Threads, _ = strconv.Atoi(fs[0])
			}
		}
		f.Close()
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.FDs = len(ents)
	}
	return s
}

// goroutines reads go_goroutines from a sidecar's /metrics (-1: none).
func goroutines(port int) int {
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(n)
		}
	}
	return -1
}
