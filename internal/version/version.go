// Package version holds the version the binaries report with --version.
// `make build` and `make image` set it from `git describe` through the
// linker (-X github.com/meshd/meshd/internal/version.Version=...); a plain
// `go build` reports "dev".
package version

// Version is this build's version.
var Version = "dev"
