// Package admin_test proves the sidecar's read-only admin endpoint against
// real processes: sentry, two meshd sidecars and an echo app on 127.0.0.1,
// real calls between them, then what /admin/v1/status and
// /admin/v1/decisions answer — and that every bad admin flag is refused.
package admin_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/sidecar/admin"
	"github.com/meshd/meshd/tests/harness"
)

const ordersRego = `package mesh.authz

allow if input.request.method == "GET"

deny contains "POST /admin is closed" if {
	input.request.method == "POST"
	startswith(input.request.path, "/admin")
}
`

func call(t *testing.T, method, url string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// bundleSums are the SHA-256 sums of the roots in a PEM bundle file.
func bundleSums(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var sums []string
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(blk.Bytes)
		sums = append(sums, hex.EncodeToString(s[:]))
	}
	slices.Sort(sums)
	return sums
}

func TestAdminEndpoint(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "")
	dir := t.TempDir()
	pol := filepath.Join(dir, "policies")
	if err := os.MkdirAll(filepath.Join(pol, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pol, "default", "orders.rego"), []byte(ordersRego), 0o644); err != nil {
		t.Fatal(err)
	}
	app := harness.StartEcho(t, b, "orders-app", harness.FreePort(t))
	res := filepath.Join(dir, "apps.yaml")
	ordersPorts := harness.NewSidecarPorts(t)
	harness.WriteStatic(t, res, harness.StaticApp{AppID: "orders", Addresses: []string{ordersPorts.InternalAddr()}})
	// orders: the admin endpoint on its metrics port (the default), five
	// recent decisions kept.
	harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "orders", AppPort: app.Port, Ports: ordersPorts,
		ResolverFile: res, Extra: []string{"--policy-dir", pol, "--policy-default", "deny", "--policy-recent-decisions", "5",
			"--enable-app-health-check", "--app-health-check-path", "/", "--app-health-probe-interval", "200ms"}})
	// frontend: the admin endpoint on a port of its own.
	feAdmin := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	_, feAdminPort, _ := strings.Cut(feAdmin, ":")
	fe := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: "frontend", ResolverFile: res,
		Extra: []string{"--admin-port", feAdminPort}})

	for i := range 5 {
		if st := call(t, "GET", fe.HTTPURL()+"/v1.0/invoke/orders/method/hello/"+strconv.Itoa(i)+"?n=1"); st != 200 {
			t.Fatalf("GET through the mesh: %d", st)
		}
	}
	for range 2 {
		if st := call(t, "POST", fe.HTTPURL()+"/v1.0/invoke/orders/method/admin/users"); st != 403 {
			t.Fatalf("POST /admin through the mesh: %d, want 403", st)
		}
	}
	ctx := context.Background()
	ordersAdmin := "127.0.0.1:" + strconv.Itoa(ordersPorts.Metrics)

	// orders: who it is, its certificate, bundle, policy and calls.
	var st admin.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if st, err = admin.GetStatus(ctx, ordersAdmin); err != nil {
			t.Fatal(err)
		}
		if st.App.Health == admin.HealthHealthy || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.AppID != "orders" || st.Namespace != "default" || st.SPIFFEID != "spiffe://cluster.local/ns/default/orders" ||
		!st.MTLS || !st.Ready || !strings.HasPrefix(st.Version, "meshd-") || st.Started.IsZero() {
		t.Errorf("orders identity: %+v", st)
	}
	if st.Addresses.Internal != ordersPorts.InternalAddr() || st.Addresses.HTTP != "127.0.0.1:"+strconv.Itoa(ordersPorts.HTTP) ||
		st.Addresses.Metrics != ordersAdmin || st.Addresses.Admin != ordersAdmin {
		t.Errorf("orders addresses: %+v", st.Addresses)
	}
	if st.App.Port != app.Port || st.App.Protocol != "http" || st.App.Health != admin.HealthHealthy {
		t.Errorf("orders app: %+v", st.App)
	}
	if c := st.Certificate; c == nil || time.Until(c.NotAfter) < 30*time.Minute || time.Until(c.NotAfter) > 2*time.Hour || c.Serial == "" {
		t.Errorf("orders certificate: %+v (want one expiring in about an hour)", c)
	}
	var sums []string
	for _, r := range st.TrustBundle {
		sums = append(sums, r.SHA256)
		if r.Subject == "" || r.NotAfter.Before(time.Now()) {
			t.Errorf("trust root %+v", r)
		}
	}
	slices.Sort(sums)
	if want := bundleSums(t, s.BundleFile()); !slices.Equal(sums, want) {
		t.Errorf("trust bundle roots %v, want sentry's %v", sums, want)
	}
	p := st.Policy
	if p.Mode != "enforce" || p.Default != "deny" || p.Dir != pol || !slices.Equal(p.Namespaces, []string{"default"}) || p.Files != 1 ||
		p.Allowed != 5 || p.Denied != 2 || p.Audited != 0 || p.RecentKept != 5 {
		t.Errorf("orders policy: %+v", p)
	}
	if st.Resolver != (admin.Resolver{Name: "static", Config: res}) {
		t.Errorf("orders resolver: %+v", st.Resolver)
	}
	if c := st.Calls; c == nil || c.In != 7 || c.ErrorsIn != 2 || c.Out != 0 {
		t.Errorf("orders calls: %+v, want 7 in, 2 of them errors", c)
	}

	// orders' recent decisions: the last five of seven, every allow too.
	d, err := admin.GetDecisions(ctx, ordersAdmin, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Last != 7 || d.Missed != 2 || d.Kept != 5 || len(d.Decisions) != 5 {
		t.Fatalf("decisions: last %d missed %d kept %d, %d listed; want 7, 2, 5, 5", d.Last, d.Missed, d.Kept, len(d.Decisions))
	}
	for i, dec := range d.Decisions {
		if dec.Seq != uint64(3+i) || dec.Source != "spiffe://cluster.local/ns/default/frontend" || dec.Destination != "orders.default" ||
			dec.Protocol != "http" || time.Since(dec.Time) > time.Minute || dec.Rule == "" {
			t.Errorf("decision %d: %+v", i, dec)
		}
		if i < 3 && (!dec.Allow || dec.Method != "GET" || dec.Path != "/hello/"+strconv.Itoa(2+i) || dec.Query != "n=1") {
			t.Errorf("decision %d: %+v, want the allowed GET /hello/%d?n=1", i, dec, 2+i)
		}
		if i >= 3 && (dec.Allow || dec.Method != "POST" || dec.Path != "/admin/users" || dec.Reason != "POST /admin is closed") {
			t.Errorf("decision %d: %+v, want the denied POST /admin/users", i, dec)
		}
	}
	if d, err = admin.GetDecisions(ctx, ordersAdmin, 7); err != nil || len(d.Decisions) != 0 {
		t.Errorf("decisions after the last: %+v, %v", d, err)
	}

	// The metric of the policy mode.
	resp, err := http.Get("http://" + ordersAdmin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `meshd_policy_mode{default="deny",mode="enforce"} 1`) {
		t.Errorf("no meshd_policy_mode in orders' metrics")
	}

	// frontend: no policy (mode off), its calls out, the admin endpoint on
	// its own port and not on the metrics port.
	fst, err := admin.GetStatus(ctx, feAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if fst.AppID != "frontend" || fst.Policy.Mode != admin.PolicyOff || fst.Policy.Default != "allow" || fst.Policy.RecentKept != 0 ||
		fst.App.Health != admin.HealthNoApp || fst.Addresses.Admin != feAdmin {
		t.Errorf("frontend status: %+v", fst)
	}
	if c := fst.Calls; c == nil || c.Out != 7 || c.ErrorsOut != 2 || c.In != 0 {
		t.Errorf("frontend calls: %+v, want 7 out, 2 of them errors", c)
	}
	feMetrics := "127.0.0.1:" + strconv.Itoa(fe.Ports.Metrics)
	if _, err := admin.GetStatus(ctx, feMetrics); err == nil {
		t.Error("frontend's admin endpoint is also on its metrics port")
	}

	// Read-only and loopback-only, on a real sidecar.
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if code := call(t, m, "http://"+ordersAdmin+admin.PathStatus); code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", m, admin.PathStatus, code)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+feAdmin+admin.PathDecisions, nil)
	req.Host = "attacker.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("DNS-rebound Host: %v %v, want 403", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestAdminFlagsRefused: a non-loopback admin address, a bad port or a
// negative ring size stop meshd at start, with one clear line.
func TestAdminFlagsRefused(t *testing.T) {
	b := harness.Build(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-port", "19999", "--admin-listen-address", "0.0.0.0"}, `--admin-listen-address "0.0.0.0": the admin endpoint binds loopback only`},
		{[]string{"--admin-listen-address", "10.1.2.3"}, `--admin-listen-address "10.1.2.3": the admin endpoint binds loopback only`},
		{[]string{"--admin-port", "-2"}, "--admin-port -2: want a port, 0 (on the metrics port) or -1 (off)"},
		{[]string{"--admin-port", "70000"}, "--admin-port 70000: want a port"},
		{[]string{"--policy-recent-decisions", "-1"}, "--policy-recent-decisions -1: want 0 (none) or more"},
	} {
		empty := filepath.Join(t.TempDir(), "apps.yaml")
		if err := os.WriteFile(empty, []byte("apps: []\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--app-id", "x", "--insecure", "--resolver", "static", "--resolver-config", empty,
			"--http-port", "0", "--grpc-port", "0", "--internal-port", "0", "--metrics-port", "0"}, tc.args...)
		p := harness.Start(t, "meshd", b.Meshd, args...)
		_ = p.Wait(20 * time.Second)
		if !p.Exited() {
			p.Kill()
			t.Errorf("%v: meshd started", tc.args)
			continue
		}
		if p.ExitCode() != 1 || !strings.Contains(p.Log(), tc.want) {
			t.Errorf("%v: exit %d, log:\n%s\nwant %q", tc.args, p.ExitCode(), p.Log(), tc.want)
		}
	}
}
