package ociimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
