// Package image_test proves `make image`: the tarballs it writes load with
// go-containerregistry, their config names a non-root user, the entrypoint
// and the OCI labels, and the binary extracted from the layer runs.
package image_test

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/meshd/meshd/tests/harness"
)

func TestMakeImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the images hold linux binaries")
	}
	dir := t.TempDir()
	images := []string{"meshd", "sentry"}
	archs := []string{"amd64", "arm64"}
	if !slices.Contains(archs, runtime.GOARCH) {
		archs = append(archs, runtime.GOARCH)
	}
	cmd := exec.Command("make", "-s", "image", "IMAGE_ARCHS="+strings.Join(archs, " "), "IMAGES="+strings.Join(images, " "),
		"IMAGE_DIR="+dir, "VERSION=v0.0.0-test", "BIN="+filepath.Join(dir, "bin"))
	cmd.Dir = harness.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	for _, name := range images {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(dir, name+"-"+runtime.GOARCH+".tar")
			img, err := tarball.ImageFromPath(file, nil)
			if err != nil {
				t.Fatalf("load %s: %v", file, err)
			}
			checkImage(t, img, name, runtime.GOARCH, true)
		})
		t.Run(name+"/index", func(t *testing.T) {
			idx := readLayout(t, filepath.Join(dir, name+".tar"), "ghcr.io/meshd/"+name+":v0.0.0-test")
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range im.Manifests {
				if d.Platform == nil || d.Platform.OS != "linux" {
					t.Fatalf("manifest %s: platform %+v, want linux/...", d.Digest, d.Platform)
				}
				got = append(got, d.Platform.Architecture)
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				// The amd64 binary runs here (and the host's, if another).
				checkImage(t, img, name, d.Platform.Architecture, d.Platform.Architecture == runtime.GOARCH)
			}
			slices.Sort(got)
			if !slices.Equal(got, archs) {
				t.Errorf("the index names platforms %v, want %v", got, archs)
			}
		})
	}
}

// readLayout unpacks an OCI layout tarball and returns the image index
// its index.json names ref.
func readLayout(t *testing.T, file, ref string) v1.ImageIndex {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("entry %q leaves the layout", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("entry %q: type %c", h.Name, h.Typeflag)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Fatalf("no oci-layout file: %v", err)
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json holds %+v, want one image index", tm.Manifests)
	}
	d := tm.Manifests[0]
	if d.Annotations["io.containerd.image.name"] != ref || d.Annotations["org.opencontainers.image.ref.name"] != ref[strings.LastIndex(ref, ":")+1:] {
		t.Errorf("annotations %v, want the name %s", d.Annotations, ref)
	}
	idx, err := top.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// checkImage checks img's config and files; run: its binary runs here.
func checkImage(t *testing.T, img v1.Image, name, arch string, run bool) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || cf.OS != "linux" || cf.Architecture != arch {
		t.Errorf("config user %q os %q arch %q: want 65532:65532 linux %s", cf.Config.User, cf.OS, cf.Architecture, arch)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/"+name {
		t.Errorf("entrypoint %q, want [/%s]", cf.Config.Entrypoint, name)
	}
	if l := cf.Config.Labels; l["org.opencontainers.image.version"] != "v0.0.0-test" || l["org.opencontainers.image.source"] == "" ||
		l["org.opencontainers.image.revision"] == "" {
		t.Errorf("labels %v: want version, source and revision", l)
	}
	files := extract(t, img)
	if !strings.Contains(string(files["etc/passwd"].data), ":65532:65532:") {
		t.Errorf("/etc/passwd %q names no user 65532", files["etc/passwd"].data)
	}
	b, ok := files[name]
	if !ok {
		t.Fatalf("no /%s in the layer", name)
	}
	if b.mode&0o022 != 0 || b.uid != 0 {
		t.Errorf("/%s mode %o uid %d: want root-owned, not writable by others", name, b.mode, b.uid)
	}
	if !run {
		return
	}
	exe := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(exe, b.data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v0.0.0-test") {
		t.Errorf("%s --version: %v: %q, want the version", name, err, out)
	}
	// Static: no interpreter to find in the image.
	if ldd, err := exec.Command("ldd", exe).CombinedOutput(); err == nil && !strings.Contains(string(ldd), "not a dynamic") {
		t.Errorf("%s is dynamically linked: %s", name, ldd)
	}
}

type file struct {
	data []byte
	mode int64
	uid  int
}

// extract reads the image's flattened file system.
func extract(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]file{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(h.Name, "/")] = file{data: b, mode: h.Mode, uid: h.Uid}
	}
}
