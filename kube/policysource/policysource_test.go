package policysource

import (
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
)

func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, o := range map[string]Options{
		"no namespace": {Dir: dir},
		"no dir":       {MeshNamespace: "meshd-system"},
	} {
		if _, err := New(fake.NewClientset(), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(nil, Options{MeshNamespace: "m", Dir: dir}); err == nil {
		t.Error("no client: accepted")
	}
	if _, err := New(fake.NewClientset(), Options{MeshNamespace: "m", Dir: filepath.Join(dir, "a", "b")}); err != nil {
		t.Errorf("a missing directory is made: %v", err)
	}
}

func TestPolicyKeys(t *testing.T) {
	for k, want := range map[string]bool{"a.rego": true, "a_test.rego": false, "acl.yaml": true, "acl.yml": true, "README.md": false, "x": false} {
		if policyKey(k) != want {
			t.Errorf("policyKey(%q) = %v", k, !want)
		}
	}
}
