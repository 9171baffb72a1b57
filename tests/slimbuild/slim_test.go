package slimbuild

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

// variants are the tag sets `make build MESHD_TAGS=...` offers, with the
// backends each leaves out.
var variants = []struct {
	tags    string
	omitted map[string]string // --resolver name -> the tag that left it out
}{
	{"meshd_nokube,meshd_noconsul,meshd_noxds", map[string]string{
		"kubernetes": "meshd_nokube", "consul": "meshd_noconsul", "xds": "meshd_noxds"}},
	{"meshd_nokube", map[string]string{"kubernetes": "meshd_nokube"}},
	{"meshd_noconsul", map[string]string{"consul": "meshd_noconsul"}},
	{"meshd_noxds", map[string]string{"xds": "meshd_noxds"}},
}

// buildMeshd builds cmd/meshd with tags as make build does (static, CGO
// off) into the harness's binary directory.
func buildMeshd(t *testing.T, tags string) string {
	t.Helper()
	dir, err := harness.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "meshd-"+strings.ReplaceAll(tags, ",", "-"))
	cmd := exec.Command("go", "build", "-tags", tags, "-o", out, "./cmd/meshd")
	cmd.Dir = harness.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %s: %v\n%s", tags, err, msg)
	}
	return out
}

func TestSlimBuilds(t *testing.T) {
	b := harness.Build(t)
	s := harness.StartSentry(t, b, t.TempDir())
	app := harness.StartEcho(t, b, "orders-1", 0)
	for _, v := range variants {
		t.Run(v.tags, func(t *testing.T) {
			vb := b
			vb.Meshd = buildMeshd(t, v.tags)
			callee, caller := harness.NewSidecarPorts(t), harness.NewSidecarPorts(t)
			resolver := filepath.Join(t.TempDir(), "static.yaml")
			harness.WriteStatic(t, resolver, harness.StaticApp{AppID: "orders", Addresses: []string{callee.InternalAddr()}})
			harness.StartSidecar(t, vb, s, harness.SidecarConfig{AppID: "orders", AppPort: app.Port, Ports: callee, ResolverFile: resolver})
			front := harness.StartSidecar(t, vb, s, harness.SidecarConfig{AppID: "frontend", Ports: caller, ResolverFile: resolver})

			// A call through the pair: mTLS, the caller's identity at the app.
			resp, err := http.Post(front.HTTPURL()+"/v1.0/invoke/orders/method/hello", "text/plain", strings.NewReader("hi"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("invoke through the %s pair: %d %s", v.tags, resp.StatusCode, body)
			}
			var echo struct {
				Name        string `json:"name"`
				Path        string `json:"path"`
				CallerAppID string `json:"callerAppId"`
				BodyLength  int64  `json:"bodyLength"`
			}
			if err := json.Unmarshal(body, &echo); err != nil {
				t.Fatalf("echo's answer %q: %v", body, err)
			}
			if echo.Name != "orders-1" || echo.Path != "/hello" || echo.CallerAppID != "frontend" || echo.BodyLength != 2 {
				t.Errorf("echo saw %+v, want orders-1, /hello, caller frontend, 2 bytes", echo)
			}

			// A backend the build left out: the start fails at once, the
			// tag named, and the process exits 1.
			for name, tag := range v.omitted {
				p := harness.SidecarPorts{HTTP: harness.FreePort(t), GRPC: harness.FreePort(t),
					Internal: harness.FreePort(t), Metrics: harness.FreePort(t)}
				sc := harness.StartSidecar(t, vb, s, harness.SidecarConfig{AppID: "left-out", Ports: p, NoWait: true,
					Extra: []string{"--resolver", name}})
				_ = sc.Wait(20 * time.Second)
				if !sc.Exited() {
					t.Fatalf("--resolver %s on a %s build: still running, want a failed start", name, v.tags)
				}
				if code := sc.ExitCode(); code != 1 {
					t.Errorf("--resolver %s on a %s build: exit code %d, want 1", name, v.tags, code)
				}
				want := "--resolver " + name + ": this meshd was built without it (build tag " + tag + ")"
				if log := sc.Log(); !strings.Contains(log, want) || strings.Contains(log, "panic") {
					t.Errorf("--resolver %s on a %s build: log does not say %q (or panicked):\n%s", name, v.tags, want, log)
				}
			}
		})
	}
}
