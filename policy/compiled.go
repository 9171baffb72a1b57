package policy

import (
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/policy/authz"
)

// The compiled Rego at call time (compile.go builds it): no input
// document, no lock, and no allocation on an allow.

// decide is the wrapper's verdict ("deny", "allow" or "none") and, for a
// deny, its reasons (mesh-wide first, each part sorted and without
// duplicates). ok is false when the request is one the program cannot
// decide exactly (two header names that differ only in case, or a value
// with a \ under a glob.match OPA's rule index pre-filters): OPA decides
// it.
func (p *program) decide(req *authz.Request) (verdict string, reasons []string, ok bool) {
	var buf [4]string
	found, _, amb := p.meshDeny.match(req, buf[:0], true)
	if amb {
		return "", nil, false
	}
	nMesh := len(found)
	if found, _, amb = p.nsDeny.match(req, found, true); amb {
		return "", nil, false
	}
	if len(found) > 0 {
		mesh := slices.Compact(slices.Sorted(slices.Values(found[:nMesh])))
		ns := slices.Compact(slices.Sorted(slices.Values(found[nMesh:])))
		return "deny", append(mesh, ns...), true
	}
	if p.allowAlways {
		return "allow", nil, true
	}
	_, m, amb := p.allow.match(req, nil, false)
	switch {
	case amb:
		return "", nil, false
	case m:
		return "allow", nil, true
	}
	return "none", nil, true
}

func (b conj) match(req *authz.Request) (ok, ambiguous bool) {
	for i := range b {
		m, amb := b[i].test(req)
		if amb {
			return false, true
		}
		if !m {
			return false, false
		}
	}
	return true, false
}

// test evaluates one condition; an undefined operand (an absent header)
// fails the expression, so `not` of it holds, unless OPA evaluates the
// operand outside the `not` (operand.hoisted).
func (c *cond) test(req *authz.Request) (ok, ambiguous bool) {
	switch c.op {
	case opTrue:
		return !c.neg, false
	case opRule:
		if c.rule.always {
			return !c.neg, false
		}
		_, m, amb := c.rule.rules.match(req, nil, false)
		if amb {
			return false, true
		}
		return m != c.neg, false
	}
	// Equality of a SPIFFE ID with literals: compared piece by piece,
	// without building the ID.
	if c.x.field == fSrcSpiffeID && c.x.fold == foldNone {
		switch c.op {
		case opEq:
			return spiffeIDIs(req.Caller, c.lit) != c.neg, false
		case opNeq:
			return !spiffeIDIs(req.Caller, c.lit) != c.neg, false
		case opIn:
			in := false
			for _, s := range c.set {
				if spiffeIDIs(req.Caller, s) {
					in = true
					break
				}
			}
			return in != c.neg, false
		}
	}
	if c.op == opEqOperand || c.op == opNeqOperand {
		// Both operands are read first: a hoisted one that is undefined
		// fails the rule whatever the other is.
		x, xdef, xamb := c.x.value(req)
		y, ydef, yamb := c.y.value(req)
		switch {
		case xamb || yamb:
			return false, true
		case !xdef && c.x.hoisted, !ydef && c.y.hoisted:
			return false, false
		case !xdef, !ydef:
			return c.neg, false
		}
		return ((x == y) == (c.op == opEqOperand)) != c.neg, false
	}
	x, def, amb := c.x.value(req)
	if amb {
		return false, true
	}
	if !def {
		return c.neg && !c.x.hoisted, false
	}
	var r bool
	switch c.op {
	case opDefined:
		r = true
	case opEq:
		r = x == c.lit
	case opNeq:
		r = x != c.lit
	case opIn:
		r = slices.Contains(c.set, x)
	case opStartsWith:
		r = strings.HasPrefix(x, c.lit)
	case opEndsWith:
		r = strings.HasSuffix(x, c.lit)
	case opContains:
		r = strings.Contains(x, c.lit)
	case opGlob:
		if c.globIndexed && strings.IndexByte(x, '\\') >= 0 {
			return false, true
		}
		r = c.glob.Match(x)
	case opRegex:
		r = c.re.MatchString(x)
	}
	return r != c.neg, false
}

