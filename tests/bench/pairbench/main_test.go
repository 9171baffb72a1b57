package main

import (
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMedians: one row per (protocol, mode, variant) in the order of first
// appearance, each metric the median of its repetitions, errors summed.
func TestMedians(t *testing.T) {
	rs := []result{
		{Protocol: "http", Mode: "fixed", Variant: "meshd", Rep: 0, QPS: 990, P50ms: 0.5, P99ms: 3, Requests: 10, Errors: 1},
		{Protocol: "http", Mode: "fixed", Variant: "nginx", Rep: 0, QPS: 999, P50ms: 0.4, PairCPUUsRq: 270, Requests: 10},
		{Protocol: "http", Mode: "fixed", Variant: "nginx", Rep: 1, QPS: 997, P50ms: 0.6, PairCPUUsRq: 250, Requests: 10},
		{Protocol: "http", Mode: "fixed", Variant: "meshd", Rep: 1, QPS: 980, P50ms: 0.3, P99ms: 1, Requests: 10, Errors: 2},
		{Protocol: "http", Mode: "fixed", Variant: "meshd", Rep: 2, QPS: 970, P50ms: 0.7, P99ms: 2, Requests: 10},
	}
	got := medians(rs)
	if len(got) != 2 || got[0].Variant != "meshd" || got[1].Variant != "nginx" {
		t.Fatalf("rows %+v", got)
	}
	m := got[0]
	if m.QPS != 980 || m.P50ms != 0.5 || m.P99ms != 2 || m.Requests != 30 || m.Errors != 3 || m.Rep != -1 {
		t.Fatalf("meshd median %+v", m)
	}
	n := got[1]
	if n.P50ms != 0.5 || n.PairCPUUsRq != 260 || n.QPS != 998 {
		t.Fatalf("nginx median (even count: mean of the middle two) %+v", n)
	}
}

// TestPathLoad: the path load gives every call a new /items/{id} path (ids
// continuing across windows), keeps the rate it is given, counts non-200
// answers as errors, and reports exact percentiles; with a path count it
// goes round that many distinct paths.
func TestPathLoad(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || len(b) != 1024 || !strings.HasPrefix(r.URL.Path, "/base/items/") {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen[r.URL.Path]++
		n := len(seen)
		mu.Unlock()
		if n == 3 {
			w.WriteHeader(http.StatusForbidden) // one refusal: counted, not fatal
		}
	}))
	defer srv.Close()
	var seq atomic.Uint64
	st, err := pathLoad(context.Background(), srv.URL+"/base", &seq, 0, 4, 400, 1024, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.requests < 300 || st.requests > 420 {
		t.Fatalf("%d requests in 1 s at 400 req/s", st.requests)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != int(st.requests) {
		t.Fatalf("%d distinct paths for %d requests: the paths repeat", len(seen), st.requests)
	}
	if st.errors != 1 {
		t.Fatalf("errors %d, want the one 403", st.errors)
	}
	if p50, p99 := st.pct(50), st.pct(99); p50 <= 0 || p99 < p50 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	// A second window continues the sequence: still no path repeats.
	before := len(seen)
	mu.Unlock()
	st2, err := pathLoad(context.Background(), srv.URL+"/base", &seq, 0, 2, 200, 1024, 300*time.Millisecond)
	mu.Lock()
	if err != nil || len(seen) != before+int(st2.requests) {
		t.Fatalf("second window: %v; %d distinct paths after %d+%d requests", err, len(seen), before, st2.requests)
	}
	// 37 paths, round and round.
	clear(seen)
	mu.Unlock()
	st3, err := pathLoad(context.Background(), srv.URL+"/base", &seq, 37, 2, 0, 1024, 300*time.Millisecond)
	mu.Lock()
	if err != nil || st3.requests < 74 || len(seen) != 37 {
		t.Fatalf("37 paths: %v; %d distinct paths in %d requests", err, len(seen), st3.requests)
	}
}

// TestPathLoadRefused: a load against a port nobody listens on fails with
// an error naming it, instead of reporting an empty window.
func TestPathLoadRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var seq atomic.Uint64
	st, err := pathLoad(context.Background(), "http://"+addr, &seq, 0, 2, 0, 10, 200*time.Millisecond)
	if err == nil && (st == nil || st.errors == 0) {
		t.Fatalf("no error and no failed calls against a closed port: %+v", st)
	}
}

