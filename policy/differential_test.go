package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/policy/authz"
	"github.com/meshd/meshd/policy/decisionlog"
)

// The differential test: every decision of the Rego compiled to Go equals
// OPA's (verdict and deny reasons), over generated and hand-written
// policies and generated requests.

// chooser picks a number in [0, n): from math/rand in the tests, from the
// fuzzer's bytes in the fuzz target.
type chooser interface{ intn(n int) int }

type randChooser struct{ r *rand.Rand }

func (c randChooser) intn(n int) int { return c.r.IntN(n) }

// byteChooser reads its choices from b; once b is used up, every choice is 0.
type byteChooser struct{ b []byte }

func (c *byteChooser) intn(n int) int {
	if len(c.b) == 0 {
		return 0
	}
	v := int(c.b[0])
	c.b = c.b[1:]
	return v % n
}

func pick[T any](c chooser, xs []T) T { return xs[c.intn(len(xs))] }

var (
	genApps       = []string{"frontend", "svc1", "svc30", "orders", "web", "admin", "Web", "banned0"}
	genNamespaces = []string{"default", "shop", "team-a", "Default"}
	genDomains    = []string{"cluster.local", "evil.example", "other.td"}
	genMethods    = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "get", "", "OPTIONS"}
	genProtocols  = []string{"http", "grpc"}
	genPaths      = []string{"/", "", "/orders", "/orders/42", "/Orders/7", "/ordersX", "/api/v1/items/123/detail1",
		"/api/v30/orders/9", "/items/a/detail1", "/items/a/b/detail1", "/items//detail1", "/admin", "/ADMIN/x",
		"/AdMiN", "/admin2", "/healthz", "/exact/5", "/café/ü", "/\u212a" /* Kelvin sign: lower() is "k" */, "/k",
		"/a.b/c", `/x\/y`, "/x/b1", "/x/d", "/a/b/x", "/a/c/y", "/orders.v1.Orders/Get", "/*", "/İ", "/\xff\xfe"}
	genHeaderNames = []string{"x-report", "content-type", "x-tenant"}
	genHeaderVals  = []string{"yes", "no", "YES", "", "a, b", "application/json", `a\/b`}
	genReasons     = []string{"blocked", "DELETE is forbidden", "admin routes are closed", "Z last", "a first", "ünïcode", "blocked"}
	genGlobs       = []string{"/items/*/detail*", "/api/**", "/a/{b,c}/*", "/x/[a-c]?", "*", "**", "/orders/?", "/*/*",
		"/items/*", "/{orders,admin}*", "/[!a]*", "*/detail1", "/café/*"}
	genGlobDelims = []string{`["/"]`, `[]`, `null`, `["/", "."]`, `["."]`}
	genRegexes    = []string{`^/orders/[0-9]+$`, `(?i)^/admin`, `detail[0-9]$`, `^$`, `ü`, `^/(a|b)/`}
	genFields     = []string{"input.source.app_id", "input.source.namespace", "input.source.trust_domain",
		"input.source.spiffe_id", "input.destination.app_id", "input.destination.namespace",
		"input.request.protocol", "input.request.method", "input.request.path"}
)

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// genLiteral is a string the field may hold (so rules match), or not.
func genLiteral(c chooser, field string) string {
	switch field {
	case "input.source.app_id", "input.destination.app_id":
		return pick(c, genApps)
	case "input.source.namespace", "input.destination.namespace":
		return pick(c, genNamespaces)
	case "input.source.trust_domain":
		return pick(c, genDomains)
	case "input.source.spiffe_id":
		switch c.intn(4) {
		case 0:
			return ""
		case 1:
			return "spiffe://" + pick(c, genDomains) + "/ns/" + pick(c, genNamespaces)
		}
		return "spiffe://" + pick(c, genDomains) + "/ns/" + pick(c, genNamespaces) + "/" + pick(c, genApps)
	case "input.request.protocol":
		return pick(c, genProtocols)
	case "input.request.method":
		return pick(c, genMethods)
	}
	return pick(c, genPaths)
}

