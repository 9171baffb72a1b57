package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
)

// TestResult is the outcome of one Rego test rule (test_*).
type TestResult struct {
	File string // relative to the policy directory
	Line int
	Name string // package.rule
	Pass bool
	Skip bool
	// Err is set when the test failed with an error (not just false).
	Err error
}

func (r TestResult) String() string {
	status := "PASS"
	switch {
	case r.Skip:
		status = "SKIP"
	case r.Err != nil:
		status = "ERROR: " + r.Err.Error()
	case !r.Pass:
		status = "FAIL"
	}
	return fmt.Sprintf("%s:%d: %s: %s", r.File, r.Line, r.Name, status)
}

// RunTests runs the Rego tests (*_test.rego) of a policy directory. Each
// folder (a namespace, or _mesh) is compiled and tested on its own, with its
// policy files exactly as written (package mesh.authz); a namespace folder
// also gets the _mesh policy files (not their tests), because the sidecar
// evaluates _mesh and namespace rules together: a namespace test sees the
// mesh-wide denies its calls would meet. Load errors come back as a
// *LoadError.
func RunTests(ctx context.Context, dir string) ([]TestResult, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var out []TestResult
	var errs []*FileError
	meshMods := map[string]*ast.Module{} // _mesh policy files, for namespace folders
	if files, err := filepath.Glob(filepath.Join(dir, MeshDir, "*.rego")); err == nil {
		for _, f := range files {
			if strings.HasSuffix(f, "_test.rego") {
				continue
			}
			rel := MeshDir + "/" + filepath.Base(f)
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("policy: %w", err)
			}
			m, err := ast.ParseModuleWithOpts(rel, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				errs = append(errs, toFileErrors(err, rel)...)
				continue
			}
			meshMods[rel] = m
		}
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		full := filepath.Join(dir, e.Name())
		if st, err := os.Stat(full); err != nil || !st.IsDir() {
			continue
		}
		files, err := filepath.Glob(filepath.Join(full, "*.rego"))
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		mods := map[string]*ast.Module{}
		hasTests := false
		for _, f := range files {
			rel := e.Name() + "/" + filepath.Base(f)
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("policy: %w", err)
			}
			m, err := ast.ParseModuleWithOpts(rel, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				if e.Name() != MeshDir || strings.HasSuffix(f, "_test.rego") { // _mesh policy files: reported above
					errs = append(errs, toFileErrors(err, rel)...)
				}
				continue
			}
			mods[rel] = m
			hasTests = hasTests || strings.HasSuffix(f, "_test.rego")
		}
		if !hasTests || len(errs) > 0 {
			continue
		}
		if e.Name() != MeshDir {
			for rel, m := range meshMods {
				mods[rel] = m
			}
		}
		ch, err := tester.NewRunner().SetModules(mods).SetDefaultRegoVersion(ast.RegoV1).RunTests(ctx, nil)
		if err != nil {
			errs = append(errs, toFileErrors(err, e.Name())...)
			continue
		}
		for r := range ch {
			tr := TestResult{Name: r.Package + "." + r.Name, Pass: r.Pass(), Skip: r.Skip, Err: r.Error}
			if r.Location != nil {
				tr.File, tr.Line = r.Location.File, r.Location.Row
			}
			out = append(out, tr)
		}
	}
	if len(errs) > 0 {
		return out, &LoadError{Errs: errs}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		return out[i].Line < out[j].Line
	})
	return out, nil
}
