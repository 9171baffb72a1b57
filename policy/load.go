package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/policy/accesscontrol"
)

// MeshDir is the folder of mesh-wide rules inside the policy directory.
const MeshDir = "_mesh"

// Package is the Rego package of policies.
const Package = "mesh.authz"

// meshPackage is where mesh-wide modules are moved so that they compile
// next to a namespace's modules without merging with them.
var meshPackage = ast.Ref{ast.DefaultRootDocument, ast.StringTerm("meshwide"), ast.StringTerm("authz")}

const wrapperFile = "meshd:decision.rego"

// The wrapper combines mesh-wide and namespace rules into one verdict, so a
// call costs one evaluation. A deny rule that is not a set, or an allow that
// is not a boolean, is rejected at load time (see checkRules).
const wrapperSrc = `package meshd.decision

mesh_deny contains r if some r in data.meshwide.authz.deny
ns_deny contains r if some r in data.mesh.authz.deny

allowed if data.meshwide.authz.allow == true
allowed if data.mesh.authz.allow == true

# denied stops at the first deny reason found; the reasons are collected
# (reasons below) only for a call that is denied.
denied if data.meshwide.authz.deny[_]
denied if data.mesh.authz.deny[_]

default verdict := "none"
verdict := "deny" if {
	denied
} else := "allow" if {
	allowed
}

# full_verdict is verdict with every deny rule evaluated: explanations list
# all the rules that matched.
default full_verdict := "none"
full_verdict := "deny" if {
	count(mesh_deny) + count(ns_deny) > 0
} else := "allow" if {
	allowed
}

reasons := array.concat(sort([sprintf("%v", [r]) | some r in mesh_deny]), sort([sprintf("%v", [r]) | some r in ns_deny]))
`

// The queries of the decision module, parsed the first time a policy is
// prepared (not in package init: a sidecar without policy never parses
// them; docs/performance.md, "Where a start's time goes").
var (
	verdictQuery = sync.OnceValue(func() ast.Body { return ast.MustParseBody("data.meshd.decision.verdict") })
	explainQuery = sync.OnceValue(func() ast.Body { return ast.MustParseBody("data.meshd.decision.full_verdict") })
	reasonsQuery = sync.OnceValue(func() ast.Body { return ast.MustParseBody("data.meshd.decision.reasons") })
)

// FileError is a policy file that failed to load.
type FileError struct {
	File   string // relative to the policy directory (or the --config path)
	Line   int
	Reason string
}

func (e *FileError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// LoadError lists every file error of a load.
type LoadError struct{ Errs []*FileError }

func (e *LoadError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		parts[i] = fe.Error()
	}
	return "policy: " + strings.Join(parts, "; ")
}

// Source is what a snapshot is loaded from.
type Source struct {
	// Dir is the policy directory ("" for none).
	Dir string
	// FS, when not nil, is read instead of Dir: the same layout
	// ({namespace}/*.rego, _mesh/), from any file system, such as the
	// in-memory tree the xds resolver builds from the PolicySets it
	// receives.
	FS fs.FS
	// ConfigFile is a Dapr Configuration whose spec.accessControl applies
	// to every call this engine decides (the sidecar's own app).
	ConfigFile string
}

// regoSet is one prepared evaluation: the mesh-wide modules plus one
// namespace's modules (or none).
type regoSet struct {
	verdict, reasons rego.PreparedEvalQuery
	explain          rego.PreparedEvalQuery // verdict with every rule evaluated (Explain)
	compiler         *ast.Compiler
	needHeaders      bool
	needQuery        bool
	// cancel is never cancelled: passing it stops rego from starting a
	// goroutine per evaluation (the queries are short and bounded).
	cancel    topdown.Cancel
	baseOpts  []rego.EvalOption
	cacheable bool
	cache     decisionCache
	// files lists the user files compiled in.
	files []string
	// denyRule is the rule of a Rego deny, "rego deny (files)".
	denyRule string
	// prog is the same Rego compiled to Go (compile.go): when not nil,
	// calls are decided by it; notCompiled says why it is nil.
	prog        *program
	notCompiled error
}

