package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Version is set at link time by the Makefile:
//
//	go build -ldflags "-X github.com/meshd/meshd/internal/cli.Version=v1.2.3"
//
// Left empty, the version comes from the binary's build information: the
// main module's version (set by `go install mod@version`), else the VCS
// revision it was built from ("dev+abc123def456", "-dirty" when the tree had
// changes).
var Version string

// VersionString is the version of this binary, as --version prints it.
func VersionString() string {
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

// versionLine is what --version and `version` print.
func versionLine(prog string) string {
	return fmt.Sprintf("%s %s (%s, %s/%s)\n", prog, VersionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// addVersion gives root --version and a `version` subcommand.
func addVersion(root *cobra.Command) {
	root.Version = VersionString()
	root.SetVersionTemplate(versionLine(root.Name()))
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "print the version of " + root.Name(),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), versionLine(root.Name()))
			return err
		},
	})
}
