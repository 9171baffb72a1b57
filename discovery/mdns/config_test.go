package mdns

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfigGood(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      Config
	}{
		{"empty", "", Config{TTL: DefaultTTL, Service: DefaultService, BrowseWait: DefaultBrowseWait}},
		{"comments only", "# nothing\n", Config{TTL: DefaultTTL, Service: DefaultService, BrowseWait: DefaultBrowseWait}},
		{"all", "interfaces: [eth0, lo]\nttl: 10s\nservice: _orders-mesh._tcp\nbrowseWait: 1s\n",
			Config{Interfaces: []string{"eth0", "lo"}, TTL: 10 * time.Second, Service: "_orders-mesh._tcp", BrowseWait: time.Second}},
		{"udp service", "service: _x._udp\n", Config{TTL: DefaultTTL, Service: "_x._udp", BrowseWait: DefaultBrowseWait}},
		{"trailing empty document", "ttl: 2s\n---\n", Config{TTL: 2 * time.Second, Service: DefaultService, BrowseWait: DefaultBrowseWait}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Interfaces, tc.want.Interfaces) || got.TTL != tc.want.TTL ||
				got.Service != tc.want.Service || got.BrowseWait != tc.want.BrowseWait {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseConfigBad(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", "ttls: 5s\n", "field ttls not found"},
		{"duplicate key", "ttl: 5s\nttl: 6s\n", "already defined"},
		{"ttl not a duration", "ttl: five\n", "into time.Duration"},
		{"ttl too short", "ttl: 500ms\n", "outside"},
		{"ttl too long", "ttl: 2h\n", "outside"},
		{"ttl fractional", "ttl: 1500ms\n", "whole seconds"},
		{"ttl negative", "ttl: -5s\n", "outside"},
		{"service without underscore", "service: meshd._tcp\n", "not a DNS-SD service type"},
		{"service bad proto", "service: _meshd._sctp\n", "not a DNS-SD service type"},
		{"service too long", "service: _abcdefghijklmnopq._tcp\n", "not a DNS-SD service type"},
		{"service with dot", "service: _a.b._tcp\n", "not a DNS-SD service type"},
		{"empty interface", "interfaces: ['']\n", "not an interface name"},
		{"long interface", "interfaces: [abcdefghijklmnop]\n", "not an interface name"},
		{"interface twice", "interfaces: [lo, lo]\n", "listed twice"},
		{"browseWait negative", "browseWait: -1s\n", "outside"},
		{"browseWait long", "browseWait: 11s\n", "outside"},
		{"two documents", "ttl: 5s\n---\nttl: 6s\n", "more than one"},
		{"not a map", "- a\n- b\n", "cannot unmarshal"},
		{"interfaces not a list", "interfaces: lo\n", "cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc))
			if err == nil {
				t.Fatalf("no error for %q", tc.doc)
			}
			if !strings.HasPrefix(err.Error(), "mdns: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want the prefix mdns: and %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("ttl: 3s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadConfig(good); err != nil || c.TTL != 3*time.Second {
		t.Fatalf("LoadConfig(good) = %+v, %v", c, err)
	}
	if c, err := LoadConfig(""); err != nil || c.TTL != DefaultTTL {
		t.Fatalf("LoadConfig(\"\") = %+v, %v", c, err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("ttl: 0.5s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("bad file: error %v does not name the file", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxConfigSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big file: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{"", "ttl: 5s\n", "interfaces: [lo]\nservice: _a._tcp\n", "browseWait: 1s", "---\n---\n", "ttl: 1h\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "mdns: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		if c.TTL < MinTTL || c.TTL > MaxTTL || !serviceRE.MatchString(c.Service) || c.BrowseWait < 0 {
			t.Fatalf("accepted a bad config: %+v", c)
		}
	})
}
