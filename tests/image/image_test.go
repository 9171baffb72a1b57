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
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/meshd/meshd/tests/harness"
)

func TestMakeImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the images hold linux binaries")
	}
	dir := t.TempDir()
	images := []string{"meshd", "sentry"}
	cmd := exec.Command("make", "-s", "image", "IMAGE_ARCHS="+runtime.GOARCH, "IMAGES="+strings.Join(images, " "),
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
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Config.User != "65532:65532" || cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
				t.Errorf("config user %q os %q arch %q: want 65532:65532 linux %s", cf.Config.User, cf.OS, cf.Architecture, runtime.GOARCH)
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
		})
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
