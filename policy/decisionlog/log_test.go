package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestDenyAlwaysAllowSampled(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewJSONHandler(&buf, nil)), 3)
	ctx := context.Background()
	built := 0
	for range 9 {
		l.Allow(ctx, func() Entry { built++; return Entry{Allow: true, Path: "/ok"} })
	}
	l.Deny(ctx, Entry{Source: "spiffe://td/ns/a/b", Destination: "orders.default", Method: "GET", Path: "/admin", Reason: "admin only", Rule: "x.rego:3"})
	l.Audit(ctx, Entry{Allow: true, Path: "/audited"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if built != 3 || len(lines) != 5 {
		t.Fatalf("built %d entries, %d lines, want 3 and 5:\n%s", built, len(lines), buf.String())
	}
	var deny map[string]any
	if err := json.Unmarshal([]byte(lines[3]), &deny); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"msg": "policy: deny", "source": "spiffe://td/ns/a/b", "destination": "orders.default",
		"method": "GET", "path": "/admin", "reason": "admin only", "rule": "x.rego:3", "allow": false} {
		if deny[k] != v {
			t.Errorf("deny entry %s = %v, want %v", k, deny[k], v)
		}
	}
	if !strings.Contains(lines[4], "would deny") {
		t.Errorf("audit line %s", lines[4])
	}
	if a, d, au := l.Counts(); a != 9 || d != 1 || au != 1 {
		t.Errorf("counts %d %d %d", a, d, au)
	}
	// sampleEvery 0: no allows logged.
	buf.Reset()
	l = New(slog.New(slog.NewJSONHandler(&buf, nil)), 0)
	l.Allow(ctx, func() Entry { t.Fatal("built"); return Entry{} })
	if buf.Len() != 0 {
		t.Error("allow logged with sampling off")
	}
}
