package main

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestPolicyPreview replays testdata/decisions.log (written by
// decisionlog.Logger, text and JSON, one line with meshctl's prefix, one
// broken) against testdata/proposed: frontend may no longer POST, billing
// may now GET. Exactly those two kinds of calls flip.
func TestPolicyPreview(t *testing.T) {
	code, out := meshctl(t, "policy", "preview", "--policy-dir", "testdata/proposed", "--log", "testdata/decisions.log", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var res previewResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []flip{
		{From: "ALLOW", To: "DENY", Count: 1, Source: "spiffe://cluster.local/ns/default/frontend", Destination: "orders.default",
			Protocol: "http", Method: "POST", Path: "/orders", Reason: "no policy rule allows POST /orders to orders.default",
			Rule: "no allow", WasRule: "default/orders.rego:4"},
		{From: "DENY", To: "ALLOW", Count: 3, Source: "spiffe://cluster.local/ns/default/billing", Destination: "orders.default",
			Protocol: "http", Method: "GET", Path: "/orders/7", Rule: "rego allow", WasRule: "default: no allow rule"},
	}
	if res.Decisions != 8 || res.Unread != 1 || !reflect.DeepEqual(res.Flips, want) {
		t.Errorf("got %d decisions, %d unread, flips\n%+v\nwant 8, 1,\n%+v", res.Decisions, res.Unread, res.Flips, want)
	}

	code, out = meshctl(t, "policy", "preview", "--policy-dir", "testdata/proposed", "--log", "testdata/decisions.log")
	for _, w := range []string{
		"replayed 8 logged decisions from 1 log(s) against the proposed policy: 4 would flip (1 decision lines could not be read)",
		"ALLOW → DENY  1×  spiffe://cluster.local/ns/default/frontend → orders.default  HTTP POST /orders",
		"DENY → ALLOW  3×  spiffe://cluster.local/ns/default/billing → orders.default  HTTP GET /orders/7",
	} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("table lacks %q (exit %d):\n%s", w, code, out)
		}
	}
	if strings.Index(out, "ALLOW → DENY") > strings.Index(out, "DENY → ALLOW") {
		t.Errorf("allow→deny flips (the ones that break callers) come first:\n%s", out)
	}

	// The policy in force flips nothing.
	code, out = meshctl(t, "policy", "preview", "--policy-dir", "testdata/policies", "--log", "testdata/decisions.log")
	if code != 0 || !strings.Contains(out, "replayed 8 logged decisions from 1 log(s) against the proposed policy: 0 would flip") {
		t.Errorf("same policy: exit %d\n%s", code, out)
	}

	// A broken proposed file: file:line, and no answer.
	code, out = meshctl(t, "policy", "preview", "--policy-dir", "testdata/broken", "--log", "testdata/decisions.log")
	if code != 1 || !strings.Contains(out, "meshctl: proposed policy: policy: default/orders.rego:5: rego_parse_error") ||
		strings.Contains(out, "replayed") || strings.Contains(out, "→") {
		t.Errorf("broken policy: exit %d\n%s", code, out)
	}

	t.Setenv("MESHD_HOME", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--log", "testdata/decisions.log"}, "meshctl: --policy-dir or --config is required"},
		{[]string{"--policy-dir", "testdata/proposed"}, "meshctl: no decisions to replay: no sidecar of `meshctl run` runs on this machine"},
		{[]string{"--policy-dir", "testdata/proposed", "--log", filepath.Join(t.TempDir(), "none.log")}, "no such file"},
		{[]string{"--policy-dir", "testdata/proposed", "--log", "testdata/decisions.log", "-o", "csv"}, `--output "csv"`},
	} {
		code, out := meshctl(t, append([]string{"policy", "preview"}, tc.args...)...)
		if code != 1 || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d\n%s\nwant %q", tc.args, code, out, tc.want)
		}
	}
}
