package xds

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/meshd/meshd/discovery/xds/policypb"
	"github.com/meshd/meshd/policy"
)

// readPolicies reads the policy directory into one PolicySet per folder
// (namespace or _mesh) and checks the whole tree with the policy loader,
// as a sidecar would load it: a tree that does not load is an error (a
// *policy.LoadError with file:line:reason) and serves nothing new.
func readPolicies(ctx context.Context, dir string) (map[string]*policypb.PolicySet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("xds: --policy-dir: %w", err)
	}
	sets := map[string]*policypb.PolicySet{}
	var list []*policypb.PolicySet
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue // hidden, and Kubernetes ConfigMap "..data" links
		}
		full := filepath.Join(dir, name)
		st, err := os.Stat(full) // follows symlinks
		if err != nil {
			return nil, fmt.Errorf("xds: --policy-dir: %w", err)
		}
		if !st.IsDir() {
			continue
		}
		ps := &policypb.PolicySet{Name: name}
		files, err := os.ReadDir(full)
		if err != nil {
			return nil, fmt.Errorf("xds: --policy-dir: %w", err)
		}
		for _, f := range files {
			n := f.Name()
			if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "_test.rego") ||
				!(strings.HasSuffix(n, ".rego") || strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				continue
			}
			b, err := readLimited(filepath.Join(full, n), policypb.MaxFileBytes)
			if err != nil {
				return nil, fmt.Errorf("xds: --policy-dir: %w", err)
			}
			ps.Files = append(ps.Files, &policypb.File{Path: n, Content: b})
		}
		sort.Slice(ps.Files, func(i, j int) bool { return ps.Files[i].Path < ps.Files[j].Path })
		sets[name] = ps
		list = append(list, ps)
	}
	fsys, err := policypb.FS(list)
	if err != nil {
		return nil, fmt.Errorf("xds: --policy-dir: %w", err)
	}
	if _, err := policy.Load(ctx, policy.Source{FS: fsys}); err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	return sets, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
