package main

import (
	"fmt"
	"math"
	"strings"
)

// The summary is the table: each figure for the daprd pair, the
// nginx pair and the meshd pair of this run, and meshd's ratio to each;
// then gRPC against meshd's HTTP path, and the policy-and-tracing rows
// against the same path load without them. Every figure is a
// median over the repetitions; memory is the larger of the pair's two
// sidecars' maxima over the run.

type figure struct {
	Figure string   `json:"figure"`
	Unit   string   `json:"unit"`
	Daprd  *float64 `json:"daprd_pair,omitempty"`
	Nginx  *float64 `json:"nginx_pair,omitempty"`
	Meshd  *float64 `json:"meshd_pair,omitempty"`
	// Ratios meshd / peer.
	VsNginx *float64 `json:"meshd_over_nginx,omitempty"`
	VsDaprd *float64 `json:"meshd_over_daprd,omitempty"`
}

// comparison is one figure of two meshd rows of the same run: B / A.
type comparison struct {
	Figure string   `json:"figure"`
	Unit   string   `json:"unit"`
	A      *float64 `json:"a,omitempty"`
	B      *float64 `json:"b,omitempty"`
	Ratio  *float64 `json:"b_over_a,omitempty"`
}

type summary struct {
	Peers []figure `json:"peers"`
	// GRPC: A is meshd's HTTP path, B its gRPC unary path.
	GRPC []comparison `json:"grpc_vs_http"`
	// Policy: A is meshd-paths, B meshd-policy (50-rule policy at the
	// callee, tracing sampled at 1 % on both sidecars), both under the
	// path load.
	Policy []comparison `json:"policy_tracing_vs_none"`
	// AB: A is meshd, B meshd-b (-b-env, -b-bin), window beside window.
	AB []comparison `json:"meshd_b_vs_meshd,omitempty"`
	// Disagree names the windows whose repetitions disagree so much that
	// one of them was disturbed (see disagreements).
	Disagree []string `json:"repetitions_disagree,omitempty"`
}

// Repetitions of a window disagree when one's p99 at the fixed rate is
// more than disagreeP99 times another's, or one's max rate more than
// disagreeQPS times another's: on the bench VM a noise spell (another
// guest, the host) does that, and with two repetitions the median is the
// mean, so the spell decides the row.
const (
	disagreeP99 = 3.0
	disagreeQPS = 1.5
)

