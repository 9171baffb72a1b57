package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestXDSBootstrap(t *testing.T) {
	code, out := meshctl(t, "xds", "bootstrap", "--xds-server", "127.0.0.1:15010", "--svid-dir", "/run/svid", "--node-id", "client.default~h")
	if code != 0 {
		t.Fatalf("code %d\n%s", code, out)
	}
	var b struct {
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Type   string         `json:"type"`
				Config map[string]any `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID string `json:"id"`
		} `json:"node"`
		CertificateProviders map[string]struct {
			PluginName string         `json:"plugin_name"`
			Config     map[string]any `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(b.XDSServers) != 1 || b.XDSServers[0].ServerURI != "127.0.0.1:15010" || b.Node.ID != "client.default~h" {
		t.Errorf("bootstrap %+v", b)
	}
	cc := b.XDSServers[0].ChannelCreds
	if len(cc) != 2 || cc[0].Type != "meshd_spiffe" || cc[0].Config["server_spiffe_id"] != "spiffe://cluster.local/ns/meshd-system/controlplane" || cc[1].Type != "tls" {
		t.Errorf("channel creds %+v", cc)
	}
	p, ok := b.CertificateProviders["meshd"]
	if !ok || p.PluginName != "file_watcher" || p.Config["certificate_file"] != "/run/svid/svid.pem" || p.Config["ca_certificate_file"] != "/run/svid/bundle.pem" {
		t.Errorf("certificate providers %+v", b.CertificateProviders)
	}

	// Default node ID from --app-id and --namespace; other trust domain;
	// written to a file, with the hint on stderr.
	file := filepath.Join(t.TempDir(), "bootstrap.json")
	code, out = meshctl(t, "xds", "bootstrap", "--xds-server", "cp:15010", "--svid-dir", "/d", "--app-id", "client",
		"--namespace", "shop", "--trust-domain", "example.org", "-o", file)
	if code != 0 || !strings.Contains(out, "GRPC_XDS_BOOTSTRAP") {
		t.Fatalf("code %d\n%s", code, out)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, w := range []string{`"id": "client.shop~` + host + `"`, `"server_spiffe_id": "spiffe://example.org/ns/meshd-system/controlplane"`} {
		if !strings.Contains(string(raw), w) {
			t.Errorf("bootstrap file lacks %s:\n%s", w, raw)
		}
	}
}

func TestXDSBootstrapBadInput(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no server", []string{"--svid-dir", "/d", "--node-id", "n"}, "--xds-server is required"},
		{"no dir", []string{"--xds-server", "cp:1", "--node-id", "n"}, "--svid-dir is required"},
		{"no node", []string{"--xds-server", "cp:1", "--svid-dir", "/d"}, "--app-id or --node-id is required"},
		{"bad server", []string{"--xds-server", "cp", "--svid-dir", "/d", "--node-id", "n"}, "control plane address"},
		{"bad server ID", []string{"--xds-server", "cp:1", "--svid-dir", "/d", "--node-id", "n", "--xds-server-id", "cp"}, "control plane ID"},
		{"bad trust domain", []string{"--xds-server", "cp:1", "--svid-dir", "/d", "--node-id", "n", "--trust-domain", "A B"}, "trust domain"},
		{"stray arg", []string{"--xds-server", "cp:1", "--svid-dir", "/d", "--node-id", "n", "extra"}, "unknown command"},
		{"unwritable output", []string{"--xds-server", "cp:1", "--svid-dir", "/d", "--node-id", "n", "-o", "/nonexistent/dir/b.json"}, "grpcbootstrap: "},
	} {
		code, out := meshctl(t, append([]string{"xds", "bootstrap"}, c.args...)...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: code %d, want 1 with %q:\n%s", c.name, code, c.want, out)
		}
	}
}

func TestSVIDBadInput(t *testing.T) {
	anchors := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(anchors, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--app-id", "client", "--svid-dir", t.TempDir(), "--sentry-address", "127.0.0.1:1", "--trust-anchors-file", anchors}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no app", []string{"--svid-dir", "/d", "--sentry-address", "s:1", "--trust-anchors-file", anchors}, "--app-id is required"},
		{"no dir", []string{"--app-id", "c", "--sentry-address", "s:1", "--trust-anchors-file", anchors}, "--svid-dir is required"},
		{"no sentry", []string{"--app-id", "c", "--svid-dir", "/d", "--trust-anchors-file", anchors}, "--sentry-address is required"},
		{"no anchors", []string{"--app-id", "c", "--svid-dir", "/d", "--sentry-address", "s:1"}, "--trust-anchors-file is required"},
		{"dotted app", append(base[2:], "--app-id", "a.b"), "app"},
		{"bad anchors", base, "trust anchors"},
		{"missing anchors", append(base[:6], "--trust-anchors-file", "/nonexistent.pem"), "no such file"},
		{"bootstrap without server", append(base, "--bootstrap-file", "/tmp/b.json"), "--xds-server is required"},
		{"bad log level", append(base, "--log-level", "loud"), "loud"},
	} {
		code, out := meshctl(t, append([]string{"svid"}, c.args...)...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: code %d, want 1 with %q:\n%s", c.name, code, c.want, out)
		}
	}
}
