package policy

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/glob"
	"github.com/open-policy-agent/opa/v1/ast"
)

// A program is the Rego of one evaluation (the mesh-wide modules plus one
// namespace's) compiled to Go at load time: the verdict and deny reasons
// OPA would give, computed without building an input document. compileRego
// builds one only when it understands every rule of every module; anything
// else leaves the namespace to OPA (see docs/policy.md, "Speed").
type program struct {
	meshDeny, nsDeny rules
	allow            rules
	// allowAlways: a default allow := true.
	allowAlways bool
}

// rules are the bodies of one kind (allow, or the deny rules of one
// package), indexed by the caller's app ID where a body requires one
// (input.source.app_id == "x", in {...}, or a spiffe_id literal): a call
// tries only the bodies of its caller's app and those that require none.
// Bodies have no side effects and a skipped body is false in OPA too (its
// app condition fails), so this is the same decision.
type rules struct {
	bodies  []conj
	reasons []string // deny: each body's reason
	byApp   map[string][]int32
	rest    []int32
}

func (r *rules) add(body conj, reason string) {
	i := int32(len(r.bodies))
	r.bodies = append(r.bodies, body)
	r.reasons = append(r.reasons, reason)
	apps := requiredApps(body)
	if apps == nil {
		r.rest = append(r.rest, i)
		return
	}
	if r.byApp == nil {
		r.byApp = map[string][]int32{}
	}
	for _, a := range apps {
		if l := r.byApp[a]; len(l) == 0 || l[len(l)-1] != i {
			r.byApp[a] = append(l, i)
		}
	}
}

// requiredApps are the caller app IDs one of which a body requires, nil
// for any.
func requiredApps(body conj) []string {
	for _, c := range body {
		if c.neg || c.x.fold != foldNone || (c.op != opEq && c.op != opIn) {
			continue
		}
		lits := c.set
		if c.op == opEq {
			lits = []string{c.lit}
		}
		switch c.x.field {
		case fSrcAppID:
			return lits
		case fSrcSpiffeID:
			apps := make([]string, 0, len(lits))
			for _, l := range lits {
				app, ok := spiffeApp(l)
				if !ok {
					apps = nil
					break
				}
				apps = append(apps, app)
			}
			if apps != nil {
				return apps
			}
		}
	}
	return nil
}

// spiffeApp is the app ID of a workload SPIFFE ID literal
// spiffe://{td}/ns/{namespace}/{app}.
func spiffeApp(s string) (string, bool) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return "", false
	}
	_, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, "ns/"); !ok {
		return "", false
	}
	_, app, ok := strings.Cut(rest, "/")
	if !ok || app == "" || strings.Contains(app, "/") {
		return "", false
	}
	return app, true
}

// conj is a rule body: every condition must hold.
type conj []cond

// field is a string of the input document.
type field uint8

const (
	fSrcSpiffeID field = iota
	fSrcTrustDomain
	fSrcNamespace
	fSrcAppID
	fDstAppID
	fDstNamespace
	fProtocol
	fMethod
	fPath
	fHeader // input.request.headers[name]: undefined when absent
)

var fieldRefs = map[string]field{
	"source.spiffe_id":      fSrcSpiffeID,
	"source.trust_domain":   fSrcTrustDomain,
	"source.namespace":      fSrcNamespace,
	"source.app_id":         fSrcAppID,
	"destination.app_id":    fDstAppID,
	"destination.namespace": fDstNamespace,
	"request.protocol":      fProtocol,
	"request.method":        fMethod,
	"request.path":          fPath,
}

type op uint8

const (
	opTrue       op = iota // the expression `true`
	opDefined              // a bare reference: defined (strings are never false)
	opEq                   // == lit
	opNeq                  // != lit
	opEqOperand            // == another operand
	opNeqOperand           // != another operand
	opIn                   // in {set}
	opStartsWith           // startswith(x, lit)
	opEndsWith             // endswith(x, lit)
	opContains             // contains(x, lit)
	opGlob                 // glob.match(pattern, delimiters, x)
	opRegex                // regex.match(pattern, x)
	opRule                 // a helper rule of the package
)

// fold is lower() or upper() around an operand.
type fold uint8

const (
	foldNone fold = iota
	foldLower
	foldUpper
)

// operand is an input string, possibly lower()/upper()-ed.
type operand struct {
	field  field
	header string // fHeader: the lower-case header name
	fold   fold
	// hoisted: OPA's compiler evaluates this operand before the
	// expression, outside a `not` (it is an argument of a built-in call
	// other than equality: `not startswith(input.request.headers.x, "a")`
	// compiles to `__local0__ = input.request.headers.x; not
	// startswith(__local0__, "a")`), so when it is undefined the rule
	// fails even under `not`. An operand of ==, = or a bare reference is
	// evaluated inside the `not`.
	hoisted bool
}