// TestSummary: the peers table takes added latency against the direct row,
// the max-rate figures from the max rows, memory as the larger sidecar of
// each pair, and ratios meshd / peer; a peer left out of the run stays
// empty instead of dividing by zero.
func TestSummary(t *testing.T) {
	rep := report{
		Medians: []result{
			{Protocol: "http", Mode: "fixed", Variant: "direct", P50ms: 0.2, P99ms: 1, P999ms: 2},
			{Protocol: "http", Mode: "fixed", Variant: "meshd", P50ms: 0.4, P99ms: 2, P999ms: 4, PairCPUUsRq: 200},
			{Protocol: "http", Mode: "fixed", Variant: "nginx", P50ms: 0.6, P99ms: 3, P999ms: 4},
			{Protocol: "http", Mode: "max", Variant: "meshd", QPS: 9000, PairCPUUsRq: 90},
			{Protocol: "http", Mode: "max", Variant: "nginx", QPS: 10000, PairCPUUsRq: 100},
			{Protocol: "grpc", Mode: "max", Variant: "meshd", QPS: 4500, PairCPUUsRq: 180},
			{Protocol: "http", Mode: "max", Variant: "meshd-paths", QPS: 5000, PairCPUUsRq: 100},
			{Protocol: "http", Mode: "max", Variant: "meshd-policy", QPS: 4900, PairCPUUsRq: 102},
		},
		Memory: map[string]memory{"sidecar-a": {VmRSSMB: 40, RssAnonMB: 10}, "sidecar-b": {VmRSSMB: 38, RssAnonMB: 12},
			nginxA: {VmRSSMB: 27, RssAnonMB: 8}, nginxB: {VmRSSMB: 28, RssAnonMB: 8}},
		Startup: &startup{MeshdMs: []float64{20, 30}, MeshdMedianMs: 25},
	}
	s := summarize(rep)
	get := func(name string) figure {
		for _, f := range s.Peers {
			if f.Figure == name {
				return f
			}
		}
		t.Fatalf("no row %q", name)
		return figure{}
	}
	near := func(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }
	if f := get("added p50 at 1000 req/s"); !near(f.Meshd, 0.2) || !near(f.Nginx, 0.4) || !near(f.VsNginx, 0.5) || f.Daprd != nil || f.VsDaprd != nil {
		t.Fatalf("p50 row %+v", f)
	}
	if f := get("max req/s"); !near(f.VsNginx, 0.9) {
		t.Fatalf("max row %+v", f)
	}
	if f := get("RssAnon per sidecar"); !near(f.Meshd, 12) || !near(f.Nginx, 8) {
		t.Fatalf("RssAnon row %+v", f)
	}
	if f := get("start → ready (with a cert)"); !near(f.Meshd, 25) || f.Daprd != nil {
		t.Fatalf("start row %+v", f)
	}
	if c := s.GRPC[len(s.GRPC)-1]; c.Figure != "max req/s" || !near(c.Ratio, 0.5) {
		t.Fatalf("gRPC max row %+v", c)
	}
	if c := s.Policy[len(s.Policy)-1]; c.Figure != "pair CPU µs per call at max rate" || !near(c.Ratio, 1.02) {
		t.Fatalf("policy CPU row %+v", c)
	}
	rep.Summary = s
	md := summaryMarkdown(rep)
	for _, want := range []string{"| added p50 at 1000 req/s (ms) | – | 0.400 | 0.200 | 0.50 | – |", "| max req/s (req/s) | 9000 | 4500 | 0.50 |"} {
		if !strings.Contains(md, want) {
			t.Fatalf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestSummaryDisagree: repetitions of a window far apart (one disturbed)
// are named in the summary; ones close together are not.
func TestSummaryDisagree(t *testing.T) {
	rep := report{Results: []result{
		{Protocol: "http", Mode: "fixed", Variant: "direct", Rep: 0, P99ms: 0.42},
		{Protocol: "http", Mode: "fixed", Variant: "meshd", Rep: 0, P99ms: 1.6},
		{Protocol: "http", Mode: "max", Variant: "meshd", Rep: 0, QPS: 11589},
		{Protocol: "http", Mode: "fixed", Variant: "meshd", Rep: 1, P99ms: 2.4},
		{Protocol: "http", Mode: "fixed", Variant: "direct", Rep: 1, P99ms: 4.32},
		{Protocol: "http", Mode: "max", Variant: "meshd", Rep: 1, QPS: 6268},
		{Protocol: "grpc", Mode: "max", Variant: "meshd", Rep: 0, QPS: 7000},
	}}
	rep.Summary = summarize(rep)
	want := []string{"http fixed direct: p99 (ms) 0.42, 4.32", "http max meshd: req/s 11589, 6268"}
	if !slices.Equal(rep.Summary.Disagree, want) {
		t.Fatalf("disagree = %q, want %q", rep.Summary.Disagree, want)
	}
	md := summaryMarkdown(rep)
	if !strings.Contains(md, "**Repetitions that disagree**") || !strings.Contains(md, "* http fixed direct: p99 (ms) 0.42, 4.32") {
		t.Fatalf("markdown lacks the disagreements:\n%s", md)
	}
	rep.Results = rep.Results[:3]
	if d := summarize(rep).Disagree; d != nil {
		t.Fatalf("one repetition: disagree = %q", d)
	}
}

// TestSummaryAB: with meshd-b rows the summary compares them to meshd's,
// protocol by protocol, B over A; without them there is no A/B table.
func TestSummaryAB(t *testing.T) {
	rep := report{
		Medians: []result{
			{Protocol: "http", Mode: "fixed", Variant: "meshd", P50ms: 0.4, P99ms: 2, PairCPUUsRq: 200},
			{Protocol: "http", Mode: "fixed", Variant: "meshd-b", P50ms: 0.3, P99ms: 1, PairCPUUsRq: 220},
			{Protocol: "http", Mode: "max", Variant: "meshd", QPS: 9000, PairCPUUsRq: 90},
			{Protocol: "http", Mode: "max", Variant: "meshd-b", QPS: 9900, PairCPUUsRq: 99},
			{Protocol: "grpc", Mode: "fixed", Variant: "meshd", PairCPUUsRq: 400},
			{Protocol: "grpc", Mode: "fixed", Variant: "meshd-b", PairCPUUsRq: 200},
		},
		Memory: map[string]memory{"sidecar-a": {RssAnonMB: 10}, "sidecar-b": {RssAnonMB: 12},
			"sidecar-xa (B)": {RssAnonMB: 9}, "sidecar-xb (B)": {RssAnonMB: 6}},
		BVariant: "meshd from bin, env GOMAXPROCS=2",
	}
	if s := summarize(report{Medians: rep.Medians[:1]}); len(s.AB) != 0 {
		t.Fatalf("A/B rows without meshd-b: %+v", s.AB)
	}
	s := summarize(rep)
	get := func(name string) comparison {
		for _, c := range s.AB {
			if c.Figure == name {
				return c
			}
		}
		t.Fatalf("no A/B row %q in %+v", name, s.AB)
		return comparison{}
	}
	near := func(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }
	if c := get("http max req/s"); !near(c.Ratio, 1.1) {
		t.Fatalf("http max row %+v", c)
	}
	if c := get("http p99 at 1000 req/s"); !near(c.Ratio, 0.5) {
		t.Fatalf("http p99 row %+v", c)
	}
	if c := get("grpc pair CPU µs per call at 1000 req/s"); !near(c.Ratio, 0.5) {
		t.Fatalf("grpc CPU row %+v", c)
	}
	if c := get("RssAnon per sidecar (HTTP pair)"); !near(c.A, 12) || !near(c.B, 9) {
		t.Fatalf("RssAnon row %+v", c)
	}
	rep.Summary = s
	md := summaryMarkdown(rep)
	for _, want := range []string{"meshd-b (meshd from bin, env GOMAXPROCS=2)", "| http max req/s (req/s) | 9000 | 9900 | 1.10 |"} {
		if !strings.Contains(md, want) {
			t.Fatalf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// TestFindDaprd: "off" and a missing daprd or dapr-sentry leave the daprd
// row out; both present are found by the flag's path.
func TestFindDaprd(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "daprd")
	if a, b := findDaprd(d); a != "" || b != "" {
		t.Fatalf("missing binaries found: %q %q", a, b)
	}
	if err := os.WriteFile(d, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if a, _ := findDaprd(d); a != "" {
		t.Fatalf("daprd without dapr-sentry found: %q", a)
	}
	if err := os.WriteFile(filepath.Join(dir, "dapr-sentry"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if a, b := findDaprd(d); a != d || b != filepath.Join(dir, "dapr-sentry") {
		t.Fatalf("got %q %q", a, b)
	}
	if a, b := findDaprd("off"); a != "" || b != "" {
		t.Fatalf("off: got %q %q", a, b)
	}
}
