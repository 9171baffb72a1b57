package sentryclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/certs"
)

// TestStartSourceBadInput: every bad input is refused at once with a
// sentryclient error, before any connection. (The happy path runs in
// every end-to-end suite: meshd and meshctl svid start through it.)
func TestStartSourceBadInput(t *testing.T) {
	id, err := certs.NewIdentity("cluster.local", "default", "client")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  SourceConfig
		want string
	}{
		{"no address", SourceConfig{Identity: id}, "no sentry address"},
		{"missing token file", SourceConfig{Address: "127.0.0.1:1", TokenFile: filepath.Join(t.TempDir(), "none"), Identity: id}, "token file"},
		{"no anchors", SourceConfig{Address: "127.0.0.1:1", Identity: id}, "no trust anchors"},
		{"no identity", SourceConfig{Address: "127.0.0.1:1"}, "trust"},
	} {
		_, err := StartSource(context.Background(), c.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), "sentryclient: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want a sentryclient error with %q", c.name, err, c.want)
		}
	}
}

func TestReadAnchorsBadInput(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{filepath.Join(dir, "none.pem"), "no such file"},
		{garbage, garbage},
	} {
		if _, err := ReadAnchors(c.path); err == nil || !strings.HasPrefix(err.Error(), "sentryclient: trust anchors") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ReadAnchors(%s): %v, want an error with %q", c.path, err, c.want)
		}
	}
}
