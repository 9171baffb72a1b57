package ociimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	elf := filepath.Join(dir, "elf")
	if err := os.WriteFile(elf, []byte("\x7fELF...."), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Name: "meshd", Arch: "amd64"}, "required"},
		{Options{Binary: elf, Name: "../meshd", Arch: "amd64"}, "plain file name"},
		{Options{Binary: filepath.Join(dir, "none"), Name: "meshd", Arch: "amd64"}, "no such file"},
		{Options{Binary: script, Name: "meshd", Arch: "amd64"}, "not an ELF"},
	} {
		if _, err := Build(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Build(%+v) = %v, want an error with %q", c.o, err, c.want)
		}
	}
	img, err := Build(Options{Binary: elf, Name: "meshd", Arch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "x.tar"), "not a ref!", img); err == nil {
		t.Error("a bad reference was accepted")
	}
	if err := Write(filepath.Join(dir, "x.tar"), "ghcr.io/meshd/meshd:v1", img); err != nil {
		t.Error(err)
	}
}

func TestIndexRefuses(t *testing.T) {
	dir := t.TempDir()
	elf := filepath.Join(dir, "elf")
	if err := os.WriteFile(elf, []byte("\x7fELF...."), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Index(nil); err == nil || !strings.Contains(err.Error(), "at least one") {
		t.Errorf("an empty index: %v", err)
	}
	arm, err := Build(Options{Binary: elf, Name: "meshd", Arch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Index(map[string]v1.Image{"amd64": arm}); err == nil || !strings.Contains(err.Error(), "is linux/arm64") {
		t.Errorf("an arm64 image as amd64: %v", err)
	}
	idx, err := Index(map[string]v1.Image{"arm64": arm})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(filepath.Join(dir, "x.tar"), "not a ref!", idx, time.Time{}); err == nil {
		t.Error("a bad reference was accepted")
	}
	if err := WriteLayout(filepath.Join(dir, "none", "x.tar"), "ghcr.io/meshd/meshd:v1", idx, time.Time{}); err == nil {
		t.Error("a file in a missing folder was written")
	}
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, f := range []string{a, b} {
		if err := WriteLayout(f, "ghcr.io/meshd/meshd:v1", idx, time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if len(ba) == 0 || string(ba) != string(bb) {
		t.Error("the same index made two different layout tarballs")
	}
}
