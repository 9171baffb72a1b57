package accesscontrol

import (
	"strings"
	"testing"
)

// refMatch is a reference matcher: a direct recursive definition of the
// pattern language, with no trie and no precedence.
func refMatch(pat, path []string) bool {
	if len(pat) == 0 {
		return len(path) == 0
	}
	if len(path) == 0 {
		return false
	}
	switch p := pat[0]; {
	case p == "**":
		for k := 1; k <= len(path); k++ {
			if refMatch(pat[1:], path[k:]) {
				return true
			}
		}
		return false
	case strings.Contains(p, "*"):
		return GlobMatch(p, path[0]) && refMatch(pat[1:], path[1:])
	default:
		return p == path[0] && refMatch(pat[1:], path[1:])
	}
}

// FuzzMatcher checks the operation matcher against the reference: Match
// finds an operation iff some pattern matches, and the one it finds matches.
func FuzzMatcher(f *testing.F) {
	f.Add("/op1/*", "/op2/**/x", "/op1", "/op1/a")
	f.Add("/a/b*c/d", "/a/*/d", "/**", "/a/bXc/d")
	f.Add("/v*/orders", "/v1/orders", "/x/**/y/**", "/x/1/y/2/3")
	f.Add("/admin", "/ADMIN/*", "*", "/Admin/x")
	f.Add("/", "/a//b", "/*/*", "//")
	f.Fuzz(func(t *testing.T, p1, p2, p3, path string) {
		for _, lower := range []bool{true, false} {
			m := NewMatcher(lower)
			var pats []string
			for _, p := range []string{p1, p2, p3} {
				c, err := CanonicalPattern(p, lower)
				if err != nil {
					continue
				}
				m.Add(&Operation{Name: c})
				pats = append(pats, c)
			}
			q := path
			if q == "" || q[0] != '/' {
				q = "/" + q
			}
			if lower {
				q = asciiLower(q)
			}
			qs := strings.Split(q[1:], "/")
			any := false
			for _, p := range pats {
				if refMatch(strings.Split(p[1:], "/"), qs) {
					any = true
				}
			}
			got := m.Match(path)
			if (got != nil) != any {
				t.Fatalf("lower=%v patterns %q path %q: Match=%v, reference says match=%v", lower, pats, path, got, any)
			}
			if got != nil && !refMatch(strings.Split(got.Name[1:], "/"), qs) {
				t.Fatalf("lower=%v path %q: Match returned %q which does not match", lower, path, got.Name)
			}
		}
	})
}
