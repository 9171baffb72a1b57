package helmchart

import (
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Release names the install.
type Release struct {
	Name, Namespace string
}

// Render renders the chart in dir with values over its values.yaml and
// returns the manifests, one YAML document per object, in a stable order
// (template file name, then position in the file).
func Render(dir string, rel Release, values map[string]any) ([]string, error) {
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("helmchart: load %s: %w", dir, err)
	}
	vals, err := util.ToRenderValues(ch, values, common.ReleaseOptions{Name: rel.Name, Namespace: rel.Namespace, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return nil, fmt.Errorf("helmchart: values: %w", err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("helmchart: render: %w", err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		if strings.HasSuffix(n, ".yaml") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var docs []string
	for _, n := range names {
		for d := range strings.SplitSeq(files[n], "\n---") {
			if body := strings.TrimSpace(stripComments(d)); body != "" {
				docs = append(docs, "# Source: "+n+"\n"+strings.TrimSpace(d)+"\n")
			}
		}
	}
	return docs, nil
}

// stripComments drops whole-line comments (to tell an empty document).
func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Objects parses rendered documents.
func Objects(docs []string) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, 0, len(docs))
	for i, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			return nil, fmt.Errorf("helmchart: document %d: %w", i, err)
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("helmchart: document %d has no kind or apiVersion:\n%s", i, d)
		}
		out = append(out, u)
	}
	return out, nil
}

// Lint runs helm lint's rules on the chart in dir and returns every
// message at warning level or above (info messages are advice).
func Lint(dir, namespace string, values map[string]any) []support.Message {
	res := lint.RunAll(dir, values, namespace)
	var out []support.Message
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			out = append(out, m)
		}
	}
	return out
}
