package localmesh

import (
	"bytes"
	"encoding/json"
	"fmt"
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

	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

// envCaller makes the test binary the frontend app: it calls orders through
// its sidecar (DAPR_HTTP_PORT), prints the answer and exits with
// callerExit on a 200.
const (
	envCaller   = "LOCALMESH_CALLER"
	envBinDir   = "LOCALMESH_BIN_DIR"
	envViaProxy = "LOCALMESH_VIA_PROXY"
	callerExit  = 7
)

func TestMain(m *testing.M) {
	if os.Getenv(envCaller) != "" {
		os.Exit(call())
	}
	os.Exit(m.Run())
}

func call() int {
	url := "http://127.0.0.1:" + os.Getenv("DAPR_HTTP_PORT") + "/v1.0/invoke/orders/method/hello"
	if os.Getenv(envViaProxy) != "" {
		// --transparent: the app names the app as the host; net/http's
		// default transport goes through HTTP_PROXY, the sidecar.
		if os.Getenv("HTTP_PROXY") == "" || os.Getenv("http_proxy") != os.Getenv("HTTP_PROXY") {
			fmt.Println("no HTTP_PROXY/http_proxy in the environment")
			return 4
		}
		url = "http://orders/hello"
	}
	var last string
	for range 50 { // the first Pick waits for mDNS; allow orders' sidecar to announce
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				fmt.Printf("answer: %s\n", body)
				return callerExit
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("call failed: %s\n", last)
	return 3
}

// binDir builds meshd, sentry, echo and meshctl into one folder in the
// parent (the child has no route to the module proxy).
func binDir(t *testing.T) (string, []string) {
	if netnstest.InChild() {
		return os.Getenv(envBinDir), nil
	}
	if ok, why := netnstest.CanCreate(); !ok {
		t.Skipf("meshctl run uses mDNS, which multicasts; this test runs only inside a network namespace it creates: %s", why)
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
	return dir, []string{envBinDir + "=" + dir}
}

type meshctl struct {
	bin, home string
}

func (m meshctl) cmd(env []string, args ...string) *exec.Cmd {
	c := exec.Command(m.bin, args...)
	c.Env = append(append(os.Environ(), "MESHD_HOME="+m.home), env...)
	return c
}

func (m meshctl) run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	c := m.cmd(nil, args...)
	out, err := c.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, string(out)
}

// procsWith lists the PIDs of processes whose command line mentions s.
func procsWith(s string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) {
			if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
				if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
					continue // ended, not yet reaped by its parent
				}
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestInitRunCallInterrupt(t *testing.T) {
	dir, env := binDir(t)
	if !netnstest.Run(t, netnstest.Opts{Env: env}) {
		return
	}
	m := meshctl{bin: filepath.Join(dir, "meshctl"), home: filepath.Join(t.TempDir(), "meshd-home")}
	t.Cleanup(func() {
		for _, pid := range procsWith(m.home) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	// Before init: run says what to do.
	if code, out := m.run(t, "run", "--app-id", "orders", "--", "true"); code != 1 ||
		!strings.Contains(out, "meshctl: no local sentry is running: start it with `meshctl init`") {
		t.Fatalf("run before init: exit %d\n%s", code, out)
	}

	code, out := m.run(t, "init")
	if code != 0 || !strings.Contains(out, "sentry ready; data in "+m.home) {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	code, out = m.run(t, "init")
	if code != 0 || !strings.Contains(out, "sentry already running") {
		t.Fatalf("init again: exit %d\n%s", code, out)
	}
	var loc struct{ PID int }
	if b, err := os.ReadFile(filepath.Join(m.home, "local.json")); err != nil || json.Unmarshal(b, &loc) != nil || loc.PID == 0 {
		t.Fatalf("local.json: %v %s", err, b)
	}

	// orders: the echo app with its sidecar, under a policy that allows
	// all (policy preview below replays every decision its sidecar keeps).
	current := filepath.Join(t.TempDir(), "current")
	if err := os.MkdirAll(filepath.Join(current, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(current, "default", "open.rego"), []byte("package mesh.authz\n\nallow if true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	appPort := harness.FreePort(t)
	ordersOut := &harness.LogBuffer{}
	orders := m.cmd(nil, "run", "--app-id", "orders", "--app-port", strconv.Itoa(appPort), "--policy-dir", current, "--",
		filepath.Join(dir, "echo"), "--port", strconv.Itoa(appPort))
	orders.Stdout, orders.Stderr = ordersOut, ordersOut
	if err := orders.Start(); err != nil {
		t.Fatal(err)
	}
	ordersDone := make(chan error, 1)
	go func() { ordersDone <- orders.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(ordersOut.String(), "orders app   | ") || !strings.Contains(ordersOut.String(), "echo: listening") {
		select {
		case err := <-ordersDone:
			t.Fatalf("meshctl run orders exited: %v\n%s", err, ordersOut)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("orders never started:\n%s", ordersOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, w := range []string{"meshctl: starting meshd for orders", "✓", "orders meshd | ", "meshctl: started "} {
		if !strings.Contains(ordersOut.String(), w) {
			t.Errorf("orders' output lacks %q:\n%s", w, ordersOut)
		}
	}

	// frontend: this test binary as the app; one call to orders by mDNS.
	self, _ := os.Executable()
	fe := m.cmd([]string{envCaller + "=1"}, "run", "--app-id", "frontend", "--", self)
	feOut, err := fe.CombinedOutput()
	if fe.ProcessState.ExitCode() != callerExit {
		t.Fatalf("meshctl run frontend: exit %d (%v), want the app's %d\n%s\n--- orders ---\n%s", fe.ProcessState.ExitCode(), err, callerExit, feOut, ordersOut)
	}
	for _, w := range []string{`"callerAppId":"frontend"`, `"callerNamespace":"default"`, `"calleeAppId":"orders"`, `"path":"/hello"`,
		"frontend app   | answer: ", "meshctl: app frontend exited with code 7"} {
		if !strings.Contains(string(feOut), w) {
			t.Errorf("frontend's output lacks %q:\n%s", w, feOut)
		}
	}

	// Again with --transparent (the app calls http://orders/ through
	// HTTP_PROXY) and --log-dir (the logs go to files, not the terminal).
	logDir := filepath.Join(t.TempDir(), "logs")
	fe = m.cmd([]string{envCaller + "=1", envViaProxy + "=1"}, "run", "--app-id", "frontend", "--transparent", "--log-dir", logDir, "--", self)
	feOut, err = fe.CombinedOutput()
	if fe.ProcessState.ExitCode() != callerExit || strings.Contains(string(feOut), "frontend app   | ") {
		t.Errorf("meshctl run --transparent --log-dir: exit %d (%v)\n%s", fe.ProcessState.ExitCode(), err, feOut)
	}
	appLog, _ := os.ReadFile(filepath.Join(logDir, "frontend.app.log"))
	meshdLog, _ := os.ReadFile(filepath.Join(logDir, "frontend.meshd.log"))
	if !strings.Contains(string(appLog), `"callerAppId":"frontend"`) || !strings.Contains(string(appLog), `"host":"orders"`) && !strings.Contains(string(appLog), `"path":"/hello"`) {
		t.Errorf("frontend.app.log:\n%s", appLog)
	}
	if !strings.Contains(string(meshdLog), "meshd sidecar started") {
		t.Errorf("frontend.meshd.log:\n%s", meshdLog)
	}

	// list: orders' sidecar is ready, its certificate valid, the call
	// counted; frontend's run has ended and is not listed.
	code, out = m.run(t, "list", "-o", "json")
	var list []struct {
		AppID         string    `json:"appId"`
		Where         string    `json:"where"`
		Ready         bool      `json:"ready"`
		AppHealth     string    `json:"appHealth"`
		SPIFFEID      string    `json:"spiffeId"`
		PolicyMode    string    `json:"policyMode"`
		PolicyDefault string    `json:"policyDefault"`
		CertExpiry    time.Time `json:"certExpiry"`
		CallsIn       float64   `json:"callsIn"`
		MeshdPID      int       `json:"meshdPid"`
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil {
		t.Fatalf("list -o json: exit %d, %v\n%s", code, err, out)
	}
	if len(list) != 1 || list[0].AppID != "orders" || list[0].Where != "local" || !list[0].Ready || list[0].AppHealth != "unchecked" ||
		list[0].SPIFFEID != "spiffe://cluster.local/ns/default/orders" || list[0].PolicyMode != "enforce" || list[0].PolicyDefault != "allow" ||
		list[0].CallsIn < 1 || time.Until(list[0].CertExpiry) < 30*time.Minute {
		t.Errorf("list: %+v", list)
	}
	// list through the resolver the sidecars use (mDNS, in this test's
	// network namespace): orders' sidecar is found there too, and shown
	// once, as the local run it is.
	code, out = m.run(t, "list", "--window", "0", "--resolver", "mdns", "-o", "json")
	list = nil
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 || list[0].AppID != "orders" ||
		list[0].Where != "local" || list[0].PolicyMode != "enforce" {
		t.Errorf("list --resolver mdns: exit %d, %v\n%s", code, err, out)
	}
	if code, out = m.run(t, "status"); code != 0 || !strings.Contains(out, "sentry: running, pid "+strconv.Itoa(loc.PID)) ||
		!strings.Contains(out, "trust root: ") || !strings.Contains(out, "orders ") {
		t.Errorf("status: exit %d\n%s", code, out)
	}

	// policy preview replays every recent decision of orders' sidecar (from
	// its admin endpoint: both allows, though its log samples one in 100)
	// against a proposed set that allows nothing.
	proposed := filepath.Join(t.TempDir(), "proposed")
	if err := os.MkdirAll(filepath.Join(proposed, "default"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proposed, "default", "closed.rego"), []byte("package mesh.authz\n\ndeny contains \"closed for maintenance\" if true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = m.run(t, "policy", "preview", "--policy-dir", proposed)
	if code != 0 || !strings.Contains(out, "replayed 2 recent decisions of 1 sidecar(s) (orders (meshd pid "+strconv.Itoa(rec0MeshdPID(t, m.home))+"))") ||
		!strings.Contains(out, "ALLOW → DENY  2×  spiffe://cluster.local/ns/default/frontend → orders.default  HTTP GET /hello") ||
		!strings.Contains(out, "reason: closed for maintenance") {
		t.Errorf("policy preview of the live log: exit %d\n%s", code, out)
	}

	// SIGINT to orders' meshctl: the app, then the sidecar, then meshctl
	// stop; nothing is left.
	recs, _ := filepath.Glob(filepath.Join(m.home, "run", "orders-*.json"))
	if len(recs) != 1 {
		t.Fatalf("run records: %v", recs)
	}
	var rec struct{ PID, MeshdPID, AppPID int }
	if b, err := os.ReadFile(recs[0]); err != nil || json.Unmarshal(b, &rec) != nil || rec.MeshdPID == 0 || rec.AppPID == 0 {
		t.Fatalf("run record %s: %v", recs[0], err)
	}
	if rec.PID != orders.Process.Pid {
		t.Errorf("record's pid %d, meshctl's %d", rec.PID, orders.Process.Pid)
	}
	if err := orders.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ordersDone:
		if err != nil { // echo ends 0 on SIGTERM
			t.Errorf("meshctl run orders after SIGINT: %v\n%s", err, ordersOut)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("meshctl run orders did not stop within 30s of SIGINT\n%s", ordersOut)
	}
	if !strings.Contains(ordersOut.String(), "meshctl: interrupt: stopping orders, then its sidecar") {
		t.Errorf("no word of the interrupt:\n%s", ordersOut)
	}
	for _, pid := range []int{rec.MeshdPID, rec.AppPID} {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("pid %d (sidecar or app) still runs after meshctl exited", pid)
		}
	}
	if left := procsWith(filepath.Join(m.home, "run")); len(left) != 0 {
		t.Errorf("processes of meshctl run left behind: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(m.home, "run", "*")); len(left) != 0 {
		t.Errorf("run files left behind: %v", left)
	}

	code, out = m.run(t, "uninstall")
	if code != 0 || !strings.Contains(out, "removed "+m.home) {
		t.Errorf("uninstall: exit %d\n%s", code, out)
	}
	if syscall.Kill(loc.PID, 0) == nil && len(procsWith(m.home)) != 0 {
		t.Errorf("sentry (pid %d) still runs after uninstall", loc.PID)
	}
	if _, err := os.Stat(m.home); !os.IsNotExist(err) {
		t.Errorf("%s still there after uninstall", m.home)
	}
	if code, out = m.run(t, "uninstall"); code != 0 || !strings.Contains(out, "nothing to uninstall") {
		t.Errorf("uninstall again: exit %d\n%s", code, out)
	}
}

// rec0MeshdPID is the meshd PID in the one run record of orders.
func rec0MeshdPID(t *testing.T, home string) int {
	t.Helper()
	recs, _ := filepath.Glob(filepath.Join(home, "run", "orders-*.json"))
	var rec struct{ MeshdPID int }
	if len(recs) != 1 {
		t.Fatalf("run records of orders: %v", recs)
	}
	if b, err := os.ReadFile(recs[0]); err != nil || json.Unmarshal(b, &rec) != nil {
		t.Fatalf("run record %s: %v", recs[0], err)
	}
	return rec.MeshdPID
}
