package helmchart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeChart(t *testing.T, tpl string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: c\nversion: 0.1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "t.yaml"), []byte(tpl), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRenderRefuses(t *testing.T) {
	if _, err := Render(filepath.Join(t.TempDir(), "none"), Release{Name: "r", Namespace: "n"}, nil); err == nil {
		t.Error("a missing chart rendered")
	}
	if _, err := Render(writeChart(t, "{{ .Values.a.b.c }}"), Release{Name: "r", Namespace: "n"}, nil); err == nil ||
		!strings.Contains(err.Error(), "t.yaml") {
		t.Errorf("a failing template: %v, want an error naming the file", err)
	}
	docs, err := Render(writeChart(t, "# only a comment\n---\nfoo: bar\n"), Release{Name: "r", Namespace: "n"}, nil)
	if err != nil || len(docs) != 1 {
		t.Fatalf("render: %v %q", err, docs)
	}
	if _, err := Objects(docs); err == nil || !strings.Contains(err.Error(), "no kind") {
		t.Errorf("a document without kind: %v", err)
	}
	if _, err := Objects([]string{"a: [\n"}); err == nil {
		t.Error("broken YAML parsed")
	}
	if msgs := Lint(writeChart(t, "{{ .Values.a.b.c }}"), "n", nil); len(msgs) == 0 {
		t.Error("lint found nothing in a failing template")
	}
}
