package policypb_test

import (
	"io/fs"
	"strings"
	"testing"

	"github.com/meshd/meshd/discovery/xds/policypb"
)

func set(name string, files ...string) *policypb.PolicySet {
	ps := &policypb.PolicySet{Name: name}
	for _, f := range files {
		ps.Files = append(ps.Files, &policypb.File{Path: f, Content: []byte("x")})
	}
	return ps
}

func TestCheck(t *testing.T) {
	big := set("default", "a.rego")
	big.Files[0].Content = make([]byte, policypb.MaxFileBytes+1)
	many := set("default")
	for i := 0; i <= policypb.MaxFiles; i++ {
		many.Files = append(many.Files, &policypb.File{Path: strings.Repeat("a", i+1) + ".rego"})
	}
	for _, c := range []struct {
		ps   *policypb.PolicySet
		want string
	}{
		{set("default", "a.rego", "b.yaml", "c.yml"), ""},
		{set("_mesh", "a.rego"), ""},
		{nil, "nil"},
		{set(""), "name"},
		{set(".."), "name"},
		{set("a/b"), "name"},
		{set("default", "../x.rego"), "file name"},
		{set("default", "sub/x.rego"), "file name"},
		{set("default", ".hidden.rego"), "file name"},
		{set("default", "x.txt"), "file name"},
		{set("default", "a.rego", "a.rego"), "twice"},
		{big, "larger"},
		{many, "files"},
	} {
		err := policypb.Check(c.ps)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Check(%v) = %v; want %q", c.ps, err, c.want)
		}
		if (err == nil) != (c.ps.ValidateAll() == nil) {
			t.Errorf("ValidateAll and Check disagree on %v", c.ps)
		}
	}
}

func TestFS(t *testing.T) {
	fsys, err := policypb.FS([]*policypb.PolicySet{set("default", "a.rego"), set("_mesh", "m.rego")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(fsys, "default/a.rego")
	if err != nil || string(b) != "x" {
		t.Errorf("default/a.rego: %q %v", b, err)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil || len(entries) != 2 || !entries[0].IsDir() {
		t.Errorf("root: %v %v", entries, err)
	}
	if _, err := policypb.FS([]*policypb.PolicySet{set("a", "x.rego"), set("a", "y.rego")}); err == nil {
		t.Error("the same set twice was accepted")
	}
	if _, err := policypb.FS([]*policypb.PolicySet{set("a", "../x.rego")}); err == nil {
		t.Error("a bad set was accepted")
	}
}
