package main

import "testing"

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
