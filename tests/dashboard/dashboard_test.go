package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

const (
	envCaller = "DASHBOARD_CALLER" // the test binary as the frontend app
	envBinDir = "DASHBOARD_BIN_DIR"
	// envShot names a file to write the screenshot to (the README's).
	envShot  = "MESHD_DASHBOARD_SCREENSHOT"
	chromium = "/usr/bin/chromium"
)

func TestMain(m *testing.M) {
	if os.Getenv(envCaller) != "" {
		os.Exit(callLoop())
	}
	os.Exit(m.Run())
}

// callLoop calls orders every 100ms for 3 minutes (the test stops it).
func callLoop() int {
	url := "http://127.0.0.1:" + os.Getenv("DAPR_HTTP_PORT") + "/v1.0/invoke/orders/method/orders/"
	for i := 0; i < 1800; i++ {
		if resp, err := http.Get(url + strconv.Itoa(i)); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0
}

func binDir(t *testing.T) (string, []string) {
	if netnstest.InChild() {
		return os.Getenv(envBinDir), nil
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("the dashboard test needs Debian's chromium at %s: run tests/dashboard/install-chromium.sh (apt-get install -y chromium), or make chromium", chromium)
	}
	if ok, why := netnstest.CanCreate(); !ok {
		t.Skipf("the dashboard test runs mDNS and a browser only inside a network namespace it creates: %s", why)
	}
	// Built into this test's own temporary folder (removed when it ends),
	// not a shared one another process may clean up meanwhile.
	dir := t.TempDir()
	for _, pkg := range []string{"./cmd/meshd", "./cmd/sentry", "./cmd/meshctl", "./examples/apps/echo"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(pkg)), pkg)
		cmd.Dir = harness.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	env := []string{envBinDir + "=" + dir}
	if v := os.Getenv(envShot); v != "" {
		env = append(env, envShot+"="+v)
	}
	return dir, env
}

