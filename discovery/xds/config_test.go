package xds_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/xds"
)

// TestFromFlags: --control-plane-address and --control-plane-namespace
// make the configuration of a sidecar without a --resolver-config file.
func TestFromFlags(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, c := range []struct {
		addr, ns, wantID, wantErr string
	}{
		{"meshd-controlplane.meshd-system.svc:15010", "", "spiffe://example.org/ns/meshd-system/controlplane", ""},
		{"10.0.0.11:15010", "mesh", "spiffe://example.org/ns/mesh/controlplane", ""},
		{"[::1]:15010", "meshd-system", "spiffe://example.org/ns/meshd-system/controlplane", ""},
		{"", "", "", "--control-plane-address: no address"},
		{"cp", "", "", "--control-plane-address: address \"cp\": want host:port"},
		{"cp:0", "", "", "bad port"},
		{"cp:15010", "Bad Namespace", "", "--control-plane-namespace \"Bad Namespace\""},
		{"cp:15010", "a/b", "", "--control-plane-namespace"},
	} {
		cfg, err := xds.FromFlags(c.addr, c.ns, td)
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("FromFlags(%q, %q): err %v, want %q", c.addr, c.ns, err, c.wantErr)
		case c.wantErr == "" && err != nil:
			t.Errorf("FromFlags(%q, %q): %v", c.addr, c.ns, err)
		case c.wantErr == "" && (cfg.Address != c.addr || cfg.ControlPlaneID != c.wantID):
			t.Errorf("FromFlags(%q, %q) = %+v, want address %s, ID %s", c.addr, c.ns, cfg, c.addr, c.wantID)
		}
	}
}

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

// TestBuildWhichControlPlane: a sidecar on --resolver xds names its control
// plane one way, the file or the flags; neither or both is refused before
// anything connects.
func TestBuildWhichControlPlane(t *testing.T) {
	for _, c := range []struct {
		opts discovery.BuildOptions
		want string
	}{
		{discovery.BuildOptions{}, "no control plane given (want --control-plane-address host:port, or --resolver-config"},
		{discovery.BuildOptions{ConfigFile: "x.yaml", ControlPlaneAddress: "cp:15010"}, "both --resolver-config and --control-plane-address"},
		{discovery.BuildOptions{ConfigFile: "x.yaml", ControlPlaneNamespace: "mesh"}, "give one"},
		{discovery.BuildOptions{ControlPlaneAddress: "cp:15010"}, "not usable with --insecure"},
	} {
		r, err := xds.Builder{}.Build(context.Background(), c.opts, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Build(%+v): %v, %v; want an error with %q", c.opts, r, err, c.want)
		}
	}
}
