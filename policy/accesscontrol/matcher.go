package accesscontrol

import (
	"fmt"
	"strings"
	"unsafe"
)

// Action is the action of a rule.
type Action uint8

// Actions.
const (
	Unset Action = iota
	Allow
	Deny
)

// String returns "allow", "deny" or "unset".
func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	}
	return "unset"
}

func parseAction(s string) (Action, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return Unset, nil
	case "allow":
		return Allow, nil
	case "deny":
		return Deny, nil
	}
	return Unset, fmt.Errorf("action %q: want allow or deny", s)
}

// Operation is one compiled operation: all entries of a policy that share an
// operation name.
type Operation struct {
	// Name is the pattern as matched (leading "/", lowercased for HTTP).
	Name string
	// Source is "file:line" of the first entry with this name.
	Source string
	// Action is the entry's action, used for gRPC calls. Dapr treats an
	// operation without action as deny, and so does this package.
	Action Action
	// Verbs maps upper-case HTTP verbs (and "*") to their action.
	Verbs map[string]Action
}

// verbAction returns the action for an HTTP verb: the verb's own, else "*"'s.
func (o *Operation) verbAction(verb string) (Action, bool) {
	if a, ok := o.Verbs[verb]; ok {
		return a, true
	}
	a, ok := o.Verbs["*"]
	return a, ok
}

type globEdge struct {
	pat string
	n   *node
}

type node struct {
	lit   map[string]*node
	globs []globEdge
	star  *node
	dstar *node
	op    *Operation
}

// Matcher finds the most specific operation pattern matching a path.
// Patterns are split on "/"; a segment "*" matches exactly one segment, "**"
// one or more segments, and a "*" inside a segment matches any run of
// characters within that segment. When several patterns match, literal
// segments win over in-segment globs, which win over "*", which wins over
// "**", segment by segment from the left.
//
// A Matcher is built once and is then safe for concurrent Match calls.
type Matcher struct {
	root  node
	lower bool
}

// NewMatcher returns an empty matcher; with caseInsensitive (HTTP, as in
// Dapr) patterns and paths are compared in lower case.
func NewMatcher(caseInsensitive bool) *Matcher { return &Matcher{lower: caseInsensitive} }

// CanonicalPattern validates an operation name and returns it with a
// leading "/" (lowercased when lower is set).
func CanonicalPattern(name string, lower bool) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", fmt.Errorf("empty operation name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("operation %q: control character 0x%02x", name, c)
		}
		if c == '?' || c == '#' {
			return "", fmt.Errorf("operation %q: %q cannot match a normalized path", name, c)
		}
	}
	if name[0] != '/' {
		name = "/" + name
	}
	if lower {
		name = asciiLower(name)
	}
	return name, nil
}

// Add inserts op under its pattern op.Name (already canonical, see
// CanonicalPattern). If the pattern is already present, the existing
// operation is returned and op is not inserted.
func (m *Matcher) Add(op *Operation) *Operation {
	n := &m.root
	rest := op.Name[1:]
	for {
		seg, tail, last := cut(rest)
		var next **node
		switch {
		case seg == "**":
			next = &n.dstar
		case seg == "*":
			next = &n.star
		case strings.IndexByte(seg, '*') >= 0:
			for i := range n.globs {
				if n.globs[i].pat == seg {
					next = &n.globs[i].n
					break
				}
			}
			if next == nil {
				n.globs = append(n.globs, globEdge{pat: seg})
				next = &n.globs[len(n.globs)-1].n
			}
		default:
			if n.lit == nil {
				n.lit = map[string]*node{}
			}
			c := n.lit[seg]
			if c == nil {
				c = &node{}
				n.lit[seg] = c
			}
			n = c
		}
		if next != nil {
			if *next == nil {
				*next = &node{}
			}
			n = *next
		}
		if last {
			break
		}
		rest = tail
	}
	if n.op != nil {
		return n.op
	}
	n.op = op
	return op
}

// cut splits p at its first "/".
func cut(p string) (seg, rest string, last bool) {
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:], false
	}
	return p, "", true
}

// Match returns the most specific operation matching path, or nil.
func (m *Matcher) Match(path string) *Operation {
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	if m.lower {
		var buf [256]byte
		if up := firstUpper(path); up >= 0 {
			if len(path) <= len(buf) {
				b := buf[:len(path)]
				copy(b, path[:up])
				for i := up; i < len(path); i++ {
					c := path[i]
					if 'A' <= c && c <= 'Z' {
						c += 'a' - 'A'
					}
					b[i] = c
				}
				return m.root.match(unsafe.String(&b[0], len(b))[1:])
			}
			path = asciiLower(path)
		}
	}
	return m.root.match(path[1:])
}

// asciiLower lowercases ASCII letters only: HTTP paths are normalized to
// %-escapes for everything else, and Unicode case folding could change
// lengths and meanings.
func asciiLower(s string) string {
	up := firstUpper(s)
	if up < 0 {
		return s
	}
	b := []byte(s)
	for i := up; i < len(b); i++ {
		if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

func firstUpper(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return i
		}
	}
	return -1
}

// match matches p, the path after a "/", against n's children.
func (n *node) match(p string) *Operation {
	seg, rest, last := cut(p)
	if c := n.lit[seg]; c != nil {
		if r := c.next(rest, last); r != nil {
			return r
		}
	}
	for i := range n.globs {
		if globMatch(n.globs[i].pat, seg) {
			if r := n.globs[i].n.next(rest, last); r != nil {
				return r
			}
		}
	}
	if n.star != nil {
		if r := n.star.next(rest, last); r != nil {
			return r
		}
	}
	if c := n.dstar; c != nil {
		// "**" has consumed seg; let it stop after 0..k more segments,
		// shortest first, so that patterns continuing after it win.
		for !last {
			if r := c.match(rest); r != nil {
				return r
			}
			_, rest, last = cut(rest)
		}
		return c.op
	}
	return nil
}

func (n *node) next(rest string, last bool) *Operation {
	if last {
		return n.op
	}
	return n.match(rest)
}

// globMatch reports whether s matches pat, where '*' matches any run of
// bytes (possibly empty) and every other byte matches itself.
func globMatch(pat, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			c := pat[px]
			if c == '*' {
				nextPx, nextSx = px, sx+1
				px++
				continue
			}
			if sx < len(s) && s[sx] == c {
				px++
				sx++
				continue
			}
		}
		if nextPx >= 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// GlobMatch reports whether s matches the glob pat ('*' matches any run of
// characters). It is used for app ID, namespace and trust domain patterns.
func GlobMatch(pat, s string) bool { return globMatch(pat, s) }