func genOperand(c chooser) (expr, field string) {
	if c.intn(6) == 0 {
		h := pick(c, genHeaderNames)
		if c.intn(2) == 0 {
			return fmt.Sprintf("input.request.headers[%s]", quote(h)), "header"
		}
		return "input.request.headers." + strings.ReplaceAll(h, "-", "_"), "header"
	}
	f := pick(c, genFields)
	switch c.intn(6) {
	case 0:
		return "lower(" + f + ")", f
	case 1:
		return "upper(" + f + ")", f
	}
	return f, f
}

func genCond(c chooser, helpers []string) string {
	if len(helpers) > 0 && c.intn(5) == 0 {
		if c.intn(3) == 0 {
			return "not " + pick(c, helpers)
		}
		return pick(c, helpers)
	}
	x, f := genOperand(c)
	lit := func() string {
		if f == "header" {
			return quote(pick(c, genHeaderVals))
		}
		return quote(genLiteral(c, f))
	}
	var s string
	switch c.intn(12) {
	case 0:
		s = x + " != " + lit()
	case 1:
		s = fmt.Sprintf("%s in {%s, %s}", x, lit(), lit())
	case 2:
		s = fmt.Sprintf("%s in [%s, %s, %s]", x, lit(), lit(), lit())
	case 3:
		s = fmt.Sprintf("startswith(%s, %s)", x, quote(pick(c, []string{"/orders", "/admin", "/api/v", "/", "", "spiffe://cluster.local/"})))
	case 4:
		s = fmt.Sprintf("endswith(%s, %s)", x, quote(pick(c, []string{"detail1", "/", "42", "local", ""})))
	case 5:
		s = fmt.Sprintf("contains(%s, %s)", x, quote(pick(c, []string{"/items/", "e", "ü", "//"})))
	case 6:
		s = fmt.Sprintf("glob.match(%s, %s, %s)", quote(pick(c, genGlobs)), pick(c, genGlobDelims), x)
	case 7:
		s = fmt.Sprintf("regex.match(%s, %s)", quote(pick(c, genRegexes)), x)
	case 8:
		y, _ := genOperand(c)
		s = x + pick(c, []string{" == ", " != "}) + y
	case 9:
		s = x // defined
		if strings.HasSuffix(x, ")") {
			s = x + " == " + lit() // a bare call is not a shape the compiler handles
		}
	case 10:
		s = lit() + " == " + x
	default:
		s = x + pick(c, []string{" == ", " = "}) + lit()
	}
	if c.intn(5) == 0 {
		s = "not " + s
	}
	return s
}

func genBody(c chooser, helpers []string) string {
	n := 1 + c.intn(4)
	conds := make([]string, n)
	for i := range conds {
		conds[i] = "\t" + genCond(c, helpers)
	}
	return "{\n" + strings.Join(conds, "\n") + "\n}"
}

// genModule is a module of the shapes the compiler handles.
func genModule(c chooser, withDefault bool, prefix string) string {
	var b strings.Builder
	b.WriteString("package mesh.authz\n\n")
	if c.intn(4) == 0 {
		b.WriteString("import rego.v1\n\n")
	}
	// Boolean helper rules, used by allow and deny bodies.
	var helpers []string
	for j := range c.intn(3) {
		name := fmt.Sprintf("%s_h%d", prefix, j)
		if c.intn(3) == 0 {
			fmt.Fprintf(&b, "default %s := %v\n\n", name, c.intn(3) == 0)
		}
		for range 1 + c.intn(2) {
			fmt.Fprintf(&b, "%s if %s\n\n", name, genBody(c, helpers))
		}
		helpers = append(helpers, name)
	}
	if withDefault && c.intn(5) == 0 {
		fmt.Fprintf(&b, "default allow := %v\n\n", c.intn(3) == 0)
	}
	for range c.intn(6) {
		fmt.Fprintf(&b, "allow if %s\n\n", genBody(c, helpers))
	}
	for range c.intn(4) {
		fmt.Fprintf(&b, "deny contains %s if %s\n\n", quote(pick(c, genReasons)), genBody(c, helpers))
	}
	if c.intn(6) == 0 {
		fmt.Fprintf(&b, "deny contains %s\n\n", quote(pick(c, genReasons)))
	}
	return b.String()
}

