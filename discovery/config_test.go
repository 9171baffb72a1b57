package discovery

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small.yaml")
	if err := os.WriteFile(small, []byte("apps: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(small, 9); err != nil || string(b) != "apps: []\n" {
		t.Fatalf("at the limit: %q, %v", b, err)
	}
	if _, err := ReadFile(small, 8); err == nil || !strings.Contains(err.Error(), "larger than 8 bytes") {
		t.Fatalf("over the limit: %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestValidHostname(t *testing.T) {
	for h, want := range map[string]bool{
		"orders": true, "orders.svc.cluster.local.": true, "a-1.b": true,
		"": false, "-a": false, "a-": false, "a..b": false, "a_b": false, "ä": false,
		strings.Repeat("a", 64): false, strings.Repeat("a.", 127) + "ab": false,
	} {
		if got := ValidHostname(h); got != want {
			t.Errorf("ValidHostname(%q) = %v, want %v", h, got, want)
		}
	}
}
