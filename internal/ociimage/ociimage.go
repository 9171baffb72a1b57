package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user the images run as.
const (
	UID      = 65532
	UserName = "nonroot"
)

// Options describe one image.
type Options struct {
	// Binary is the path of a static linux binary; it becomes /{Name}.
	Binary string
	Name   string // meshd, sentry, controlplane
	Arch   string // GOARCH: amd64, arm64
	// Version, Source (repository URL) and Revision (commit) go into the
	// OCI labels.
	Version, Source, Revision string
	// Created is the image's creation time (zero: the epoch, so that the
	// same binary makes the same image).
	Created time.Time
}

// Build makes the image.
func Build(o Options) (v1.Image, error) {
	if o.Binary == "" || o.Name == "" || o.Arch == "" {
		return nil, errors.New("ociimage: binary, name and arch are required")
	}
	if path.Base(o.Name) != o.Name || o.Name == "." {
		return nil, fmt.Errorf("ociimage: name %q must be a plain file name", o.Name)
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("ociimage: %w", err)
	}
	if len(bin) < 4 || string(bin[:4]) != "\x7fELF" {
		return nil, fmt.Errorf("ociimage: %s is not an ELF binary", o.Binary)
	}
	layerTar, err := layer(o.Name, bin, o.Created)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("ociimage: layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{
		Created: v1.Time{Time: o.Created}, CreatedBy: "meshd make image: /" + o.Name + " and the nonroot user"}})
	if err != nil {
		return nil, fmt.Errorf("ociimage: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("ociimage: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", o.Arch, v1.Time{Time: o.Created}
	uid := fmt.Sprint(UID)
	cf.Config = v1.Config{
		User:       uid + ":" + uid,
		Entrypoint: []string{"/" + o.Name},
		WorkingDir: "/",
		Env:        []string{"PATH=/"},
		Labels: map[string]string{
			"org.opencontainers.image.title":    o.Name,
			"org.opencontainers.image.version":  o.Version,
			"org.opencontainers.image.source":   o.Source,
			"org.opencontainers.image.revision": o.Revision,
			"org.opencontainers.image.licenses": "Apache-2.0",
		},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("ociimage: %w", err)
	}
	return img, nil
}

// Write writes img as a tarball tagged ref (for example
// ghcr.io/meshd/meshd:v1.2.3).
func Write(file, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		return fmt.Errorf("ociimage: write %s: %w", file, err)
	}
	return nil
}

// layer is the image's one layer as an uncompressed tar.
func layer(bin string, data []byte, mod time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	uid := fmt.Sprint(UID)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n" + UserName + ":x:" + uid + ":" + uid + ":" + UserName + ":/home/" + UserName + ":/sbin/nologin\n")},
		{"etc/group", 0o644, []byte("root:x:0:\n" + UserName + ":x:" + uid + ":\n")},
		{bin, 0o755, data},
	}
	for _, d := range []string{"etc/", "tmp/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: mod}); err != nil {
			return nil, fmt.Errorf("ociimage: %w", err)
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: mod}); err != nil {
			return nil, fmt.Errorf("ociimage: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("ociimage: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: %w", err)
	}
	return buf.Bytes(), nil
}

// Index is the multi-platform image index of imgs (GOARCH → image, all
// linux): one manifest per architecture, each with its platform, so a
// runtime pulls the one of its node.
func Index(imgs map[string]v1.Image) (v1.ImageIndex, error) {
	if len(imgs) == 0 {
		return nil, errors.New("ociimage: an index needs at least one image")
	}
	archs := make([]string, 0, len(imgs))
	for a := range imgs {
		archs = append(archs, a)
	}
	sort.Strings(archs)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	adds := make([]mutate.IndexAddendum, 0, len(archs))
	for _, a := range archs {
		img := imgs[a]
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("ociimage: %s: %w", a, err)
		}
		if cf.Architecture != a || cf.OS != "linux" {
			return nil, fmt.Errorf("ociimage: the image given for %s is %s/%s", a, cf.OS, cf.Architecture)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: a},
		}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// WriteLayout writes idx as an OCI image layout (oci-layout, index.json,
// blobs/) in one tar file, named ref (for example
// ghcr.io/meshd/meshd:v1.2.3) by the annotations containerd, Docker,
// Podman and skopeo read. The tar's entries are sorted and dated mod, so
// the same images make the same file.
func WriteLayout(file, ref string, idx v1.ImageIndex, mod time.Time) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	dir, err := os.MkdirTemp("", "meshd-oci-layout-")
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("ociimage: layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.Name(),
	})); err != nil {
		return fmt.Errorf("ociimage: layout: %w", err)
	}
	var names []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	sort.Strings(names)
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, p := range names {
		fi, err := os.Lstat(p)
		if err != nil {
			f.Close()
			return fmt.Errorf("ociimage: %w", err)
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mod, Mode: 0o644, Typeflag: tar.TypeReg, Size: fi.Size()}
		if fi.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Close()
			return fmt.Errorf("ociimage: %w", err)
		}
		if !fi.IsDir() {
			if err := copyFile(tw, p); err != nil {
				f.Close()
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return fmt.Errorf("ociimage: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	return nil
}

func copyFile(w io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(w, f); err != nil {
		return fmt.Errorf("ociimage: %w", err)
	}
	return nil
}