func genIdentity(t testing.TB, c chooser) certs.Identity {
	if c.intn(8) == 0 {
		return certs.Identity{}
	}
	return ident(t, pick(c, genDomains), pick(c, genNamespaces), pick(c, genApps))
}

func genRequest(t testing.TB, c chooser) authz.Request {
	req := authz.Request{Caller: genIdentity(t, c),
		Destination: discovery.Target{AppID: pick(c, genApps), Namespace: "default"},
		Protocol:    pick(c, genProtocols), Method: pick(c, genMethods), Path: pick(c, genPaths),
		Header: http.Header{}}
	if c.intn(3) == 0 {
		req.Path += fmt.Sprintf("/%d", c.intn(100000)) // a REST id
	}
	for range c.intn(3) {
		name := pick(c, genHeaderNames)
		if c.intn(3) == 0 {
			name = http.CanonicalHeaderKey(name)
		}
		if c.intn(4) == 0 {
			req.Header[name] = []string{pick(c, genHeaderVals), pick(c, genHeaderVals)}
		} else {
			req.Header[name] = []string{pick(c, genHeaderVals)}
		}
	}
	// Two names that differ only in case make OPA's input depend on map
	// order; the compiled matcher hands such calls to OPA (TestCompiledAmbiguousHeader).
	seen := map[string]bool{}
	for k := range req.Header {
		if seen[strings.ToLower(k)] {
			delete(req.Header, k)
		}
		seen[strings.ToLower(k)] = true
	}
	return req
}

// diffEngine loads files into a directory and builds an engine that
// compiles and one that only uses OPA, both without the decision cache.
func diffEngines(t testing.TB, files map[string]string) (fast, opa *Engine) {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	quiet := slog.New(slog.DiscardHandler)
	opts := Options{Source: Source{Dir: dir}, Default: DefaultDeny, Logger: quiet,
		DecisionLog: decisionlog.New(quiet, 0), NoDecisionCache: true}
	fast = newEngine(t, opts)
	opts.NoRegoCompile = true
	opts.DecisionLog = decisionlog.New(quiet, 0)
	opa = newEngine(t, opts)
	return fast, opa
}

// regoSetFor is the Rego set that decides calls to the default namespace.
func regoSetFor(s *Snapshot, ns string) *regoSet {
	if p := s.ns[ns]; p != nil && p.rego != nil {
		return p.rego
	}
	return s.meshRego
}

// opaDecide is OPA's verdict and reasons for req (the engine of record).
func opaDecide(t testing.TB, e *Engine, rs *regoSet, req *authz.Request) (string, []string) {
	t.Helper()
	v, err := e.evalVerdict(context.Background(), rs, req, nil)
	if err != nil {
		t.Fatalf("OPA: %v", err)
	}
	if v != "deny" {
		return v, nil
	}
	return v, e.evalReasons(context.Background(), rs, req)
}

// compareDecisions checks every request against both engines, at the
// Rego level (verdict, reasons) and at the engine's (Authorize).
func compareDecisions(t testing.TB, files map[string]string, fast, opa *Engine, reqs []authz.Request) (declined int) {
	t.Helper()
	ctx := context.Background()
	s := fast.Snapshot()
	rs := regoSetFor(s, "default")
	if rs == nil {
		t.Fatalf("no rego for namespace default")
	}
	if rs.prog == nil {
		t.Fatalf("not compiled: %v\n%s", rs.notCompiled, dumpFiles(files))
	}
	for i := range reqs {
		req := &reqs[i]
		gotV, gotR, ok := rs.prog.decide(req)
		if !ok {
			// Only a value with a \ under an indexed glob.match is left to
			// OPA (the generator makes no header names differing in case).
			if !hasBackslash(req) {
				t.Fatalf("compiled matcher declined %s", describe(req))
			}
			declined++
		}
		wantV, wantR := opaDecide(t, fast, rs, req)
		if ok && (gotV != wantV || !slices.Equal(gotR, wantR)) {
			t.Fatalf("request %s:\ncompiled: %s %q\nOPA:      %s %q\npolicy:\n%s", describe(req), gotV, gotR, wantV, wantR, dumpFiles(files))
		}
		df, do := fast.Authorize(ctx, *req), opa.Authorize(ctx, *req)
		if df != do {
			t.Fatalf("request %s: Authorize compiled %+v, OPA %+v\npolicy:\n%s", describe(req), df, do, dumpFiles(files))
		}
	}
	return declined
}

