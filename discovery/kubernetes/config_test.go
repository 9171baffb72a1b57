package kubernetes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestParseDefaults(t *testing.T) {
	for _, doc := range []string{"", "---\n", "# nothing\n", "null\n"} {
		cfg, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if cfg.Kubeconfig != "" || cfg.ClusterWide || len(cfg.Namespaces) != 0 ||
			cfg.AppIDLabel != DefaultAppIDLabel || cfg.PortName != DefaultPortName ||
			time.Duration(cfg.Resync) != DefaultResync || cfg.MaxWatches != DefaultMaxWatches ||
			time.Duration(cfg.StartTimeout) != DefaultStartTimeout {
			t.Fatalf("%q: defaults %+v", doc, cfg)
		}
	}
}

func TestParseFull(t *testing.T) {
	cfg, err := Parse([]byte(`
kubeconfig: /etc/meshd/kubeconfig
context: prod
namespaces: [shop, billing]
appIDLabel: dapr.io/app-id
portName: dapr-internal
resync: 30s
maxWatches: 8
startTimeout: 3s
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubeconfig != "/etc/meshd/kubeconfig" || cfg.Context != "prod" || strings.Join(cfg.Namespaces, ",") != "shop,billing" ||
		cfg.AppIDLabel != DaprAppIDLabel || cfg.PortName != "dapr-internal" || time.Duration(cfg.Resync) != 30*time.Second ||
		cfg.MaxWatches != 8 || time.Duration(cfg.StartTimeout) != 3*time.Second {
		t.Fatalf("%+v", cfg)
	}
	cfg, err = Parse([]byte("clusterWide: true\n"))
	if err != nil || !cfg.ClusterWide {
		t.Fatalf("clusterWide: %+v %v", cfg, err)
	}
}

// TestParseRejects: every bad input is refused with a message naming the
// field.
func TestParseRejects(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"kubeconfg: /x\n", "field kubeconfg not found"},
		{"kubeconfig: /a\nkubeconfig: /b\n", "already defined"},
		{"namespaces: [a]\n---\nnamespaces: [b]\n", "more than one YAML document"},
		{"namespaces: shop\n", "cannot unmarshal"},
		{"namespaces: [Shop]\n", `namespaces[0] "Shop" is not a Kubernetes namespace name`},
		{"namespaces: [shop_x]\n", "is not a Kubernetes namespace name"},
		{"namespaces: [\"\"]\n", "is not a Kubernetes namespace name"},
		{"namespaces: [" + strings.Repeat("a", 64) + "]\n", "is not a Kubernetes namespace name"},
		{"namespaces: [shop, shop]\n", `namespaces[1] "shop" listed twice`},
		{"namespaces: [a, b]\nmaxWatches: 2\n", "must leave room for the sidecar's own namespace"},
		{"namespaces: [a]\nclusterWide: true\n", "namespaces and clusterWide"},
		{"clusterWide: maybe\n", "cannot unmarshal"},
		{"appIDLabel: \"bad label\"\n", "appIDLabel \"bad label\" is not a Kubernetes label key"},
		{"appIDLabel: /app\n", "is not a Kubernetes label key"},
		{"appIDLabel: " + strings.Repeat("a", 64) + "\n", "is not a Kubernetes label key"},
		{"portName: MESHD\n", `portName "MESHD" is not a Kubernetes port name`},
		{"portName: meshd-internal-port\n", "is not a Kubernetes port name"}, // longer than 15
		{"portName: \"1234\"\n", "is not a Kubernetes port name"},
		{"resync: 10\n", "is not a duration"},
		{"resync: -1s\n", "negative duration"},
		{"resync: 500ms\n", "resync 500ms: at least 1s"},
		{"resync: [1s]\n", "want a duration"},
		{"startTimeout: 10ms\n", "startTimeout 10ms: at least 1s"},
		{"maxWatches: -1\n", "maxWatches -1: want 1 to 1024"},
		{"maxWatches: 5000\n", "maxWatches 5000: want 1 to 1024"},
		{"kubeconfig: \"a\\0b\"\n", "NUL"},
		{"[1, 2]\n", "cannot unmarshal"},
	} {
		_, err := Parse([]byte(c.doc))
		if err == nil {
			t.Errorf("%q: accepted", c.doc)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "kubernetes: config: ") {
			t.Errorf("%q: error %q, want it to contain %q", c.doc, err, c.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "kubernetes: ") || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("maxWatches: 0x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "(file "+bad+")") {
		t.Fatalf("bad file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

// FuzzParse: Parse never panics, and what it accepts is a configuration
// the resolver can run: every name valid for Kubernetes, every bound in
// range, and parsing is stable.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "kubeconfig: /k\nnamespaces: [a, b]\n", "clusterWide: true\nappIDLabel: dapr.io/app-id\nportName: dapr-internal\n",
		"resync: 1s\nmaxWatches: 1\nstartTimeout: 1s\n", "namespaces: [a, a]\n", "portName: X\n", "---\n---\n", "resync: 1e9s\n",
		"namespaces: [shop]\nmaxWatches: 1\n", "appIDLabel: example.com/x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kubernetes: config: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		if len(validation.IsQualifiedName(cfg.AppIDLabel)) > 0 || len(validation.IsValidPortName(cfg.PortName)) > 0 {
			t.Fatalf("accepted bad names: %+v", cfg)
		}
		if cfg.MaxWatches < 1 || cfg.MaxWatches > MaxMaxWatches || len(cfg.Namespaces) >= cfg.MaxWatches ||
			cfg.Resync < Duration(time.Second) || cfg.StartTimeout < Duration(time.Second) {
			t.Fatalf("accepted bad bounds: %+v", cfg)
		}
		if cfg.ClusterWide && len(cfg.Namespaces) > 0 {
			t.Fatalf("accepted namespaces with clusterWide: %+v", cfg)
		}
		seen := map[string]bool{}
		for _, ns := range cfg.Namespaces {
			if len(validation.IsDNS1123Label(ns)) > 0 || seen[ns] {
				t.Fatalf("accepted namespace %q: %+v", ns, cfg)
			}
			seen[ns] = true
		}
	})
}