type nsPolicy struct {
	rego  *regoSet // nil: no namespace Rego (then Snapshot.meshRego applies)
	acls  []*accesscontrol.ACL
	files []string
}

// Snapshot is one loaded, compiled policy set. It is immutable.
type Snapshot struct {
	source     Source
	meshRego   *regoSet // mesh-wide modules alone; nil without _mesh Rego
	meshACLs   []*accesscontrol.ACL
	configACLs []*accesscontrol.ACL
	ns         map[string]*nsPolicy
	// Files are the files loaded, relative to Dir.
	Files []string
}

// Namespaces returns the namespaces that have a policy, sorted.
func (s *Snapshot) Namespaces() []string {
	out := make([]string, 0, len(s.ns))
	for ns := range s.ns {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

type rawFile struct {
	rel string
	src []byte
}

// Load reads and compiles src. All file errors are collected into a
// *LoadError.
func Load(ctx context.Context, src Source) (*Snapshot, error) {
	s := &Snapshot{source: src, ns: map[string]*nsPolicy{}}
	var errs []*FileError
	fail := func(err error, rel string) {
		errs = append(errs, toFileErrors(err, rel)...)
	}
	if src.ConfigFile != "" {
		b, err := os.ReadFile(src.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("policy: --config: %w", err)
		}
		acls, err := accesscontrol.Parse(src.ConfigFile, b)
		if err != nil {
			fail(err, src.ConfigFile)
		}
		s.configACLs = acls
		s.Files = append(s.Files, src.ConfigFile)
	}
	if src.Dir != "" || src.FS != nil {
		fsys := src.FS
		if fsys == nil {
			if _, err := os.ReadDir(src.Dir); err != nil {
				return nil, fmt.Errorf("policy: --policy-dir: %w", err)
			}
			fsys = os.DirFS(src.Dir)
		}
		entries, err := fs.ReadDir(fsys, ".")
		if err != nil {
			return nil, fmt.Errorf("policy: --policy-dir: %w", err)
		}
		var meshMods []*ast.Module
		var meshFiles []string
		nsRego := map[string][]*ast.Module{}
		nsFiles := map[string][]string{}
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, ".") {
				continue // hidden, and Kubernetes ConfigMap "..data" links
			}
			st, err := fs.Stat(fsys, name) // follows symlinks
			if err != nil {
				return nil, fmt.Errorf("policy: %w", err)
			}
			if !st.IsDir() {
				if isPolicyFile(name) {
					errs = append(errs, &FileError{name, 1, "policy files belong in a namespace folder ({dir}/{namespace}/) or " + MeshDir + "/"})
				}
				continue
			}
			if name != MeshDir {
				if err := certs.ValidateNamespace(name); err != nil {
					errs = append(errs, &FileError{name, 1, "folder is not a namespace: " + err.Error()})
					continue
				}
			}
			files, err := readFolder(fsys, name)
			if err != nil {
				return nil, err
			}
			for _, f := range files {
				s.Files = append(s.Files, f.rel)
				if strings.HasSuffix(f.rel, ".rego") {
					m, err := parseModule(f)
					if err != nil {
						fail(err, f.rel)
						continue
					}
					if name == MeshDir {
						m.Package.Path = meshPackage.Copy()
						meshMods = append(meshMods, m)
						meshFiles = append(meshFiles, f.rel)
					} else {
						nsRego[name] = append(nsRego[name], m)
						nsFiles[name] = append(nsFiles[name], f.rel)
					}
					continue
				}
				acls, err := accesscontrol.Parse(f.rel, f.src)
				if err != nil {
					fail(err, f.rel)
					continue
				}
				if name == MeshDir {
					s.meshACLs = append(s.meshACLs, acls...)
				} else {
					if s.ns[name] == nil {
						s.ns[name] = &nsPolicy{}
					}
					s.ns[name].acls = append(s.ns[name].acls, acls...)
					s.ns[name].files = append(s.ns[name].files, f.rel)
				}
			}
		}
		if len(errs) == 0 {
			if len(meshMods) > 0 {
				rs, err := prepare(ctx, meshMods, nil, meshFiles)
				if err != nil {
					fail(err, MeshDir)
				}
				s.meshRego = rs
			}
			for ns, mods := range nsRego {
				rs, err := prepare(ctx, meshMods, mods, append(append([]string(nil), meshFiles...), nsFiles[ns]...))
				if err != nil {
					fail(err, ns)
					continue
				}
				if s.ns[ns] == nil {
					s.ns[ns] = &nsPolicy{}
				}
				s.ns[ns].rego = rs
				s.ns[ns].files = append(s.ns[ns].files, nsFiles[ns]...)
			}
		}
	}
	if len(errs) > 0 {
		return nil, &LoadError{Errs: errs}
	}
	return s, nil
}