func hasBackslash(req *authz.Request) bool {
	for _, s := range []string{req.Caller.AppID, req.Caller.Namespace, req.Destination.AppID, req.Destination.Namespace, req.Protocol, req.Method, req.Path} {
		if strings.Contains(s, `\`) {
			return true
		}
	}
	for _, vs := range req.Header {
		for _, v := range vs {
			if strings.Contains(v, `\`) {
				return true
			}
		}
	}
	return false
}

func describe(req *authz.Request) string {
	return fmt.Sprintf("caller=%q dest=%s %s %q %q headers=%v", spiffeIDString(req.Caller), req.Destination, req.Protocol, req.Method, req.Path, req.Header)
}

func dumpFiles(files map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "--- %s\n%s\n", k, files[k])
	}
	return b.String()
}

// handWritten are the policies of the docs, the tests, the benchmarks and
// cmd/meshctl's examples.
func handWritten(t testing.TB) []map[string]string {
	docsExample := `package mesh.authz

allow if {
	input.source.app_id == "frontend"
	input.source.namespace == "default"
	input.request.method in {"GET", "POST"}
	startswith(input.request.path, "/orders")
}

deny contains "DELETE is forbidden" if input.request.method == "DELETE"
`
	helpers := `package mesh.authz

is_frontend if {
	input.source.app_id == "frontend"
	input.source.namespace == "default"
}

is_frontend if input.source.spiffe_id == "spiffe://cluster.local/ns/default/svc30"

default is_admin_path := false

is_admin_path if startswith(lower(input.request.path), "/admin")

allow if {
	is_frontend
	not is_admin_path
	input.request.method in {"GET", "POST"}
}

deny contains "admin paths are for frontend" if {
	is_admin_path
	not is_frontend
}
`
	out := []map[string]string{
		{"default/helpers.rego": helpers, "_mesh/base.rego": meshRego},
		{"_mesh/base.rego": meshRego, "default/orders.rego": ordersRego},
		{"default/orders.rego": ordersRego},
		{"_mesh/base.rego": meshRego},
		{"_mesh/base.rego": meshRego, "default/p.rego": rules50()},
		{"default/p.rego": rules50()},
		{"default/doc.rego": docsExample},
	}
	meshctl := map[string]string{}
	for _, f := range []string{"_mesh/base.rego", "default/orders.rego"} {
		b, err := os.ReadFile(filepath.Join("..", "cmd", "meshctl", "testdata", "policies", f))
		if err != nil {
			t.Fatal(err)
		}
		meshctl[f] = string(b)
	}
	return append(out, meshctl)
}

// TestCompiledEqualsOPA is the differential test.
func TestCompiledEqualsOPA(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 2026))
	c := randChooser{r}
	reqs := make([]authz.Request, 400)
	for i := range reqs {
		reqs[i] = genRequest(t, c)
	}
	// Requests the hand-written policies were written for.
	for _, p := range []string{"/orders/42", "/admin", "/ADMIN/x", "/api/v30/orders/42", "/items/7/detail1", "/exact/2", "/healthz"} {
		for _, app := range []string{"frontend", "svc30", "svc1", "svc2", "banned0", "reporting"} {
			for _, m := range []string{"GET", "POST", "DELETE"} {
				reqs = append(reqs, authz.Request{Caller: ident(t, "cluster.local", "default", app),
					Destination: discovery.Target{AppID: "orders", Namespace: "default"},
					Protocol:    "http", Method: m, Path: p, Header: http.Header{"X-Report": {"yes"}}})
			}
		}
	}
	t.Run("hand-written", func(t *testing.T) {
		for i, files := range handWritten(t) {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				fast, opa := diffEngines(t, files)
				compareDecisions(t, files, fast, opa, reqs)
			})
		}
	})
	t.Run("generated", func(t *testing.T) {
		n := 60
		if testing.Short() {
			n = 15
		}
		allows, denies, declined := 0, 0, 0
		for i := range n {
			files := map[string]string{"default/p.rego": genModule(c, true, "p")}
			if r.IntN(2) == 0 {
				files["default/q.rego"] = genModule(c, false, "q")
			}
			if r.IntN(2) == 0 {
				files["_mesh/m.rego"] = genModule(c, true, "m")
			}
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				fast, opa := diffEngines(t, files)
				declined += compareDecisions(t, files, fast, opa, reqs[:200])
				a, d, _ := fast.DecisionLog().Counts()
				allows += int(a)
				denies += int(d)
			})
		}
		// The generated policies must decide both ways, or the test
		// proves little.
		if allows < n*10 || denies < n*10 {
			t.Errorf("generated decisions: %d allows, %d denies; want both common", allows, denies)
		}
		// A value with a \ under an indexed glob.match goes to OPA; the
		// rest must be decided by the compiled matcher.
		if declined > n*200/20 {
			t.Errorf("the compiled matcher declined %d of %d decisions", declined, n*200)
		}
		t.Logf("%d policies, %d decisions: %d allows, %d denies, %d left to OPA", n, n*200, allows, denies, declined)
	})
}

// FuzzCompiledEqualsOPA: a request of the fuzzer's strings, decided the
// same by the compiled matcher and by OPA, against one of the hand-written
// policies or of 64 generated ones (the policy's shapes are varied by
// TestCompiledEqualsOPA; the pool keeps each input cheap). tests/fuzz.sh
// runs every Fuzz target it finds.
func FuzzCompiledEqualsOPA(f *testing.F) {
	f.Add(uint8(0), []byte{0, 0, 0}, "frontend", "GET", "/orders/42", "x-report", "yes")
	f.Add(uint8(3), []byte{0, 1, 0}, "svc30", "GET", "/api/v30/orders/42", "X-Report", "YES")
	f.Add(uint8(9), []byte{1, 2, 1}, "svc1", "DELETE", "/ADMIN/\u212a", "X-Report", "YES")
	f.Add(uint8(40), []byte{2, 3, 0}, "web", "post", "/items//detail1", "content-type", "a, b")
	f.Add(uint8(70), []byte{0, 0, 1}, "admin", "PUT", `/x\/y`, "x-tenant", `a\/b`)
	hand := handWritten(f)
	engines := map[int][2]*Engine{}
	f.Fuzz(func(t *testing.T, policy uint8, choices []byte, app, method, path, hname, hval string) {
		i := int(policy) % (len(hand) + 64)
		pair, ok := engines[i]
		var files map[string]string
		if i < len(hand) {
			files = hand[i]
		} else {
			c := randChooser{rand.New(rand.NewPCG(uint64(i), 19))}
			files = map[string]string{"default/p.rego": genModule(c, true, "p"), "_mesh/m.rego": genModule(c, true, "m")}
		}
		if !ok {
			fast, opa := diffEngines(t, files)
			pair = [2]*Engine{fast, opa}
			engines[i] = pair
		}
		c := &byteChooser{b: choices}
		caller := certs.Identity{}
		if id, err := certs.NewIdentity(pick(c, genDomains), pick(c, genNamespaces), app); err == nil {
			caller = id
		}
		req := authz.Request{Caller: caller, Destination: discovery.Target{AppID: app, Namespace: "default"},
			Protocol: pick(c, genProtocols), Method: method, Path: path, Header: http.Header{}}
		if hname != "" {
			req.Header[hname] = []string{hval}
		}
		compareDecisions(t, files, pair[0], pair[1], []authz.Request{req})
	})
}
