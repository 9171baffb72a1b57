// Command render writes the plain manifests of deploy/kubernetes/ from the
// Helm chart (`make manifests`), for people without Helm.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/meshd/meshd/internal/helmchart"
)

const header = `# meshd on Kubernetes without Helm: the chart deploy/helm/meshd rendered with
# its default values into namespace meshd-system (make manifests writes this
# file; do not edit it). Install:
#
#   kubectl create namespace meshd-system
#   kubectl apply --server-side -f deploy/kubernetes/meshd.yaml
#
`

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: render CHART-DIR OUT-FILE")
		os.Exit(2)
	}
	docs, err := helmchart.Render(os.Args[1], helmchart.Release{Name: "meshd", Namespace: "meshd-system"}, nil)
	if err == nil {
		_, err = helmchart.Objects(docs)
	}
	if err == nil {
		err = os.WriteFile(os.Args[2], []byte(header+"---\n"+strings.Join(docs, "---\n")), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