func isPolicyFile(name string) bool {
	return strings.HasSuffix(name, ".rego") || strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// readFolder reads the policy files of one folder (not recursive), sorted,
// without the *_test.rego files.
func readFolder(fsys fs.FS, rel string) ([]rawFile, error) {
	entries, err := fs.ReadDir(fsys, rel)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var out []rawFile
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !isPolicyFile(n) || strings.HasSuffix(n, "_test.rego") {
			continue
		}
		b, err := fs.ReadFile(fsys, path.Join(rel, n))
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		out = append(out, rawFile{rel: rel + "/" + n, src: b})
	}
	return out, nil
}

var packageRef = sync.OnceValue(func() ast.Ref { return ast.MustParseRef("data." + Package) })

func parseModule(f rawFile) (*ast.Module, error) {
	m, err := ast.ParseModuleWithOpts(f.rel, string(f.src), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, err
	}
	if !m.Package.Path.Equal(packageRef()) {
		return nil, &FileError{f.rel, m.Package.Location.Row, fmt.Sprintf("package %s: want package %s", m.Package.Path.String()[len("data."):], Package)}
	}
	return m, checkRules(f.rel, m)
}

// checkRules rejects an allow that is not a single value and a deny that
// is not a set: either would silently never deny.
func checkRules(rel string, m *ast.Module) error {
	for _, r := range m.Rules {
		name := r.Head.Ref().String()
		switch name {
		case "allow":
			if r.Head.RuleKind() != ast.SingleValue || len(r.Head.Args) > 0 {
				return &FileError{rel, r.Location.Row, "allow must be a boolean rule (allow if { ... })"}
			}
		case "deny":
			if r.Head.RuleKind() != ast.MultiValue {
				return &FileError{rel, r.Location.Row, "deny must be a set of reasons (deny contains \"reason\" if { ... })"}
			}
		}
	}
	return nil
}

// capabilities are this OPA's built-ins minus those that reach out of the
// process (network, environment) on the hot path. Built the first time a
// policy is compiled: OPA's capabilities are ~2,000 allocations.
var capabilities = sync.OnceValue(func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	kept := c.Builtins[:0]
	for _, b := range c.Builtins {
		switch b.Name {
		case "http.send", "net.lookup_ip_addr", "opa.runtime", "rego.parse_module", "trace", "print":
			continue
		}
		kept = append(kept, b)
	}
	c.Builtins = kept
	return c
})

// wrapperModule is the parsed decision module, parsed on first use.
var wrapperModule = sync.OnceValue(func() *ast.Module {
	m, err := ast.ParseModuleWithOpts(wrapperFile, wrapperSrc, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		panic(err)
	}
	return m
})

