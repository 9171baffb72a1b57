// Package helmchart renders and lints meshd's Helm chart
// (deploy/helm/meshd) with Helm's own Go library (helm.sh/helm/v4), so the
// tests and `make manifests` need no helm binary. Render gives the objects
// `helm template` would; Lint runs `helm lint`'s rules.
package helmchart
