package main

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	prev := []bucket{{0.001, 10}, {0.01, 10}, {0.1, 10}, {inf, 10}}
	// 100 new observations: 90 under 1ms, 9 in (1ms,10ms], 1 in (10ms,100ms].
	cur := []bucket{{0.001, 100}, {0.01, 109}, {0.1, 110}, {inf, 110}}
	if got := quantile(cur, prev, 0.5); math.Abs(got-0.001*50/90) > 1e-9 {
		t.Errorf("p50 = %v", got)
	}
	if got := quantile(cur, prev, 0.99); math.Abs(got-0.01) > 1e-9 {
		t.Errorf("p99 = %v, want 0.01 (the 99th of 100 is the last in (1ms,10ms])", got)
	}
	if got := quantile(cur, cur, 0.99); got != -1 {
		t.Errorf("no new observations: %v, want -1", got)
	}
	if got := quantile(nil, nil, 0.99); got != -1 {
		t.Errorf("no histogram: %v", got)
	}
	// Everything above the last finite bound: the bound is the answer.
	if got := quantile([]bucket{{0.1, 0}, {inf, 5}}, nil, 0.99); got != 0.1 {
		t.Errorf("+Inf bucket: %v", got)
	}
}

// TestDashboardState: the page and /api/state of a dashboard over the
// fake sidecars of listHome, two samples apart.
func TestDashboardState(t *testing.T) {
	h := listHome(t)
	d := newDashboard(h)
	d.once(context.Background())
	d.once(context.Background())
	srv := httptest.NewServer(d.handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	var st dashState
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Sidecars) != 2 || len(st.History) != 2 || st.Sentry.Running {
		t.Errorf("state: %d sidecars, %d history points, sentry %+v", len(st.Sidecars), len(st.History), st.Sentry)
	}
	// Both fake sidecars report web→orders and web→pay; the totals add up.
	want := map[string]float64{"web→orders": 84, "web→pay": 16}
	for _, e := range st.Edges {
		if want[e.From+"→"+e.To] != e.Total || e.Rate != 0 {
			t.Errorf("edge %+v", e)
		}
		delete(want, e.From+"→"+e.To)
	}
	if len(want) != 0 {
		t.Errorf("edges missing: %v (got %+v)", want, st.Edges)
	}

	// Denials come from the sidecars' recent decisions, each read once
	// (three samples, one denial in web's ring); slow serves none yet.
	if len(st.Denials) != 1 || st.Denials[0].App != "web" || st.Denials[0].Reason != "admin is closed" || st.Denials[0].Path != "/admin" ||
		st.Denials[0].Destination != "web.default" || st.Denials[0].Source != "spiffe://cluster.local/ns/default/web" {
		t.Errorf("denials: %+v", st.Denials)
	}
	var web sidecarStatus
	for _, s := range st.Sidecars {
		if s.AppID == "web" {
			web = s
		}
	}
	if web.PolicyMode != "enforce" || web.PolicyDefault != "deny" || web.AppHealth != "healthy" || web.Where != "local" {
		t.Errorf("web in the state: %+v", web)
	}

	for _, p := range []string{"/", "/app.js", "/style.css"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) < 500 {
			t.Errorf("%s: %d, %d bytes", p, resp.StatusCode, len(b))
		}
		if strings.Contains(string(b), "http://") && p != "/app.js" || strings.Contains(string(b), "https://") {
			t.Errorf("%s refers to the network", p)
		}
	}
}

func TestDashboardLoopbackOnly(t *testing.T) {
	t.Setenv("MESHD_HOME", t.TempDir())
	for _, a := range []string{"0.0.0.0:7070", "192.0.2.1:7070", ":7070", "example.com:80"} {
		code, out := meshctl(t, "dashboard", "--address", a)
		if code != 1 || !strings.Contains(out, "loopback only") {
			t.Errorf("--address %s: exit %d\n%s", a, code, out)
		}
	}
	if code, out := meshctl(t, "dashboard", "--address", "nonsense"); code != 1 || !strings.Contains(out, `meshctl: --address "nonsense"`) {
		t.Errorf("--address nonsense: exit %d\n%s", code, out)
	}
}

func TestDashboardPreview(t *testing.T) {
	h := listHome(t)
	srv := httptest.NewServer(newDashboard(h).handler())
	defer srv.Close()
	post := func(host, ctype, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/preview", strings.NewReader(body))
		req.Host = host
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, _ := post("evil.example:7070", "application/json", `{"policyDir":"testdata/proposed"}`); code != http.StatusForbidden {
		t.Errorf("a foreign Host: %d", code)
	}
	if code, _ := post("127.0.0.1:7070", "text/plain", `{"policyDir":"testdata/proposed"}`); code != http.StatusForbidden {
		t.Errorf("a simple (cross-site-able) request: %d", code)
	}
	if code, body := post("127.0.0.1:7070", "application/json", `{}`); code != http.StatusUnprocessableEntity || !strings.Contains(body, "give policyDir") {
		t.Errorf("no dir: %d %s", code, body)
	}
	if code, body := post("localhost:7070", "application/json", `{"policyDir":"testdata/broken"}`); code != http.StatusUnprocessableEntity || !strings.Contains(body, "default/orders.rego:5") {
		t.Errorf("broken: %d %s", code, body)
	}
	code, body := post("127.0.0.1:7070", "application/json", `{"policyDir":"testdata/proposed"}`)
	var res previewResult
	if err := json.Unmarshal([]byte(body), &res); code != http.StatusOK || err != nil || res.Decisions != 2 || len(res.Flips) != 1 || res.From != "sidecars" || res.Flips[0].Path != "/x" ||
		res.Flips[0].From != "ALLOW" || res.Flips[0].To != "DENY" || res.Flips[0].Source != "spiffe://cluster.local/ns/default/web" {
		t.Errorf("preview: %d %s", code, body)
	}
}
