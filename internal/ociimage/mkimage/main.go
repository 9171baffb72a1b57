// Command mkimage writes one of meshd's images (package internal/ociimage):
// an OCI image layout tarball holding the multi-platform index of every
// --binary given, and beside it one single-platform tarball per
// architecture. `make image` runs it for each binary.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/meshd/meshd/internal/ociimage"
)

// parseBinaries reads the --binary ARCH=FILE flags.
func parseBinaries(vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, b := range vals {
		arch, file, ok := strings.Cut(b, "=")
		if !ok || arch == "" || file == "" {
			return nil, fmt.Errorf("--binary %q: want ARCH=FILE", b)
		}
		if _, dup := out[arch]; dup {
			return nil, fmt.Errorf("--binary: %s given twice", arch)
		}
		out[arch] = file
	}
	return out, nil
}

func main() {
	var o ociimage.Options
	var out, ref string
	var binaries []string
	cmd := &cobra.Command{
		Use:           "mkimage",
		Short:         "write a meshd image (one static binary, non-root) for one or more architectures",
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
			if !strings.HasSuffix(out, ".tar") {
				return fmt.Errorf("--out %q: want a NAME.tar file", out)
			}
			files, err := parseBinaries(binaries)
			if err != nil {
				return err
			}
			imgs := map[string]v1.Image{}
			for arch, file := range files {
				oa := o
				oa.Arch, oa.Binary = arch, file
				img, err := ociimage.Build(oa)
				if err != nil {
					return err
				}
				imgs[arch] = img
				if err := ociimage.Write(strings.TrimSuffix(out, ".tar")+"-"+arch+".tar", ref, img); err != nil {
					return err
				}
			}
			idx, err := ociimage.Index(imgs)
			if err != nil {
				return err
			}
			return ociimage.WriteLayout(out, ref, idx, o.Created)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&binaries, "binary", nil, "ARCH=FILE: the static linux binary for GOARCH ARCH (required; repeatable, one per architecture)")
	f.StringVar(&o.Name, "name", "", "its name in the image, /NAME (required)")
	f.StringVar(&o.Version, "version", "dev", "org.opencontainers.image.version")
	f.StringVar(&o.Source, "source", "https://github.com/meshd/meshd", "org.opencontainers.image.source")
	f.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision")
	f.StringVar(&ref, "tag", "", "image reference, e.g. ghcr.io/meshd/meshd:v1 (required)")
	f.StringVar(&out, "out", "", "NAME.tar: the OCI layout tarball of the index; NAME-ARCH.tar beside it per architecture (required)")
	for _, n := range []string{"binary", "name", "tag", "out"} {
		_ = cmd.MarkFlagRequired(n)
	}
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}
