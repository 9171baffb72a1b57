// Package meshlist_test proves `meshctl list --resolver`: real meshd
// sidecars registered in a real Consul agent (and named in a static
// resolver file) are listed by meshctl, every instance of every app, with
// the fields it cannot read from another host's sidecar named as unknown.
package meshlist_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/tests/harness"
)

type row struct {
	AppID      string    `json:"appId"`
	Namespace  string    `json:"namespace"`
	Where      string    `json:"where"`
	Unknown    []string  `json:"unknown"`
	Ready      bool      `json:"ready"`
	Internal   string    `json:"internalAddress"`
	PolicyMode string    `json:"policyMode"`
	CertExpiry time.Time `json:"certExpiry"`
}

func buildMeshctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "meshctl")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meshctl")
	cmd.Dir = harness.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build meshctl: %v\n%s", err, out)
	}
	return bin
}

func list(t *testing.T, meshctl string, args ...string) ([]row, string) {
	t.Helper()
	cmd := exec.Command(meshctl, append([]string{"list", "--window", "0"}, args...)...)
	cmd.Env = append(os.Environ(), "MESHD_HOME="+filepath.Join(t.TempDir(), "home"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("meshctl list %v: %v\n%s", args, err, out)
	}
	if !slices.Contains(args, "json") {
		return nil, string(out)
	}
	var rows []row
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("meshctl list %v: %v\n%s", args, err, out)
	}
	return rows, string(out)
}

// check: exactly the instances want ("app.ns address"), each from the
// resolver, none of the unknown fields invented.
func check(t *testing.T, what string, rows []row, want []string) {
	t.Helper()
	var got []string
	for _, r := range rows {
		got = append(got, r.AppID+"."+r.Namespace+" "+r.Internal)
		if r.Where != "resolver" || r.Ready || r.PolicyMode != "" || !r.CertExpiry.IsZero() ||
			!slices.Contains(r.Unknown, "ready") || !slices.Contains(r.Unknown, "certExpiry") || !slices.Contains(r.Unknown, "policyMode") {
			t.Errorf("%s: instance %+v: want it from the resolver, its unknown fields named and left empty", what, r)
		}
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("%s: instances %q, want %q", what, got, want)
	}
}

func TestListThroughResolvers(t *testing.T) {
	b := harness.Build(t)
	meshctl := buildMeshctl(t)
	agent := harness.StartConsul(t)
	s := harness.StartSentry(t, b, "")
	cfg := filepath.Join(t.TempDir(), "consul.yaml")
	// The sidecars' own config: they register themselves. meshctl reads the
	// same file and registers nothing.
	doc := fmt.Sprintf("client:\n  address: %s\nselfRegister: true\n", agent.Addr())
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, app := range []struct{ id, ns string }{{"inventory", "default"}, {"inventory", "default"}, {"billing", "shop"}} {
		echo := harness.StartEcho(t, b, app.id, 0)
		sc := harness.StartSidecar(t, b, s, harness.SidecarConfig{AppID: app.id, Namespace: app.ns, AppPort: echo.Port,
			Extra: []string{"--resolver", "consul", "--resolver-config", cfg}})
		want = append(want, app.id+"."+app.ns+" "+sc.Ports.InternalAddr())
	}

	// Consul: every instance of every app, found through the catalog.
	deadline := time.Now().Add(30 * time.Second)
	var rows []row
	for {
		rows, _ = list(t, meshctl, "--resolver", "consul", "--resolver-config", cfg, "-o", "json")
		if len(rows) >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	check(t, "consul", rows, want)
	_, table := list(t, meshctl, "--resolver", "consul", "--resolver-config", cfg)
	if !strings.Contains(table, "?: not known for the 3 instance(s) found through the resolver only") || !strings.Contains(table, "billing") {
		t.Errorf("consul table:\n%s", table)
	}
	// meshctl registered nothing: the catalog holds the three sidecars only.
	rows, _ = list(t, meshctl, "--resolver", "consul", "--resolver-config", cfg, "-o", "json")
	check(t, "consul, read again", rows, want)

	// A static file naming the same instances.
	static := filepath.Join(t.TempDir(), "apps.yaml")
	harness.WriteStatic(t, static,
		harness.StaticApp{AppID: "inventory", Addresses: []string{strings.Fields(want[0])[1], strings.Fields(want[1])[1]}},
		harness.StaticApp{AppID: "billing", Namespace: "shop", Addresses: []string{strings.Fields(want[2])[1]}})
	rows, _ = list(t, meshctl, "--resolver", "static", "--resolver-config", static, "-o", "json")
	check(t, "static", rows, want)
}
