package decisionlog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// TestParseRoundTrip: what Logger writes, in both formats, ParseLine reads
// back unchanged.
func TestParseRoundTrip(t *testing.T) {
	entries := []Entry{
		{Source: "spiffe://cluster.local/ns/default/frontend", Destination: "orders.default", Protocol: "http",
			Method: "GET", Path: "/orders/1", Allow: true, Rule: "default/orders.rego:4"},
		{Source: "", Destination: "orders.default", Protocol: "grpc", Method: "POST", Path: "/pkg.Svc/Do",
			Reason: `DELETE is "forbidden" = no`, Rule: "default/orders.rego:12"},
		{Source: "spiffe://cluster.local/ns/shop/web", Destination: "cart.shop", Protocol: "http", Method: "PUT",
			Path: "/cart/1 x\ty", Allow: true, Audit: true, Reason: "would deny", Rule: "shop/acl.yaml:10"},
	}
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, nil)
		if format == "json" {
			h = slog.NewJSONHandler(&buf, nil)
		}
		l := New(slog.New(h), 1)
		for _, e := range entries {
			switch {
			case e.Audit:
				l.Audit(context.Background(), e)
			case e.Allow:
				l.Allow(context.Background(), func() Entry { return e })
			default:
				l.Deny(context.Background(), e)
			}
		}
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != len(entries) {
			t.Fatalf("%s: %d lines", format, len(lines))
		}
		for i, line := range lines {
			got, ok, err := ParseLine("orders meshd | " + line)
			if !ok || err != nil || got != entries[i] {
				t.Errorf("%s line %d: ok %v err %v\n got %+v\nwant %+v\n%s", format, i, ok, err, got, entries[i], line)
			}
		}
	}
}

func TestParseOther(t *testing.T) {
	for _, line := range []string{
		"",
		`time=2026-01-01T00:00:00Z level=INFO msg="meshd sidecar started" app=orders`,
		`{"time":"x","level":"INFO","msg":"policy: loaded","dir":""}`,
		`time=x level=INFO msg="policy: loaded" dir="" files=0`,
		"just text",
	} {
		if _, ok, err := ParseLine(line); ok || err != nil {
			t.Errorf("%q: ok %v err %v", line, ok, err)
		}
	}
	for _, line := range []string{
		`time=x level=WARN msg="policy: deny" source=a destination="orders.default`,
		`time=x level=WARN msg="policy: deny" source=a`,
	} {
		if _, ok, err := ParseLine(line); ok || err == nil {
			t.Errorf("%q: ok %v err %v, want an error", line, ok, err)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add(`time=x level=WARN msg="policy: deny" source=spiffe://a/ns/b/c destination=o.d protocol=http method=GET path=/x allow=false reason="r \"q\"" rule=f:1`)
	f.Add(`{"msg":"policy: allow","destination":"o.d","path":"/","allow":true}`)
	f.Add(`x | time=1 msg="policy: audit: would deny" destination=a.b path=/`)
	f.Fuzz(func(t *testing.T, line string) {
		e, ok, err := ParseLine(line)
		if ok && (err != nil || e.Destination == "" || e.Path == "") {
			t.Fatalf("ok with %v / %+v", err, e)
		}
		if !ok && e != (Entry{}) {
			t.Fatalf("not ok but %+v", e)
		}
	})
}