// disagreements lists the windows (protocol, mode, variant) whose
// repetitions disagree, with each repetition's figure, in the order of
// rep.Results.
func disagreements(results []result) []string {
	order, groups := byWindow(results)
	var out []string
	for _, k := range order {
		vs := make([]float64, len(groups[k]))
		for i, r := range groups[k] {
			vs[i] = r.P99ms
			if k.m == "max" {
				vs[i] = r.QPS
			}
		}
		lo, hi := vs[0], vs[0]
		for _, v := range vs[1:] {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		limit, what := disagreeP99, "p99 (ms)"
		if k.m == "max" {
			limit, what = disagreeQPS, "req/s"
		}
		if len(vs) < 2 || lo <= 0 || hi/lo <= limit {
			continue
		}
		parts := make([]string, len(vs))
		for i, v := range vs {
			if k.m == "max" {
				parts[i] = fmt.Sprintf("%.0f", v)
			} else {
				parts[i] = fmt.Sprintf("%.3g", v)
			}
		}
		out = append(out, fmt.Sprintf("%s %s %s: %s %s", k.p, k.m, k.v, what, strings.Join(parts, ", ")))
	}
	return out
}

func ptr(v float64) *float64 { return &v }

func ratio(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	return ptr(*a / *b)
}

func summarize(rep report) *summary {
	med := func(proto, mode, variant string) *result {
		for i := range rep.Medians {
			r := &rep.Medians[i]
			if r.Protocol == proto && r.Mode == mode && r.Variant == variant {
				return r
			}
		}
		return nil
	}
	direct := med("http", "fixed", "direct")
	addedFn := func(variant string, f func(r *result) float64) *float64 {
		r := med("http", "fixed", variant)
		if r == nil || direct == nil {
			return nil
		}
		return ptr(f(r) - f(direct))
	}
	maxFn := func(proto, variant string, f func(r *result) float64) *float64 {
		r := med(proto, "max", variant)
		if r == nil {
			return nil
		}
		return ptr(f(r))
	}
	fixedFn := func(proto, variant string, f func(r *result) float64) *float64 {
		r := med(proto, "fixed", variant)
		if r == nil {
			return nil
		}
		return ptr(f(r))
	}
	memFn := func(a, b string, f func(memory) float64) *float64 {
		ma, okA := rep.Memory[a]
		mb, okB := rep.Memory[b]
		if !okA || !okB {
			return nil
		}
		return ptr(math.Max(f(ma), f(mb)))
	}
	p50 := func(r *result) float64 { return r.P50ms }
	p99 := func(r *result) float64 { return r.P99ms }
	p999 := func(r *result) float64 { return r.P999ms }
	qps := func(r *result) float64 { return r.QPS }
	cpu := func(r *result) float64 { return r.PairCPUUsRq }
	busy := func(r *result) float64 { return r.MachineBusy }
	anon := func(m memory) float64 { return m.RssAnonMB }
	rss := func(m memory) float64 { return m.VmRSSMB }

	s := &summary{Disagree: disagreements(rep.Results)}
	add := func(name, unit string, d, n, m *float64) {
		s.Peers = append(s.Peers, figure{Figure: name, Unit: unit, Daprd: d, Nginx: n, Meshd: m, VsNginx: ratio(m, n), VsDaprd: ratio(m, d)})
	}
	add("added p50 at 1000 req/s", "ms", addedFn("daprd", p50), addedFn("nginx", p50), addedFn("meshd", p50))
	add("added p99", "ms", addedFn("daprd", p99), addedFn("nginx", p99), addedFn("meshd", p99))
	add("added p99.9", "ms", addedFn("daprd", p999), addedFn("nginx", p999), addedFn("meshd", p999))
	add("max req/s", "req/s", maxFn("http", "daprd", qps), maxFn("http", "nginx", qps), maxFn("http", "meshd", qps))
	add("pair CPU µs per call at max rate", "µs", maxFn("http", "daprd", cpu), maxFn("http", "nginx", cpu), maxFn("http", "meshd", cpu))
	add("machine busy at max rate", "%", maxFn("http", "daprd", busy), maxFn("http", "nginx", busy), maxFn("http", "meshd", busy))
	add("RssAnon per sidecar", "MB", memFn(daprdA, daprdB, anon), memFn(nginxA, nginxB, anon), memFn("sidecar-a", "sidecar-b", anon))
	add("VmRSS per sidecar", "MB", memFn(daprdA, daprdB, rss), memFn(nginxA, nginxB, rss), memFn("sidecar-a", "sidecar-b", rss))
	var sd, sm *float64
	if st := rep.Startup; st != nil {
		if len(st.DaprdMs) > 0 {
			sd = ptr(st.DaprdMedianMs)
		}
		if len(st.MeshdMs) > 0 {
			sm = ptr(st.MeshdMedianMs)
		}
	}
	add("start → ready (with a cert)", "ms", sd, nil, sm)

	cmp := func(list *[]comparison, name, unit string, a, b *float64) {
		*list = append(*list, comparison{Figure: name, Unit: unit, A: a, B: b, Ratio: ratio(b, a)})
	}
	grpcAdded := func(f func(r *result) float64) (h, g *float64) {
		hd, hm := med("http", "fixed", "direct"), med("http", "fixed", "meshd")
		gd, gm := med("grpc", "fixed", "direct"), med("grpc", "fixed", "meshd")
		if hd != nil && hm != nil {
			h = ptr(f(hm) - f(hd))
		}
		if gd != nil && gm != nil {
			g = ptr(f(gm) - f(gd))
		}
		return h, g
	}
	h, g := grpcAdded(p50)
	cmp(&s.GRPC, "added p50 at 1000 req/s", "ms", h, g)
	h, g = grpcAdded(p99)
	cmp(&s.GRPC, "added p99", "ms", h, g)
	cmp(&s.GRPC, "pair CPU µs per call at 1000 req/s", "µs", fixedFn("http", "meshd", cpu), fixedFn("grpc", "meshd", cpu))
	cmp(&s.GRPC, "pair CPU µs per call at max rate", "µs", maxFn("http", "meshd", cpu), maxFn("grpc", "meshd", cpu))
	cmp(&s.GRPC, "max req/s", "req/s", maxFn("http", "meshd", qps), maxFn("grpc", "meshd", qps))

	cmp(&s.Policy, "p50 at 1000 req/s", "ms", fixedFn("http", "meshd-paths", p50), fixedFn("http", "meshd-policy", p50))
	cmp(&s.Policy, "p99 at 1000 req/s", "ms", fixedFn("http", "meshd-paths", p99), fixedFn("http", "meshd-policy", p99))
	cmp(&s.Policy, "p99.9 at 1000 req/s", "ms", fixedFn("http", "meshd-paths", p999), fixedFn("http", "meshd-policy", p999))
	cmp(&s.Policy, "pair CPU µs per call at 1000 req/s", "µs", fixedFn("http", "meshd-paths", cpu), fixedFn("http", "meshd-policy", cpu))
	cmp(&s.Policy, "max req/s", "req/s", maxFn("http", "meshd-paths", qps), maxFn("http", "meshd-policy", qps))
	cmp(&s.Policy, "pair CPU µs per call at max rate", "µs", maxFn("http", "meshd-paths", cpu), maxFn("http", "meshd-policy", cpu))

	if med("http", "fixed", "meshd-b") != nil || med("grpc", "fixed", "meshd-b") != nil {
		for _, proto := range []string{"http", "grpc"} {
			if med(proto, "fixed", "meshd-b") == nil {
				continue
			}
			cmp(&s.AB, proto+" p50 at 1000 req/s", "ms", fixedFn(proto, "meshd", p50), fixedFn(proto, "meshd-b", p50))
			cmp(&s.AB, proto+" p99 at 1000 req/s", "ms", fixedFn(proto, "meshd", p99), fixedFn(proto, "meshd-b", p99))
			cmp(&s.AB, proto+" p99.9 at 1000 req/s", "ms", fixedFn(proto, "meshd", p999), fixedFn(proto, "meshd-b", p999))
			cmp(&s.AB, proto+" pair CPU µs per call at 1000 req/s", "µs", fixedFn(proto, "meshd", cpu), fixedFn(proto, "meshd-b", cpu))
			cmp(&s.AB, proto+" max req/s", "req/s", maxFn(proto, "meshd", qps), maxFn(proto, "meshd-b", qps))
			cmp(&s.AB, proto+" pair CPU µs per call at max rate", "µs", maxFn(proto, "meshd", cpu), maxFn(proto, "meshd-b", cpu))
		}
		cmp(&s.AB, "RssAnon per sidecar (HTTP pair)", "MB", memFn("sidecar-a", "sidecar-b", anon), memFn("sidecar-xa (B)", "sidecar-xb (B)", anon))
		cmp(&s.AB, "VmRSS per sidecar (HTTP pair)", "MB", memFn("sidecar-a", "sidecar-b", rss), memFn("sidecar-xa (B)", "sidecar-xb (B)", rss))
	}
	return s
}

func fmtFig(v *float64, unit string) string {
	if v == nil {
		return "–"
	}
	switch {
	case unit == "req/s" || unit == "%" || math.Abs(*v) >= 100:
		return fmt.Sprintf("%.0f", *v)
	case math.Abs(*v) >= 10:
		return fmt.Sprintf("%.1f", *v)
	case unit == "ms":
		return fmt.Sprintf("%.3f", *v)
	}
	return fmt.Sprintf("%.2f", *v)
}

func fmtRatio(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f", *v)
}

// summaryMarkdown is the summary as Markdown, the same tables make bench
// prints and writes beside the JSON.
func summaryMarkdown(rep report) string {
	s := rep.Summary
	var b strings.Builder
	fmt.Fprintf(&b, "## Summary, %s (%s; %d CPUs)\n\n", rep.Date, rep.Shape, rep.CPUs)
	b.WriteString("| figure | daprd pair | nginx pair | meshd pair | meshd / nginx | meshd / daprd |\n|---|---|---|---|---|---|\n")
	for _, f := range s.Peers {
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s | %s | %s |\n", f.Figure, f.Unit,
			fmtFig(f.Daprd, f.Unit), fmtFig(f.Nginx, f.Unit), fmtFig(f.Meshd, f.Unit), fmtRatio(f.VsNginx), fmtRatio(f.VsDaprd))
	}
	b.WriteString("\ngRPC unary through the meshd pair against its HTTP path (fortio):\n\n")
	b.WriteString("| figure | meshd HTTP | meshd gRPC | gRPC / HTTP |\n|---|---|---|---|\n")
	for _, c := range s.GRPC {
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s |\n", c.Figure, c.Unit, fmtFig(c.A, c.Unit), fmtFig(c.B, c.Unit), fmtRatio(c.Ratio))
	}
	spread := "a path never used before in the run for every call, so no decision came from the decision cache"
	if rep.Paths > 0 {
		spread = fmt.Sprintf("%d distinct paths, round and round", rep.Paths)
	}
	fmt.Fprintf(&b, "\n50-rule policy at the callee and tracing sampled at 1 %% on both sidecars, against the same load\n"+
		"without them. Both rows come from pairbench's own load generator, /items/{id} with %s;\n"+
		"read them against each other, not against the fortio rows:\n\n", spread)
	b.WriteString("| figure | meshd, path load | + policy + tracing 1 % | ratio |\n|---|---|---|---|\n")
	for _, c := range s.Policy {
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s |\n", c.Figure, c.Unit, fmtFig(c.A, c.Unit), fmtFig(c.B, c.Unit), fmtRatio(c.Ratio))
	}
	if len(s.AB) > 0 {
		fmt.Fprintf(&b, "\nA/B: meshd against meshd-b (%s), window beside window:\n\n", rep.BVariant)
		b.WriteString("| figure | meshd | meshd-b | B / A |\n|---|---|---|---|\n")
		for _, c := range s.AB {
			fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s |\n", c.Figure, c.Unit, fmtFig(c.A, c.Unit), fmtFig(c.B, c.Unit), fmtRatio(c.Ratio))
		}
	}
	if len(s.Disagree) > 0 {
		fmt.Fprintf(&b, "\n**Repetitions that disagree** (p99 more than %gx apart at the fixed rate, or req/s more than %gx at the max rate: a noise spell in one window, which decides a median of two; rows built on these windows need more -reps):\n\n", disagreeP99, disagreeQPS)
		for _, d := range s.Disagree {
			fmt.Fprintf(&b, "* %s\n", d)
		}
	}
	fmt.Fprintf(&b, "\nOTLP export requests received from the tracing sidecars: %d\n", rep.TraceExports)
	if st := rep.Startup; st != nil {
		fmt.Fprintf(&b, "Start → ready, every run (ms): meshd %s; daprd %s\n", fmtDiffsPlain(st.MeshdMs), fmtDiffsPlain(st.DaprdMs))
	}
	return b.String()
}

func fmtDiffsPlain(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(parts, ", ")
}
