package resiliency_test

import (
	"os"
	"path/filepath"

	"github.com/meshd/meshd/tests/harness"
)

// The Resiliency examples of Dapr's documentation, unchanged; the files are
// shared with proxy/resiliency's unit tests.
var (
	daprOverviewExample = docsExample("overview.yaml")
	daprDefaultsExample = docsExample("defaults.yaml")
	daprMatchingExample = docsExample("matching.yaml")
)

func docsExample(name string) string {
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "proxy", "resiliency", "testdata", "dapr-docs", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}
