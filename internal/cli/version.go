package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/internal/version"
)

// VersionString is the version of this binary, as --version prints it
// (internal/version).
func VersionString() string { return version.String() }

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
