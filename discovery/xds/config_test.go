package xds_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery/xds"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		doc, want string
	}{
		{"address: 127.0.0.1:15010\n", ""},
		{"address: cp.meshd-system:15010\ncontrolPlaneID: spiffe://cluster.local/ns/meshd-system/controlplane\nstartTimeout: 3s\n", ""},
		{"", "empty"},
		{"controlPlaneID: spiffe://x/y\n", "no address"},
		{"address: 127.0.0.1\n", "host:port"},
		{"address: :15010\n", "host:port"},
		{"address: 127.0.0.1:0\n", "bad port"},
		{"address: 127.0.0.1:70000\n", "bad port"},
		{"address: 127.0.0.1:1\ncontrolPlaneID: not-a-spiffe-id\n", "controlPlaneID"},
		{"address: 127.0.0.1:1\nstartTimeout: -1s\n", "negative"},
		{"address: 127.0.0.1:1\nstartTimeout: soon\n", "not a duration"},
		{"address: 127.0.0.1:1\nextra: 1\n", "extra"},
		{"address: [a, b]\n", "cannot unmarshal"},
	} {
		cfg, err := xds.Parse([]byte(c.doc))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.doc, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: err = %v; want %q", c.doc, err, c.want)
		case c.want == "" && cfg.Address == "":
			t.Errorf("%q: no address", c.doc)
		}
	}
	cfg, err := xds.Parse([]byte("address: h:1\nstartTimeout: 3s\n"))
	if err != nil || time.Duration(cfg.StartTimeout) != 3*time.Second {
		t.Errorf("startTimeout: %v %v", cfg, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("address: 127.0.0.1:15010\ncontrolPlaneID: spiffe://cluster.local/ns/meshd-system/controlplane\nstartTimeout: 3s\n"))
	f.Add([]byte("address: [::1]:1\n"))
	f.Add([]byte("{address: 1}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := xds.Parse(data)
		if err == nil && (cfg == nil || cfg.Address == "" || cfg.StartTimeout < 0) {
			t.Fatalf("accepted %q as %+v", data, cfg)
		}
	})
}

func TestTarget(t *testing.T) {
	for name, ok := range map[string]bool{
		"orders.default": true, "a.b": true, "orders": false, ".default": false, "orders.": false,
		"orders.default.x": false, "or ders.default": false, "": false,
	} {
		tg, err := xds.Target(name)
		if (err == nil) != ok {
			t.Errorf("Target(%q) = %v, %v", name, tg, err)
		}
		if ok && tg.String() != name {
			t.Errorf("Target(%q).String() = %q", name, tg)
		}
	}
}
