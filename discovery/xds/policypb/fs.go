package policypb

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"testing/fstest"
)

// Limits of one PolicySet: a policy folder is a few small files.
const (
	MaxFiles     = 256
	MaxFileBytes = 1 << 20
)

// Check verifies the shape of ps: a name (a namespace or "_mesh"; the
// policy loader checks namespaces), at most MaxFiles files, each a plain
// *.rego, *.yaml or *.yml name (no folder, no dot file, no duplicate) of
// at most MaxFileBytes. It does not compile the policy.
func Check(ps *PolicySet) error {
	if ps == nil {
		return errors.New("policypb: nil PolicySet")
	}
	name := ps.GetName()
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("policypb: bad PolicySet name %q", name)
	}
	if len(ps.GetFiles()) > MaxFiles {
		return fmt.Errorf("policypb: %s: %d files, at most %d", name, len(ps.GetFiles()), MaxFiles)
	}
	seen := make(map[string]bool, len(ps.GetFiles()))
	for _, f := range ps.GetFiles() {
		p := f.GetPath()
		if p == "" || strings.HasPrefix(p, ".") || strings.ContainsAny(p, "/\\") || !policyFile(p) {
			return fmt.Errorf("policypb: %s: bad file name %q (want a *.rego or *.yaml name)", name, p)
		}
		if seen[p] {
			return fmt.Errorf("policypb: %s: file %q twice", name, p)
		}
		seen[p] = true
		if len(f.GetContent()) > MaxFileBytes {
			return fmt.Errorf("policypb: %s/%s: larger than %d bytes", name, p, MaxFileBytes)
		}
	}
	return nil
}

func policyFile(p string) bool {
	return strings.HasSuffix(p, ".rego") || strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")
}

// FS lays sets out as a policy directory ({name}/{path}), in memory, for
// policy.Source.FS. Every set must pass Check.
func FS(sets []*PolicySet) (fs.FS, error) {
	m := fstest.MapFS{}
	for _, ps := range sets {
		if err := Check(ps); err != nil {
			return nil, err
		}
		if _, dup := m[ps.GetName()]; dup {
			return nil, fmt.Errorf("policypb: PolicySet %q twice", ps.GetName())
		}
		m[ps.GetName()] = &fstest.MapFile{Mode: fs.ModeDir | 0o555}
		for _, f := range ps.GetFiles() {
			m[path.Join(ps.GetName(), f.GetPath())] = &fstest.MapFile{Data: f.GetContent(), Mode: 0o444}
		}
	}
	return m, nil
}

// ValidateAll checks ps (Check), as the envoy protos' ValidateAll do
// theirs: the control plane validates every resource before a snapshot.
func (x *PolicySet) ValidateAll() error { return Check(x) }