// start runs meshctl in the background; it is stopped with SIGINT (then
// killed) when the test ends.
func start(t *testing.T, bin, home string, env []string, args ...string) (*exec.Cmd, *harness.LogBuffer) {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Env = append(append(os.Environ(), "MESHD_HOME="+home), env...)
	out := &harness.LogBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = c.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = c.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("---- meshctl %s ----\n%s", strings.Join(args, " "), out)
		}
	})
	return c, out
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDashboardInChromium(t *testing.T) {
	dir, env := binDir(t)
	if !netnstest.Run(t, netnstest.Opts{Env: env}) {
		return
	}
	meshctl := filepath.Join(dir, "meshctl")
	home := filepath.Join(t.TempDir(), "home")
	if out, err := exec.Command("env", "MESHD_HOME="+home, meshctl, "init").CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	var loc struct{ PID int }
	if b, err := os.ReadFile(filepath.Join(home, "local.json")); err != nil || json.Unmarshal(b, &loc) != nil || loc.PID <= 0 {
		t.Fatalf("local.json: %v", err)
	}
	t.Cleanup(func() {
		_ = exec.Command("env", "MESHD_HOME="+home, meshctl, "uninstall").Run()
		// Whatever uninstall could not stop (sentry runs in its own session).
		if syscall.Kill(loc.PID, 0) == nil {
			_ = syscall.Kill(loc.PID, syscall.SIGKILL)
		}
	})

	pol := filepath.Join(t.TempDir(), "policies", "default")
	if err := os.MkdirAll(pol, 0o755); err != nil {
		t.Fatal(err)
	}
	rego := "package mesh.authz\n\nallow if true\n\ndeny contains \"admin routes are closed\" if startswith(input.request.path, \"/admin\")\n"
	if err := os.WriteFile(filepath.Join(pol, "admin.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	appPort := harness.FreePort(t)
	_, ordersOut := start(t, meshctl, home, nil, "run", "--app-id", "orders", "--app-port", strconv.Itoa(appPort),
		"--policy-dir", filepath.Dir(pol), "--", filepath.Join(dir, "echo"), "--port", strconv.Itoa(appPort))
	waitFor(t, "orders", 60*time.Second, func() bool { return strings.Contains(ordersOut.String(), "echo: listening") })
	self, _ := os.Executable()
	_, feOut := start(t, meshctl, home, []string{envCaller + "=1"}, "run", "--app-id", "frontend", "--", self)
	waitFor(t, "frontend", 60*time.Second, func() bool { return strings.Contains(feOut.String(), "meshctl: started ") })

	dashPort := harness.FreePort(t)
	dashURL := "http://127.0.0.1:" + strconv.Itoa(dashPort) + "/"
	start(t, meshctl, home, nil, "dashboard", "--address", "127.0.0.1:"+strconv.Itoa(dashPort))
	harness.WaitHTTP(t, dashURL, http.StatusOK, 30*time.Second)

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancelC := chromedp.NewContext(actx)
	defer cancelC()
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelT()

	// The edge frontend → orders, with a rate, in the table and the graph.
	edgeRate := chromedp.CSS(`#edges tr[data-edge="frontend→orders"] td.rate`)
	if err := chromedp.Do(ctx, chromedp.Navigate(dashURL), chromedp.WaitVisible(edgeRate)); err != nil {
		t.Fatalf("load the dashboard: %v", err)
	}
	var rate string
	waitFor(t, "a rate on the edge", 60*time.Second, func() bool {
		var err error
		if rate, err = chromedp.Run(ctx, chromedp.Text(edgeRate)); err != nil {
			t.Fatal(err)
		}
		r, _ := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
		return r > 0
	})
	graphEdge, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(`#topology g.edge[data-edge="frontend→orders"] text`)))
	if err != nil ||
		!strings.Contains(graphEdge, "/s · p99 ") {
		t.Errorf("graph edge label %q (%v)", graphEdge, err)
	}

	// A denial, triggered now, appears on the page without a reload.
	navCount := chromedp.Evaluate[int](`performance.getEntriesByType("navigation").length + (window.__marker === undefined ? (window.__marker = 1, 0) : 0)`)
	navs, err := chromedp.Run(ctx, navCount)
	if err != nil {
		t.Fatal(err)
	}
	var rec []struct {
		AppID    string `json:"appId"`
		HTTPAddr string `json:"httpAddress"`
	}
	out, err := exec.Command("env", "MESHD_HOME="+home, meshctl, "list", "-o", "json", "--window", "0").Output()
	if err != nil || json.Unmarshal(out, &rec) != nil {
		t.Fatalf("list: %v\n%s", err, out)
	}
	var feHTTP string
	for _, r := range rec {
		if r.AppID == "frontend" {
			feHTTP = r.HTTPAddr
		}
	}
	resp, err := http.Get("http://" + feHTTP + "/v1.0/invoke/orders/method/admin/users")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET /admin/users: %d, want 403", resp.StatusCode)
	}
	var denials string
	waitFor(t, "the denial on the page", 30*time.Second, func() bool {
		var err error
		if denials, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#denials tbody`))); err != nil {
			t.Fatal(err)
		}
		return strings.Contains(denials, "admin routes are closed") && strings.Contains(denials, "frontend.default") &&
			strings.Contains(denials, "GET orders.default /admin/users")
	})
	// The marker set on the page before the denial is still there: the
	// page was not loaded again.
	marker, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__marker || 0`))
	if err != nil || marker != 1 || navs != 1 {
		t.Errorf("the page was reloaded (marker %d, navigations %d, %v): it must update without a reload", marker, navs, err)
	}
	instances, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#instances tbody`)))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#roots`)))
	if err != nil {
		t.Fatal(err)
	}
	// orders: its policy enforced, its app unchecked (no health check);
	// frontend: no policy (off), no app.
	for _, w := range []string{"orders.default", "frontend.default", "ready", "unchecked", "no app", "enforce, default allow", "off, default allow"} {
		if !strings.Contains(instances, w) {
			t.Errorf("instances lack %q: %s", w, instances)
		}
	}
	if !strings.Contains(instances, "in ") || !strings.Contains(roots, "meshd root cluster.local") {
		t.Errorf("certificate expiry or trust roots missing: %q / %q", instances, roots)
	}

	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 1000 {
		t.Fatalf("screenshot: %v, %v", err, img)
	}
	path := filepath.Join(t.TempDir(), "dashboard.png")
	if v := os.Getenv(envShot); v != "" {
		path = v
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes, %dx%d); edge rate %s", path, len(shot), img.Bounds().Dx(), img.Bounds().Dy(), rate)

	// Policy preview on the page: a proposed set that closes orders flips
	// the allows orders' sidecar kept (every decision, from its admin
	// endpoint; its log samples one allow in 100).
	closed := filepath.Join(t.TempDir(), "closed", "default")
	if err := os.MkdirAll(closed, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(closed, "closed.rego"), []byte("package mesh.authz\n\ndeny contains \"closed for maintenance\" if true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(`#policyDir`), filepath.Dir(closed)),
		chromedp.Click(chromedp.CSS(`#preview button`))); err != nil {
		t.Fatal(err)
	}
	var flips, summary string
	waitFor(t, "the preview on the page", 30*time.Second, func() bool {
		var err error
		if flips, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#flips tbody`))); err != nil {
			t.Fatal(err)
		}
		return strings.Contains(flips, "ALLOW → DENY") && strings.Contains(flips, "closed for maintenance") &&
			strings.Contains(flips, "frontend.default")
	})
	if summary, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#previewSummary`))); err != nil || !strings.Contains(summary, "would flip") {
		t.Errorf("preview summary %q (%v)", summary, err)
	}
}