// value is the operand's string as the input document would hold it;
// def is false for an absent header.
func (o *operand) value(req *authz.Request) (s string, def, ambiguous bool) {
	switch o.field {
	case fSrcSpiffeID:
		s = spiffeIDString(req.Caller)
	case fSrcTrustDomain:
		if !req.Caller.TrustDomain.IsZero() {
			s = req.Caller.TrustDomain.Name()
		}
	case fSrcNamespace:
		if !req.Caller.TrustDomain.IsZero() {
			s = req.Caller.Namespace
		}
	case fSrcAppID:
		if !req.Caller.TrustDomain.IsZero() {
			s = req.Caller.AppID
		}
	case fDstAppID:
		s = req.Destination.AppID
	case fDstNamespace:
		s = req.Destination.Namespace
	case fProtocol:
		s = req.Protocol
	case fMethod:
		s = req.Method
	case fPath:
		s = req.Path
	case fHeader:
		s, def, ambiguous = headerValue(req.Header, o.header)
		if !def || ambiguous {
			return "", def, ambiguous
		}
	}
	switch o.fold {
	case foldLower:
		s = strings.ToLower(s)
	case foldUpper:
		s = strings.ToUpper(s)
	}
	return s, true, false
}

// headerValue is input.request.headers[name]: the values of the header
// whose lower-cased name is name, joined by ", ". Two such headers (names
// that differ only in case, possible in a hand-built http.Header) make the
// input document depend on map order: ambiguous.
func headerValue(h http.Header, name string) (s string, def, ambiguous bool) {
	var vs []string
	for k, v := range h {
		if lowerIs(k, name) {
			if def {
				return "", false, true
			}
			def, vs = true, v
		}
	}
	switch {
	case !def:
		return "", false, false
	case len(vs) == 1:
		return vs[0], true, false
	}
	return strings.Join(vs, ", "), true, false
}

// lowerIs reports strings.ToLower(k) == name without allocating for ASCII k.
func lowerIs(k, name string) bool {
	if len(k) != len(name) {
		for i := 0; i < len(k); i++ {
			if k[i] >= utf8.RuneSelf {
				return strings.ToLower(k) == name
			}
		}
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= utf8.RuneSelf {
			return strings.ToLower(k) == name
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// spiffeIDString is input.source.spiffe_id.
func spiffeIDString(c certs.Identity) string {
	if c.TrustDomain.IsZero() {
		return ""
	}
	return c.String()
}

// spiffeIDIs reports spiffeIDString(c) == s without building the ID:
// spiffe://{td}/ns/{namespace}/{app}, or "" when the parts are not a valid
// SPIFFE ID (what certs.Identity.String gives then).
func spiffeIDIs(c certs.Identity, s string) bool {
	if c.TrustDomain.IsZero() {
		return s == ""
	}
	td := c.TrustDomain.Name()
	if s == "" || len(s) != len("spiffe://")+len(td)+len("/ns/")+len(c.Namespace)+1+len(c.AppID) {
		return s == "" && !validSegments(c)
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, td); !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, "/ns/"); !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, c.Namespace); !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, "/"); !ok || rest != c.AppID {
		return false
	}
	return validSegments(c)
}

func validSegments(c certs.Identity) bool {
	return spiffeid.ValidatePathSegment(c.Namespace) == nil && spiffeid.ValidatePathSegment(c.AppID) == nil
}

// match reports whether some body holds for req; with collect (deny), it
// goes on through all of them and appends their reasons to found.
// ambiguous as in program.decide.
func (r *rules) match(req *authz.Request, found []string, collect bool) (_ []string, matched, ambiguous bool) {
	var app string
	if r.byApp != nil && !req.Caller.TrustDomain.IsZero() {
		app = req.Caller.AppID
	}
	for _, idx := range [2][]int32{r.byApp[app], r.rest} {
		for _, i := range idx {
			m, amb := r.bodies[i].match(req)
			if amb {
				return found, false, true
			}
			if !m {
				continue
			}
			matched = true
			if !collect {
				return found, true, false
			}
			found = append(found, r.reasons[i])
		}
	}
	return found, matched, false
}
