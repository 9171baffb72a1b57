package accesscontrol

import (
	"strings"
	"testing"
)

func newTestMatcher(t testing.TB, lower bool, pats ...string) *Matcher {
	t.Helper()
	m := NewMatcher(lower)
	for _, p := range pats {
		c, err := CanonicalPattern(p, lower)
		if err != nil {
			t.Fatal(err)
		}
		m.Add(&Operation{Name: c})
	}
	return m
}

func TestMatcher(t *testing.T) {
	pats := []string{"/op1", "/op1/*", "/op2/**", "/op3/*/x", "/op4/**/end", "/v*/orders", "/v1/orders", "admin", "/a/b*c/d", "/"}
	m := newTestMatcher(t, true, pats...)
	for _, tc := range []struct{ path, want string }{
		{"/op1", "/op1"},
		{"/OP1", "/op1"},
		{"/op1/a", "/op1/*"},
		{"/op1/", "/op1/*"}, // "*" matches an empty last segment
		{"/op1/a/b", ""},    // "*" is one segment
		{"/op2", ""},        // "**" is one or more
		{"/op2/a", "/op2/**"},
		{"/op2/a/b/c", "/op2/**"},
		{"/op3/a/x", "/op3/*/x"},
		{"/op3/a/y", ""},
		{"/op3/a/b/x", ""},
		{"/op4/end", ""},
		{"/op4/a/end", "/op4/**/end"},
		{"/op4/a/b/c/end", "/op4/**/end"},
		{"/op4/a/b/c/enD", "/op4/**/end"},
		{"/op4/a/b/c/endx", ""},
		{"/v1/orders", "/v1/orders"}, // literal beats glob
		{"/v2/orders", "/v*/orders"},
		{"/v/orders", "/v*/orders"},
		{"/x/orders", ""},
		{"/admin", "/admin"},
		{"/Admin", "/admin"},
		{"/admin/", ""},
		{"/a/bc/d", "/a/b*c/d"},
		{"/a/bxxc/d", "/a/b*c/d"},
		{"/a/bxxcd/d", ""},
		{"/", "/"},
		{"", "/"},
		{"/" + strings.Repeat("Q", 300), ""}, // long path: ToLower fallback
	} {
		got := ""
		if op := m.Match(tc.path); op != nil {
			got = op.Name
		}
		if got != tc.want {
			t.Errorf("Match(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
	// gRPC: case kept.
	g := newTestMatcher(t, false, "/pkg.Svc/Get", "/pkg.Svc/*")
	if op := g.Match("/pkg.Svc/get"); op == nil || op.Name != "/pkg.Svc/*" {
		t.Errorf("gRPC is case sensitive: got %+v", op)
	}
	if op := g.Match("/PKG.Svc/Get"); op != nil {
		t.Errorf("gRPC /PKG.Svc/Get matched %q", op.Name)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	m := newTestMatcher(t, true, "/orders/*", "/admin/**", "/v*/items")
	for _, p := range []string{"/orders/42", "/ORDERS/42", "/admin/a/b/c", "/v2/items", "/nothing/here"} {
		if n := testing.AllocsPerRun(100, func() { m.Match(p) }); n != 0 {
			t.Errorf("Match(%q): %v allocs", p, n)
		}
	}
}

func TestCanonicalPatternRejects(t *testing.T) {
	for _, p := range []string{"", "  ", "/a\x00", "/a?b", "/a#b", "/a\nb"} {
		if _, err := CanonicalPattern(p, true); err == nil {
			t.Errorf("CanonicalPattern(%q): no error", p)
		}
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*", "a", true}, {"a*c", "abbbc", true},
		{"a*c", "abcd", false}, {"*b*", "abc", true}, {"team-*", "team-a", true},
		{"team-*", "tea", false}, {"abc", "abc", true}, {"abc", "abd", false}, {"**", "x", true},
		{"a*b*c", "aXbYbZc", true}, {"a*b*c", "aXc", false},
	} {
		if got := GlobMatch(tc.pat, tc.s); got != tc.want {
			t.Errorf("GlobMatch(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
}
