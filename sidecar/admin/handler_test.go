package admin

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/decisionlog"
)

func serve(t *testing.T, ring *decisionlog.Ring) string {
	t.Helper()
	srv := httptest.NewServer(Handler(func() Status { return Status{AppID: "orders", Namespace: "default"} }, ring))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func do(t *testing.T, method, url, host string) (int, http.Header, errorBody) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e errorBody
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, resp.Header, e
}

func TestHandler(t *testing.T) {
	ring := decisionlog.NewRing(2)
	for _, p := range []string{"/a", "/b", "/c"} {
		ring.Add(&decisionlog.Record{Destination: discovery.Target{AppID: "orders", Namespace: "default"}, Protocol: "http",
			Method: "GET", Path: p, Allow: p != "/c", Reason: map[bool]string{true: "closed"}[p == "/c"], Rule: "r"})
	}
	addr := serve(t, ring)
	ctx := context.Background()
	st, err := GetStatus(ctx, addr)
	if err != nil || st.AppID != "orders" || st.Namespace != "default" {
		t.Fatalf("status %+v, %v", st, err)
	}
	d, err := GetDecisions(ctx, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Last != 3 || d.Missed != 1 || d.Kept != 2 || len(d.Decisions) != 2 || d.Decisions[0].Path != "/b" ||
		d.Decisions[1].Seq != 3 || d.Decisions[1].Allow || d.Decisions[1].Reason != "closed" || d.Decisions[1].Destination != "orders.default" {
		t.Fatalf("decisions %+v", d)
	}
	if d, err = GetDecisions(ctx, addr, 3); err != nil || len(d.Decisions) != 0 || d.Last != 3 {
		t.Fatalf("decisions after the last: %+v, %v", d, err)
	}

	for _, tc := range []struct {
		method, path, host string
		status             int
		msg                string
	}{
		{"POST", PathStatus, "", 405, "read-only"},
		{"PUT", PathDecisions, "", 405, "read-only"},
		{"DELETE", PathDecisions, "", 405, "read-only"},
		{"GET", PathStatus, "evil.example:80", 403, "loopback host only"},
		{"GET", PathStatus, "10.0.0.1", 403, "loopback host only"},
		{"GET", "/admin/v1/nothing", "", 404, "no such admin path"},
		{"GET", PathDecisions + "?after=-1", "", 400, "want the number"},
		{"GET", PathDecisions + "?after=x", "", 400, "want the number"},
		{"GET", PathDecisions + "?after=99999999999999999999999", "", 400, "want the number"},
	} {
		code, h, e := do(t, tc.method, "http://"+addr+tc.path, tc.host)
		if code != tc.status || e.ErrorCode != ErrCode || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s %s (Host %q): %d %+v, want %d with %q", tc.method, tc.path, tc.host, code, e, tc.status, tc.msg)
		}
		if code == 405 && h.Get("Allow") != "GET, HEAD" {
			t.Errorf("405 without Allow: %v", h)
		}
	}
	if code, _, _ := do(t, "HEAD", "http://"+addr+PathStatus, "localhost:1"); code != 200 {
		t.Errorf("HEAD with Host localhost: %d", code)
	}
	// The client reports the endpoint's own message.
	if _, err := GetDecisions(ctx, "127.0.0.1:1", 0); err == nil || !strings.Contains(err.Error(), "admin:") {
		t.Errorf("no endpoint: %v", err)
	}
}

func TestNoRing(t *testing.T) {
	d, err := GetDecisions(context.Background(), serve(t, nil), 0)
	if err != nil || d.Kept != 0 || d.Decisions == nil || len(d.Decisions) != 0 {
		t.Fatalf("%+v, %v", d, err)
	}
}

func TestLoopbackHost(t *testing.T) {
	for h, want := range map[string]bool{
		"127.0.0.1": true, "127.0.0.1:9090": true, "127.1.2.3:1": true, "[::1]:80": true, "::1": true,
		"localhost": true, "LOCALHOST:8080": true, "0.0.0.0": false, "": false, "[::]:1": false,
		"10.0.0.1:80": false, "localhost.evil.example": false, "127.0.0.1.nip.io": false, "::ffff:127.0.0.1": true,
	} {
		if got := LoopbackHost(h); got != want {
			t.Errorf("LoopbackHost(%q) = %v, want %v", h, got, want)
		}
	}
}

// FuzzLoopbackHost: whatever the Host header, LoopbackHost does not panic,
// and what it accepts is localhost or a loopback IP.
func FuzzLoopbackHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "[::1]", "localhost", "evil:1", "[", "::", "127.0.0.1%eth0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !LoopbackHost(s) {
			return
		}
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = s
		}
		host = strings.Trim(host, "[]")
		if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			t.Fatalf("accepted %q", s)
		}
	})
}
