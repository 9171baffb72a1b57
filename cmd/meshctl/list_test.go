package main

import (
	"encoding/json"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"fmt"
	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/decisionlog"
	"github.com/meshd/meshd/sidecar/admin"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeSidecar serves what list and the dashboard read from a sidecar: its
// health endpoints, its admin endpoint (the real handler, with a fixed
// status and a ring holding one allow and one denial) and a metrics scrape
// (the names and labels meshd exports). A sidecar that is not ready does
// not serve its admin endpoint yet, as meshd.
func fakeSidecar(t *testing.T, app string, ready bool) *httptest.Server {
	mux := http.NewServeMux()
	if ready {
		ring := decisionlog.NewRing(16)
		web := certs.Identity{TrustDomain: spiffeid.RequireTrustDomainFromString("cluster.local"), Namespace: "default", AppID: "web"}
		ring.Add(&decisionlog.Record{Time: 1, Caller: web, Destination: discovery.Target{AppID: app, Namespace: "default"},
			Protocol: "http", Method: "GET", Path: "/x", Query: "q=1", Allow: true, Rule: "default/p.rego:3"})
		ring.Add(&decisionlog.Record{Time: 2, Caller: web, Destination: discovery.Target{AppID: app, Namespace: "default"},
			Protocol: "http", Method: "GET", Path: "/admin", Reason: "admin is closed", Rule: "default/p.rego:5"})
		mux.Handle(admin.Prefix, admin.Handler(func() admin.Status {
			return admin.Status{AppID: app, Namespace: "default", SPIFFEID: "spiffe://cluster.local/ns/default/" + app, MTLS: true,
				Ready: true, App: admin.App{Port: 3000, Protocol: "http", Health: admin.HealthHealthy},
				Certificate: &admin.Certificate{NotAfter: time.Unix(1.9e9, 0).UTC()},
				Policy:      admin.Policy{Mode: "enforce", Default: "deny", Denied: 3, Allowed: 10, RecentKept: 16},
				Calls:       &admin.Calls{Out: 50, ErrorsOut: 3, In: 3, ErrorsIn: 3}}
		}, ring))
	}
	mux.HandleFunc("/v1.0/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"errorCode":"ERR_NOT_READY","message":"sidecar is not ready: waiting for its identity from sentry at 127.0.0.1:1"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/v1.0/healthz/app", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `# TYPE meshd_cert_expiry_timestamp_seconds gauge
meshd_cert_expiry_timestamp_seconds 1.9e+09
# TYPE meshd_requests_sent_total counter
meshd_requests_sent_total{dst_app_id="orders",dst_namespace="default",protocol="http",src_app_id="web",status="200"} 40
meshd_requests_sent_total{dst_app_id="orders",dst_namespace="default",protocol="http",src_app_id="web",status="503"} 2
meshd_requests_sent_total{dst_app_id="pay",dst_namespace="default",protocol="grpc",src_app_id="web",status="0"} 7
meshd_requests_sent_total{dst_app_id="pay",dst_namespace="default",protocol="grpc",src_app_id="web",status="14"} 1
# TYPE meshd_requests_received_total counter
meshd_requests_received_total{dst_app_id="web",protocol="http",src_app_id="admin",status="403"} 3
# TYPE meshd_policy_decisions_total counter
meshd_policy_decisions_total{decision="allow"} 10
meshd_policy_decisions_total{decision="deny"} 3
`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// listHome writes a home with one run record per fake sidecar (this test's
// PID stands for meshctl's, so the record counts as live) and one record of
// a run whose meshctl is gone.
func listHome(t *testing.T) string {
	h := filepath.Join(t.TempDir(), "home")
	t.Setenv("MESHD_HOME", h)
	if err := os.MkdirAll(filepath.Join(h, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, app := range []string{"web", "slow"} {
		srv := fakeSidecar(t, app, app == "web")
		_, ps, _ := net.SplitHostPort(srv.Listener.Addr().String())
		port, _ := strconv.Atoi(ps)
		rec := runRecord{AppID: app, Namespace: "default", PID: os.Getpid(), MeshdPID: 1000 + i, AppPID: 2000 + i,
			HTTPPort: port, GRPCPort: 50001, InternalPort: 50002, MetricsPort: port, AppPort: 3000,
			Command: []string{"./" + app}, Started: started}
		b, _ := json.Marshal(rec)
		if err := os.WriteFile(filepath.Join(h, "run", app+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gone, _ := json.Marshal(runRecord{AppID: "gone", PID: 1 << 22})
	if err := os.WriteFile(filepath.Join(h, "run", "gone.json"), gone, 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

var (
	portRE = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	pidRE  = regexp.MustCompile(`(meshctlPid"?: )\d+`)
)

// TestOutputGolden compares list and status --output json|yaml with
// testdata/output/ (addresses and the home folder masked); -update rewrites.
func TestOutputGolden(t *testing.T) {
	h := listHome(t)
	apps := writeApps(t)
	for _, args := range [][]string{
		{"list", "--window", "0", "-o", "json"},
		{"list", "--window", "0", "-o", "yaml"},
		{"status", "--window", "0", "-o", "json"},
		{"status", "--window", "0", "-o", "yaml"},
		{"list", "--window", "0", "--resolver", "static", "--resolver-config", apps, "-o", "json"},
		{"list", "--window", "0", "--resolver", "static", "--resolver-config", apps, "-o", "yaml"},
	} {
		code, out := meshctl(t, args...)
		if code != 0 {
			t.Errorf("%v: exit %d\n%s", args, code, out)
			continue
		}
		out = strings.ReplaceAll(portRE.ReplaceAllString(out, "127.0.0.1:PORT"), h, "HOME")
		out = pidRE.ReplaceAllString(out, "${1}PID")
		name := args[0]
		if slices.Contains(args, "--resolver") {
			name += "-resolver"
		}
		file := filepath.Join("testdata", "output", name+"."+args[len(args)-1])
		if *update {
			_ = os.MkdirAll(filepath.Dir(file), 0o755)
			if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Errorf("%v: %v (-update writes it)", args, err)
			continue
		}
		if out != string(want) {
			t.Errorf("%v differs from %s:\n--- got ---\n%s--- want ---\n%s", args, file, out, want)
		}
	}
}

func TestListTable(t *testing.T) {
	listHome(t)
	code, out := meshctl(t, "list", "--window", "0")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, w := range []string{"APP ", "READY", "CERT EXPIRES", "POLICY", "OUT/S", "web ", "slow ", "6/53 (11.3%)", "enforce, default deny", "healthy",
		"slow (meshd pid 1001): sidecar is not ready: waiting for its identity from sentry at 127.0.0.1:1"} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "gone") {
		t.Errorf("a run whose meshctl is gone is listed:\n%s", out)
	}
	if code, out := meshctl(t, "list", "-o", "xml"); code != 1 || !strings.Contains(out, `meshctl: --output "xml": want table, json or yaml`) {
		t.Errorf("-o xml: exit %d\n%s", code, out)
	}
	t.Setenv("MESHD_HOME", t.TempDir())
	if code, out := meshctl(t, "list"); code != 0 || !strings.Contains(out, "no sidecars of `meshctl run` on this machine") {
		t.Errorf("empty: exit %d\n%s", code, out)
	}
	if code, out := meshctl(t, "list", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("empty json: exit %d\n%s", code, out)
	}
}

// writeApps writes a static resolver file that lists web twice — the local
// run of listHome (127.0.0.1:50002) and an instance on another host — and
// orders once, on another host.
func writeApps(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "apps.yaml")
	doc := "apps:\n  - appId: web\n    addresses: [\"127.0.0.1:50002\", \"192.0.2.8:50002\"]\n  - appId: orders\n    namespace: shop\n    addresses: [\"192.0.2.7:50002\"]\n"
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestListResolver: with a resolver, the instances it lists that are not
// runs of this machine are shown with what is not known of them; the local
// run it lists too is shown once, read through its admin endpoint.
func TestListResolver(t *testing.T) {
	listHome(t)
	apps := writeApps(t)
	code, out := meshctl(t, "list", "--window", "0", "--resolver", "static", "--resolver-config", apps, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var got []sidecarStatus
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, s := range got {
		rows = append(rows, s.AppID+"."+s.Namespace+" "+s.Where+" "+s.Internal)
		if s.Where == whereResolver && (!slices.Equal(s.Unknown, remoteUnknown) || s.Ready || s.PolicyMode != "" || s.AppHealth != "") {
			t.Errorf("remote instance %+v", s)
		}
	}
	want := []string{"orders.shop resolver 192.0.2.7:50002", "slow.default local 127.0.0.1:50002",
		"web.default local 127.0.0.1:50002", "web.default resolver 192.0.2.8:50002"}
	if !slices.Equal(rows, want) {
		t.Errorf("rows %q, want %q", rows, want)
	}
	code, out = meshctl(t, "list", "--window", "0", "--resolver", "static", "--resolver-config", apps)
	if code != 0 || !strings.Contains(out, "192.0.2.8:50002") || !strings.Contains(out, "resolver  ?") ||
		!strings.Contains(out, "?: not known for the 2 instance(s) found through the resolver only") {
		t.Errorf("table: exit %d\n%s", code, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--resolver", "nosuch"}, `meshctl: --resolver "nosuch": meshctl lists the apps of [`},
		{[]string{"--resolver", "static", "--resolver-config", filepath.Join(t.TempDir(), "missing.yaml")}, "meshctl: --resolver static: "},
		{[]string{"--resolver", "static", "--resolver-config", "testdata/decisions.log"}, "meshctl: --resolver static: "},
	} {
		code, out := meshctl(t, append([]string{"list", "--window", "0"}, tc.args...)...)
		if code != 1 || !strings.Contains(out, tc.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%v: exit %d\n%s\nwant one line with %q", tc.args, code, out, tc.want)
		}
	}
}
