package static_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/discovery/static"
)

type set = map[discovery.Target][]discovery.Endpoint

func eps(addrs ...string) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = discovery.Endpoint{Address: a}
	}
	return out
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want set
	}{
		{"design example", `
apps:
  - appId: orders
    namespace: default
    addresses: ["127.0.0.1:50012", "127.0.0.1:50022"]
`, set{{AppID: "orders", Namespace: "default"}: eps("127.0.0.1:50012", "127.0.0.1:50022")}},
		{"namespace defaults", "apps:\n- appId: orders\n  addresses: [\"127.0.0.1:1\"]\n",
			set{{AppID: "orders", Namespace: "default"}: eps("127.0.0.1:1")}},
		{"empty namespace defaults", "apps:\n- {appId: orders, namespace: '', addresses: ['127.0.0.1:1']}\n",
			set{{AppID: "orders", Namespace: "default"}: eps("127.0.0.1:1")}},
		{"same app in two namespaces", `
apps:
  - {appId: orders, addresses: ["127.0.0.1:1"]}
  - {appId: orders, namespace: prod, addresses: ["127.0.0.1:2"]}
`, set{{AppID: "orders", Namespace: "default"}: eps("127.0.0.1:1"), {AppID: "orders", Namespace: "prod"}: eps("127.0.0.1:2")}},
		{"no apps", "apps: []\n", set{}},
		{"hosts and IPv6", `
apps:
  - appId: a_b-C9
    addresses: ["[::1]:50002", "orders-1.internal:8080", "localhost:1", "10.0.0.1:65535", "host.:2", "[fe80::1%eth0]:3"]
`, set{{AppID: "a_b-C9", Namespace: "default"}: eps("[::1]:50002", "orders-1.internal:8080", "localhost:1", "10.0.0.1:65535", "host.:2", "[fe80::1%eth0]:3")}},
		{"64-char app ID", "apps: [{appId: " + strings.Repeat("a", 64) + ", addresses: ['127.0.0.1:1']}]",
			set{{AppID: strings.Repeat("a", 64), Namespace: "default"}: eps("127.0.0.1:1")}},
		{"trailing empty documents", "apps: []\n---\n---\n", set{}},
		{"comments and document marker", "---\n# mesh\napps: # list\n- appId: x # app\n  addresses: ['127.0.0.1:9']\n",
			set{{AppID: "x", Namespace: "default"}: eps("127.0.0.1:9")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := static.Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // a part of the message
	}{
		{"empty file", "", "file is empty"},
		{"only a comment", "# nothing\n", "file is empty"},
		{"empty mapping", "{}", "no apps: list"},
		{"null apps", "apps:\n", "no apps: list"},
		{"not yaml", "apps: [\n", "did not find expected"},
		{"tab indentation", "apps:\n\t- appId: x\n", "found character that cannot start any token"},
		{"top level list", "- appId: x\n", "cannot unmarshal !!seq"},
		{"top level scalar", "orders\n", "cannot unmarshal !!str"},
		{"apps is a map", "apps: {appId: x}\n", "cannot unmarshal !!map"},
		{"unknown top-level field", "apps: []\nversion: 2\n", "field version not found"},
		{"unknown app field", "apps:\n- appId: x\n  adresses: ['127.0.0.1:1']\n", "field adresses not found"},
		{"wrongly cased field", "apps:\n- appID: x\n  addresses: ['127.0.0.1:1']\n", "field appID not found"},
		{"duplicate key", "apps: []\napps: []\n", "already defined"},
		{"two documents", "apps: []\n---\napps: []\n", "more than one YAML document"},
		{"a broken second document", "apps: []\n---\n[\n", "more than one YAML document"},
		{"a scalar second document", "apps: []\n---\nx\n", "more than one YAML document"},
		{"addresses a string", "apps:\n- appId: x\n  addresses: 127.0.0.1:1\n", "cannot unmarshal"},
		{"address a number", "apps:\n- appId: x\n  addresses: [80]\n", `"80": not host:port`},
		{"missing appId", "apps:\n- addresses: ['127.0.0.1:1']\n", "apps[0] (line 2): appId: certs: app ID is empty"},
		{"dot in appId", "apps:\n- appId: orders.prod\n  addresses: ['127.0.0.1:1']\n", "must not contain a dot"},
		{"65-char appId", "apps: [{appId: " + strings.Repeat("a", 65) + ", addresses: ['127.0.0.1:1']}]", "longer than 64"},
		{"slash in appId", "apps:\n- appId: a/b\n  addresses: ['127.0.0.1:1']\n", "appId: certs: app ID"},
		{"space in appId", "apps:\n- appId: 'a b'\n  addresses: ['127.0.0.1:1']\n", "appId: certs: app ID"},
		{"dot in namespace", "apps:\n- appId: a\n  namespace: x.y\n  addresses: ['127.0.0.1:1']\n", "namespace: certs: namespace \"x.y\" must not contain a dot"},
		{"bad namespace chars", "apps:\n- appId: a\n  namespace: 'n s'\n  addresses: ['127.0.0.1:1']\n", "namespace: certs: namespace"},
		{"no addresses", "apps:\n- appId: a\n", `app "a": addresses: empty`},
		{"empty addresses", "apps:\n- appId: a\n  addresses: []\n", `app "a": addresses: empty`},
		{"address without port", "apps:\n- appId: a\n  addresses: ['127.0.0.1']\n", "missing port"},
		{"empty address", "apps:\n- appId: a\n  addresses: ['']\n", "not host:port"},
		{"empty host", "apps:\n- appId: a\n  addresses: [':80']\n", "empty host"},
		{"empty port", "apps:\n- appId: a\n  addresses: ['127.0.0.1:']\n", `port "" is not a number`},
		{"named port", "apps:\n- appId: a\n  addresses: ['127.0.0.1:http']\n", `port "http" is not a number`},
		{"signed port", "apps:\n- appId: a\n  addresses: ['127.0.0.1:+80']\n", "is not a number"},
		{"port zero", "apps:\n- appId: a\n  addresses: ['127.0.0.1:0']\n", "not in 1..65535"},
		{"port too big", "apps:\n- appId: a\n  addresses: ['127.0.0.1:65536']\n", "not in 1..65535"},
		{"unbracketed IPv6", "apps:\n- appId: a\n  addresses: ['::1:80']\n", "too many colons"},
		{"bracketed non-IPv6", "apps:\n- appId: a\n  addresses: ['[orders]:80']\n", "in brackets is not an IPv6"},
		{"URL instead of address", "apps:\n- appId: a\n  addresses: ['http://127.0.0.1:80']\n", "too many colons"},
		{"path in host", "apps:\n- appId: a\n  addresses: ['a/b:80']\n", "neither an IP address nor a DNS name"},
		{"space in host", "apps:\n- appId: a\n  addresses: ['a b:80']\n", "neither an IP address nor a DNS name"},
		{"label starts with hyphen", "apps:\n- appId: a\n  addresses: ['-a.b:80']\n", "neither an IP"},
		{"empty label", "apps:\n- appId: a\n  addresses: ['a..b:80']\n", "neither an IP"},
		{"label too long", "apps:\n- appId: a\n  addresses: ['" + strings.Repeat("x", 64) + ":80']\n", "neither an IP"},
		{"duplicate address", "apps:\n- appId: a\n  addresses: ['127.0.0.1:1', '127.0.0.1:1']\n", `address "127.0.0.1:1" is listed twice`},
		{"duplicate app", "apps:\n- {appId: a, addresses: ['127.0.0.1:1']}\n- {appId: a, namespace: default, addresses: ['127.0.0.1:2']}\n",
			`apps[1] (line 3): app "a" in namespace "default" is listed twice`},
		{"error names the line of a later app", "apps:\n- appId: a\n  addresses: ['127.0.0.1:1']\n- appId: b.c\n  addresses: ['127.0.0.1:2']\n",
			"apps[1] (line 4)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := static.Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse accepted it: %v", got)
			}
			if got != nil {
				t.Errorf("Parse returned a set with its error: %v", got)
			}
			if !strings.HasPrefix(err.Error(), "static: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("apps: [{appId: a, addresses: ['127.0.0.1:1']}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := static.Load(good); err != nil || len(s) != 1 {
		t.Fatalf("Load = %v, %v", s, err)
	}
	if _, err := static.Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: err = %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apps: [{appId: a.b, addresses: ['127.0.0.1:1']}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := static.Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("bad file: err = %v, want the path in it", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("apps: []\n"+strings.Repeat("#", static.MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := static.Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big file: err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"apps: []",
		"apps:\n  - appId: orders\n    namespace: default\n    addresses: [\"127.0.0.1:50012\", \"127.0.0.1:50022\"]\n",
		"apps: [{appId: a, addresses: ['[::1]:1', 'h.example:2']}]",
		"apps: [{appId: a.b, addresses: ['x']}]",
		"apps: &x [*x]",
		"apps: [{appId: a, addresses: ['127.0.0.1:1']}, {appId: a, addresses: ['127.0.0.1:1']}]",
		"---\napps: []\n---\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := static.Parse(data)
		if err != nil {
			if got != nil {
				t.Fatal("a set returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "static: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		// Whatever is accepted satisfies the rules.
		for tg, list := range got {
			if tg.AppID == "" || strings.Contains(tg.AppID, ".") || len(tg.AppID) > 64 {
				t.Fatalf("accepted app ID %q", tg.AppID)
			}
			if tg.Namespace == "" || strings.Contains(tg.Namespace, ".") {
				t.Fatalf("accepted namespace %q", tg.Namespace)
			}
			if len(list) == 0 {
				t.Fatalf("accepted %v with no addresses", tg)
			}
			seen := map[string]bool{}
			for _, ep := range list {
				if err := static.ValidateAddress(ep.Address); err != nil || seen[ep.Address] {
					t.Fatalf("accepted address %q (%v)", ep.Address, err)
				}
				seen[ep.Address] = true
			}
		}
	})
}
