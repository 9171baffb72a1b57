// Command mkimage writes one of meshd's images as a tarball (package
// internal/ociimage); `make image` runs it for each binary and platform.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/internal/ociimage"
)

func main() {
	var o ociimage.Options
	var out, ref string
	cmd := &cobra.Command{
		Use:           "mkimage",
		Short:         "write a meshd image (one static binary, non-root) as a tarball",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(*cobra.Command, []string) error {
			if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
				sec, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", v, err)
				}
				o.Created = time.Unix(sec, 0).UTC()
			}
			img, err := ociimage.Build(o)
			if err != nil {
				return err
			}
			return ociimage.Write(out, ref, img)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Binary, "binary", "", "static linux binary (required)")
	f.StringVar(&o.Name, "name", "", "its name in the image, /NAME (required)")
	f.StringVar(&o.Arch, "arch", "amd64", "GOARCH of the binary")
	f.StringVar(&o.Version, "version", "dev", "org.opencontainers.image.version")
	f.StringVar(&o.Source, "source", "https://github.com/meshd/meshd", "org.opencontainers.image.source")
	f.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision")
	f.StringVar(&ref, "tag", "", "image reference in the tarball, e.g. ghcr.io/meshd/meshd:v1 (required)")
	f.StringVar(&out, "out", "", "tarball to write (required)")
	for _, n := range []string{"binary", "name", "tag", "out"} {
		_ = cmd.MarkFlagRequired(n)
	}
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