type cond struct {
	x, y operand // y: opEqOperand, opNeqOperand
	op   op
	neg  bool // not
	lit  string
	set  []string
	glob *glob.Pattern
	// globIndexed: OPA's rule index may pre-filter this glob.match
	// (delimiters given as an array), splitting the value at delimiters
	// not escaped by a \: a value with a \ is left to OPA.
	globIndexed bool
	re          *regexp.Regexp
	rule        *helper // opRule
}

// notCompiled is why a module stays with OPA, with the place in the file.
type notCompiled struct {
	loc    *ast.Location
	reason string
}

func (n *notCompiled) Error() string {
	if n.loc == nil {
		return n.reason
	}
	return fmt.Sprintf("%s:%d: %s", n.loc.File, n.loc.Row, n.reason)
}

func unsupported(loc *ast.Location, format string, args ...any) error {
	return &notCompiled{loc, fmt.Sprintf(format, args...)}
}

// compileRego compiles the mesh-wide and namespace modules (already parsed
// and checked by parseModule) or says why it cannot.
func compileRego(mesh, ns []*ast.Module) (*program, error) {
	p := &program{}
	for i, mods := range [][]*ast.Module{mesh, ns} {
		sc := &scope{helpers: map[string][]*ast.Rule{}, compiled: map[string]*helper{}}
		for _, m := range mods {
			for _, imp := range m.Imports {
				path := imp.Path.String()
				if path != "rego.v1" && path != "future.keywords" && !strings.HasPrefix(path, "future.keywords.") {
					return nil, unsupported(imp.Location, "import %s", path)
				}
			}
			for _, r := range m.Rules {
				if name := r.Head.Ref().String(); name != "allow" && name != "deny" {
					sc.helpers[name] = append(sc.helpers[name], r)
				}
			}
		}
		// Every helper must be one the compiler understands, referenced
		// or not.
		for _, name := range slices.Sorted(maps.Keys(sc.helpers)) {
			if _, err := sc.helper(name); err != nil {
				return nil, err
			}
		}
		for _, m := range mods {
			for _, r := range m.Rules {
				if name := r.Head.Ref().String(); name == "allow" || name == "deny" {
					if err := p.addRule(sc, r, i == 0); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	return p, nil
}

// scope is one package's helper rules: boolean rules other than allow and
// deny (`is_admin if { ... }`, any number of definitions, optionally
// `default is_admin := false`), which bodies use as `is_admin` or `not
// is_admin`.
type scope struct {
	helpers  map[string][]*ast.Rule
	compiled map[string]*helper
}

type helper struct {
	rules rules
	// always: default name := true (the rule is true whatever its bodies).
	always bool
	// compiling: being compiled (a reference to it now is a cycle, which
	// OPA's compiler refuses anyway).
	compiling bool
}

func (sc *scope) helper(name string) (*helper, error) {
	if h, ok := sc.compiled[name]; ok {
		if h.compiling {
			return nil, unsupported(sc.helpers[name][0].Location, "recursive rule %s", name)
		}
		return h, nil
	}
	h := &helper{compiling: true}
	sc.compiled[name] = h
	for _, r := range sc.helpers[name] {
		hd := r.Head
		if r.Else != nil || len(hd.Args) > 0 || len(hd.Ref()) != 1 || hd.RuleKind() != ast.SingleValue || hd.Value == nil {
			return nil, unsupported(r.Location, "rule %s (only allow, deny and boolean helper rules are compiled)", hd.Ref())
		}
		v, ok := hd.Value.Value.(ast.Boolean)
		switch {
		case !ok:
			return nil, unsupported(r.Location, "rule %s with a value that is not true or false", hd.Ref())
		case r.Default:
			h.always = h.always || bool(v)
			continue
		case !bool(v):
			return nil, unsupported(r.Location, "%s := false", hd.Ref())
		}
		body, err := sc.compileBody(r.Body)
		if err != nil {
			return nil, err
		}
		h.rules.add(body, "")
	}
	h.compiling = false
	return h, nil
}

func (p *program) addRule(sc *scope, r *ast.Rule, mesh bool) error {
	h := r.Head
	if r.Else != nil {
		return unsupported(r.Location, "else")
	}
	if len(h.Args) > 0 || len(h.Ref()) != 1 {
		return unsupported(r.Location, "rule %s", h.Ref())
	}
	switch h.Ref().String() {
	case "allow":
		v, ok := h.Value.Value.(ast.Boolean)
		if !ok {
			return unsupported(r.Location, "allow with a value that is not true or false")
		}
		if r.Default {
			p.allowAlways = p.allowAlways || bool(v)
			return nil
		}
		if !v {
			return unsupported(r.Location, "allow := false")
		}
		body, err := sc.compileBody(r.Body)
		if err != nil {
			return err
		}
		p.allow.add(body, "")
	case "deny":
		if r.Default || h.RuleKind() != ast.MultiValue || h.Key == nil {
			return unsupported(r.Location, "deny that is not a set of reasons")
		}
		reason, ok := h.Key.Value.(ast.String)
		if !ok {
			return unsupported(r.Location, "deny reason that is not a string literal")
		}
		body, err := sc.compileBody(r.Body)
		if err != nil {
			return err
		}
		if mesh {
			p.meshDeny.add(body, string(reason))
		} else {
			p.nsDeny.add(body, string(reason))
		}
	}
	return nil
}

func (sc *scope) compileBody(body ast.Body) (conj, error) {
	out := make(conj, 0, len(body))
	for _, x := range body {
		c, err := sc.compileExpr(x)
		if err != nil {
			return nil, err
		}
		if c.op == opTrue && !c.neg {
			continue
		}
		out = append(out, c)
	}
	return out, nil
}

func (sc *scope) compileExpr(x *ast.Expr) (cond, error) {
	c, err := sc.compileExpr1(x)
	if err != nil {
		return c, err
	}
	inside := c.op == opEq || c.op == opEqOperand || c.op == opDefined
	c.x.hoisted = !inside || c.x.fold != foldNone
	c.y.hoisted = !inside || c.y.fold != foldNone
	return c, nil
}

func (sc *scope) compileExpr1(x *ast.Expr) (cond, error) {
	if len(x.With) > 0 {
		return cond{}, unsupported(x.Location, "with")
	}
	c := cond{neg: x.Negated}
	if t, ok := x.Terms.(*ast.Term); ok {
		if b, ok := t.Value.(ast.Boolean); ok && bool(b) {
			c.op = opTrue
			return c, nil
		}
		if v, ok := t.Value.(ast.Var); ok && sc.helpers[string(v)] != nil {
			h, err := sc.helper(string(v))
			if err != nil {
				return cond{}, err
			}
			c.op, c.rule = opRule, h
			return c, nil
		}
		o, ok := inputOperand(t)
		if !ok {
			return cond{}, unsupported(x.Location, "expression %s", x)
		}
		c.op, c.x = opDefined, o
		return c, nil
	}
	if !x.IsCall() {
		return cond{}, unsupported(x.Location, "expression %s", x)
	}
	args := x.Operands()
	name := x.Operator().String()
	switch name {
	case "equal", "eq", "neq":
		if len(args) != 2 {
			break
		}
		c.op = opEq
		if name == "neq" {
			c.op = opNeq
		}
		a, aok := inputOperand(args[0])
		b, bok := inputOperand(args[1])
		switch {
		case aok && bok:
			c.x, c.y = a, b
			c.op += opEqOperand - opEq
			return c, nil
		case aok:
			if s, ok := args[1].Value.(ast.String); ok {
				c.x, c.lit = a, string(s)
				return c, nil
			}
		case bok:
			if s, ok := args[0].Value.(ast.String); ok {
				c.x, c.lit = b, string(s)
				return c, nil
			}
		}
	case "internal.member_2":
		a, ok := inputOperand(args[0])
		set, sok := stringCollection(args[1])
		if ok && sok {
			c.op, c.x, c.set = opIn, a, set
			return c, nil
		}
	case "startswith", "endswith", "contains":
		a, ok := inputOperand(args[0])
		s, sok := args[1].Value.(ast.String)
		if ok && sok {
			c.op = map[string]op{"startswith": opStartsWith, "endswith": opEndsWith, "contains": opContains}[name]
			c.x, c.lit = a, string(s)
			return c, nil
		}
	case "glob.match":
		pat, pok := args[0].Value.(ast.String)
		a, ok := inputOperand(args[2])
		delims, dok := globDelimiters(args[1])
		if pok && ok && dok {
			// OPA's rule index reads a pattern's \ escapes (and a
			// value's) its own way: such patterns stay with OPA.
			if strings.Contains(string(pat), `\`) {
				return cond{}, unsupported(x.Location, "glob.match pattern with a \\ escape")
			}
			for _, r := range delims {
				if r >= utf8.RuneSelf {
					return cond{}, unsupported(x.Location, "glob.match delimiter %q", r)
				}
			}
			_, c.globIndexed = args[1].Value.(*ast.Array)
			g, err := glob.Compile(string(pat), delims...)
			if err != nil {
				return cond{}, unsupported(x.Location, "glob.match: %v", err)
			}
			c.op, c.x, c.glob = opGlob, a, g
			return c, nil
		}
	case "regex.match":
		pat, pok := args[0].Value.(ast.String)
		a, ok := inputOperand(args[1])
		if pok && ok {
			re, err := regexp.Compile(string(pat))
			if err != nil {
				return cond{}, unsupported(x.Location, "regex.match: %v", err)
			}
			c.op, c.x, c.re = opRegex, a, re
			return c, nil
		}
	}
	return cond{}, unsupported(x.Location, "expression %s", x)
}

// inputOperand recognizes input.<string field>, input.request.headers[name]
// and lower()/upper() of them.
func inputOperand(t *ast.Term) (operand, bool) {
	switch v := t.Value.(type) {
	case ast.Call:
		if len(v) != 2 {
			return operand{}, false
		}
		f := foldNone
		switch v[0].String() {
		case "lower":
			f = foldLower
		case "upper":
			f = foldUpper
		default:
			return operand{}, false
		}
		o, ok := inputOperand(v[1])
		if !ok || o.fold != foldNone {
			return operand{}, false
		}
		o.fold = f
		return o, true
	case ast.Ref:
		if len(v) < 3 || !v[0].Equal(ast.InputRootDocument) {
			return operand{}, false
		}
		parts := make([]string, 0, len(v)-1)
		for _, p := range v[1:] {
			s, ok := p.Value.(ast.String)
			if !ok {
				return operand{}, false
			}
			parts = append(parts, string(s))
		}
		if len(parts) == 3 && parts[0] == "request" && parts[1] == "headers" {
			return operand{field: fHeader, header: parts[2]}, true
		}
		if len(parts) != 2 {
			return operand{}, false
		}
		f, ok := fieldRefs[parts[0]+"."+parts[1]]
		return operand{field: f}, ok
	}
	return operand{}, false
}

// stringCollection is a set or array literal of strings.
func stringCollection(t *ast.Term) ([]string, bool) {
	var out []string
	ok := true
	add := func(e *ast.Term) {
		if s, isStr := e.Value.(ast.String); isStr {
			out = append(out, string(s))
		} else {
			ok = false
		}
	}
	switch v := t.Value.(type) {
	case ast.Set:
		v.Foreach(add)
	case *ast.Array:
		v.Foreach(add)
	default:
		return nil, false
	}
	return out, ok
}

// globDelimiters is glob.match's second argument the way OPA reads it:
// null is no delimiters, [] is ".", otherwise one rune per string.
func globDelimiters(t *ast.Term) ([]rune, bool) {
	switch v := t.Value.(type) {
	case ast.Null:
		return []rune{}, true
	case *ast.Array:
		if v.Len() == 0 {
			return []rune{'.'}, true
		}
		out := make([]rune, 0, v.Len())
		for i := range v.Len() {
			s, ok := v.Elem(i).Value.(ast.String)
			if !ok {
				return nil, false
			}
			r := []rune(string(s))
			if len(r) != 1 {
				return nil, false
			}
			out = append(out, r[0])
		}
		return out, true
	}
	return nil, false
}

// engineNote says which engine decides the calls of rs (for Explain).
func (rs *regoSet) engineNote() string {
	if rs.prog != nil {
		return "calls are decided by the Rego compiled to Go; explained here by OPA, the engine of record"
	}
	return "calls are evaluated by OPA (not compiled: " + rs.notCompiled.Error() + ")"
}

// RegoEngines maps every namespace with Rego (MeshDir for the mesh-wide
// rules alone, which decide namespaces without Rego of their own) to ""
// when its calls are decided by the Rego compiled to Go, or to why OPA
// evaluates them instead (file:line: what the compiler does not handle).
func (s *Snapshot) RegoEngines() map[string]string {
	out := map[string]string{}
	note := func(name string, rs *regoSet) {
		if rs == nil {
			return
		}
		out[name] = ""
		if rs.prog == nil {
			out[name] = rs.notCompiled.Error()
		}
	}
	note(MeshDir, s.meshRego)
	for name, ns := range s.ns {
		note(name, ns.rego)
	}
	return out
}

// RegoNamespaces counts the Rego sets of the policy in force by engine:
// compiled to Go, or evaluated by OPA (for metrics).
func (e *Engine) RegoNamespaces() (compiled, opa uint64) {
	for _, why := range e.cur.Load().RegoEngines() {
		if why == "" {
			compiled++
		} else {
			opa++
		}
	}
	return compiled, opa
}

// logEngines logs, at debug level, the namespaces whose Rego OPA evaluates
// because the compiler does not handle it.
func (e *Engine) logEngines(s *Snapshot) {
	for ns, why := range s.RegoEngines() {
		if why != "" {
			e.log.Debug("policy: rego not compiled; OPA evaluates every call", "namespace", ns, "why", why)
		}
	}
}
