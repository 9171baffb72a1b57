// Package version is the version every meshd binary reports (--version,
// the metadata API). `make build` and `make image` set it through the
// linker:
//
//	go build -ldflags "-X github.com/meshd/meshd/internal/version.Version=v1.2.3"
//
// Left empty, it comes from the binary's build information: the main
// module's version (set by `go install mod@version`), else the VCS revision
// it was built from ("dev+abc123def456", "-dirty" when the tree had
// changes), else "dev".
package version

import (
	"runtime/debug"
	"strings"
)

// Version is set at link time; see the package doc.
var Version string

// String is this binary's version.
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" && !strings.HasPrefix(v, "v0.0.0-") {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		if v := bi.Main.Version; strings.HasPrefix(v, "v0.0.0-") {
			return v // a pseudo-version names the commit too
		}
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "dev+" + rev + dirty
}