func prepare(ctx context.Context, mesh, ns []*ast.Module, files []string) (*regoSet, error) {
	mods := map[string]*ast.Module{wrapperFile: wrapperModule().Copy()}
	for _, m := range append(append([]*ast.Module(nil), mesh...), ns...) {
		mods[m.Package.Location.File] = m
	}
	c := ast.NewCompiler().WithCapabilities(capabilities())
	c.Compile(mods)
	if c.Failed() {
		return nil, c.Errors
	}
	rs := &regoSet{compiler: c, files: files, denyRule: "rego deny (" + strings.Join(files, ", ") + ")"}
	rs.prog, rs.notCompiled = compileRego(mesh, ns)
	rs.needHeaders, rs.needQuery = inputNeeds(mesh, ns)
	rs.cancel = topdown.NewCancel()
	rs.baseOpts = []rego.EvalOption{rego.EvalExternalCancel(rs.cancel)}
	// A decision depends only on (caller, destination, protocol, method,
	// path) when the policy reads neither headers nor query and calls no
	// non-deterministic built-in: then it is cached for this snapshot.
	rs.cacheable = !rs.needHeaders && !rs.needQuery && deterministic(mesh, ns)
	var err error
	if rs.verdict, err = rego.New(rego.Compiler(c), rego.ParsedQuery(verdictQuery())).PrepareForEval(ctx); err != nil {
		return nil, err
	}
	if rs.reasons, err = rego.New(rego.Compiler(c), rego.ParsedQuery(reasonsQuery())).PrepareForEval(ctx); err != nil {
		return nil, err
	}
	if rs.explain, err = rego.New(rego.Compiler(c), rego.ParsedQuery(explainQuery())).PrepareForEval(ctx); err != nil {
		return nil, err
	}
	return rs, nil
}

// inputNeeds reports whether any module reads input.request.headers or
// input.request.query (or input/input.request as a whole, or with a
// variable key).
func inputNeeds(mods ...[]*ast.Module) (headers, query bool) {
	for _, ms := range mods {
		for _, m := range ms {
			ast.WalkRefs(m, func(r ast.Ref) bool {
				if !r[0].Equal(ast.InputRootDocument) {
					return false
				}
				if len(r) < 3 {
					if len(r) == 1 || !isString(r[1], "source") && !isString(r[1], "destination") {
						headers, query = true, true
					}
					return false
				}
				if !isString(r[1], "request") {
					return false
				}
				switch {
				case isString(r[2], "headers"):
					headers = true
				case isString(r[2], "query"):
					query = true
				case r[2].IsGround():
				default:
					headers, query = true, true
				}
				return false
			})
		}
	}
	return headers, query
}

// deterministic reports whether no module calls a non-deterministic
// built-in (time.now_ns, rand.intn, ...).
func deterministic(mods ...[]*ast.Module) bool {
	ok := true
	for _, ms := range mods {
		for _, m := range ms {
			ast.WalkExprs(m, func(x *ast.Expr) bool {
				if !x.IsCall() {
					return false
				}
				if b, found := ast.BuiltinMap[x.Operator().String()]; found && b.Nondeterministic {
					ok = false
				}
				return false
			})
		}
	}
	return ok
}

func isString(t *ast.Term, s string) bool {
	v, ok := t.Value.(ast.String)
	return ok && string(v) == s
}

// toFileErrors turns parse, compile and accesscontrol errors into
// FileErrors.
func toFileErrors(err error, fallback string) []*FileError {
	var fe *FileError
	if errors.As(err, &fe) {
		return []*FileError{fe}
	}
	var ae *accesscontrol.Error
	if errors.As(err, &ae) {
		return []*FileError{{ae.File, ae.Line, ae.Reason}}
	}
	var asts ast.Errors
	if errors.As(err, &asts) {
		out := make([]*FileError, 0, len(asts))
		for _, e := range asts {
			f, line := fallback, 1
			if e.Location != nil {
				f, line = e.Location.File, e.Location.Row
			}
			out = append(out, &FileError{f, line, e.Code + ": " + e.Message})
		}
		return out
	}
	return []*FileError{{fallback, 1, err.Error()}}
}
