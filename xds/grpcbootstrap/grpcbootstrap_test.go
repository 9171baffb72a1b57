package grpcbootstrap

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/xds/grpccreds"
)

func TestJSON(t *testing.T) {
	b, err := JSON(Config{ServerURI: "127.0.0.1:15010", NodeID: "client.default~host1", SVIDDir: "/run/svid"})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := `{
  "xds_servers": [
    {
      "server_uri": "127.0.0.1:15010",
      "channel_creds": [
        {
          "type": "tls",
          "config": {
            "certificate_file": "/run/svid/svid.pem",
            "private_key_file": "/run/svid/svid-key.pem",
            "ca_certificate_file": "/run/svid/bundle.pem",
            "spiffe_trust_bundle_map_file": "/run/svid/spiffe-bundle-map.json",
            "refresh_interval": "60s"
          }
        }
      ],
      "server_features": [
        "xds_v3"
      ]
    }
  ],
  "node": {
    "id": "client.default~host1"
  },
  "certificate_providers": {
    "meshd": {
      "plugin_name": "file_watcher",
      "config": {
        "certificate_file": "/run/svid/svid.pem",
        "private_key_file": "/run/svid/svid-key.pem",
        "ca_certificate_file": "/run/svid/bundle.pem",
        "refresh_interval": "60s"
      }
    }
  }
}
`
	if string(b) != want {
		t.Errorf("bootstrap:\n%s\nwant:\n%s", b, want)
	}
}

func TestOptions(t *testing.T) {
	cwd, _ := os.Getwd()
	b, err := JSON(Config{ServerURI: "[::1]:15010", NodeID: "n", SVIDDir: "rel", CertProviderInstance: "mine", RefreshInterval: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, w := range []string{`"mine": {`, `"refresh_interval": "1.5s"`, `"certificate_file": "` + filepath.Join(cwd, "rel", "svid.pem") + `"`, `"server_uri": "[::1]:15010"`} {
		if !strings.Contains(s, w) {
			t.Errorf("bootstrap lacks %s:\n%s", w, s)
		}
	}
}

func TestBadInput(t *testing.T) {
	ok := Config{ServerURI: "127.0.0.1:15010", NodeID: "n", SVIDDir: "/d"}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no server", func(c *Config) { c.ServerURI = "" }, "address is empty"},
		{"no port", func(c *Config) { c.ServerURI = "127.0.0.1" }, "missing port"},
		{"bad port", func(c *Config) { c.ServerURI = "127.0.0.1:99999" }, "bad port"},
		{"port name", func(c *Config) { c.ServerURI = "127.0.0.1:xds" }, "bad port"},
		{"no host", func(c *Config) { c.ServerURI = ":15010" }, "no host"},
		{"no node", func(c *Config) { c.NodeID = " " }, "node ID"},
		{"no dir", func(c *Config) { c.SVIDDir = "" }, "SVID directory"},
		{"tiny refresh", func(c *Config) { c.RefreshInterval = time.Nanosecond }, "refresh interval"},
		{"negative refresh", func(c *Config) { c.RefreshInterval = -time.Second }, "refresh interval"},
	} {
		cfg := ok
		c.mod(&cfg)
		_, err := JSON(cfg)
		if err == nil || !strings.HasPrefix(err.Error(), "grpcbootstrap: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a grpcbootstrap error with %q", c.name, err, c.want)
		}
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	cfg := Config{ServerURI: "127.0.0.1:15010", NodeID: "n", SVIDDir: "/d"}
	if err := WriteFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := JSON(cfg)
	if string(got) != string(want) {
		t.Error("file differs from JSON")
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "missing", "b.json"), cfg); err == nil || !strings.HasPrefix(err.Error(), "grpcbootstrap: ") {
		t.Errorf("write into a missing directory: %v", err)
	}
}

// TestControlPlaneID: with an ID, "meshd_spiffe" comes first, and its config
// is one xds/grpccreds's builder accepts (it refuses unknown fields).
func TestControlPlaneID(t *testing.T) {
	id, err := ControlPlaneID("cluster.local")
	if err != nil || id != "spiffe://cluster.local/ns/meshd-system/controlplane" {
		t.Fatalf("ControlPlaneID: %q %v", id, err)
	}
	if _, err := ControlPlaneID("Not A Domain"); err == nil || !strings.HasPrefix(err.Error(), "grpcbootstrap: ") {
		t.Errorf("bad trust domain: %v", err)
	}
	dir := t.TempDir()
	b, err := JSON(Config{ServerURI: "127.0.0.1:15010", NodeID: "n", SVIDDir: dir, ControlPlaneID: id})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		XDSServers []struct {
			ChannelCreds []struct {
				Type   string          `json:"type"`
				Config json.RawMessage `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	cc := got.XDSServers[0].ChannelCreds
	if len(cc) != 2 || cc[0].Type != grpccreds.Name || cc[1].Type != "tls" {
		t.Fatalf("channel_creds %+v, want meshd_spiffe then tls", cc)
	}
	_, cleanup, err := grpccreds.Builder{}.Build(cc[0].Config)
	if err != nil {
		t.Fatalf("grpccreds refuses the config: %v", err)
	}
	cleanup()
	if !strings.Contains(string(cc[0].Config), `"server_spiffe_id": "`+id+`"`) {
		t.Errorf("config %s lacks the ID", cc[0].Config)
	}

	if _, err := JSON(Config{ServerURI: "127.0.0.1:15010", NodeID: "n", SVIDDir: dir, ControlPlaneID: "controlplane"}); err == nil ||
		!strings.Contains(err.Error(), "control plane ID") {
		t.Errorf("bad control plane ID: %v", err)
	}
}
