package ca

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/meshd/meshd/certs"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Replication: several sentry replicas can share one CA kept elsewhere
// (a Kubernetes Secret, package sentry/kubestore). The data directory
// stays each replica's working copy; Snapshot reads the persisted CA
// state (state.json and the files of every generation it names) as a flat
// map, and Restore writes such a map back and reloads. Only the leader
// advances rotations (Options.Leading); followers Restore what the leader
// published.

// Snapshot returns the persisted CA state: "state.json" and
// "ca/{generation}/{file}" for every generation in it, keyed by path
// relative to the data directory.
func (a *Authority) Snapshot() (map[string][]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return snapshotDir(a.opts.DataDir)
}

func snapshotDir(dir string) (map[string][]byte, error) {
	out := map[string][]byte{}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("ca: snapshot: %w", err)
	}
	out[stateFile] = b
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	for _, g := range st.Generations {
		ents, err := os.ReadDir(filepath.Join(dir, genDir, g.Name))
		if err != nil {
			return nil, fmt.Errorf("ca: snapshot: %w", err)
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			rel := genDir + "/" + g.Name + "/" + e.Name()
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
			if err != nil {
				return nil, fmt.Errorf("ca: snapshot: %w", err)
			}
			out[rel] = b
		}
	}
	return out, nil
}

var snapshotPath = regexp.MustCompile(`^(state\.json|ca/[0-9]{4,9}/(root|issuer)\.(pem|key))$`)

// checkSnapshot refuses a snapshot with unexpected paths or without a
// state that names its generations.
func checkSnapshot(files map[string][]byte) error {
	if _, ok := files[stateFile]; !ok {
		return errors.New("ca: restore: no state.json")
	}
	for p := range files {
		if !snapshotPath.MatchString(p) {
			return fmt.Errorf("ca: restore: unexpected entry %q", p)
		}
	}
	return nil
}

// RestoreDir writes a snapshot into dataDir (before Open): state.json last,
// generations not in it removed. A snapshot equal to what the directory
// holds changes nothing.
func RestoreDir(dataDir string, files map[string][]byte) (changed bool, err error) {
	if err := checkSnapshot(files); err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Join(dataDir, genDir), 0o700); err != nil {
		return false, fmt.Errorf("ca: restore: %w", err)
	}
	if cur, err := snapshotDir(dataDir); err == nil && equalSnapshots(cur, files) {
		return false, nil
	}
	paths := make([]string, 0, len(files))
	gens := map[string]bool{}
	for p := range files {
		if p == stateFile {
			continue
		}
		paths = append(paths, p)
		gens[strings.Split(p, "/")[1]] = true
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(dataDir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			return false, fmt.Errorf("ca: restore: %w", err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".key") {
			mode = 0o600
		}
		if err := certs.WriteFileAtomic(full, files[p], mode); err != nil {
			return false, fmt.Errorf("ca: restore: %w", err)
		}
	}
	if err := certs.WriteFileAtomic(filepath.Join(dataDir, stateFile), files[stateFile], 0o600); err != nil {
		return false, fmt.Errorf("ca: restore: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(dataDir, genDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("ca: restore: %w", err)
	}
	for _, e := range ents {
		if !gens[e.Name()] {
			if err := removeAll(filepath.Join(dataDir, genDir, e.Name())); err != nil {
				return true, err
			}
		}
	}
	return true, nil
}

func equalSnapshots(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// Restore replaces the authority's CA state with a snapshot (a follower
// taking what the leader published) and reloads it: the bundle is
// published if its version changed, signing moves to the active
// generation. A snapshot that does not load leaves the authority as it
// was serving (its data directory is then rewritten on the next Restore).
func (a *Authority) Restore(files map[string][]byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed, err := RestoreDir(a.opts.DataDir, files)
	if err != nil || !changed {
		return err
	}
	st, err := loadState(a.opts.DataDir)
	if err != nil {
		return err
	}
	now := a.opts.Now()
	if err := a.loadGenerations(st, now); err != nil {
		return err
	}
	a.st = st
	if err := a.publishLocked(); err != nil {
		return err
	}
	act := st.active()
	if cur := a.signer.Load(); cur == nil || cur.gen != act.Name || !cur.issuer.Equal(act.m.Issuer) {
		a.signer.Store(newSigner(act.Name, act.m))
		a.log.Info("ca: signing with the replicated active generation", "generation", act.Name)
	}
	return a.renewServing(now)
}

// MaterialFiles returns m as the files Write would create (root.pem,
// issuer.pem, issuer.key and, if m has it, root.key).
func MaterialFiles(m *Material) (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "ca-material-")
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	defer os.RemoveAll(dir)
	sub := filepath.Join(dir, "m")
	if err := m.Write(sub); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, n := range []string{rootCertFile, issuerCertFile, issuerKeyFile, rootKeyFile} {
		b, err := os.ReadFile(filepath.Join(sub, n))
		if errors.Is(err, fs.ErrNotExist) && n == rootKeyFile {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
		out[n] = b
	}
	return out, nil
}

// MaterialFromFiles parses what MaterialFiles returns (unknown names are
// refused).
func MaterialFromFiles(files map[string][]byte) (*Material, error) {
	dir, err := os.MkdirTemp("", "ca-material-")
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	defer os.RemoveAll(dir)
	for n, b := range files {
		switch n {
		case rootCertFile, issuerCertFile, issuerKeyFile, rootKeyFile:
		default:
			return nil, fmt.Errorf("ca: material: unexpected file %q", n)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	return LoadDir(dir)
}

// StageMaterial stages m in the authority's data directory (see Stage);
// the leader imports it on its next tick.
func (a *Authority) StageMaterial(m *Material) error {
	return Stage(a.opts.DataDir, m, a.opts.Now())
}

// TrustDomainOfSnapshot reads the trust domain of a snapshot's active root.
func TrustDomainOfSnapshot(files map[string][]byte) (spiffeid.TrustDomain, error) {
	dir, err := os.MkdirTemp("", "ca-snapshot-")
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("ca: %w", err)
	}
	defer os.RemoveAll(dir)
	if _, err := RestoreDir(dir, files); err != nil {
		return spiffeid.TrustDomain{}, err
	}
	return TrustDomainOf(dir)
}
